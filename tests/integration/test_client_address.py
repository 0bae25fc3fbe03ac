#!/usr/bin/env python3
"""The real client behind trusted proxies, against the real binary: http.xff_num_trusted_hops and
http.trusted_proxies decide the address that rate-limit keys, sticky client_ip and the access log
use; X-Forwarded-For gets the TCP peer appended either way; a trusted peer's X-Forwarded-Proto is
kept, an untrusted one's replaced. Clients here connect from 127.0.0.1, the "load balancer"."""

import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def is_access(ev):
    return "request_id" in ev and "event" not in ev


class ClientAddressTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")
        self.new = self.backend("new")

    def start(self, http=None, routes=None, rate_limit=None):
        routes = routes or [{"name": "default", "match": {"prefix": "/"},
                             "split": {"legacy": 100}}]
        extra = {}
        if http is not None:
            extra["http"] = http
        if rate_limit is not None:
            extra["rate_limit"] = rate_limit
        return self.proxy(h.make_config({"legacy": self.legacy, "new": self.new}, routes=routes,
                                        extra=extra))

    def echo(self, c, headers):
        r = c.request("GET", "/echo", headers)
        self.assertEqual(r.status, 200, r)
        return r, {k.lower(): v for k, v in r.json()["headers"]}

    def statuses(self, c, xff, n):
        out = []
        for _ in range(n):
            r = c.request("GET", "/", [("X-Forwarded-For", xff)] if xff else None)
            out.append(r.status)
        return out

    def access_clients(self, p, n):
        p.wait_for(lambda px: len([e for e in px.events if is_access(e)]) >= n, 3.0)
        with p.cond:
            return [e["client"] for e in p.events if is_access(e)]

    def test_one_trusted_hop_keys_limits_and_logs_by_the_address_the_balancer_appended(self):
        p = self.start(http={"xff_num_trusted_hops": 1},
                       rate_limit={"rate": "2/min", "key": "client_ip"})
        with h.Client(p.port) as c:
            # Two users behind the same balancer: each has its own bucket of 2.
            self.assertEqual(self.statuses(c, "198.51.100.7", 3), [200, 200, 429])
            self.assertEqual(self.statuses(c, "203.0.113.9", 2), [200, 200])
            # A forged entry left of the balancer's does not buy a new bucket.
            self.assertEqual(self.statuses(c, "1.2.3.4, 198.51.100.7", 1), [429])
        clients = self.access_clients(p, 6)
        self.assertEqual(clients, ["198.51.100.7"] * 3 + ["203.0.113.9"] * 2 + ["198.51.100.7"],
                         clients)

    def test_hops_without_enough_entries_trust_nothing_not_even_the_proto(self):
        # A client that reached cutover without passing the balancer (no X-Forwarded-For).
        p = self.start(http={"xff_num_trusted_hops": 1})
        with h.Client(p.port) as c:
            _, hdrs = self.echo(c, [("X-Forwarded-Proto", "https")])
            self.assertEqual(hdrs["x-forwarded-proto"], "http")
            # Through the balancer, whose line comes last: kept; a client's earlier line is not.
            _, hdrs = self.echo(c, [("X-Forwarded-For", "198.51.100.7"),
                                    ("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "https")])
            self.assertEqual(hdrs["x-forwarded-proto"], "https")
            _, hdrs = self.echo(c, [("X-Forwarded-For", "198.51.100.7"),
                                    ("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")])
            self.assertEqual(hdrs["x-forwarded-proto"], "http")

    def test_untrusted_peer_forwarded_headers_change_nothing(self):
        p = self.start(rate_limit={"rate": "2/min", "key": "client_ip"})
        with h.Client(p.port) as c:
            # Every spoofed address shares the peer's bucket.
            self.assertEqual([self.statuses(c, "198.51.100.%d" % i, 1)[0] for i in range(3)],
                             [200, 200, 429])
        self.assertEqual(self.access_clients(p, 3), ["127.0.0.1"] * 3)

    def test_xff_gets_the_peer_appended_and_proto_is_kept_only_from_a_trusted_peer(self):
        trusted = self.start(http={"trusted_proxies": ["127.0.0.0/8"]})
        with h.Client(trusted.port) as c:
            _, hdrs = self.echo(c, [("X-Forwarded-For", "198.51.100.7"),
                                    ("X-Forwarded-Proto", "https")])
            self.assertEqual(hdrs["x-forwarded-for"], "198.51.100.7, 127.0.0.1")
            self.assertEqual(hdrs["x-forwarded-proto"], "https")
            # Anything but http or https from a trusted peer is not passed on.
            _, hdrs = self.echo(c, [("X-Forwarded-Proto", "gopher")])
            self.assertEqual(hdrs["x-forwarded-proto"], "http")
        untrusted = self.start(http={"trusted_proxies": ["10.0.0.0/8"]})
        with h.Client(untrusted.port) as c:
            _, hdrs = self.echo(c, [("X-Forwarded-For", "198.51.100.7"),
                                    ("X-Forwarded-Proto", "https")])
            self.assertEqual(hdrs["x-forwarded-for"], "198.51.100.7, 127.0.0.1")
            self.assertEqual(hdrs["x-forwarded-proto"], "http")
        self.assertEqual(self.access_clients(untrusted, 1), ["127.0.0.1"])

    def test_trusted_cidrs_walk_past_internal_proxies_to_the_first_untrusted_address(self):
        p = self.start(http={"trusted_proxies": ["127.0.0.0/8", "10.0.0.0/8"]},
                       rate_limit={"rate": "1/min", "key": "client_ip"})
        with h.Client(p.port) as c:
            self.assertEqual(self.statuses(c, "1.2.3.4, 198.51.100.7, 10.1.2.3", 2), [200, 429])
            self.assertEqual(self.statuses(c, "198.51.100.8, 10.9.9.9", 1), [200])
        self.assertEqual(self.access_clients(p, 3),
                         ["198.51.100.7", "198.51.100.7", "198.51.100.8"])

    def test_sticky_client_ip_follows_the_real_client(self):
        routes = [{"name": "default", "match": {"prefix": "/"},
                   "split": {"new": 50, "legacy": 50}, "sticky": {"client_ip": True}}]
        p = self.start(http={"xff_num_trusted_hops": 1}, routes=routes)
        seen = set()
        with h.Client(p.port) as c:
            for user in range(24):
                xff = "198.51.100.%d" % (user + 1)
                first = None
                for _ in range(10):
                    r = c.request("GET", "/", [("X-Forwarded-For", xff)])
                    self.assertEqual(r.status, 200)
                    first = first or h.served_by(r)
                    self.assertEqual(h.served_by(r), first, "client %s moved backend" % xff)
                seen.add(first)
        # Keyed by the peer (127.0.0.1), every user would land on the same side.
        self.assertEqual(seen, {"new", "legacy"}, "24 clients at 50/50 all on one side")


class ProxyProtocolTest(h.ProxyTestCase):
    """listeners[].proxy_protocol: the balancer's PROXY header names the client."""

    def setUp(self):
        self.legacy = self.backend("legacy")

    def start(self, proxy_protocol=True):
        listeners = [{"name": "public", "address": "127.0.0.1:0",
                      "proxy_protocol": proxy_protocol}]
        return self.proxy(h.make_config({"legacy": self.legacy}, listeners=listeners, admin=True))

    def access_clients(self, p, n):
        p.wait_for(lambda px: len([e for e in px.events if is_access(e)]) >= n, 3.0)
        with p.cond:
            return [e["client"] for e in p.events if is_access(e)]

    def echo_headers(self, c, headers=None):
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        return {k.lower(): v for k, v in r.json()["headers"]}

    def test_v1_header_names_the_client_for_every_request_on_the_connection(self):
        p = self.start()
        with h.Client(p.port) as c:
            c.send(b"PROXY TCP4 198.51.100.7 127.0.0.1 51234 80\r\n" +
                   h.build_request("GET", "/echo"))
            self.assertEqual(self.echo_headers(c)["x-forwarded-for"], "198.51.100.7")
            # Keep-alive: the header came once; the next request is plain HTTP.
            c.send(h.build_request("GET", "/echo"))
            self.assertEqual(self.echo_headers(c)["x-forwarded-for"], "198.51.100.7")
        self.assertEqual(self.access_clients(p, 2), ["198.51.100.7"] * 2)

    def test_v2_header_split_across_segments(self):
        p = self.start()
        src = bytes([0x20, 0x01, 0x0d, 0xb8] + [0] * 11 + [7])
        body = src + bytes(16) + bytes([0xc8, 0x22, 0, 80])
        header = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21, 0, len(body)]) + body)
        wire = header + h.build_request("GET", "/echo")
        with h.Client(p.port) as c:
            for i in range(0, len(wire), 7):  # 7-byte segments, header and request split anywhere
                c.send(wire[i:i + 7])
                time.sleep(0.002)
            self.assertEqual(self.echo_headers(c)["x-forwarded-for"], "2001:db8::7")
        self.assertEqual(self.access_clients(p, 1), ["2001:db8::7"])

    def test_connection_without_a_header_is_closed_unanswered_and_counted(self):
        p = self.start()
        self.legacy.reset_stats()
        with h.Client(p.port) as c:
            c.send(h.build_request("GET", "/echo"))
            self.assertTrue(c.closed_by_peer(3), "connection left open")
        self.assertEqual(self.legacy.stats()["requests"], 0)
        text = h.admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(h.metric(text, "cutover_proxy_protocol_errors_total"), 1.0)

    def test_listener_without_proxy_protocol_treats_a_header_as_a_bad_request(self):
        p = self.start(proxy_protocol=False)
        with h.Client(p.port) as c:
            c.send(b"PROXY TCP4 198.51.100.7 127.0.0.1 51234 80\r\n" +
                   h.build_request("GET", "/echo"))
            self.assertLocalReply(c.read_response(), 400, "bad_request")


if __name__ == "__main__":
    h.main()
