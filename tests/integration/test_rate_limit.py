#!/usr/bin/env python3
"""Rate limiting against the real binary: per-route token buckets keyed by client address or a
header, dry-run mode, per-backend limits, and one process-wide bucket across two workers."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def limited_route(name, path, limit, backend="legacy"):
    return {"name": name, "match": {"prefix": path}, "split": {backend: 100},
            "rate_limit": dict(limit)}


def default_route(backend="legacy"):
    return {"name": "default", "match": {"prefix": "/"}, "split": {backend: 100}}


class Session:
    """A client that keeps one connection while the proxy keeps it, and reconnects when a
    response said Connection: close (as any HTTP client does)."""

    def __init__(self, port):
        self.port = port
        self.client = None

    def request(self, method, target, headers=None):
        if self.client is None:
            self.client = h.Client(self.port)
        r = self.client.request(method, target, headers)
        if "close" in r.tokens("connection"):
            self.close()
        return r

    def close(self):
        if self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def int_header(resp, name):
    v = resp.header(name)
    if v is None:
        raise AssertionError("no %s header in %r" % (name, resp))
    try:
        return int(v)
    except ValueError:
        raise AssertionError("%s is not an integer: %r" % (name, v))


class RateLimitTest(h.ProxyTestCase):
    def test_sixth_request_in_a_minute_on_a_5_per_min_route_gets_429_with_ratelimit_headers(self):
        legacy = self.backend("legacy")
        routes = [limited_route("test-rate-limit", "/api/test-rate-limit",
                                {"rate": "5/min", "key": "client_ip"}),
                  default_route()]
        p = self.proxy(h.make_config({"legacy": legacy}, routes=routes))
        with Session(p.port) as c:
            for expected_remaining in (4, 3, 2, 1, 0):
                r = c.request("GET", "/api/test-rate-limit")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(int_header(r, "RateLimit-Limit"), 5, r)
                self.assertEqual(int_header(r, "RateLimit-Remaining"), expected_remaining, r)
                self.assertGreaterEqual(int_header(r, "RateLimit-Reset"), 0, r)
                self.assertLessEqual(int_header(r, "RateLimit-Reset"), 60, r)
            r = c.request("GET", "/api/test-rate-limit")
            self.assertLocalReply(r, 429, "rate_limited")
            # One token every 12 s: the client is told to come back within that, never "now".
            retry_after = int_header(r, "Retry-After")
            self.assertGreaterEqual(retry_after, 1, r)
            self.assertLessEqual(retry_after, 12, r)
            self.assertEqual(int_header(r, "RateLimit-Limit"), 5, r)
            self.assertEqual(int_header(r, "RateLimit-Remaining"), 0, r)
            reset = int_header(r, "RateLimit-Reset")
            self.assertGreaterEqual(reset, 1, r)
            self.assertLessEqual(reset, 60, r)
            # The rejected request never reached the backend.
            self.assertEqual(legacy.stats()["requests"], 5)
            # Other routes have no limit (no chain default configured).
            for _ in range(8):
                self.assertEqual(c.request("GET", "/other").status, 200)
            # A fresh connection from the same address shares the bucket.
            with Session(p.port) as c2:
                self.assertLocalReply(c2.request("GET", "/api/test-rate-limit"), 429,
                                      "rate_limited")

    def test_429_to_a_bodyless_request_keeps_the_keep_alive_connection_usable(self):
        # A GET has no body still arriving, so nothing forces the connection closed: a limited
        # client must not pay a new TCP handshake for every rejected request (nginx's limit_req
        # keeps the connection too).
        legacy = self.backend("legacy")
        routes = [limited_route("limited", "/limited", {"rate": "1/min"}), default_route()]
        p = self.proxy(h.make_config({"legacy": legacy}, routes=routes))
        with h.Client(p.port) as c:
            self.assertEqual(c.request("GET", "/limited").status, 200)
            r = c.request("GET", "/limited")
            self.assertLocalReply(r, 429, "rate_limited")
            self.assertNotIn("close", r.tokens("connection"), r)
            self.assertFalse(c.closed_by_peer(0.3), "connection closed after a 429")
            r = c.request("GET", "/unlimited")
            self.assertEqual(r.status, 200, r)

    def test_header_keyed_limit_gives_each_user_a_separate_bucket(self):
        legacy = self.backend("legacy")
        routes = [limited_route("per-user", "/",
                                {"rate": "3/min", "key": {"header": "x-user-id"}})]
        p = self.proxy(h.make_config({"legacy": legacy}, routes=routes))
        with Session(p.port) as c:
            alice = [c.request("GET", "/", [("x-user-id", "alice")]).status for _ in range(4)]
            bob = [c.request("GET", "/", [("x-user-id", "bob")]).status for _ in range(4)]
            carol = c.request("GET", "/", [("x-user-id", "carol")])
        self.assertEqual(alice, [200, 200, 200, 429])
        self.assertEqual(bob, [200, 200, 200, 429])
        self.assertEqual(carol.status, 200)
        self.assertEqual(int_header(carol, "RateLimit-Remaining"), 2)
        self.assertEqual(legacy.stats()["requests"], 7)

    def test_chain_default_limit_applies_to_routes_without_their_own(self):
        legacy = self.backend("legacy")
        routes = [limited_route("own", "/own", {"rate": "2/min"}), default_route()]
        p = self.proxy(h.make_config({"legacy": legacy}, routes=routes,
                                     extra={"rate_limit": {"rate": "4/min",
                                                           "key": "client_ip"}}))
        with Session(p.port) as c:
            own = [c.request("GET", "/own").status for _ in range(3)]
            other = [c.request("GET", "/x").status for _ in range(5)]
        self.assertEqual(own, [200, 200, 429])
        self.assertEqual(other, [200, 200, 200, 200, 429])

    def test_dry_run_mode_never_rejects_but_still_reports_remaining(self):
        legacy = self.backend("legacy")
        routes = [limited_route("dry", "/", {"rate": "2/min", "mode": "dry_run"})]
        p = self.proxy(h.make_config({"legacy": legacy}, routes=routes))
        with Session(p.port) as c:
            responses = [c.request("GET", "/") for _ in range(10)]
        self.assertEqual([r.status for r in responses], [200] * 10)
        self.assertTrue(all(r.header("x-cutover-reason") is None for r in responses))
        self.assertEqual(int_header(responses[0], "RateLimit-Remaining"), 1)
        self.assertEqual(int_header(responses[-1], "RateLimit-Remaining"), 0)
        self.assertEqual(legacy.stats()["requests"], 10)

    def test_per_backend_limit_rejects_with_429_whatever_the_route(self):
        legacy = self.backend("legacy")
        new = self.backend("new")
        routes = [{"name": "a", "match": {"prefix": "/a"}, "split": {"new": 100}},
                  {"name": "b", "match": {"prefix": "/b"}, "split": {"new": 100}},
                  {"name": "default", "match": {"prefix": "/"}, "split": {"legacy": 100}}]
        cfg = h.make_config({"legacy": legacy, "new": new}, routes=routes)
        cfg["backends"]["new"]["rate_limit"] = {"rate": "4/min"}
        p = self.proxy(cfg)
        with Session(p.port) as c:
            statuses = [c.request("GET", path).status for path in ("/a", "/b", "/a", "/b")]
            self.assertEqual(statuses, [200, 200, 200, 200])
            for path in ("/a", "/b"):
                r = c.request("GET", path)
                self.assertLocalReply(r, 429, "rate_limited")
                self.assertGreaterEqual(int_header(r, "Retry-After"), 1, r)
            # legacy is not limited by new's budget.
            for _ in range(6):
                r = c.request("GET", "/other")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header("x-cutover-backend"), "legacy")
        self.assertEqual(new.stats()["requests"], 4)

    def test_backend_over_its_limit_sends_the_request_to_the_route_fallback(self):
        # A promoted route (new: 100) whose new backend has a 4/min limit: over it, users are
        # served by the fallback (legacy) instead of a 429, and the move is counted as a failover.
        legacy = self.backend("legacy")
        new = self.backend("new")
        routes = [{"name": "promoted", "match": {"prefix": "/p"}, "split": {"new": 100},
                   "fallback": "legacy"},
                  {"name": "default", "match": {"prefix": "/"}, "split": {"new": 100}}]
        cfg = h.make_config({"legacy": legacy, "new": new}, routes=routes, admin=True)
        cfg["backends"]["new"]["rate_limit"] = {"rate": "4/min"}
        cfg["backends"]["legacy"]["rate_limit"] = {"rate": "3/min"}
        p = self.proxy(cfg)
        with Session(p.port) as c:
            served = [c.request("GET", "/p").header("x-cutover-backend") for _ in range(7)]
            self.assertEqual(served, ["new"] * 4 + ["legacy"] * 3)
            # Both over their limits: 429, said by the backend the split chose.
            r = c.request("GET", "/p")
            self.assertLocalReply(r, 429, "rate_limited")
            # A route without a fallback answers 429 as before.
            self.assertLocalReply(c.request("GET", "/other"), 429, "rate_limited")
        self.assertEqual((new.stats()["requests"], legacy.stats()["requests"]), (4, 3))
        text = h.admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(h.metric(text, "cutover_failovers_total", route="promoted", **{
            "from": "new", "to": "legacy"}), 3.0)

    def test_two_workers_and_16_connections_admit_exactly_the_burst_once(self):
        legacy = self.backend("legacy")
        routes = [limited_route("limited", "/", {"rate": "20/min", "burst": 20,
                                                 "key": "client_ip"})]
        p = self.proxy(h.make_config({"legacy": legacy}, routes=routes, workers=2))
        per_conn = [7] * 4 + [6] * 12  # 100 requests over 16 connections
        self.assertEqual(sum(per_conn), 100)
        statuses = []
        errors = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(per_conn))

        def client(n):
            try:
                with Session(p.port) as c:
                    barrier.wait(timeout=10)
                    got = [c.request("GET", "/").status for _ in range(n)]
                with lock:
                    statuses.extend(got)
            except Exception as e:  # reported below, with the others
                with lock:
                    errors.append(repr(e))

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in per_conn]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        elapsed = time.monotonic() - t0
        self.assertEqual(errors, [])
        self.assertEqual(len(statuses), 100)
        self.assertTrue(set(statuses) <= {200, 429}, statuses)
        admitted = statuses.count(200)
        # One token comes back every 3 s: within 3 s exactly the burst is admitted, however the
        # connections were spread over the workers (a per-worker bucket would admit up to 40).
        refilled = int(elapsed / 3.0)
        self.assertGreaterEqual(admitted, 20)
        self.assertLessEqual(admitted, 20 + refilled,
                             "admitted %d in %.2fs with rate 20/min burst 20" % (admitted, elapsed))
        self.assertEqual(legacy.stats()["requests"], admitted)

    def test_6000_distinct_30_to_60_kb_header_keys_keep_proxy_rss_growth_under_48_mib(self):
        # Keys are stored as fixed-size hashes: 6000 keys of ~45 KB (270 MB as strings) must not
        # stay in memory. The backend port is closed, so every request ends in a fast local 503
        # after the rate-limit filter has recorded its key.
        dead = h.free_port()
        routes = [limited_route("keyed", "/", {"rate": "5/min", "key": {"header": "x-user"}},
                                backend="legacy")]
        p = self.proxy(h.make_config({"legacy": dead}, routes=routes))
        total, threads_n = 6000, 4
        with Session(p.port) as c:  # warm up: the first connection's buffers and the pools
            c.request("GET", "/", [("x-user", "warm-up")])
        base = p.rss_kib()
        peak = [base]
        errors = []
        lock = threading.Lock()

        def client(t):
            try:
                with Session(p.port) as c:
                    for i in range(t, total, threads_n):
                        size = 30 * 1024 + (i * 7919) % (30 * 1024)
                        key = ("%06d-" % i) + "k" * (size - 7)
                        r = c.request("GET", "/", [("x-user", key)])
                        if r.status not in (429, 502, 503):
                            raise AssertionError("unexpected %r" % r)
                        if i % 200 == t:
                            v = p.rss_kib()
                            with lock:
                                peak[0] = max(peak[0], v or 0)
            except Exception as e:  # reported below
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(t,)) for t in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        peak[0] = max(peak[0], p.rss_kib() or 0)
        self.assertEqual(errors, [])
        growth_mib = (peak[0] - base) / 1024.0
        print("rss base %d KiB, peak %d KiB, growth %.1f MiB after %d keys of 30-60 KB"
              % (base, peak[0], growth_mib, total), file=sys.stderr)
        self.assertLess(growth_mib, 48, "RSS grew by %.1f MiB" % growth_mib)


if __name__ == "__main__":
    h.main()
