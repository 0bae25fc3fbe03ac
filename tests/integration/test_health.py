#!/usr/bin/env python3
"""Active health checks against the real binary: a dead or failing endpoint is taken out of
rotation, a backend with no healthy endpoint fails over to the route's fallback, and an endpoint
that answers its checks again is taken back."""

import os
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# Fast checks: down after 3 failures 200 ms apart, up after 2 passes; while down the checks back
# off from 100 ms up to 1 s.
HEALTH = {"path": "/health", "interval": "200ms", "timeout": "200ms", "healthy_threshold": 2,
          "unhealthy_threshold": 3, "backoff_base": "100ms", "backoff_max": "1s"}
DOWN_WITHIN_S = 5.0
UP_WITHIN_S = 5.0


def health_fail(backend):
    backend._control_request("POST", "/admin/health-fail")


def health_ok(backend):
    backend._control_request("POST", "/admin/health-ok")


def health_events(p, endpoint):
    return [e.get("healthy") for e in p.find_events("endpoint_health")
            if e.get("backend") == "new" and e.get("endpoint") == endpoint]


def wait_health(p, endpoint, healthy, timeout):
    """Waits for the endpoint's latest health event to say `healthy`."""
    def seen(px):
        ev = health_events(px, endpoint)
        return bool(ev) and ev[-1] is healthy
    return p.wait_for(seen, timeout)


class HealthTest(h.ProxyTestCase):
    def config(self, legacy, new_endpoints, fallback=False):
        route = {"name": "default", "match": {"prefix": "/"},
                 "split": {"new": 100, "legacy": 0}}
        if fallback:
            route["fallback"] = "legacy"
        cfg = h.make_config({"legacy": legacy, "new": new_endpoints}, routes=[route],
                            timeouts={"connect": "500ms"})
        cfg["backends"]["new"]["health_check"] = dict(HEALTH)
        return cfg

    def served_by(self, port, n):
        """n requests on one keep-alive connection: (status, x-backend of the endpoint) each."""
        out = []
        with h.Client(port) as c:
            for i in range(n):
                r = c.request("GET", "/?i=%d" % i)
                out.append((r.status, r.header("x-backend")))
        return out

    def test_dead_endpoint_is_removed_and_100_requests_all_reach_the_live_one(self):
        legacy = self.backend("legacy")
        live = self.backend("new-a")
        dead = "127.0.0.1:%d" % h.free_port()
        p = self.proxy(self.config(legacy, [live, dead]))
        self.assertTrue(wait_health(p, dead, False, DOWN_WITHIN_S),
                        "dead endpoint never marked down:\n" + p.log_tail())
        self.assertEqual(health_events(p, live.address), [], "the live endpoint flapped")
        # A request sent to the closed port would come back as 502: every one is served live.
        got = self.served_by(p.port, 100)
        self.assertEqual(got, [(200, "new-a")] * 100)

    def test_failing_endpoint_is_out_of_rotation_until_its_checks_pass_again(self):
        legacy = self.backend("legacy")
        a = self.backend("new-a")
        b = self.backend("new-b")
        p = self.proxy(self.config(legacy, [a, b]))
        # Both in rotation at first (endpoints start healthy).
        first = self.served_by(p.port, 10)
        self.assertEqual(sorted(set(first)), [(200, "new-a"), (200, "new-b")])

        health_fail(b)
        self.assertTrue(wait_health(p, b.address, False, DOWN_WITHIN_S),
                        "new-b never marked down:\n" + p.log_tail())
        while_down = self.served_by(p.port, 100)
        self.assertEqual(while_down, [(200, "new-a")] * 100)

        health_ok(b)
        self.assertTrue(wait_health(p, b.address, True, UP_WITHIN_S),
                        "new-b never taken back:\n" + p.log_tail())
        after = self.served_by(p.port, 20)
        self.assertTrue(all(s == 200 for s, _ in after), after)
        back_on_b = sum(1 for _, name in after if name == "new-b")
        # Round-robin over two endpoints again: about half each.
        self.assertTrue(8 <= back_on_b <= 12, after)
        self.assertEqual(health_events(p, b.address), [False, True])
        self.assertEqual(health_events(p, a.address), [])

    def test_backend_with_no_healthy_endpoint_fails_over_to_legacy_and_comes_back(self):
        legacy = self.backend("legacy")
        new = self.backend("new-a")
        p = self.proxy(self.config(legacy, [new], fallback=True))
        r = h.get(p.port, "/")
        self.assertEqual((r.status, r.header("x-cutover-backend")), (200, "new"))

        health_fail(new)
        self.assertTrue(wait_health(p, new.address, False, DOWN_WITHIN_S), p.log_tail())
        with h.Client(p.port) as c:
            for i in range(20):
                r = c.request("GET", "/?i=%d" % i)
                self.assertEqual((r.status, r.header("x-cutover-backend"), r.header("x-backend")),
                                 (200, "legacy", "legacy"))

        health_ok(new)
        self.assertTrue(wait_health(p, new.address, True, UP_WITHIN_S), p.log_tail())
        with h.Client(p.port) as c:
            for i in range(10):
                r = c.request("GET", "/?i=%d" % i)
                self.assertEqual((r.status, r.header("x-cutover-backend")), (200, "new"))

    def test_backend_with_no_healthy_endpoint_and_no_fallback_answers_503_no_endpoint(self):
        legacy = self.backend("legacy")
        new = self.backend("new-a")
        p = self.proxy(self.config(legacy, [new], fallback=False))
        health_fail(new)
        self.assertTrue(wait_health(p, new.address, False, DOWN_WITHIN_S), p.log_tail())
        new.reset_stats()
        for _ in range(5):
            self.assertLocalReply(h.get(p.port, "/"), 503, "no_endpoint")
        # Only health probes reached it (at most one per 200 ms while counting).
        self.assertLessEqual(new.stats()["requests"], 3)
        self.assertEqual(legacy.stats()["requests"], 0)


if __name__ == "__main__":
    h.main()
