#!/usr/bin/env python3
"""Request smuggling and response splitting: what crosses the proxy, byte for byte.

A raw recording backend (below) keeps every upstream connection alive, records the exact bytes of
each request it reads (framed strictly by Content-Length or chunked, as a real server would) and
answers with a script. Each test sends its attack over a keep-alive client connection, follows it
with an innocent request on the same connection, and asserts on the exact bytes the backend
received and on the exact responses the client read: a desync on either side shows as an extra,
missing or misattributed request or response.
"""

import os
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class RecordingBackend:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that records raw requests.

    `respond(request_bytes, index)` returns the raw response bytes for each request; by default a
    200 whose body names the request line, so the client can tell whose answer it got.
    """

    def __init__(self, respond=None):
        self.respond = respond or self.echo_request_line
        # Optional: called with each head as it arrives; True closes the connection right there,
        # before the body, as a backend whose idle timeout fires just then would.
        self.close_on_head = None
        self.requests = []  # raw bytes of each request, in arrival order
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @staticmethod
    def echo_request_line(raw, index):
        line = raw.split(b"\r\n", 1)[0]
        body = b"you sent: " + line
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(10)
        buf = b""
        try:
            while not self.stopping:
                close_on_head = self.close_on_head  # the test may clear it meanwhile
                if close_on_head is not None:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    if close_on_head(buf[:buf.index(b"\r\n\r\n") + 4]):
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))  # RST, like a reaped socket
                        return
                raw, buf = self._read_request(conn, buf)
                if raw is None:
                    return
                with self.lock:
                    self.requests.append(raw)
                    index = len(self.requests) - 1
                conn.sendall(self.respond(raw, index))
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn, buf):
        def fill():
            data = conn.recv(65536)
            if not data:
                raise EOFError
            return data

        try:
            while b"\r\n\r\n" not in buf:
                buf += fill()
            head_end = buf.index(b"\r\n\r\n") + 4
            head = buf[:head_end].lower()
            end = head_end
            if b"\r\ntransfer-encoding: chunked\r\n" in head:
                while True:
                    while b"\r\n" not in buf[end:]:
                        buf += fill()
                    line_end = buf.index(b"\r\n", end)
                    size = int(buf[end:line_end].split(b";")[0], 16)
                    end = line_end + 2
                    if size == 0:
                        while b"\r\n" not in buf[end:]:
                            buf += fill()
                        while not buf[end:].startswith(b"\r\n"):  # trailer lines
                            end = buf.index(b"\r\n", end) + 2
                            while b"\r\n" not in buf[end:]:
                                buf += fill()
                        end += 2
                        break
                    while len(buf) < end + size + 2:
                        buf += fill()
                    end += size + 2
            else:
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        end += int(line.split(b":", 1)[1])
                while len(buf) < end:
                    buf += fill()
            return buf[:end], buf[end:]
        except (EOFError, socket.timeout):
            return None, b""

    def wait_requests(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.01)
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.stopping = True
        self.sock.close()


FWD = b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"


def head_lines(raw):
    """The header lines of a raw request or response, in order, without the start line."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")[1:]


def header_values(raw, name):
    name = name.lower().encode()
    return [line.split(b":", 1)[1].strip() for line in head_lines(raw)
            if line.split(b":", 1)[0].lower() == name]


class SmugglingTest(h.ProxyTestCase):
    def start(self, respond=None):
        self.be = RecordingBackend(respond)
        self.addCleanup(self.be.stop)
        # No request_id filter: the forwarded bytes are exactly what the client sent, plus ours.
        self.p = self.proxy(h.make_config({"legacy": [self.be.address]}, split={"legacy": 100},
                                          extra={"filters": ["router"]}))

    def follow_up(self, c, expect_index):
        """An innocent GET on the same client connection gets its own answer."""
        c.send(b"GET /innocent HTTP/1.1\r\nHost: test.local\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"you sent: GET /innocent HTTP/1.1")
        reqs = self.be.wait_requests(expect_index + 1)
        self.assertEqual(len(reqs), expect_index + 1, reqs)
        self.assertTrue(reqs[expect_index].startswith(b"GET /innocent HTTP/1.1\r\n"), reqs)

    def check_forwarded(self, raw, expected, method="GET", follow=True):
        """Sends `raw` on a keep-alive connection: the backend must receive exactly `expected`
        (FWD marks where the proxy's forwarding headers go), and an innocent request after it on
        the same connection must get its own answer."""
        expected = expected.replace(b"FWD", FWD)
        with h.Client(self.p.port) as c:
            c.send(raw)
            r = c.read_response(method)
            line = raw.split(b"\r\n", 1)[0]
            if method != "HEAD":
                self.assertEqual(r.body, b"you sent: " + line.replace(b"HTTP/1.0", b"HTTP/1.1"), r)
            self.assertEqual(self.be.wait_requests(1)[0], expected)
            if follow:
                self.follow_up(c, 1)

    def test_connection_naming_content_length_does_not_strip_framing(self):
        self.start()
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: test.local\r\n\r\n"
        with h.Client(self.p.port) as c:
            c.send(b"POST /upload HTTP/1.1\r\nHost: test.local\r\nConnection: content-length\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
            r = c.read_response()
            self.assertEqual(r.body, b"you sent: POST /upload HTTP/1.1")
            reqs = self.be.wait_requests(1)
            self.assertEqual(reqs[0],
                             b"POST /upload HTTP/1.1\r\nHost: test.local\r\n"
                             b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
            self.follow_up(c, 1)
        self.assertEqual(len(self.be.requests), 2, "the body was parsed as a second request")
        self.assertEqual(self.be.connections, 1, "the upstream connection was not reused")

    def test_connection_naming_transfer_encoding_does_not_strip_framing(self):
        self.start()
        self.check_forwarded(
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nConnection: transfer-encoding\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nFWD"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    def test_connection_cannot_remove_host_or_forwarding_headers(self):
        self.start()
        self.check_forwarded(
            b"GET /a HTTP/1.1\r\nHost: test.local\r\nX-Forwarded-For: 10.1.1.1\r\n"
            b"X-Request-Id: abc\r\n"
            b"Connection: keep-alive, Host, X-Forwarded-For, x-request-id\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: test.local\r\n"
            b"X-Forwarded-For: 10.1.1.1, 127.0.0.1\r\nX-Request-Id: abc\r\n"
            b"X-Forwarded-Proto: http\r\n\r\n")

    def test_every_header_named_in_connection_is_removed_however_many(self):
        self.start()
        names = [b"X-Hop-%d" % i for i in range(40)]
        self.check_forwarded(
            b"GET /a HTTP/1.1\r\nHost: test.local\r\n"
            + b"".join(n + b": secret\r\n" for n in names)
            + b"Connection: " + b", ".join(names[:20]) + b"\r\n"
            + b"Connection: " + b",".join(n.lower() for n in names[20:]) + b"\r\n"
            + b"X-Kept: yes\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: test.local\r\nX-Kept: yes\r\nFWD\r\n")

    def test_chunked_trailers_never_become_head_fields(self):
        self.start()
        # One write: the whole body, trailers included, is parsed before the upstream connection
        # is up, so the head is written after the trailers were read.
        self.check_forwarded(
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nContent-Length: 5\r\nHost: evil\r\nX-Trailer: t\r\n\r\n",
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nFWD"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    def test_http10_request_without_host_is_forwarded_with_the_backend_address(self):
        self.start()
        self.check_forwarded(
            b"GET /old HTTP/1.0\r\n\r\n",
            b"GET /old HTTP/1.1\r\nHost: " + self.be.address.encode() + b"\r\nFWD\r\n",
            follow=False)  # HTTP/1.0 without keep-alive: the connection closes

    def test_body_sent_after_a_dead_pooled_connection_is_replaced_arrives_whole(self):
        # The path where a pooled connection turns out dead and the attempt moves to a fresh one.
        # (The race the fix closes, body bytes arriving during the reconnect itself, lasts less
        # than a loopback connect and is not reproduced reliably here.)
        self.start()
        closed = []

        def close_first_upload(head):
            if head.startswith(b"POST /upload") and not closed:
                closed.append(head)
                return True
            return False

        self.be.close_on_head = close_first_upload
        with h.Client(self.p.port) as c:
            # Warm the pool: one request leaves a keep-alive connection to the backend.
            c.send(b"GET /warm HTTP/1.1\r\nHost: test.local\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            # The head goes to the pooled connection, which the backend resets on seeing it; the
            # body follows later, while the proxy reconnects.
            c.send(b"POST /upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n")
            time.sleep(0.3)
            c.send(b"5\r\nhello\r\n")
            time.sleep(0.1)
            c.send(b"6\r\n world\r\n0\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(len(closed), 1, "the backend never saw the pooled attempt")
            reqs = self.be.wait_requests(2)
            self.assertEqual(self.be.connections, 2)  # the pooled one, then a fresh one
            self.assertEqual(reqs[1],
                             b"POST /upload HTTP/1.1\r\nHost: test.local\r\n" + FWD +
                             b"Transfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            self.be.close_on_head = None
            self.follow_up(c, 2)

    def test_head_with_upgrade_is_not_a_tunnel(self):
        tunnel = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"

        def respond(raw, index):
            if raw.startswith(b"HEAD"):
                return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" \
                       b"Connection: upgrade\r\n\r\n" + tunnel
            return RecordingBackend.echo_request_line(raw, index)

        self.start(respond)
        with h.Client(self.p.port) as c:
            c.send(b"HEAD /ws HTTP/1.1\r\nHost: test.local\r\nConnection: upgrade\r\n"
                   b"Upgrade: websocket\r\n\r\n")
            r = c.read_response("HEAD")
            self.assertLocalReply(r, 502, "bad_upstream_response")
            reqs = self.be.wait_requests(1)
            self.assertEqual(reqs[0],
                             b"HEAD /ws HTTP/1.1\r\nHost: test.local\r\n"
                             b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n")
            # Nothing of the tunnel reached the client, and the connection still works.
            self.follow_up(c, 1)

    def test_interim_response_body_bytes_never_reach_the_client(self):
        final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

        def respond(raw, index):
            if b"/interim" in raw.split(b"\r\n", 1)[0]:
                return b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n" + final
            return RecordingBackend.echo_request_line(raw, index)

        self.start(respond)
        with h.Client(self.p.port) as c:
            c.send(b"GET /interim HTTP/1.1\r\nHost: test.local\r\n\r\n")
            r = c.read_response(skip_interim=False)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.raw_head.startswith(b"HTTP/1.1 200 OK\r\n"), r.raw_head)
            self.assertEqual(r.body, b"ok")
            self.follow_up(c, 1)

    def test_control_bytes_in_the_reason_phrase_are_never_forwarded(self):
        def respond(raw, index):
            if b"/evil" in raw.split(b"\r\n", 1)[0]:
                return b"HTTP/1.1 200 O\x01K\x7f\r\nContent-Length: 2\r\n\r\nok"
            return RecordingBackend.echo_request_line(raw, index)

        self.start(respond)
        with h.Client(self.p.port) as c:
            c.send(b"GET /evil HTTP/1.1\r\nHost: test.local\r\n\r\n")
            r = c.read_response()
            self.assertLocalReply(r, 502, "bad_upstream_response")
            self.assertNotIn(b"\x01", r.raw_head)
            self.follow_up(c, 1)

    def test_backend_connection_naming_content_length_keeps_response_framing(self):
        def respond(raw, index):
            if b"/framed" in raw.split(b"\r\n", 1)[0]:
                return (b"HTTP/1.1 200 OK\r\nConnection: content-length, x-secret\r\n"
                        b"X-Secret: s\r\nContent-Length: 5\r\n\r\nhello")
            return RecordingBackend.echo_request_line(raw, index)

        self.start(respond)
        with h.Client(self.p.port) as c:
            c.send(b"GET /framed HTTP/1.1\r\nHost: test.local\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header_all("content-length"), ["5"])
            self.assertIsNone(r.header("x-secret"))
            self.assertEqual(r.body, b"hello")
            self.follow_up(c, 1)


if __name__ == "__main__":
    h.main()
