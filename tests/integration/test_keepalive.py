#!/usr/bin/env python3
"""Keep-alive both sides, upstream connection reuse, pipelining order, chunked bodies both ways."""

import hashlib
import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class KeepAliveTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")
        self.p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100}))

    def test_50_sequential_requests_on_one_client_connection_reuse_upstream_connections(self):
        self.legacy.reset_stats()
        with h.Client(self.p.port) as c:
            for i in range(50):
                r = c.request("GET", "/?i=%d" % i)
                self.assertEqual(r.status, 200)
                self.assertFalse(c.eof)
        st = self.legacy.stats()
        self.assertEqual(st["requests"], 50)
        self.assertLessEqual(st["connections_accepted"], 2, st)

    def test_upstream_connections_are_reused_across_client_connections(self):
        self.legacy.reset_stats()
        for i in range(30):
            self.assertEqual(h.get(self.p.port, "/?i=%d" % i).status, 200)
        st = self.legacy.stats()
        self.assertEqual(st["requests"], 30)
        self.assertLessEqual(st["connections_accepted"], 2, st)

    def test_pipelined_requests_come_back_in_request_order(self):
        # Earlier requests are slower, so answering in completion order would show.
        reqs = b"".join(h.build_request("GET", "/slow?ms=%d&i=%d" % ((10 - i) * 40, i),
                                        [("X-Request-Id", "pipe-%d" % i)])
                        for i in range(10))
        with h.Client(self.p.port) as c:
            c.send(reqs)  # one send(): all ten are in flight at once
            for i in range(10):
                r = c.read_response()
                self.assertEqual(r.status, 200)
                self.assertIn(b"i=%d" % i, r.body, "response %d out of order: %r" % (i, r.body))
                self.assertEqual(r.header("x-request-id"), "pipe-%d" % i)
            # The connection is still usable afterwards.
            self.assertEqual(c.request("GET", "/").status, 200)

    def test_pipelined_post_bodies_stay_with_their_requests(self):
        bodies = [os.urandom(1000 * (i + 1)) for i in range(5)]
        reqs = b"".join(h.build_request("POST", "/echo", body=b) for b in bodies)
        with h.Client(self.p.port) as c:
            c.send(reqs)
            for b in bodies:
                j = c.read_response().json()
                self.assertEqual((j["body_length"], j["body_sha256"]),
                                 (len(b), hashlib.sha256(b).hexdigest()))

    def test_chunked_request_body_reaches_backend_intact(self):
        data = os.urandom(3 * 1024 * 1024 + 17)
        body = h.chunked_encode(data, [1, 4093, 65536, 300000, 7])
        with h.Client(self.p.port) as c:
            c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"backend": "legacy", "bytes": len(data),
                                        "sha256": hashlib.sha256(data).hexdigest()})
            # Same connection, next request: the chunked framing ended where it should.
            self.assertEqual(c.request("GET", "/").status, 200)

    def test_chunked_request_with_trailers_reaches_backend_intact(self):
        data = b"hello chunked world"
        body = h.chunked_encode(data, [5])[:-2] + b"X-Trailer: yes\r\n\r\n"
        with h.Client(self.p.port) as c:
            c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            j = c.read_response().json()
            self.assertEqual((j["body_length"], j["body_sha256"]),
                             (len(data), hashlib.sha256(data).hexdigest()))
            self.assertEqual(c.request("GET", "/").status, 200)

    def test_chunked_response_body_reaches_client_intact(self):
        n = 5 * 1024 * 1024 + 3
        with h.Client(self.p.port) as c:
            for chunk in (1000, 65536, 1 << 20):
                r = c.request("GET", "/bytes?n=%d&chunked=1&chunk=%d" % (n, chunk))
                self.assertEqual(r.status, 200)
                self.assertEqual(len(r.body), n)
                self.assertEqual(hashlib.sha256(r.body).hexdigest(), h.pattern_sha256(n))

    def test_chunked_upload_and_chunked_download_on_one_connection(self):
        data = os.urandom(2 * 1024 * 1024)
        with h.Client(self.p.port) as c:
            c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + h.chunked_encode(data, [12345]))
            j = c.read_response().json()
            self.assertEqual(j["body_sha256"], hashlib.sha256(data).hexdigest())
            r = c.request("GET", "/bytes?n=1000000&chunked=1&chunk=999")
            self.assertEqual(hashlib.sha256(r.body).hexdigest(), h.pattern_sha256(1000000))


class UpstreamCloseTest(h.ProxyTestCase):
    def test_pooled_connection_closed_by_backend_while_idle_is_not_a_client_error(self):
        # The backend closes idle keep-alive connections after 100 ms; the proxy's pool keeps
        # them longer, so the second request finds its pooled connection dead.
        legacy = self.backend("legacy", "--keepalive-timeout-ms", "100")
        p = self.proxy(h.make_config({"legacy": legacy}, split={"legacy": 100},
                                     pool={"max_idle_per_endpoint": 8, "idle_timeout": "30s"}))
        with h.Client(p.port) as c:
            for i in range(5):
                r = c.request("GET", "/?i=%d" % i)
                self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
                time.sleep(0.3)


if __name__ == "__main__":
    h.main()
