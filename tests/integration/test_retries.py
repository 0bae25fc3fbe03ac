#!/usr/bin/env python3
"""Retries against the real binary: a flaky backend behind a retry policy, retry on the other
side of the split, and the retry budget holding back a retry storm against a failing backend."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def retry_route(split, retry, fallback=None):
    route = {"name": "default", "match": {"prefix": "/"}, "split": dict(split),
             "retry": dict(retry)}
    if fallback:
        route["fallback"] = fallback
    return route


def attempts_of(resp):
    v = resp.header("x-cutover-attempts")
    return 1 if v is None else int(v)


class RetriesTest(h.ProxyTestCase):
    def test_flaky_backend_30_percent_503_behind_retries_gives_99_percent_success(self):
        legacy = self.backend("legacy")
        new = self.backend("new", "--fail-percent", "30", "--fail-status", "503")
        route = retry_route({"new": 100, "legacy": 0},
                            {"attempts": 2, "on": [503], "backoff_base": "5ms",
                             "backoff_max": "50ms"})
        p = self.proxy(h.make_config({"legacy": legacy, "new": new}, routes=[route]))
        responses = []
        with h.Client(p.port) as c:
            for i in range(300):
                responses.append(c.request("GET", "/?i=%d" % i))
        ok = sum(1 for r in responses if r.status == 200)
        self.assertGreaterEqual(ok, 297, "only %d/300 succeeded" % ok)
        self.assertTrue(all(r.header("x-cutover-backend") == "new" for r in responses))
        retried = [r for r in responses if attempts_of(r) > 1]
        # The backend fails exactly 30 of every 100 requests it sees: 300 first attempts make
        # about 90 failures, each retried once (a retry lands between failures and succeeds).
        self.assertGreaterEqual(len(retried), 80)
        self.assertTrue(all(attempts_of(r) == 2 for r in retried),
                        [attempts_of(r) for r in retried])
        self.assertTrue(all(attempts_of(r) == 1 and r.header("x-cutover-attempts") is None
                            for r in responses if r not in retried))
        # Every attempt reached the backend: first attempts plus the retries the header counts.
        extra = sum(attempts_of(r) - 1 for r in responses)
        self.assertEqual(new.stats()["requests"], 300 + extra)

    def test_retry_on_other_backend_serves_every_request_from_legacy_when_new_fails(self):
        legacy = self.backend("legacy")
        new = self.backend("new")
        new.set_fail(100, 503)
        route = retry_route({"new": 100, "legacy": 0},
                            {"attempts": 2, "on": [503], "retry_on_other_backend": True,
                             "backoff_base": "5ms", "backoff_max": "20ms"})
        p = self.proxy(h.make_config({"legacy": legacy, "new": new}, routes=[route]))
        responses = []
        with h.Client(p.port) as c:
            for i in range(30):
                responses.append(c.request("GET", "/?i=%d" % i))
        summary = [(r.status, r.header("x-cutover-backend"), r.header("x-cutover-attempts"))
                   for r in responses]
        self.assertEqual(summary, [(200, "legacy", "2")] * 30)
        self.assertTrue(all(r.body == b"hello from legacy\n" for r in responses))
        self.assertEqual(new.stats()["requests"], 30)
        self.assertEqual(legacy.stats()["requests"], 30)

    def test_non_idempotent_post_is_not_retried_by_default(self):
        legacy = self.backend("legacy")
        new = self.backend("new")
        new.set_fail(100, 503)
        route = retry_route({"new": 100, "legacy": 0},
                            {"attempts": 2, "on": [503], "retry_on_other_backend": True})
        p = self.proxy(h.make_config({"legacy": legacy, "new": new}, routes=[route]))
        with h.Client(p.port) as c:
            r = c.request("POST", "/echo", body=b"payload")
        self.assertEqual((r.status, r.header("x-cutover-backend")), (503, "new"))
        self.assertIsNone(r.header("x-cutover-attempts"))
        self.assertEqual(legacy.stats()["requests"], 0)

    def test_retry_budget_caps_retries_of_40_concurrent_requests_to_a_failing_backend(self):
        clients = 40
        ratio, minimum, attempts = 0.2, 3, 2
        legacy = self.backend("legacy")
        new = self.backend("new", "--latency-ms", "200")
        new.set_fail(100, 503)
        route = retry_route({"new": 100, "legacy": 0},
                            {"attempts": attempts, "on": [503], "budget_ratio": ratio,
                             "budget_min": minimum, "backoff_base": "5ms",
                             "backoff_max": "20ms"})
        p = self.proxy(h.make_config({"legacy": legacy, "new": new}, routes=[route], admin=True))

        conns = [h.Client(p.port, timeout=15) for _ in range(clients)]
        for c in conns:
            self.addCleanup(c.close)
        results = [None] * clients
        errors = []
        barrier = threading.Barrier(clients)

        def one(i):
            try:
                barrier.wait(timeout=10)
                results[i] = conns[i].request("GET", "/?i=%d" % i)
            except Exception as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        elapsed = time.monotonic() - t0
        self.assertEqual(errors, [])
        self.assertTrue(all(r is not None and r.status == 503 for r in results),
                        [r and r.status for r in results])
        self.assertLess(elapsed, 5.0)

        # All 40 first attempts are in flight together (200 ms each) and fail within a few ms of
        # one another, before any retry can end. So at most max(min, floor(ratio × 40)) = 8 of them
        # get a retry; each of those may retry once more (attempts: 2), against a budget that by
        # then counts fewer requests in flight. Without a budget: 40 × (1 + 2) = 120 requests.
        cap = max(minimum, int(ratio * clients))
        retried_clients = [r for r in results if attempts_of(r) > 1]
        retries = sum(attempts_of(r) - 1 for r in results)
        backend_requests = new.stats()["requests"]
        self.assertLessEqual(len(retried_clients), cap,
                             "%d clients got a retry; the budget allows %d concurrent"
                             % (len(retried_clients), cap))
        self.assertGreaterEqual(len(retried_clients), minimum,
                                "the budget's minimum of %d concurrent retries was not granted"
                                % minimum)
        self.assertLessEqual(retries, cap * attempts)
        self.assertEqual(backend_requests, clients + retries)
        self.assertLess(backend_requests, clients * 2)
        self.assertLessEqual(backend_requests, clients + cap * attempts)
        # Every retry the budget refused is counted: each client that never got one, and at
        # most one more per retried client (its second failure).
        text = h.admin(p, "GET", "/metrics").body.decode()
        refused = h.metric(text, "cutover_retries_refused_total", route=route["name"],
                           backend="new")
        self.assertGreaterEqual(refused, clients - len(retried_clients))
        self.assertLessEqual(refused, clients)


if __name__ == "__main__":
    h.main()
