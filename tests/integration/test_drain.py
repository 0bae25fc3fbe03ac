#!/usr/bin/env python3
"""Two-phase drain: during timeouts.drain_delay new connections are still accepted and served (one
request each, Connection: close) while /ready says 503; then the listeners close, in-flight requests
finish, tunnels are closed with a FIN, and the process exits 0. A second SIGTERM ends it at once."""

import base64
import os
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def connect_refused(port):
    """True when a new connection is refused (or reset while the listener closes)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    s.close()
    return False


def peer_close_kind(client, timeout):
    """How the peer ends `client`: "eof" (FIN), "reset" (RST), None (still open), or "data"."""
    if client.buf:
        return "data"
    client.sock.settimeout(timeout)
    try:
        data = client.sock.recv(4096)
    except socket.timeout:
        return None
    except ConnectionResetError:
        return "reset"
    return "eof" if data == b"" else "data"


def access_lines(p):
    with p.cond:
        return [e for e in p.events if "request_id" in e and "event" not in e]


def wait_access(p, pred, timeout=3.0):
    deadline = time.monotonic() + timeout  # the pumps may still be reading the last lines
    while time.monotonic() < deadline:
        got = [e for e in access_lines(p) if pred(e)]
        if got:
            return got
        time.sleep(0.02)
    return [e for e in access_lines(p) if pred(e)]


class SlowRequest(threading.Thread):
    """One request on a new connection in a thread: response, whether the proxy then closed the
    connection, and when the response arrived."""

    def __init__(self, port, target):
        super().__init__(daemon=True)
        self.port, self.target = port, target
        self.resp = self.error = self.done_at = None
        self.closed = False

    def run(self):
        try:
            with h.Client(self.port, timeout=15) as c:
                self.resp = c.request("GET", self.target)
                self.done_at = time.monotonic()
                self.closed = c.closed_by_peer(3)
        except Exception as e:  # reported by the test thread
            self.error = e


class DrainTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")

    def start(self, **timeouts):
        return self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100}, admin=True,
                                        timeouts=timeouts))

    def draining_metric(self, p):
        return h.metric(h.admin(p, "GET", "/metrics").body.decode(), "cutover_draining")

    def test_during_drain_delay_new_connections_every_20ms_are_all_served_with_connection_close(self):
        p = self.start(drain_delay="2s", drain="5s")
        self.assertEqual(self.draining_metric(p), 0)
        idle = h.Client(p.port, timeout=5)
        self.addCleanup(idle.close)
        self.assertEqual(idle.request("GET", "/before").status, 200)  # now an idle keep-alive

        p.expect_exit = True
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        self.assertTrue(p.wait_for(lambda px: px.find_events("drain_started"), 2), p.log_tail())
        # The idle keep-alive connection is closed at once, with a FIN (between requests).
        self.assertEqual(peer_close_kind(idle, 1.0), "eof", "idle keep-alive not closed politely")

        # The listeners close no earlier than 2 s after t0: every connection opened and answered
        # before t0 + 1.9 s falls inside the delay.
        attempts, refused, failures, ready = 0, 0, [], []
        while time.monotonic() - t0 < 1.9:
            attempts += 1
            try:
                c = h.Client(p.port, timeout=2)
            except (ConnectionRefusedError, ConnectionResetError) as e:
                refused += 1
                failures.append("connect %d: %r" % (attempts, e))
                continue
            with c:
                try:
                    r = c.request("GET", "/n%d" % attempts)
                    if r.status != 200 or "close" not in r.tokens("connection"):
                        failures.append("request %d: %r" % (attempts, r))
                    elif not c.closed_by_peer(1):
                        failures.append("request %d: connection left open" % attempts)
                except Exception as e:
                    failures.append("request %d: %r" % (attempts, e))
            if attempts == 20:
                r = h.admin(p, "GET", "/ready")
                ready.append((r.status, r.body))
                ready.append(self.draining_metric(p))
            time.sleep(0.02)
        print("drain_delay 2s: %d connections opened and served, %d refused"
              % (attempts, refused), file=sys.stderr)
        self.assertEqual(refused, 0, failures[:5])
        self.assertEqual(failures, [])
        self.assertGreaterEqual(attempts, 40, "the client loop did not cover the delay")
        self.assertEqual(ready, [(503, b"draining\n"), 1])
        started = p.find_events("drain_started")
        self.assertEqual([(e["why"], e["delay_ms"]) for e in started], [("SIGTERM", 2000)])

        # Nothing in flight after the delay: the listeners close and the process exits 0.
        code = p.wait_exit(timeout=3)
        self.assertEqual(code, 0, p.log_tail())
        self.assertGreaterEqual(time.monotonic() - t0, 2.0)
        closed = p.find_events("drain_listeners_closed")
        self.assertEqual(len(closed), 1, p.log_tail())
        self.assertGreaterEqual(closed[0]["after_ms"], 2000)
        self.assertEqual(len(p.find_events("drained")), 1, p.log_tail())
        self.assertEqual(p.find_events("drain_timeout"), [])

    def test_after_the_delay_new_connections_are_refused_while_in_flight_finishes_then_exit_0(self):
        p = self.start(drain_delay="1s", drain="5s")
        p.expect_exit = True
        p.signal(signal.SIGTERM)
        self.assertTrue(p.wait_for(lambda px: px.find_events("drain_started"), 2), p.log_tail())
        # Accepted during the delay, still in flight (the backend takes 2 s) when it ends.
        slow = SlowRequest(p.port, "/slow?ms=2000")
        slow.start()
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1, "slow request never arrived")
        self.assertEqual(self.draining_metric(p), 1)

        self.assertTrue(p.wait_for(lambda px: px.find_events("drain_listeners_closed"), 3),
                        p.log_tail())
        deadline = time.monotonic() + 1
        refused = connect_refused(p.port)
        while not refused and time.monotonic() < deadline:
            time.sleep(0.02)
            refused = connect_refused(p.port)
        self.assertTrue(refused, "a new connection was accepted after the delay")
        self.assertTrue(slow.is_alive(), "the slow request ended before the listeners closed")
        self.assertEqual(self.draining_metric(p), 2)  # the admin port stays up until the end

        slow.join(timeout=10)
        self.assertIsNone(slow.error, "in-flight request failed: %r" % slow.error)
        self.assertEqual(slow.resp.status, 200)
        self.assertEqual(slow.resp.body, b"slept 2000 ms for /slow?ms=2000\n")
        self.assertIn("close", slow.resp.tokens("connection"))
        self.assertTrue(slow.closed)
        code = p.wait_exit(timeout=5)
        exited_at = time.monotonic()
        self.assertEqual(code, 0, p.log_tail())
        self.assertGreater(exited_at, slow.done_at)
        self.assertEqual(len(p.find_events("drained")), 1, p.log_tail())
        self.assertEqual(p.find_events("drain_timeout"), [])
        phase2 = [e for e in p.find_events("drain_worker") if e.get("phase") == 2]
        self.assertEqual([(e["in_flight"], e["tunnels"]) for e in phase2], [(1, 0)], phase2)

    def open_websocket(self, p):
        c = h.Client(p.port, timeout=5)
        self.addCleanup(c.close)
        key = base64.b64encode(os.urandom(16)).decode()
        c.send(h.build_request("GET", "/ws", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
        r = c.read_response()
        self.assertEqual(r.status, 101, r)
        return c

    def echo(self, ws, text):
        ws.send(h.ws_client_frame(0x1, text))
        fin, op, got, masked = h.ws_read_frame(ws)
        self.assertEqual((op, got), (0x1, text))

    def test_websocket_open_at_drain_is_closed_with_a_fin_once_in_flight_requests_finish(self):
        p = self.start(drain_delay="500ms", drain="5s")
        ws = self.open_websocket(p)
        self.echo(ws, b"before the drain")
        slow = SlowRequest(p.port, "/slow?ms=1500")
        slow.start()
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1, "slow request never arrived")

        p.expect_exit = True
        p.signal(signal.SIGTERM)
        self.assertTrue(p.wait_for(lambda px: px.find_events("drain_started"), 2), p.log_tail())
        self.echo(ws, b"while draining")  # the tunnel still carries data during the drain

        # Not closed while the slow request is in flight; closed (FIN, not RST) after it ends.
        kind = peer_close_kind(ws, 5)
        closed_at = time.monotonic()
        slow.join(timeout=10)
        self.assertIsNone(slow.error, "in-flight request failed: %r" % slow.error)
        self.assertEqual(slow.resp.status, 200)
        self.assertEqual(kind, "eof", "the tunnel's client side was not closed with a FIN")
        self.assertGreaterEqual(closed_at, slow.done_at, "tunnel closed before in-flight ended")
        ws.close()  # the proxy lingers until the client closes too
        self.assertEqual(p.wait_exit(timeout=5), 0, p.log_tail())
        closed = p.find_events("drain_tunnels_closed")
        self.assertEqual([e["tunnels"] for e in closed], [1], p.log_tail())
        lines = wait_access(p, lambda e: e.get("path") == "/ws")
        self.assertEqual([(e["status"], e.get("reason")) for e in lines], [(101, "draining")])

    def test_second_sigterm_during_the_drain_exits_at_once_cutting_what_is_in_flight(self):
        p = self.start(drain="20s")  # the default drain_delay, 5 s
        c = h.Client(p.port, timeout=10)
        self.addCleanup(c.close)
        c.send(h.build_request("GET", "/slow?ms=8000"))
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1, "slow request never arrived")
        p.expect_exit = True
        p.signal(signal.SIGTERM)
        self.assertTrue(p.wait_for(lambda px: px.find_events("drain_started"), 2), p.log_tail())
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        code = p.wait_exit(timeout=3)
        elapsed = time.monotonic() - t0
        self.assertEqual(code, 0, p.log_tail())
        self.assertLess(elapsed, 1.0)
        forced = p.find_events("drain_forced")
        self.assertEqual([(e["why"], e["phase"]) for e in forced], [("SIGTERM", 1)], p.log_tail())
        self.assertTrue(c.closed_by_peer(2), "the in-flight request's connection was left open")
        self.assertEqual(bytes(c.buf), b"")
        lines = wait_access(p, lambda e: e.get("path") == "/slow?ms=8000")
        self.assertEqual([e.get("reason") for e in lines], ["draining"])

    def test_sigterm_after_post_drain_does_not_force_the_drain_goes_on(self):
        # Kubernetes sends SIGTERM after a preStop hook that called POST /drain: that is the first
        # signal, not a second one, so the in-flight request still finishes.
        p = self.start(drain_delay="300ms", drain="5s")
        slow = SlowRequest(p.port, "/slow?ms=1500")
        slow.start()
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1, "slow request never arrived")
        p.expect_exit = True
        self.assertEqual(h.admin(p, "POST", "/drain").status, 202)
        p.signal(signal.SIGTERM)
        self.assertTrue(p.wait_for(lambda px: px.find_events("drain_signal"), 2), p.log_tail())
        slow.join(timeout=10)
        self.assertIsNone(slow.error, "in-flight request failed: %r" % slow.error)
        self.assertEqual(slow.resp.status, 200)
        self.assertEqual(p.wait_exit(timeout=5), 0, p.log_tail())
        self.assertEqual(p.find_events("drain_forced"), [])
        self.assertEqual([e["why"] for e in p.find_events("drain_started")], ["admin"])

    def test_post_drain_delay_parameter_overrides_the_delay_and_rejects_bad_values(self):
        p = self.start(drain_delay="10s", drain="5s")
        r = h.admin(p, "POST", "/drain?delay=soon")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["ok"], False)
        self.assertEqual(h.admin(p, "GET", "/ready").status, 200, "a rejected drain drained")
        p.expect_exit = True
        r = h.admin(p, "POST", "/drain?delay=0s")
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json(), {"ok": True, "draining": True, "already": False})
        # Listeners close at once (not after the configured 10 s), then the process exits 0.
        self.assertEqual(p.wait_exit(timeout=3), 0, p.log_tail())
        started = p.find_events("drain_started")
        self.assertEqual([(e["why"], e["delay_ms"]) for e in started], [("admin", 0)])


if __name__ == "__main__":
    h.main()
