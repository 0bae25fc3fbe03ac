#!/usr/bin/env python3
"""Streaming with backpressure: 256 MiB each way with the proxy's RSS sampled throughout.

The RSS bound is 64 MiB; sanitizer builds may raise it with CUTOVER_RSS_LIMIT_MIB.
"""

import hashlib
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SIZE = 256 * 1024 * 1024
RSS_LIMIT_KIB = int(os.environ.get("CUTOVER_RSS_LIMIT_MIB", "64")) * 1024
CLIENT_RATE = 48 * 1024 * 1024  # bytes/s the "slow" reader consumes: slower than the backend


class RssSampler:
    """Samples a pid's VmRSS every 50 ms in a thread; keeps the maximum."""

    def __init__(self, pid):
        self.pid = pid
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            v = h.rss_kib(self.pid)
            if v is not None:
                self.max_kib = max(self.max_kib, v)
                self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(timeout=2)


class StreamingTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")
        self.p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100}))

    def test_256mib_download_to_a_slow_reader_keeps_proxy_rss_under_64mib(self):
        hasher = hashlib.sha256()
        got = 0
        with RssSampler(self.p.pid) as rss, h.Client(self.p.port, timeout=20) as c:
            c.sock.setsockopt(h.socket.SOL_SOCKET, h.socket.SO_RCVBUF, 256 * 1024)
            c.send(h.build_request("GET", "/bytes?n=%d" % SIZE))
            r = c.read_head()
            self.assertEqual(r.status, 200)
            # Stall completely for 2 s after the first MiB: the backend keeps pushing, so
            # anything not held back by backpressure piles up in the proxy.
            stalled = False
            t0 = time.monotonic()
            for piece in c.body_chunks(r, max_read=256 * 1024):
                hasher.update(piece)
                got += len(piece)
                if not stalled and got >= 1 << 20:
                    stalled = True
                    time.sleep(2.0)
                    t0 = time.monotonic() - got / CLIENT_RATE
                ahead = got / CLIENT_RATE - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            self.assertGreater(rss.samples, 20)
            peak = rss.max_kib
        sys.stderr.write("[download: proxy peak RSS %d KiB] " % peak)
        self.assertEqual(got, SIZE)
        self.assertEqual(hasher.hexdigest(), h.pattern_sha256(SIZE))
        self.assertLess(peak, RSS_LIMIT_KIB, "proxy RSS peaked at %d KiB" % peak)

    def test_256mib_upload_to_a_slow_backend_arrives_intact_with_rss_under_64mib(self):
        block = os.urandom(1 << 20)
        hasher = hashlib.sha256()
        with RssSampler(self.p.pid) as rss, h.Client(self.p.port, timeout=30) as c:
            # The backend waits 2 s before reading: the client keeps sending meanwhile.
            c.send(b"POST /upload?pause_ms=2000 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                   % SIZE)
            for i in range(SIZE // len(block)):
                piece = block[i % 7:] + block[:i % 7]  # vary the content per MiB
                hasher.update(piece)
                c.send(piece)
            r = c.read_response()
            peak = rss.max_kib
            self.assertGreater(rss.samples, 20)
        sys.stderr.write("[upload: proxy peak RSS %d KiB] " % peak)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["bytes"], SIZE)
        self.assertEqual(r.json()["sha256"], hasher.hexdigest())
        self.assertLess(peak, RSS_LIMIT_KIB, "proxy RSS peaked at %d KiB" % peak)


if __name__ == "__main__":
    h.main()
