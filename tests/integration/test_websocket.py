#!/usr/bin/env python3
"""Upgrade requests: after the backend's 101 the connection is a two-way byte tunnel."""

import base64
import hashlib
import os
import socket
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class WebSocketTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")
        self.p = self.proxy(h.make_config({"legacy": self.legacy}, split={"legacy": 100}))

    def handshake(self, c):
        key = base64.b64encode(os.urandom(16)).decode()
        c.send(h.build_request("GET", "/ws", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
        r = c.read_response()
        self.assertEqual(r.status, 101, r)
        self.assertEqual(r.header("sec-websocket-accept"), h.ws_accept(key))
        self.assertIn("websocket", r.tokens("upgrade"))
        self.assertIn("upgrade", r.tokens("connection"))
        self.assertEqual(r.header("x-backend"), "legacy")
        return r

    def test_websocket_handshake_and_three_masked_frames_are_echoed(self):
        with h.Client(self.p.port, timeout=5) as c:
            self.handshake(c)
            frames = [(0x1, b"hello through cutover"), (0x2, os.urandom(70000)),
                      (0x1, "third \u2713".encode())]
            for opcode, payload in frames:
                c.send(h.ws_client_frame(opcode, payload))
            for opcode, payload in frames:
                fin, op, got, masked = h.ws_read_frame(c)
                self.assertEqual((fin, op, masked), (True, opcode, False))
                self.assertEqual(got, payload)
            c.send(h.ws_client_frame(0x8, b"\x03\xe8"))
            fin, op, got, masked = h.ws_read_frame(c)
            self.assertEqual((op, got), (0x8, b"\x03\xe8"))
            self.assertTrue(c.closed_by_peer(5), "tunnel not closed after the backend closed")

    def test_websocket_ping_gets_pong(self):
        with h.Client(self.p.port, timeout=5) as c:
            self.handshake(c)
            c.send(h.ws_client_frame(0x9, b"are you there"))
            fin, op, got, masked = h.ws_read_frame(c)
            self.assertEqual((op, got), (0xA, b"are you there"))

    def test_raw_upgrade_tunnels_8mib_both_ways_intact(self):
        blob = os.urandom(8 * 1024 * 1024)
        with h.Client(self.p.port, timeout=10) as c:
            c.send(h.build_request("GET", "/tunnel", [("Upgrade", "echo"),
                                                      ("Connection", "Upgrade")]))
            r = c.read_response()
            self.assertEqual(r.status, 101, r)
            # Send and read in steps so neither side's buffers have to hold it all.
            got = bytearray()
            step = 1 << 20
            for i in range(0, len(blob), step):
                c.send(blob[i:i + step])
                got += c.read_exact(step)
            self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(blob).hexdigest())
            # Client half-close → backend sees EOF and closes → proxy closes the client side.
            c.sock.shutdown(socket.SHUT_WR)
            self.assertTrue(c.closed_by_peer(5))

    def test_upgrade_connection_closed_by_client_frees_the_backend_connection(self):
        self.legacy.reset_stats()
        c = h.Client(self.p.port, timeout=5)
        c.send(h.build_request("GET", "/tunnel", [("Upgrade", "echo"),
                                                  ("Connection", "Upgrade")]))
        self.assertEqual(c.read_response().status, 101)
        c.send(b"ping")
        self.assertEqual(c.read_exact(4), b"ping")
        c.close()
        deadline = h.time.monotonic() + 5
        while h.time.monotonic() < deadline:
            # Only the harness's control connection stays open.
            if self.legacy.stats()["connections_open"] <= 1:
                break
            h.time.sleep(0.05)
        self.assertLessEqual(self.legacy.stats()["connections_open"], 1)


if __name__ == "__main__":
    h.main()
