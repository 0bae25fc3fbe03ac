#!/usr/bin/env python3
"""Strict framing both ways: malformed requests are answered locally and the connection closed,
never forwarded; malformed backend responses become 502 bad_upstream_response."""

import os
import sys
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
    ]

    def test_every_refused_request_gets_one_access_line_and_one_local_reply_count(self):
        legacy = self.backend("legacy")
        p = self.proxy(h.make_config({"legacy": legacy}, admin=True,
                                     limits={"max_uri_bytes": 1024},
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
    def test_429_502_503_504_each_get_one_access_line_and_one_local_reply_count(self):
        slow = self.backend("slow")
        slow.set_latency(2000)
        dead_port = h.free_port()
        routes = [
            {"name": "limited", "match": {"prefix": "/limited"}, "split": {"slow": 100},
             "rate_limit": {"rate": "1/min"}},
            {"name": "slow", "match": {"prefix": "/slow"}, "split": {"slow": 100}, "timeout": "300ms"},
            {"name": "dead", "match": {"prefix": "/dead"}, "split": {"dead": 100}},
        ]
        cfg = h.make_config({"slow": slow, "dead": [dead_port]}, routes=routes, admin=True)
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
                       "request_timeout"):
            self.assertEqual(h.metric(text, "cutover_local_replies_total", reason=reason), 1,
                             reason + "\n" + "\n".join(l for l in text.splitlines()
                                                       if "local_replies" in l))

        def access(px):
            return [e for e in px.events if "request_id" in e and "event" not in e]
        p.wait_for(lambda px: len(access(px)) >= len(expected), 5)
        lines = access(p)
        self.assertEqual([(e["status"], e["reason"]) for e in lines], expected)


if __name__ == "__main__":
    h.main()
