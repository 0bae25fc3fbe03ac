#!/usr/bin/env python3
"""Circuit breaking against the real binary: a backend failing 100% trips the breaker after five
failures, its share fails over to legacy, a probe after the cool-down closes it again; without a
fallback the open breaker answers 503 circuit_open; concurrency limits answer 503 with their own
reason."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# Short cool-downs keep the file fast; jitter is kept (its default) so the real schedule runs.
BREAKER = {"consecutive_failures": 5, "cooldown": "1s", "max_cooldown": "2s", "multiplier": 1.5,
           "jitter": 0.2, "half_open_probes": 1,
           "failure_on": ["connect_error", "timeout", "reset", "5xx"]}
COOLDOWN_MAX_S = 1.2  # cooldown × (1 + jitter)


def new_only_config(legacy, new, fallback, breaker=None):
    route = {"name": "default", "match": {"prefix": "/"}, "split": {"new": 100, "legacy": 0}}
    if fallback:
        route["fallback"] = "legacy"
    cfg = h.make_config({"legacy": legacy, "new": new}, routes=[route])
    cfg["backends"]["new"]["circuit_breaker"] = dict(breaker or BREAKER)
    return cfg


def fresh_get(port, target="/"):
    """One request on its own connection: the breaker's answers are independent of keep-alive."""
    return h.get(port, target)


def transitions(p):
    return [(e.get("from"), e.get("to")) for e in p.find_events("breaker_transition")
            if e.get("backend") == "new"]


class BreakerTest(h.ProxyTestCase):
    def test_new_failing_100_percent_trips_after_5_failures_then_legacy_serves_then_probe_closes(
            self):
        legacy = self.backend("legacy")
        new = self.backend("new")
        new.set_fail(100, 503)
        p = self.proxy(new_only_config(legacy, new, fallback=True))

        seen = [fresh_get(p.port) for _ in range(20)]
        from_new = [r for r in seen if r.header("x-cutover-backend") == "new"]
        from_legacy = [r for r in seen if r.header("x-cutover-backend") == "legacy"]
        # Exactly the five failures that trip the breaker reach the client; then legacy serves
        # new's whole share.
        self.assertEqual([r.status for r in from_new], [503] * 5,
                         [(r.status, r.header("x-cutover-backend")) for r in seen])
        self.assertEqual(seen[:5], from_new)
        self.assertEqual(len(from_legacy), 15)
        self.assertTrue(all(r.status == 200 for r in from_legacy))
        self.assertEqual(new.stats()["requests"], 5)
        self.assertTrue(p.wait_for(lambda px: ("closed", "open") in transitions(px), 2),
                        p.log_tail())
        opened = [e for e in p.find_events("breaker_transition")
                  if e.get("backend") == "new" and e.get("to") == "open"]
        self.assertTrue(opened[0].get("reason"), opened[0])

        # new recovers; after the cool-down one probe reaches it and closes the breaker.
        new.set_fail(0)
        t_open = time.monotonic()
        served_by_new = None
        while time.monotonic() - t_open < COOLDOWN_MAX_S + 3.0:
            r = fresh_get(p.port)
            self.assertEqual(r.status, 200, r)
            if r.header("x-cutover-backend") == "new":
                served_by_new = time.monotonic() - t_open
                break
            time.sleep(0.05)
        self.assertIsNotNone(served_by_new, "new never served again after the cool-down")
        self.assertTrue(p.wait_for(
            lambda px: transitions(px)[:3] == [("closed", "open"), ("open", "half_open"),
                                               ("half_open", "closed")], 2),
            "transitions: %r" % transitions(p))
        # Closed again: new serves its whole share.
        after = [fresh_get(p.port) for _ in range(10)]
        self.assertEqual([(r.status, r.header("x-cutover-backend")) for r in after],
                         [(200, "new")] * 10)

    def test_probe_failing_reopens_the_breaker_and_legacy_keeps_serving(self):
        legacy = self.backend("legacy")
        new = self.backend("new")
        new.set_fail(100, 503)
        p = self.proxy(new_only_config(legacy, new, fallback=True))
        for _ in range(5):
            self.assertEqual(fresh_get(p.port).status, 503)
        self.assertEqual(fresh_get(p.port).header("x-cutover-backend"), "legacy")
        # Still failing after the cool-down: the single probe fails and the breaker reopens.
        deadline = time.monotonic() + COOLDOWN_MAX_S + 3.0
        while time.monotonic() < deadline and ("half_open", "open") not in transitions(p):
            fresh_get(p.port)
            time.sleep(0.05)
        self.assertEqual(transitions(p)[:3],
                         [("closed", "open"), ("open", "half_open"), ("half_open", "open")])
        self.assertEqual(new.stats()["requests"], 6)  # five trips and one probe
        r = fresh_get(p.port)
        self.assertEqual((r.status, r.header("x-cutover-backend")), (200, "legacy"))

    def test_open_breaker_without_fallback_answers_503_circuit_open(self):
        legacy = self.backend("legacy")
        new = self.backend("new")
        new.set_fail(100, 503)
        p = self.proxy(new_only_config(legacy, new, fallback=False))
        first = [fresh_get(p.port) for _ in range(5)]
        self.assertEqual([r.status for r in first], [503] * 5)
        self.assertTrue(all(r.header("x-cutover-reason") is None for r in first),
                        "the backend's own 503s are passed through")
        for _ in range(5):
            r = fresh_get(p.port)
            self.assertLocalReply(r, 503, "circuit_open")
        self.assertEqual(new.stats()["requests"], 5)
        self.assertEqual(legacy.stats()["requests"], 0)

    def run_concurrent_slow(self, port, n, ms):
        results = [None] * n
        errors = []

        def one(i):
            try:
                results[i] = h.get(port, "/slow?ms=%d&i=%d" % (ms, i))
            except Exception as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        return threads, results, errors

    def check_concurrency_limit(self, limit_key, reason):
        legacy = self.backend("legacy")
        new = self.backend("new")
        cfg = h.make_config({"legacy": legacy, "new": new}, split={"new": 100, "legacy": 0})
        cfg["backends"]["new"]["circuit_breaker"] = {limit_key: 2}
        p = self.proxy(cfg)
        threads, results, errors = self.run_concurrent_slow(p.port, 2, 1500)
        self.assertEqual(new.wait_in_flight(2, timeout=5), 2)
        r = fresh_get(p.port)
        self.assertLocalReply(r, 503, reason)
        for t in threads:
            t.join(timeout=10)
        self.assertEqual(errors, [])
        self.assertEqual([x.status for x in results], [200, 200])
        # The slots are given back: a request after them is served.
        r = fresh_get(p.port)
        self.assertEqual((r.status, r.header("x-cutover-backend")), (200, "new"))
        # The limit is not a breaker failure: the breaker stayed closed.
        self.assertEqual(transitions(p), [])

    def test_third_concurrent_request_over_max_inflight_2_gets_503_max_inflight(self):
        self.check_concurrency_limit("max_inflight", "max_inflight")

    def test_third_connection_over_max_connections_2_gets_503_max_connections(self):
        self.check_concurrency_limit("max_connections", "max_connections")


if __name__ == "__main__":
    h.main()
