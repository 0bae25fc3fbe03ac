#!/usr/bin/env python3
"""Demo and test backend for cutover: a small HTTP/1.1 server on asyncio streams (stdlib only).

It answers with its name in the body and in an `x-backend` header, and can be told to add latency,
fail a share of requests, close mid-body, send malformed responses, or echo WebSocket frames, so the
demo and the integration tests share one backend.

    demo_backend.py --name legacy --port 9001 [--host 127.0.0.1] [--latency-ms N]
                    [--fail-percent P --fail-status 503] [--ready-file PATH]
                    [--keepalive-timeout-ms N]

With --port 0 the kernel picks the port; once bound the server prints `LISTENING <port>` on stdout
(and writes the port to --ready-file when given).

Endpoints (any method unless noted; query `latency_ms=N` and `fail=1` work on every path):
  /                         200 "hello from <name>\\n" (also any unknown path)
  /health                   200 "ok", or 503 after POST /admin/health-fail (POST /admin/health-ok resets)
  /echo                     JSON: method, target, path, query, version, headers [[name, value], ...]
                            as received, client address, body_length, body_sha256
  /bytes?n=N[&chunked=1][&chunk=65536]
                            N bytes of PATTERN (byte i is PATTERN[i % 64]), Content-Length or chunked
  /upload[?pause_ms=N]      consumes any body streaming (optionally after a pause), answers
                            {"bytes": N, "sha256": "..."}
  /slow?ms=N                waits N ms, then 200 "slept N ms for <target>\\n"
  /close-mid-body[?chunked=1]
                            headers promising 1000 bytes (or chunked), 100 bytes, then close
  /close                    closes the connection without answering
  /status?code=N            answers with that status
  /retry-after?code=503&s=1 that status with Retry-After: s
  /cookie                   200 with Set-Cookie: app_session=<name>; Path=/
  /hop                      response carrying hop-by-hop headers (Connection-named, Keep-Alive, ...)
  /bad?kind=K               a malformed response, then close. K: status_line, nul_header,
                            space_before_colon, two_cl, cl_te, obs_fold, bare_lf, bare_cr,
                            huge_headers
  /stats                    {"connections_accepted", "connections_open", "requests", "in_flight"}
                            (requests to /stats and /admin/* are not counted)
  POST /admin/reset-stats   zeroes the counters
  POST /admin/fail?percent=P&status=S
                            fail P% of later requests with S (0 clears); exact ratio, not random
  POST /admin/latency?ms=N  add N ms to every later request
  Upgrade: websocket        101 with Sec-WebSocket-Accept, then echoes frames (ping → pong,
                            close → close)
  Upgrade: echo             101, then echoes raw bytes until the peer closes
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import struct
import sys
from urllib.parse import parse_qs, urlsplit

PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"  # 64 bytes
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 1024 * 1024
READ_CHUNK = 256 * 1024

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted",
    204: "No Content", 301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def pattern_block(offset, size):
    """`size` bytes of the repeating PATTERN starting at absolute stream offset `offset`."""
    start = offset % len(PATTERN)
    reps = (start + size) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + size]


class BadRequest(Exception):
    pass


class State:
    def __init__(self, args):
        self.name = args.name
        self.latency_ms = args.latency_ms
        self.fail_percent = args.fail_percent
        self.fail_status = args.fail_status
        self.fail_acc = 0
        self.health_ok = True
        self.keepalive_timeout = args.keepalive_timeout_ms / 1000.0 if args.keepalive_timeout_ms else None
        self.reset()
        self.connections_open = 0
        self.in_flight = 0

    def reset(self):
        self.connections_accepted = 0
        self.requests = 0

    def should_fail(self):
        # Deterministic accumulator: exactly `percent` of every 100 requests fail.
        if self.fail_percent <= 0:
            return False
        self.fail_acc += self.fail_percent
        if self.fail_acc >= 100:
            self.fail_acc -= 100
            return True
        return False


class Request:
    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # [(name, value)] as received
        split = urlsplit(target)
        self.path = split.path or "/"
        self.query_string = split.query
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_tokens(self, name):
        out = []
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def qint(self, key, default):
        try:
            return int(self.query.get(key, default))
        except ValueError:
            return default


class Body:
    """Streaming request body reader: Content-Length, chunked, or none."""

    def __init__(self, conn, length=0, chunked=False):
        self.conn = conn
        self.remaining = length
        self.chunked = chunked
        self.chunk_left = 0
        self.done = not chunked and length == 0
        self.expect_continue = False

    async def _continue(self):
        if self.expect_continue:
            self.expect_continue = False
            self.conn.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self.conn.writer.drain()

    async def read(self, n=READ_CHUNK):
        """Returns up to n bytes, or b"" at the end of the body."""
        if self.done:
            return b""
        await self._continue()
        r = self.conn.reader
        if not self.chunked:
            data = await r.read(min(n, self.remaining))
            if not data:
                raise ConnectionError("client closed mid-body")
            self.remaining -= len(data)
            if self.remaining == 0:
                self.done = True
            return data
        if self.chunk_left == 0:
            line = await r.readline()
            if not line.endswith(b"\n"):
                raise ConnectionError("client closed mid-body")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadRequest("bad chunk size %r" % size_text)
            if size == 0:
                while True:  # trailers
                    t = await r.readline()
                    if not t.endswith(b"\n"):
                        raise ConnectionError("client closed in trailers")
                    if t in (b"\r\n", b"\n"):
                        break
                self.done = True
                return b""
            self.chunk_left = size
        data = await r.read(min(n, self.chunk_left))
        if not data:
            raise ConnectionError("client closed mid-chunk")
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            crlf = await r.readline()
            if crlf not in (b"\r\n", b"\n"):
                raise BadRequest("chunk not followed by CRLF")
        return data

    async def drain(self):
        while await self.read():
            pass


class Connection:
    def __init__(self, state, reader, writer):
        self.state = state
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = "%s:%s" % (peer[0], peer[1]) if peer else ""
        self.keep_alive = True
        self.upgraded = False

    # ---- response writing -------------------------------------------------------------------
    def _head(self, req, status, headers, framing):
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        lines.append("x-backend: %s" % self.state.name)
        rid = req.header("x-request-id") if req else None
        if rid is not None:
            lines.append("x-request-id: %s" % rid)
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        lines += framing
        if not self.keep_alive:
            lines.append("Connection: close")
        elif req is not None and req.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def respond(self, req, status, body=b"", headers=(), content_type="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        hdrs = list(headers)
        if content_type and status not in (204, 304):
            hdrs.append(("Content-Type", content_type))
        framing = [] if status in (204, 304) else ["Content-Length: %d" % len(body)]
        self.writer.write(self._head(req, status, hdrs, framing))
        if req.method != "HEAD" and status not in (204, 304):
            self.writer.write(body)
        await self.writer.drain()

    async def respond_json(self, req, obj, status=200):
        await self.respond(req, status, json.dumps(obj) + "\n", content_type="application/json")

    async def respond_stream(self, req, status, total, chunk, chunked, headers=()):
        hdrs = list(headers) + [("Content-Type", "application/octet-stream")]
        close_delimited = False
        if chunked and req.version == "HTTP/1.0":
            # HTTP/1.0 has no chunked framing: the end of the body is the close.
            chunked = False
            close_delimited = True
            self.keep_alive = False
        framing = ["Transfer-Encoding: chunked"] if chunked else (
            [] if close_delimited else ["Content-Length: %d" % total])
        self.writer.write(self._head(req, status, hdrs, framing))
        if req.method == "HEAD":
            await self.writer.drain()
            return
        # One block covers every chunk: slices start at a PATTERN-aligned offset.
        block = memoryview(pattern_block(0, chunk + len(PATTERN)))
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            start = sent % len(PATTERN)
            data = block[start:start + n]
            if chunked:
                self.writer.write(b"%x\r\n" % n)
                self.writer.write(data)
                self.writer.write(b"\r\n")
            else:
                self.writer.write(data)
            sent += n
            await self.writer.drain()
        if chunked:
            self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    # ---- request reading --------------------------------------------------------------------
    async def read_head(self):
        """Returns (request line, [(name, value)]) or None at a clean EOF between requests."""
        total = 0
        first = b""
        while not first.strip():  # tolerate empty lines before a request (RFC 9112 2.2)
            if self.state.keepalive_timeout is not None:
                try:
                    first = await asyncio.wait_for(self.reader.readline(),
                                                   self.state.keepalive_timeout)
                except asyncio.TimeoutError:
                    return None
            else:
                first = await self.reader.readline()
            if not first:
                return None
            if not first.endswith(b"\n"):
                return None
        total += len(first)
        headers = []
        while True:
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise ConnectionError("closed inside headers")
            total += len(line)
            if total > MAX_HEAD_BYTES:
                raise BadRequest("header block too large")
            if line in (b"\r\n", b"\n"):
                break
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and headers:
                name, value = headers[-1]
                headers[-1] = (name, value + " " + text.strip())
                continue
            if ":" not in text:
                raise BadRequest("header line without colon")
            name, value = text.split(":", 1)
            headers.append((name, value.strip(" \t")))
        return first.decode("latin-1").rstrip("\r\n"), headers

    async def serve(self):
        st = self.state
        st.connections_accepted += 1
        st.connections_open += 1
        try:
            while self.keep_alive and not self.upgraded:
                try:
                    head = await self.read_head()
                except BadRequest as e:
                    self.keep_alive = False
                    self.writer.write(b"HTTP/1.1 400 Bad Request\r\nx-backend: %s\r\n"
                                      b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                      % (st.name.encode(), len(str(e)), str(e).encode()))
                    await self.writer.drain()
                    break
                if head is None:
                    break
                if not await self.handle(*head):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        except asyncio.CancelledError:
            # Shutdown (SIGTERM) cancels open connections: end quietly.
            self.writer.transport.abort()
            return
        finally:
            st.connections_open -= 1
            try:
                self.writer.close()
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except Exception:
                pass

    async def handle(self, request_line, headers):
        """Handles one request; returns False when the connection must close."""
        st = self.state
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self.keep_alive = False
            await self.respond(Request("GET", "/", "HTTP/1.1", []), 400, "bad request line\n")
            return False
        req = Request(parts[0], parts[1], parts[2], headers)
        conn_tokens = req.header_tokens("connection")
        if req.version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in conn_tokens
        elif "close" in conn_tokens:
            self.keep_alive = False

        te = req.header_tokens("transfer-encoding")
        cl = req.header("content-length")
        if te:
            body = Body(self, chunked=True)
        else:
            try:
                body = Body(self, length=int(cl) if cl is not None else 0)
            except ValueError:
                self.keep_alive = False
                await self.respond(req, 400, "bad content-length\n")
                return False
        if (req.header("expect") or "").lower() == "100-continue" and not body.done:
            body.expect_continue = True

        admin = req.path == "/stats" or req.path.startswith("/admin/")
        if not admin:
            st.requests += 1
            st.in_flight += 1
        try:
            upgrade = req.header_tokens("upgrade")
            if upgrade and "upgrade" in conn_tokens:
                if "websocket" in upgrade and req.header("sec-websocket-key"):
                    await self.websocket(req)
                    return False
                if "echo" in upgrade:
                    await self.raw_echo(req)
                    return False
            if admin:
                await self.admin(req, body)
            else:
                delay = st.latency_ms + req.qint("latency_ms", 0)
                if delay > 0:
                    await asyncio.sleep(delay / 1000.0)
                if req.query.get("fail") == "1" or st.should_fail():
                    await body.drain()
                    await self.respond(req, st.fail_status,
                                       "injected failure from %s\n" % st.name)
                else:
                    if await self.route(req, body) is False:
                        return False
            await body.drain()
        except BadRequest as e:
            self.keep_alive = False
            await self.respond(req, 400, "%s\n" % e)
            return False
        finally:
            if not admin:
                st.in_flight -= 1
        return self.keep_alive

    async def admin(self, req, body):
        st = self.state
        await body.drain()
        if req.path == "/stats":
            await self.respond_json(req, {
                "name": st.name, "connections_accepted": st.connections_accepted,
                "connections_open": st.connections_open, "requests": st.requests,
                "in_flight": st.in_flight})
            return
        if req.method != "POST":
            await self.respond(req, 405, "use POST\n", headers=[("Allow", "POST")])
            return
        if req.path == "/admin/reset-stats":
            st.reset()
        elif req.path == "/admin/health-fail":
            st.health_ok = False
        elif req.path == "/admin/health-ok":
            st.health_ok = True
        elif req.path == "/admin/fail":
            st.fail_percent = max(0, min(100, req.qint("percent", 0)))
            st.fail_status = req.qint("status", st.fail_status)
            st.fail_acc = 0
        elif req.path == "/admin/latency":
            st.latency_ms = max(0, req.qint("ms", 0))
        else:
            await self.respond(req, 404, "no such admin endpoint\n")
            return
        await self.respond(req, 200, "ok\n")

    async def route(self, req, body):
        st = self.state
        p = req.path
        if p == "/health":
            await self.respond(req, 200 if st.health_ok else 503,
                               "ok" if st.health_ok else "unhealthy")
        elif p == "/echo":
            h = hashlib.sha256()
            n = 0
            while True:
                data = await body.read()
                if not data:
                    break
                h.update(data)
                n += len(data)
            await self.respond_json(req, {
                "backend": st.name, "method": req.method, "target": req.target,
                "path": req.path, "query": req.query_string, "version": req.version,
                "headers": [[k, v] for k, v in req.headers], "client": self.peer,
                "body_length": n, "body_sha256": h.hexdigest()})
        elif p == "/upload":
            pause = req.qint("pause_ms", 0)
            if pause > 0:
                await asyncio.sleep(pause / 1000.0)
            h = hashlib.sha256()
            n = 0
            while True:
                data = await body.read()
                if not data:
                    break
                h.update(data)
                n += len(data)
            await self.respond_json(req, {"backend": st.name, "bytes": n,
                                          "sha256": h.hexdigest()})
        elif p == "/bytes":
            await body.drain()
            total = max(0, req.qint("n", 0))
            chunk = max(1, min(req.qint("chunk", 65536), 4 * 1024 * 1024))
            await self.respond_stream(req, 200, total, chunk, req.query.get("chunked") == "1")
        elif p == "/slow":
            ms = max(0, req.qint("ms", 1000))
            await body.drain()
            await asyncio.sleep(ms / 1000.0)
            await self.respond(req, 200, "slept %d ms for %s\n" % (ms, req.target))
        elif p == "/close-mid-body":
            await body.drain()
            if req.query.get("chunked") == "1":
                head = self._head(req, 200, [("Content-Type", "text/plain")],
                                  ["Transfer-Encoding: chunked"])
                self.writer.write(head + b"64\r\n" + b"x" * 100 + b"\r\n")
            else:
                head = self._head(req, 200, [("Content-Type", "text/plain")],
                                  ["Content-Length: 1000"])
                self.writer.write(head + b"x" * 100)
            await self.writer.drain()
            self.keep_alive = False
            return False
        elif p == "/close":
            self.keep_alive = False
            return False
        elif p == "/status":
            code = req.qint("code", 200)
            await body.drain()
            await self.respond(req, code, "status %d from %s\n" % (code, st.name))
        elif p == "/retry-after":
            code = req.qint("code", 503)
            await body.drain()
            await self.respond(req, code, "retry later\n",
                               headers=[("Retry-After", str(req.qint("s", 1)))])
        elif p == "/hop":
            await body.drain()
            await self.respond(req, 200, "hop\n", headers=[
                ("Connection", "X-Resp-Hop"), ("X-Resp-Hop", "secret"),
                ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                ("X-Resp-Normal", "kept")])
        elif p == "/cookie":
            await body.drain()
            await self.respond(req, 200, "cookie\n", headers=[
                ("Set-Cookie", "app_session=%s; Path=/" % st.name)])
        elif p == "/bad":
            await body.drain()
            self.writer.write(bad_response(req.query.get("kind", "status_line")))
            await self.writer.drain()
            self.keep_alive = False
            return False
        else:
            await body.drain()
            await self.respond(req, 200, "hello from %s\n" % st.name)
        return True

    # ---- upgrades -----------------------------------------------------------------------------
    async def websocket(self, req):
        key = req.header("sec-websocket-key").strip().encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.upgraded = True
        self.keep_alive = False
        self.writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                           "x-backend: %s\r\n\r\n" % (accept, self.state.name)).encode())
        await self.writer.drain()
        r = self.reader
        while True:
            b0, b1 = await r.readexactly(2)
            opcode = b0 & 0x0F
            masked = b1 & 0x80
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await r.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await r.readexactly(8))[0]
            mask = await r.readexactly(4) if masked else None
            payload = await r.readexactly(n)
            if mask:
                payload = unmask(payload, mask)
            if opcode == 0x9:  # ping → pong
                self.writer.write(ws_frame(0xA, payload))
            elif opcode == 0x8:  # close → echo the close, then end
                self.writer.write(ws_frame(0x8, payload))
                await self.writer.drain()
                return
            elif opcode == 0xA:
                pass
            else:
                self.writer.write(ws_frame(opcode, payload, fin=bool(b0 & 0x80)))
            await self.writer.drain()

    async def raw_echo(self, req):
        self.upgraded = True
        self.keep_alive = False
        self.writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                           "Connection: Upgrade\r\nx-backend: %s\r\n\r\n"
                           % self.state.name).encode())
        await self.writer.drain()
        while True:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                break
            self.writer.write(data)
            await self.writer.drain()
        if self.writer.can_write_eof():
            self.writer.write_eof()


def unmask(payload, mask):
    n = len(payload)
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


def ws_frame(opcode, payload, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


def bad_response(kind):
    ok_tail = b"Content-Length: 2\r\n\r\nok"
    table = {
        "status_line": b"HTTP/1.1 2x0 OK\r\n" + ok_tail,
        "nul_header": b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\n" + ok_tail,
        "space_before_colon": b"HTTP/1.1 200 OK\r\nX-Bad : v\r\n" + ok_tail,
        "two_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + ok_tail,
        "cl_te": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + ok_tail,
        "obs_fold": b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\n" + ok_tail,
        "bare_lf": b"HTTP/1.1 200 OK\r\nX-Bare: lf\n" + ok_tail,
        "bare_cr": b"HTTP/1.1 200 OK\r\nX-Bare: a\rb\r\n" + ok_tail,
        "huge_headers": b"HTTP/1.1 200 OK\r\n"
                        + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(100))
                        + ok_tail,
    }
    return table.get(kind, table["status_line"])


async def main_async(args):
    state = State(args)

    async def on_client(reader, writer):
        await Connection(state, reader, writer).serve()

    server = await asyncio.start_server(on_client, args.host, args.port, limit=MAX_HEAD_BYTES,
                                        reuse_address=True, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.ready_file)
    sys.stdout.write("LISTENING %d\n" % port)
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
        server.close()


def main():
    ap = argparse.ArgumentParser(description="cutover demo backend")
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--fail-percent", type=int, default=0)
    ap.add_argument("--fail-status", type=int, default=503)
    ap.add_argument("--ready-file")
    ap.add_argument("--keepalive-timeout-ms", type=int, default=0,
                    help="close a keep-alive connection idle this long (0 = never)")
    args = ap.parse_args()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
