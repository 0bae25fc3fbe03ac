#!/usr/bin/env python3
"""Routing, the weighted split, stickiness, the override header and header hygiene."""

import os
import re
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


served_by = h.served_by


class ProxyBasicTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")
        self.new = self.backend("new")

    def start(self, split, **kw):
        cfg = h.make_config({"legacy": self.legacy, "new": self.new}, split=split, **kw)
        return self.proxy(cfg)

    def test_get_through_proxy_reaches_backend_and_names_it(self):
        p = self.start({"new": 0, "legacy": 100})
        r = h.get(p.port, "/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"hello from legacy\n")
        self.assertEqual(r.header("x-backend"), "legacy")
        self.assertEqual(served_by(r), "legacy")
        self.assertEqual(self.legacy.stats()["requests"], 1)

    def test_split_new_100_sends_every_request_to_new(self):
        p = self.start({"new": 100, "legacy": 0})
        with h.Client(p.port) as c:
            for _ in range(50):
                r = c.request("GET", "/")
                self.assertEqual((r.status, r.header("x-backend"), served_by(r)),
                                 (200, "new", "new"))
        self.assertEqual(self.legacy.stats()["requests"], 0)
        self.assertEqual(self.new.stats()["requests"], 50)

    def test_split_legacy_100_sends_every_request_to_legacy(self):
        p = self.start({"new": 0, "legacy": 100})
        for _ in range(50):
            r = h.get(p.port, "/some/path?q=1")
            self.assertEqual((r.status, r.header("x-backend"), served_by(r)),
                             (200, "legacy", "legacy"))
        self.assertEqual(self.new.stats()["requests"], 0)

    def test_split_50_50_over_400_requests_lands_within_5_sigma(self):
        p = self.start({"new": 50, "legacy": 50})
        counts = {"new": 0, "legacy": 0}
        with h.Client(p.port) as c:  # per-request PRNG: one keep-alive connection still splits
            for _ in range(400):
                r = c.request("GET", "/")
                self.assertEqual(r.status, 200)
                self.assertEqual(r.header("x-backend"), served_by(r))
                counts[served_by(r)] += 1
        # Binomial(400, 0.5): sigma = 10, so 150..250 is ±5 sigma.
        self.assertTrue(150 <= counts["new"] <= 250, counts)

    def test_sticky_cookie_sends_same_cookie_to_same_backend_every_time(self):
        routes = [{"name": "default", "match": {"prefix": "/"},
                   "split": {"new": 50, "legacy": 50}, "sticky": {"cookie": "sid"}}]
        p = self.proxy(h.make_config({"legacy": self.legacy, "new": self.new}, routes=routes))
        seen = set()
        with h.Client(p.port) as c:
            for user in range(20):
                cookie = "theme=dark; sid=user-%d; other=1" % user
                first = None
                for _ in range(50):
                    r = c.request("GET", "/", [("Cookie", cookie)])
                    self.assertEqual(r.status, 200)
                    first = first or served_by(r)
                    self.assertEqual(served_by(r), first, "cookie %s moved backend" % cookie)
                seen.add(first)
        self.assertEqual(seen, {"new", "legacy"}, "20 sticky users at 50/50 all on one side")

    def test_sticky_header_sends_same_user_to_same_backend_every_time(self):
        routes = [{"name": "default", "match": {"prefix": "/"},
                   "split": {"new": 50, "legacy": 50}, "sticky": {"header": "x-user"}}]
        p = self.proxy(h.make_config({"legacy": self.legacy, "new": self.new}, routes=routes))
        seen = set()
        with h.Client(p.port) as c:
            for user in range(20):
                got = {served_by(c.request("GET", "/", [("X-User", "u%d" % user)]))
                       for _ in range(20)}
                self.assertEqual(len(got), 1, "user u%d served by %s" % (user, got))
                seen |= got
        self.assertEqual(seen, {"new", "legacy"})

    def test_inserted_sticky_cookie_keeps_a_new_visitor_on_one_side_from_the_first_request(self):
        routes = [{"name": "default", "match": {"prefix": "/"},
                   "split": {"new": 50, "legacy": 50},
                   "sticky": {"cookie": "cutover_bucket", "insert": True, "max_age": "1h"}}]
        p = self.proxy(h.make_config({"legacy": self.legacy, "new": self.new}, routes=routes))
        seen = set()
        with h.Client(p.port) as c:
            for visitor in range(24):
                first = c.request("GET", "/cookie")
                self.assertEqual(first.status, 200)
                cookies = first.header_all("set-cookie")
                # The application's own cookie is kept beside cutover's.
                self.assertIn("app_session=%s; Path=/" % served_by(first), cookies)
                ours = [v for v in cookies if v.startswith("cutover_bucket=")]
                self.assertEqual(len(ours), 1, cookies)
                m = re.fullmatch(r"cutover_bucket=([0-9a-f]{16}); Path=/; Max-Age=3600; "
                                 r"HttpOnly; SameSite=Lax", ours[0])
                self.assertIsNotNone(m, ours[0])
                cookie = "theme=dark; cutover_bucket=%s" % m.group(1)
                for _ in range(10):
                    r = c.request("GET", "/cookie", [("Cookie", cookie)])
                    self.assertEqual(served_by(r), served_by(first),
                                     "visitor %d moved after its first request" % visitor)
                    self.assertFalse([v for v in r.header_all("set-cookie")
                                      if v.startswith("cutover_bucket=")],
                                     "cookie issued again to a visitor who has it")
                seen.add(served_by(first))
        self.assertEqual(seen, {"new", "legacy"}, "24 new visitors at 50/50 all on one side")

    def test_inserted_sticky_cookie_is_secure_when_the_request_came_over_https(self):
        routes = [{"name": "default", "match": {"prefix": "/"}, "split": {"legacy": 100},
                   "sticky": {"cookie": "cb", "insert": True}}]
        p = self.proxy(h.make_config({"legacy": self.legacy}, routes=routes,
                                     extra={"http": {"xff_num_trusted_hops": 1}}))
        with h.Client(p.port) as c:
            # Through the trusted balancer (it appended the client to X-Forwarded-For).
            r = c.request("GET", "/", [("X-Forwarded-For", "198.51.100.7"),
                                       ("X-Forwarded-Proto", "https")])
            self.assertRegex(r.header("set-cookie"),
                             r"^cb=[0-9a-f]{16}; Path=/; Max-Age=2592000; HttpOnly; "
                             r"SameSite=Lax; Secure$")
            r = c.request("GET", "/")
            self.assertNotIn("Secure", r.header("set-cookie"))

    def test_raising_new_weight_only_moves_sticky_users_from_legacy_to_new(self):
        def placement(weight_new):
            routes = [{"name": "default", "match": {"prefix": "/"},
                       "split": {"new": weight_new, "legacy": 100 - weight_new},
                       "sticky": {"cookie": "sid"}}]
            p = self.proxy(h.make_config({"legacy": self.legacy, "new": self.new},
                                         routes=routes))
            out = {}
            with h.Client(p.port) as c:
                for user in range(200):
                    r = c.request("GET", "/", [("Cookie", "sid=s%d" % user)])
                    out[user] = served_by(r)
            p.stop()
            return out

        at20, at60, at0 = placement(20), placement(60), placement(0)
        on_new_20 = {u for u, b in at20.items() if b == "new"}
        on_new_60 = {u for u, b in at60.items() if b == "new"}
        self.assertTrue(on_new_20 <= on_new_60,
                        "users moved back to legacy: %s" % sorted(on_new_20 - on_new_60))
        self.assertTrue(20 <= len(on_new_20) <= 60, len(on_new_20))
        self.assertTrue(90 <= len(on_new_60) <= 150, len(on_new_60))
        self.assertEqual(set(at0.values()), {"legacy"})

    def test_override_header_forces_the_named_backend(self):
        p = self.start({"new": 0, "legacy": 100}, override_header="x-cutover-backend")
        with h.Client(p.port) as c:
            for _ in range(10):
                r = c.request("GET", "/", [("X-Cutover-Backend", "new")])
                self.assertEqual((r.header("x-backend"), served_by(r)), ("new", "new"))
                r = c.request("GET", "/")
                self.assertEqual((r.header("x-backend"), served_by(r)), ("legacy", "legacy"))

    def test_override_header_is_ignored_when_not_configured(self):
        p = self.start({"new": 0, "legacy": 100})
        r = h.get(p.port, "/", [("X-Cutover-Backend", "new")])
        self.assertEqual(served_by(r), "legacy")

    def test_forwarded_for_is_appended_proto_set_and_request_id_generated_and_returned(self):
        p = self.start({"new": 0, "legacy": 100})
        r = h.get(p.port, "/echo", [("X-Forwarded-For", "203.0.113.9")])
        self.assertEqual(r.status, 200)
        seen = r.json()["headers"]
        xff = ", ".join(v for k, v in seen if k.lower() == "x-forwarded-for")
        self.assertEqual([x.strip() for x in xff.split(",")], ["203.0.113.9", "127.0.0.1"], seen)
        proto = [v for k, v in seen if k.lower() == "x-forwarded-proto"]
        self.assertEqual(proto, ["http"], seen)
        rid = [v for k, v in seen if k.lower() == "x-request-id"]
        self.assertEqual(len(rid), 1, seen)
        self.assertTrue(len(rid[0]) >= 8, rid)
        self.assertEqual(r.header_all("x-request-id"), [rid[0]], r.headers)
        # Two requests get two different ids.
        r2 = h.get(p.port, "/echo")
        rid2 = [v for k, v in r2.json()["headers"] if k.lower() == "x-request-id"]
        self.assertNotEqual(rid, rid2)

    def test_client_request_id_is_kept_and_returned(self):
        p = self.start({"new": 0, "legacy": 100})
        r = h.get(p.port, "/echo", [("X-Request-Id", "client-id-42")])
        rid = [v for k, v in r.json()["headers"] if k.lower() == "x-request-id"]
        self.assertEqual(rid, ["client-id-42"])
        self.assertEqual(r.header_all("x-request-id"), ["client-id-42"], r.headers)

    def test_hop_by_hop_request_headers_are_not_forwarded(self):
        p = self.start({"new": 0, "legacy": 100})
        r = h.get(p.port, "/echo", [
            ("Connection", "keep-alive, X-Secret-Hop"), ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Proxy-Connection", "keep-alive"),
            ("X-Normal", "yes")])
        seen = r.json()["headers"]
        names = [k.lower() for k, _ in seen]
        for hop in ("x-secret-hop", "keep-alive", "te", "proxy-connection"):
            self.assertNotIn(hop, names, seen)
        conn = " ".join(v.lower() for k, v in seen if k.lower() == "connection")
        self.assertNotIn("x-secret-hop", conn)
        self.assertIn("x-normal", names)

    def test_hop_by_hop_response_headers_are_not_returned(self):
        p = self.start({"new": 0, "legacy": 100})
        r = h.get(p.port, "/hop")
        self.assertEqual(r.status, 200)
        names = [k.lower() for k, _ in r.headers]
        for hop in ("x-resp-hop", "keep-alive", "proxy-connection"):
            self.assertNotIn(hop, names, r.headers)
        self.assertNotIn("x-resp-hop", " ".join(r.tokens("connection")))
        self.assertEqual(r.header("x-resp-normal"), "kept")

    def test_absolute_form_request_is_forwarded_in_origin_form(self):
        p = self.start({"new": 0, "legacy": 100})
        with h.Client(p.port) as c:
            c.send(b"GET http://example.test:8080/echo?x=1 HTTP/1.1\r\n"
                   b"Host: example.test:8080\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["target"], "/echo?x=1")
        hosts = [v for k, v in j["headers"] if k.lower() == "host"]
        self.assertEqual(hosts, ["example.test:8080"])

    def test_absolute_form_request_replaces_a_different_host_with_the_uri_authority(self):
        p = self.start({"new": 0, "legacy": 100})
        with h.Client(p.port) as c:
            c.send(b"GET http://example.test:8080/echo?x=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["target"], "/echo?x=1")
        hosts = [v for k, v in j["headers"] if k.lower() == "host"]
        self.assertEqual(hosts, ["example.test:8080"])

    def test_head_response_has_no_body_and_connection_stays_usable(self):
        p = self.start({"new": 0, "legacy": 100})
        with h.Client(p.port) as c:
            r = c.request("HEAD", "/bytes?n=5000")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"")
            r = c.request("GET", "/")  # stray body bytes would break this parse
            self.assertEqual((r.status, r.body), (200, b"hello from legacy\n"))

    def test_http10_client_gets_a_correctly_framed_response(self):
        p = self.start({"new": 0, "legacy": 100})
        with h.Client(p.port) as c:
            # The backend answers the proxy chunked; an HTTP/1.0 client must not see chunked.
            c.send(b"GET /bytes?n=100000&chunked=1&chunk=3000 HTTP/1.0\r\nHost: a\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.tokens("transfer-encoding"), [])
            self.assertEqual(r.body, h.pattern_bytes(0, 100000))
            if r.framing == "length":  # without keep-alive the proxy must close after it
                self.assertTrue(c.closed_by_peer(3))

    def test_expect_100_continue_gets_interim_100_then_final_response(self):
        p = self.start({"new": 0, "legacy": 100})
        with h.Client(p.port, timeout=5) as c:
            c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 11\r\n\r\n")
            r = c.read_response(skip_interim=False)
            self.assertEqual(r.status, 100, r)
            c.send(b"hello world")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["bytes"], 11)

    def test_route_order_prefix_and_exact_matches(self):
        routes = [
            {"name": "exact", "match": {"exact": "/api/config"}, "split": {"new": 100, "legacy": 0}},
            {"name": "kibana", "match": {"prefix": "/api/fetch-kibana-data"},
             "split": {"new": 100, "legacy": 0}},
            {"name": "default", "match": {"prefix": "/"}, "split": {"new": 0, "legacy": 100}},
        ]
        p = self.proxy(h.make_config({"legacy": self.legacy, "new": self.new}, routes=routes))
        cases = {"/api/config": "new", "/api/config/x": "legacy", "/api/fetch-kibana-data": "new",
                 "/api/fetch-kibana-data/7?x=1": "new", "/api/refresh": "legacy", "/": "legacy"}
        for path, want in cases.items():
            self.assertEqual(served_by(h.get(p.port, path)), want, path)


if __name__ == "__main__":
    h.main()
