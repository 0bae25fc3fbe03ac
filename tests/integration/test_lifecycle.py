#!/usr/bin/env python3
"""Process lifecycle: SIGTERM drain, multiple workers, and `cutover --check`."""

import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def connect_refused(port):
    # A listener being closed may reset a connection that raced into its queue: also a refusal.
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    s.close()
    return False


class DrainTest(h.ProxyTestCase):
    """Phase 2 of a drain on its own (`drain_delay: 0s`, the behaviour before the delay existed);
    the delay itself is tested in test_drain.py."""

    def setUp(self):
        self.legacy = self.backend("legacy")

    def test_sigterm_finishes_in_flight_slow_request_refuses_new_connections_and_exits_0(self):
        p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100},
                                     timeouts={"drain": "5s", "drain_delay": "0s"}))
        result = {}

        def slow_request():
            try:
                with h.Client(p.port, timeout=10) as c:
                    result["resp"] = c.request("GET", "/slow?ms=1500")
                    result["closed"] = c.closed_by_peer(3)
            except Exception as e:  # reported by the main thread
                result["error"] = e

        t = threading.Thread(target=slow_request)
        t.start()
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1, "slow request never arrived")
        p.expect_exit = True
        t_term = time.monotonic()
        p.signal(signal.SIGTERM)

        refused_at = None
        while time.monotonic() - t_term < 1.0:
            if connect_refused(p.port):
                refused_at = time.monotonic() - t_term
                break
            time.sleep(0.02)
        still_running = t.is_alive()

        t.join(timeout=10)
        code = p.wait_exit(timeout=7)
        exited_after = time.monotonic() - t_term

        self.assertNotIn("error", result, "in-flight request failed: %r" % result.get("error"))
        r = result["resp"]
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"slept 1500 ms for /slow?ms=1500\n")
        self.assertIn("close", r.tokens("connection"), "drain answers carry Connection: close")
        self.assertTrue(result["closed"])
        self.assertIsNotNone(refused_at, "new connections still accepted 1 s after SIGTERM")
        self.assertTrue(still_running, "listener closed only after the in-flight request ended")
        self.assertEqual(code, 0, "exit code %s; log:\n%s" % (code, p.log_tail()))
        self.assertLess(exited_after, 5.0 + 1.0)

    def test_sigterm_closes_idle_keepalive_connections_and_exits_promptly(self):
        p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100},
                                     timeouts={"drain": "5s", "drain_delay": "0s"}))
        idle = h.Client(p.port)
        self.addCleanup(idle.close)
        self.assertEqual(idle.request("GET", "/").status, 200)
        p.expect_exit = True
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        self.assertTrue(idle.closed_by_peer(3), "idle keep-alive connection left open")
        code = p.wait_exit(timeout=6)
        self.assertEqual(code, 0, p.log_tail())
        # Nothing was in flight: no reason to wait for the drain timeout.
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_drain_timeout_bounds_exit_when_a_request_outlasts_it(self):
        p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100},
                                     timeouts={"drain": "1s", "drain_delay": "0s"}))
        c = h.Client(p.port, timeout=10)
        self.addCleanup(c.close)
        c.send(h.build_request("GET", "/slow?ms=8000"))
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1)
        p.expect_exit = True
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        code = p.wait_exit(timeout=6)
        self.assertIsNotNone(code, "still running 6 s after SIGTERM with drain 1s")
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_a_request_cut_by_the_drain_deadline_is_logged_with_reason_draining(self):
        # POST /drain (the preStop hook) with a 500 ms deadline; the backend takes 8 s.
        p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100}, admin=True,
                                     timeouts={"drain": "500ms", "drain_delay": "0s"}))
        c = h.Client(p.port, timeout=10)
        self.addCleanup(c.close)
        c.send(h.build_request("GET", "/slow?ms=8000"))
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1)
        p.expect_exit = True
        self.assertEqual(h.admin(p, "POST", "/drain").status, 202)
        # The exchange had no response yet: the cut is all the client gets.
        self.assertTrue(c.closed_by_peer(5), "connection still open after the drain deadline")
        self.assertEqual(bytes(c.buf), b"")
        code = p.wait_exit(timeout=6)
        self.assertEqual(code, 0, p.log_tail())

        def access():
            with p.cond:
                return [e for e in p.events if "request_id" in e and "event" not in e]
        deadline = time.monotonic() + 3  # the pumps may still be reading the last lines
        while not access() and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = access()
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(lines[0]["reason"], "draining", lines[0])
        self.assertEqual(lines[0]["path"], "/slow?ms=8000")
        self.assertFalse(lines[0].get("client_aborted", False), "the client did not leave")
        self.assertEqual(len(p.find_events("drain_timeout")), 1)


class WorkersTest(h.ProxyTestCase):
    def test_two_workers_both_listen_on_the_same_port_and_both_serve(self):
        legacy = self.backend("legacy")
        p = self.proxy(h.make_config({"legacy": legacy}, split={"legacy": 100}, workers=2))
        listening = p.find_events("listening")
        self.assertEqual(sorted(e.get("worker") for e in listening), [0, 1], listening)
        self.assertEqual(len({e.get("address") for e in listening}), 1, listening)

        before = h.thread_switches(p.pid)
        results = []

        def burst():
            ok = 0
            for i in range(100):
                if h.get(p.port, "/?i=%d" % i).status == 200:
                    ok += 1
            results.append(ok)

        threads = [threading.Thread(target=burst) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(results, [100] * 4)
        after = h.thread_switches(p.pid)
        # SO_REUSEPORT spreads 400 connections over both workers: each worker thread wakes up
        # for its share, while an unused thread would barely wake at all.
        busy = [tid for tid, n in after.items() if n - before.get(tid, n) >= 40]
        self.assertGreaterEqual(len(busy), 2, "threads woken: %s" % {
            tid: n - before.get(tid, n) for tid, n in after.items()})


BAD_CONFIG = """\
listeners:
  - name: public
    address: 127.0.0.1:0
workers: 1
backends:
  legacy: { endpoints: ["127.0.0.1:9001"] }
  new: { endpoints: ["127.0.0.1:9002"] }
routes:
  - name: default
    match: { prefix: / }
    split: { new: 140, legacy: 90 }
"""

UNKNOWN_KEY_CONFIG = """\
listeners:
  - name: public
    address: 127.0.0.1:0
backends:
  legacy: { endpoints: ["127.0.0.1:9001"] }
routes:
  - name: default
    match: { prefix: / }
    split: { legacy: 100 }
timeouts:
  conect: 1s
"""

GOOD_CONFIG = """\
listeners:
  - name: public
    address: 127.0.0.1:0
backends:
  legacy: { endpoints: ["127.0.0.1:9001"] }
  new: { endpoints: ["127.0.0.1:9002"] }
routes:
  - name: default
    match: { prefix: / }
    split: { new: 10, legacy: 90 }
admin: { enabled: false }
"""


def closed_without_answer(sock, timeout=3.0):
    """True when the proxy closes `sock` (EOF or reset) without sending a byte."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class ConnectionLimitTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")

    def open_sockets(self, port, n):
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            self.addCleanup(s.close)
            socks.append(s)
        return socks

    def test_connection_over_max_connections_per_worker_is_closed_and_a_freed_slot_serves(self):
        p = self.proxy(h.make_config({"legacy": self.legacy}, admin=True,
                                     limits={"max_connections_per_worker": 4}))
        held = self.open_sockets(p.port, 4)
        for s in held:  # each one is really accepted and served
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 200"))
        extra = self.open_sockets(p.port, 1)[0]
        self.assertTrue(closed_without_answer(extra), "the 5th connection was kept open")
        held[0].close()
        deadline = time.monotonic() + 3
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = h.get(p.port, "/").status
            except (h.HttpError, OSError):
                time.sleep(0.02)
        self.assertEqual(status, 200, "a freed slot did not serve again")
        text = h.admin(p, "GET", "/metrics").body.decode()
        self.assertGreaterEqual(h.metric(text, "cutover_downstream_connections_rejected_total"), 1)
        self.assertEqual(len(p.find_events("connection_limit_reached")), 1, p.log_tail())

    def test_600_connections_each_holding_a_60_kib_partial_header_keep_rss_growth_bounded(self):
        # The largest per-connection memory a client alone controls is the request header buffer
        # (up to limits.max_header_bytes). With 100 connections allowed per worker, 600 clients
        # each sending 60 KiB of an unfinished header hold at most 100 of those buffers (6 MiB),
        # not 600 (36 MiB).
        p = self.proxy(h.make_config({"legacy": self.legacy},
                                     limits={"max_connections_per_worker": 100}))
        base = p.rss_kib()
        socks = self.open_sockets(p.port, 600)
        head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * (60 * 1024)
        for s in socks:
            try:
                s.sendall(head)
            except OSError:
                pass  # closed by the proxy: over the limit
        time.sleep(0.5)  # let the proxy read what it accepted
        growth_mib = (p.rss_kib() - base) / 1024.0
        closed = sum(1 for s in socks if closed_without_answer(s, 0.05))
        print("600 x 60 KiB partial headers, limit 100: RSS +%.1f MiB, %d closed"
              % (growth_mib, closed), file=sys.stderr)
        self.assertGreaterEqual(closed, 450)
        self.assertLess(growth_mib, 20, "RSS grew by %.1f MiB" % growth_mib)


class CheckTest(h.ProxyTestCase):
    def write(self, text):
        d = tempfile.mkdtemp(prefix="cutover-check-")
        path = os.path.join(d, "cutover.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_check_bad_weight_exits_nonzero_and_names_file_line_column(self):
        path = self.write(BAD_CONFIG)
        code, out, err = h.run_binary(["--check", path])
        text = out + err
        self.assertNotEqual(code, 0, text)
        # The bad value sits on line 11 ("split: { new: 140, ..."), the split map at column 12.
        m = re.search(re.escape(path) + r":(\d+):(\d+): ", text)
        self.assertIsNotNone(m, "no %s:line:col: in output:\n%s" % (path, text))
        self.assertEqual(int(m.group(1)), 11, text)
        self.assertIn("split", text)

    def test_check_unknown_key_is_an_error_at_its_line(self):
        path = self.write(UNKNOWN_KEY_CONFIG)
        code, out, err = h.run_binary(["--check", path])
        text = out + err
        self.assertNotEqual(code, 0, text)
        self.assertRegex(text, re.escape(path) + r":11:3: ")
        self.assertIn("conect", text)

    def test_check_reports_every_error_not_just_the_first(self):
        path = self.write(BAD_CONFIG + "timeouts:\n  conect: 1s\n")
        code, out, err = h.run_binary(["--check", path])
        text = out + err
        self.assertNotEqual(code, 0, text)
        lines = set(int(n) for n in re.findall(re.escape(path) + r":(\d+):\d+: ", text))
        self.assertIn(11, lines, text)
        self.assertIn(13, lines, text)

    def test_check_good_config_exits_zero(self):
        path = self.write(GOOD_CONFIG)
        code, out, err = h.run_binary(["--check", path])
        self.assertEqual(code, 0, out + err)

    def test_missing_config_file_fails_to_start(self):
        code, out, err = h.run_binary(["--config", "/nonexistent/cutover.yaml"], timeout=10)
        self.assertNotEqual(code, 0)

    def test_fifo_as_config_fails_start_and_check_at_once_with_a_clear_error(self):
        d = tempfile.mkdtemp(prefix="cutover-fifo-")
        fifo = os.path.join(d, "cutover.yaml")
        os.mkfifo(fifo)  # nobody writes: a blocking open would wait forever
        for mode in ("--config", "--check"):
            t0 = time.monotonic()
            code, out, err = h.run_binary([mode, fifo], timeout=10)
            elapsed = time.monotonic() - t0
            self.assertEqual(code, 1, "%s: %s%s" % (mode, out, err))  # an exit, not a signal
            self.assertIn(fifo + ": cannot read the file: not a regular file (a FIFO)", out + err)
            self.assertLess(elapsed, 5.0, mode)

    def test_config_over_16_mib_is_refused_with_a_clear_error(self):
        d = tempfile.mkdtemp(prefix="cutover-big-")
        path = os.path.join(d, "cutover.yaml")
        with open(path, "w") as f:
            f.truncate(16 * 1024 * 1024 + 1)  # sparse
        code, out, err = h.run_binary(["--check", path], timeout=10)
        self.assertEqual(code, 1, out + err)
        self.assertIn("cannot read the file: larger than 16 MiB", out + err)


if __name__ == "__main__":
    h.main()
