#!/usr/bin/env python3
"""Error mapping: what the client sees when the backend is down, slow, resets, or truncates, and
the header-read timeout against a slowloris client."""

import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class ErrorsTest(h.ProxyTestCase):
    def test_backend_port_closed_gives_502_upstream_connect_failure(self):
        dead = h.free_port()
        p = self.proxy(h.make_config({"legacy": [dead]}, split={"legacy": 100},
                                     timeouts={"connect": "1s"}))
        t0 = time.monotonic()
        r = h.get(p.port, "/")
        self.assertLocalReply(r, 502, "upstream_connect_failure")
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_backend_slower_than_upstream_idle_timeout_gives_504_upstream_timeout(self):
        legacy = self.backend("legacy")
        p = self.proxy(h.make_config({"legacy": legacy}, split={"legacy": 100},
                                     timeouts={"upstream_idle": "500ms"}))
        t0 = time.monotonic()
        r = h.get(p.port, "/slow?ms=3000")
        elapsed = time.monotonic() - t0
        self.assertLocalReply(r, 504, "upstream_timeout")
        self.assertTrue(0.4 <= elapsed < 2.5, "504 after %.2fs with a 500ms timeout" % elapsed)
        # A fast request right after is fine.
        self.assertEqual(h.get(p.port, "/").status, 200)

    def test_backend_closing_before_answering_gives_502_upstream_reset(self):
        legacy = self.backend("legacy")
        p = self.proxy(h.make_config({"legacy": legacy}, split={"legacy": 100}))
        r = h.get(p.port, "/close")
        self.assertLocalReply(r, 502, "upstream_reset")

    def check_truncated(self, target):
        legacy = self.backend("legacy")
        p = self.proxy(h.make_config({"legacy": legacy}, split={"legacy": 100}))
        with h.Client(p.port, timeout=5) as c:
            c.send(h.build_request("GET", target))
            r = c.read_head()
            if r.status >= 500:
                return  # the proxy noticed before sending the head: an honest error is fine
            self.assertEqual(r.status, 200)
            got = 0
            try:
                for piece in c.body_chunks(r):
                    got += len(piece)
            except (h.HttpError, ConnectionResetError):
                pass  # connection closed mid-body: what we want
            else:
                self.fail("a truncated backend body reached the client as a complete response "
                          "(%d bytes, framing %s)" % (got, r.framing))
            self.assertLess(got, 1000)
            self.assertTrue(c.eof or c.closed_by_peer(5))

    def test_backend_closing_mid_body_closes_client_connection_before_full_body(self):
        self.check_truncated("/close-mid-body")

    def test_backend_closing_mid_chunked_body_never_sends_the_last_chunk(self):
        self.check_truncated("/close-mid-body?chunked=1")

    def test_slowloris_client_gets_408_while_another_client_is_served(self):
        legacy = self.backend("legacy")
        p = self.proxy(h.make_config({"legacy": legacy}, split={"legacy": 100},
                                     timeouts={"header_read": "1s"}))
        slow = h.Client(p.port, timeout=5)
        self.addCleanup(slow.close)
        fast = h.Client(p.port, timeout=5)
        self.addCleanup(fast.close)
        trickle = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Slow: " + b"z" * 100
        t0 = time.monotonic()
        answered_at = None
        fast_ok = 0
        i = 0
        while time.monotonic() - t0 < 6.0:
            if slow.readable(0):
                answered_at = time.monotonic() - t0
                break
            try:
                slow.send(trickle[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                answered_at = time.monotonic() - t0
                break
            i = min(i + 1, len(trickle) - 1)
            r = fast.request("GET", "/?n=%d" % fast_ok)
            self.assertEqual(r.status, 200)
            fast_ok += 1
            time.sleep(0.2)
        self.assertIsNotNone(answered_at, "trickling client not answered within 6 s")
        self.assertTrue(0.8 <= answered_at <= 3.0,
                        "answered after %.2fs with header_read 1s" % answered_at)
        try:
            r = slow.read_response()
        except ConnectionResetError:
            self.fail("slowloris connection reset without a 408")
        self.assertLocalReply(r, 408, "header_timeout")
        self.assertTrue(slow.closed_by_peer(3))
        self.assertGreaterEqual(fast_ok, 3)
        # The patient client is still served after the slow one was dropped.
        self.assertEqual(fast.request("GET", "/").status, 200)

    def test_idle_client_connection_is_closed_after_downstream_idle(self):
        legacy = self.backend("legacy")
        p = self.proxy(h.make_config({"legacy": legacy}, split={"legacy": 100},
                                     timeouts={"downstream_idle": "500ms"}))
        with h.Client(p.port) as c:
            self.assertEqual(c.request("GET", "/").status, 200)
            t0 = time.monotonic()
            self.assertTrue(c.closed_by_peer(4), "idle keep-alive not closed")
            self.assertGreater(time.monotonic() - t0, 0.3)

    def test_round_robin_reaches_the_live_endpoint_when_the_other_is_down(self):
        legacy = self.backend("legacy")
        dead = h.free_port()
        p = self.proxy(h.make_config({"legacy": [legacy, "127.0.0.1:%d" % dead]},
                                     split={"legacy": 100}, timeouts={"connect": "1s"}))
        statuses = [h.get(p.port, "/").status for _ in range(10)]
        # Round-robin reaches both endpoints: the live one serves, the dead one gives 502.
        self.assertIn(200, statuses)
        self.assertTrue(set(statuses) <= {200, 502}, statuses)


if __name__ == "__main__":
    h.main()
