#!/usr/bin/env python3
"""Path normalisation against the real binary: every spelling of a rate-limited path reaches its
route and its limit, the backend receives the normalised target, per-route case rules, and
malformed or encoded-slash paths answered 400 invalid_path."""

import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def routes(case_sensitive=True):
    """/api/limited (2 per minute per client) on `new`, everything else on `legacy`."""
    match = {"prefix": "/api/limited"}
    if not case_sensitive:
        match["case_sensitive"] = False
    return [{"name": "limited", "match": match, "split": {"new": 100},
             "rate_limit": {"rate": "2/min", "key": "client_ip"}},
            {"name": "default", "match": {"prefix": "/"}, "split": {"legacy": 100}}]


class PathTest(h.ProxyTestCase):
    def start(self, case_sensitive=True, http=None, admin=False):
        legacy = self.backend("legacy")
        new = self.backend("new")
        extra = {"http": http} if http else None
        cfg = h.make_config({"legacy": legacy, "new": new}, routes=routes(case_sensitive),
                            admin=admin, extra=extra)
        return self.proxy(cfg)

    def test_every_spelling_of_a_limited_path_counts_against_its_limit_and_then_gets_429(self):
        p = self.start()
        with h.Client(p.port) as c:
            for target in ("/api/limited", "/api/limite%64?x=1"):
                r = c.request("GET", target)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(h.served_by(r), "new", r)
            for target in ("/api/limited", "/api/fetch/../limited", "//api/limited",
                           "/./api/limited", "/x/../api/limited", "/api//limited/",
                           "/%61pi/%6cimited", "/api/%2e/limited", "/x/%2E%2E/api/limited"):
                r = c.request("GET", target)
                self.assertLocalReply(r, 429, "rate_limited")
            # Other paths still go to the catch-all.
            r = c.request("GET", "/api/limite")
            self.assertEqual((r.status, h.served_by(r)), (200, "legacy"), r)

    def test_the_backend_receives_the_normalised_target_with_the_query_untouched(self):
        p = self.start()
        with h.Client(p.port) as c:
            for target, received in (("/./ech%6F?a=%2f&b=..//./", "/echo?a=%2f&b=..//./"),
                                     ("//x/../echo", "/echo"),
                                     ("/a/b/../../../echo?q", "/echo?q"),
                                     ("/echo", "/echo")):
                r = c.request("GET", target)
                self.assertEqual((r.status, h.served_by(r)), (200, "legacy"), r)
                self.assertEqual(r.json()["target"], received, target)

    def test_upper_case_path_goes_to_the_catch_all_unless_the_route_is_case_insensitive(self):
        p = self.start(case_sensitive=True)
        with h.Client(p.port) as c:
            for _ in range(3):
                r = c.request("GET", "/API/limited")
                self.assertEqual((r.status, h.served_by(r)), (200, "legacy"), r)
        p = self.start(case_sensitive=False)
        with h.Client(p.port) as c:
            for target in ("/API/Limited", "/api/LIMITED"):
                r = c.request("GET", target)
                self.assertEqual((r.status, h.served_by(r)), (200, "new"), r)
            r = c.request("GET", "/Api/limited")
            self.assertLocalReply(r, 429, "rate_limited")

    def test_encoded_slash_malformed_escape_and_nul_get_400_invalid_path_and_are_counted(self):
        p = self.start(admin=True)
        bad = ("/api%2Flimited", "/api%2flimited", "/api%5Climited", "/api/%zz", "/api/%4",
               "/api/%00")
        with h.Client(p.port) as c:
            for target in bad:
                r = c.request("GET", target)
                self.assertLocalReply(r, 400, "invalid_path")
                self.assertNotIn("close", r.tokens("connection"), r)
            # The connection stays usable after the 400s.
            r = c.request("GET", "/echo")
            self.assertEqual(r.json()["target"], "/echo")
        deadline = time.monotonic() + 5
        while True:
            text = h.admin(p, "GET", "/metrics").body.decode()
            n = h.metric(text, "cutover_local_replies_total", reason="invalid_path")
            if n == len(bad) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(n, len(bad))

    def test_escaped_slashes_decode_routes_and_forwards_the_decoded_path(self):
        p = self.start(http={"escaped_slashes": "decode"})
        with h.Client(p.port) as c:
            r = c.request("GET", "/x%2F..%2Fecho")
            self.assertEqual((r.status, r.json()["target"]), (200, "/echo"), r)
            r = c.request("GET", "/api%2Flimited")
            self.assertEqual((r.status, h.served_by(r)), (200, "new"), r)
            r = c.request("GET", "/api/%00")
            self.assertLocalReply(r, 400, "invalid_path")

    def test_with_normalisation_off_the_target_is_forwarded_as_written(self):
        p = self.start(http={"normalize_path": False, "merge_slashes": False,
                             "escaped_slashes": "keep"})
        with h.Client(p.port) as c:
            r = c.request("GET", "/./api/limited")
            self.assertEqual((r.status, h.served_by(r)), (200, "legacy"), r)
            r = c.request("GET", "/echo?x=%2F")
            self.assertEqual(r.json()["target"], "/echo?x=%2F")


if __name__ == "__main__":
    h.main()
