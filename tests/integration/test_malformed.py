#!/usr/bin/env python3
"""Strict framing both ways: malformed requests are answered locally and the connection closed,
never forwarded; malformed backend responses become 502 bad_upstream_response."""

import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# (test name, raw request, expected status, expected reason, forwarded?)
# "forwarded" is False when the proxy can tell from the head alone, so the backend must see nothing.
# For body-level errors (bad chunk size) the head may already be on its way upstream.
REQUESTS = [
    ("content_length_with_transfer_encoding_is_400",
     b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "bad_request", False),
    ("two_different_content_lengths_is_400",
     b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     400, "bad_request", False),
    ("content_length_list_with_different_values_is_400",
     b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
     400, "bad_request", False),
    ("non_numeric_content_length_is_400",
     b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello",
     400, "bad_request", False),
    ("transfer_encoding_not_ending_in_chunked_is_400",
     b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n"
     b"0\r\n\r\n", 400, "bad_request", False),
    ("transfer_encoding_without_chunked_is_400",
     b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello",
     400, "bad_request", False),
    ("bad_chunk_size_is_400",
     b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"
     b"0\r\n\r\n", 400, "bad_request", True),
    ("obs_fold_is_400",
     b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n  b\r\n\r\n", 400, "bad_request", False),
    ("bare_lf_line_ending_is_400",
     b"GET / HTTP/1.1\r\nHost: a\nX-Other: b\r\n\r\n", 400, "bad_request", False),
    ("bare_lf_request_is_400",
     b"GET / HTTP/1.1\nHost: a\n\n", 400, "bad_request", False),
    ("nul_byte_in_header_value_is_400",
     b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x00b\r\n\r\n", 400, "bad_request", False),
    ("control_byte_in_header_value_is_400",
     b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n", 400, "bad_request", False),
    ("invalid_byte_in_header_name_is_400",
     b"GET / HTTP/1.1\r\nHost: a\r\nX(Bad): v\r\n\r\n", 400, "bad_request", False),
    ("space_before_colon_is_400",
     b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad : v\r\n\r\n", 400, "bad_request", False),
    ("http11_without_host_is_400",
     b"GET / HTTP/1.1\r\nX-Other: b\r\n\r\n", 400, "bad_request", False),
    ("two_host_headers_is_400",
     b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request", False),
    ("transfer_encoding_on_http10_is_400",
     b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
     b"0\r\n\r\n", 400, "bad_request", False),
    ("header_block_over_64k_is_431",
     b"GET / HTTP/1.1\r\nHost: a\r\n"
     + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(70)) + b"\r\n",
     431, "headers_too_large", False),
    ("uri_over_max_uri_bytes_is_414",
     b"GET /" + b"u" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "uri_too_long", False),
    ("obs_fold_after_leading_empty_lines_is_400",
     b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n  b\r\n\r\n", 400, "bad_request", False),
    ("head_ended_by_crlf_then_bare_lf_is_400",
     b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\nhello", 400, "bad_request", False),
    ("empty_header_name_is_400",
     b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400, "bad_request", False),
    ("garbage_request_line_is_400",
     b"HELLO\r\n\r\n", 400, "bad_request", False),
]

BAD_RESPONSE_KINDS = ["status_line", "nul_header", "space_before_colon", "two_cl", "cl_te",
                      "obs_fold", "bare_lf", "bare_cr", "huge_headers"]


class MalformedTest(h.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.legacy = h.start_backend("legacy")

    @classmethod
    def tearDownClass(cls):
        cls.legacy.stop()

    def setUp(self):
        self.p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100},
                                          limits={"max_uri_bytes": 1024}))
        self.legacy.reset_stats()

    def check_rejected(self, raw, status, reason, forwarded):
        with h.Client(self.p.port, timeout=5) as c:
            try:
                c.send(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the proxy may answer and close before reading everything
            try:
                r = c.read_response()
            except ConnectionResetError:
                self.fail("connection reset before the %d response could be read "
                          "(the proxy should close gracefully after answering)" % status)
            except h.HttpError as e:
                self.fail("no %d response: %s" % (status, e))
            self.assertLocalReply(r, status, reason)
            self.assertTrue(c.closed_by_peer(3), "connection left open after %d" % status)
        if not forwarded:
            self.assertEqual(self.legacy.stats()["requests"], 0,
                             "the malformed request reached the backend")
        # The proxy still serves well-formed requests afterwards.
        self.assertEqual(h.get(self.p.port, "/").status, 200)

    def test_uri_just_under_the_limit_is_forwarded(self):
        r = h.get(self.p.port, "/" + "u" * 900)
        self.assertEqual(r.status, 200)


def _make_request_test(raw, status, reason, forwarded):
    def test(self):
        self.check_rejected(raw, status, reason, forwarded)
    return test


for _name, _raw, _status, _reason, _fwd in REQUESTS:
    setattr(MalformedTest, "test_" + _name + "_and_connection_closed",
            _make_request_test(_raw, _status, _reason, _fwd))


class MalformedResponseTest(h.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.legacy = h.start_backend("legacy")

    @classmethod
    def tearDownClass(cls):
        cls.legacy.stop()

    def setUp(self):
        self.p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100}))

    def check_bad_response(self, kind):
        with h.Client(self.p.port, timeout=5) as c:
            r = c.request("GET", "/bad?kind=" + kind)
            self.assertLocalReply(r, 502, "bad_upstream_response")
            self.assertNotEqual(r.body, b"ok")
        # Later requests are served (the bad upstream connection was not pooled).
        for _ in range(3):
            self.assertEqual(h.get(self.p.port, "/").status, 200)


def _make_response_test(kind):
    def test(self):
        self.check_bad_response(kind)
    return test


for _kind in BAD_RESPONSE_KINDS:
    setattr(MalformedResponseTest, "test_backend_response_with_%s_is_502" % _kind,
            _make_response_test(_kind))


class RejectAccountingTest(h.ProxyTestCase):
    """A request refused before it became a stream is still counted and logged, with its reason."""

    CASES = [  # (raw request, status, reason, detail)
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
         b"\r\n0\r\n\r\n", 400, "bad_request", None),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, "bad_request", "obs_fold"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-F: " + b"f" * 70000 + b"\r\n\r\n",
         431, "headers_too_large", "headers_too_large"),
        (b"GET /" + b"u" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "uri_too_long",
         "uri_too_long"),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405, "method_not_allowed",
         "connect_not_supported"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417, "expectation_failed",
         "unsupported_expect"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "version_not_supported",
         "unsupported_version"),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n" + b"b" * 2000,
         413, "payload_too_large", "payload_too_large"),
    ]

    def test_every_refused_request_gets_one_access_line_and_one_local_reply_count(self):
        legacy = self.backend("legacy")
        p = self.proxy(h.make_config({"legacy": legacy}, admin=True,
                                     limits={"max_uri_bytes": 1024,
                                             "max_request_body_bytes": 1024},
                                     timeouts={"header_read": "300ms"}))
        for raw, status, reason, _ in self.CASES:
            with h.Client(p.port, timeout=5) as c:
                try:
                    c.send(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.assertLocalReply(c.read_response(), status, reason)
        # A header that never completes: 408 after timeouts.header_read.
        with h.Client(p.port, timeout=5) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            self.assertLocalReply(c.read_response(), 408, "header_timeout")
        expected = [(s, r, d) for _, s, r, d in self.CASES] + [(408, "header_timeout",
                                                                "header_timeout")]
        self.assertEqual(legacy.stats()["requests"], 0)

        p.wait_for(lambda px: len([e for e in px.events
                                   if "request_id" in e and "event" not in e]) >= len(expected), 5)
        text = h.admin(p, "GET", "/metrics").body.decode()
        counts = {}
        for _, reason, _ in expected:
            counts[reason] = counts.get(reason, 0) + 1
        for reason, n in counts.items():
            self.assertEqual(h.metric(text, "cutover_local_replies_total", reason=reason), n,
                             reason)

        def access(px):
            return [e for e in px.events if "request_id" in e and "event" not in e]
        p.wait_for(lambda px: len(access(px)) >= len(expected), 5)
        lines = access(p)
        self.assertEqual(len(lines), len(expected), lines)
        for line, (status, reason, detail) in zip(lines, expected):
            self.assertEqual((line["status"], line["reason"]), (status, reason), line)
            self.assertEqual(line["client"], "127.0.0.1")
            if detail is not None:
                self.assertEqual(line.get("detail"), detail, line)


class StreamLocalReplyAccountingTest(h.ProxyTestCase):
    def test_413_429_502_503_504_each_get_one_access_line_and_one_local_reply_count(self):
        slow = self.backend("slow")
        slow.set_latency(2000)
        dead_port = h.free_port()
        routes = [
            {"name": "limited", "match": {"prefix": "/limited"}, "split": {"slow": 100},
             "rate_limit": {"rate": "1/min"}},
            {"name": "slow", "match": {"prefix": "/slow"}, "split": {"slow": 100}, "timeout": "300ms"},
            {"name": "dead", "match": {"prefix": "/dead"}, "split": {"dead": 100}},
        ]
        cfg = h.make_config({"slow": slow, "dead": [dead_port]}, routes=routes, admin=True,
                            limits={"max_request_body_bytes": 1024})
        cfg["backends"]["dead"]["circuit_breaker"] = {"consecutive_failures": 1, "cooldown": "60s",
                                                      "failure_on": ["connect_error"]}
        p = self.proxy(cfg)
        slow.set_latency(0)
        expected = []
        for target, status, reason in [("/limited", 200, None), ("/limited", 429, "rate_limited"),
                                       ("/dead", 502, "upstream_connect_failure"),
                                       ("/dead", 503, "circuit_open")]:
            r = h.get(p.port, target)
            self.assertEqual(r.status, status, r)
            self.assertEqual(r.header("x-cutover-reason"), reason, r)
            expected.append((status, reason or "none"))
        # A chunked body is refused once it grows past the limit: the stream answers 413.
        with h.Client(p.port, timeout=5) as c:
            c.send(b"POST /slow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   h.chunked_encode(b"x" * 1500, [500, 500, 500]))
            self.assertLocalReply(c.read_response(), 413, "payload_too_large")
            self.assertTrue(c.closed_by_peer(3), "connection left open after the 413")
        expected.append((413, "payload_too_large"))
        slow.set_latency(2000)
        r = h.get(p.port, "/slow")
        self.assertLocalReply(r, 504, "request_timeout")
        expected.append((504, "request_timeout"))

        # The worker counts a request right after writing its response: the scrape may race the
        # last one, so wait (bounded) for it to show.
        deadline = time.monotonic() + 5
        while True:
            text = h.admin(p, "GET", "/metrics").body.decode()
            if h.metric(text, "cutover_local_replies_total", reason="request_timeout") or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for reason in ("rate_limited", "upstream_connect_failure", "circuit_open",
                       "payload_too_large", "request_timeout"):
            self.assertEqual(h.metric(text, "cutover_local_replies_total", reason=reason), 1,
                             reason + "\n" + "\n".join(l for l in text.splitlines()
                                                       if "local_replies" in l))

        def access(px):
            return [e for e in px.events if "request_id" in e and "event" not in e]
        p.wait_for(lambda px: len(access(px)) >= len(expected), 5)
        lines = access(p)
        self.assertEqual([(e["status"], e["reason"]) for e in lines], expected)



class RawBackend:
    """Accepts connections and records every byte each one carries, until the proxy closes it.

    It answers nothing unless `answer_on_head` is set: then, once a request head has arrived, it
    sends those bytes (say, the head and first chunk of a response it never finishes).
    """

    def __init__(self, answer_on_head=None):
        self.answer_on_head = answer_on_head
        self.conns = []  # [bytearray received, closed by the peer?] per connection
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            record = [bytearray(), False]
            with self.lock:
                self.conns.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _serve(self, conn, record):
        conn.settimeout(10)
        answered = False
        try:
            while not self.stopping:
                data = conn.recv(65536)
                if not data:
                    break
                with self.lock:
                    record[0] += data
                    head_done = b"\r\n\r\n" in record[0]
                if self.answer_on_head is not None and head_done and not answered:
                    answered = True
                    conn.sendall(self.answer_on_head)
        except OSError:
            pass  # a reset is a close too
        finally:
            with self.lock:
                record[1] = True
            conn.close()

    def received(self):
        with self.lock:
            return [(bytes(b), closed) for b, closed in self.conns]

    def wait(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.received()):
                return True
            time.sleep(0.01)
        return predicate(self.received())

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=2)


def dechunk_unfinished(raw):
    """The data of a chunked body that stops after a whole chunk, before any last-chunk."""
    data = b""
    while raw:
        size_line, _, rest = raw.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            raise AssertionError("the body was completed with a last-chunk")
        if len(rest) < size + 2 or rest[size:size + 2] != b"\r\n":
            raise AssertionError("a chunk was cut: %r" % raw[:64])
        data += rest[:size]
        raw = rest[size + 2:]
    return data


class BodyLimitTest(h.ProxyTestCase):
    """limits.max_request_body_bytes: 413 before the backend sees anything when Content-Length
    says so, the upstream attempt cut when a chunked body grows past it; the connection closes."""

    LIMIT = 1024

    def start(self, answer_on_head=None):
        self.be = RawBackend(answer_on_head)
        self.addCleanup(self.be.stop)
        self.p = self.proxy(h.make_config({"legacy": [self.be.port]}, admin=True,
                                          limits={"max_request_body_bytes": self.LIMIT}))

    def access_lines(self, n):
        def access(px):
            return [e for e in px.events if "request_id" in e and "event" not in e]
        self.p.wait_for(lambda px: len(access(px)) >= n, 5)
        return access(self.p)

    def local_replies(self, reason):
        return h.metric(h.admin(self.p, "GET", "/metrics").body.decode(),
                        "cutover_local_replies_total", reason=reason)

    def test_content_length_over_the_limit_is_413_the_backend_gets_no_byte_and_the_body_is_not_parsed(self):
        self.start()
        # The body is a whole request: were it parsed after the 413, the backend would get it.
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        body = smuggled + b"p" * (self.LIMIT + 1 - len(smuggled))
        with h.Client(self.p.port, timeout=5) as c:
            c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
            # Answered from the head alone, before any body byte is sent.
            r = c.read_response()
            self.assertLocalReply(r, 413, "payload_too_large")
            self.assertIn("close", r.tokens("connection"))
            try:
                c.send(body + smuggled)  # keep-alive client: the body, then a next request
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.assertTrue(c.closed_by_peer(3), "connection left open after the 413")
        time.sleep(0.2)  # a forwarded byte would have arrived by now
        self.assertEqual(self.be.received(), [], "the backend was contacted")
        # Exactly at the limit is forwarded.
        with h.Client(self.p.port, timeout=5) as c:
            c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
                   % (self.LIMIT, b"q" * self.LIMIT))
            self.assertTrue(self.be.wait(lambda conns: len(conns) == 1 and
                                         conns[0][0].endswith(b"q" * self.LIMIT)))
        lines = self.access_lines(1)
        self.assertEqual([(e["status"], e["reason"], e.get("detail")) for e in lines[:1]],
                         [(413, "payload_too_large", "payload_too_large")])
        self.assertEqual(self.local_replies("payload_too_large"), 1)

    def test_chunked_body_growing_past_the_limit_is_413_and_the_backend_sees_the_request_cut(self):
        self.start()
        head = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        first = b"a" * 600
        with h.Client(self.p.port, timeout=5) as c:
            c.send(head + b"258\r\n" + first + b"\r\n")
            # The head and the first chunk reach the backend (within the limit: streamed).
            self.assertTrue(self.be.wait(lambda conns: len(conns) == 1 and
                                         conns[0][0].endswith(first + b"\r\n")),
                            self.be.received())
            c.send(b"258\r\n" + b"b" * 600 + b"\r\n0\r\n\r\n")  # 1200 bytes: over
            r = c.read_response()
            self.assertLocalReply(r, 413, "payload_too_large")
            self.assertIn("close", r.tokens("connection"))
            self.assertTrue(c.closed_by_peer(3), "connection left open after the 413")
        # The upstream attempt was cut: the backend's connection closed with the body unfinished.
        self.assertTrue(self.be.wait(lambda conns: conns[0][1]), "backend connection still open")
        (received, closed), = self.be.received()
        self.assertTrue(closed)
        self.assertIn(b"\r\ntransfer-encoding: chunked\r\n", received.lower())
        # After the head: the first 600 bytes in whole chunks (re-framed by the proxy), not one
        # byte of the second chunk, and no last-chunk.
        self.assertEqual(dechunk_unfinished(received[received.index(b"\r\n\r\n") + 4:]), first)
        lines = self.access_lines(1)
        self.assertEqual([(e["status"], e["reason"]) for e in lines], [(413, "payload_too_large")])
        self.assertEqual(self.local_replies("payload_too_large"), 1)

    def test_chunked_body_past_the_limit_after_the_response_started_cuts_the_connection(self):
        # The backend starts a chunked response as soon as it has the head, and never ends it.
        self.start(answer_on_head=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"5\r\nearly\r\n")
        with h.Client(self.p.port, timeout=5) as c:
            c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"10\r\n" + b"a" * 16 + b"\r\n")
            r = c.read_head()
            self.assertEqual(r.status, 200)
            self.assertEqual(c.read_line(), b"5\r\n")
            c.send(b"800\r\n" + b"b" * 2048 + b"\r\n")
            # No 413 can follow a 200 on the wire: the response is cut, the connection closed.
            deadline = time.monotonic() + 3
            rest = b""
            while time.monotonic() < deadline and not c.eof:
                c.closed_by_peer(0.5)
                rest += bytes(c.buf)
                del c.buf[:]
            self.assertTrue(c.eof, "connection left open")
            self.assertNotIn(b"0\r\n\r\n", rest, "the cut response was completed")
        self.assertTrue(self.be.wait(lambda conns: conns and conns[0][1]),
                        "backend connection still open")
        lines = self.access_lines(1)
        self.assertEqual([(e["status"], e["reason"]) for e in lines], [(200, "payload_too_large")])
        self.assertEqual(self.local_replies("payload_too_large"), 1)


if __name__ == "__main__":
    h.main()
