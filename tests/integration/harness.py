"""Integration-test harness: real cutover binary, real demo backends, raw sockets, all on loopback.

Every child process is started on port 0, tracked by pid and killed at the end of its test (and at
interpreter exit as a backstop); every wait is bounded. Tests use unittest; run one file directly:

    python3 tests/integration/test_proxy_basic.py --binary build/proxy/cutover \
        [--backend tools/demo_backend.py] [unittest args, e.g. -k sticky]

The binary may also come from $CUTOVER_BIN. When it is missing, every test that needs it FAILS.
"""

import atexit
import base64
import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("CUTOVER_BIN", os.path.join(REPO, "build", "proxy", "cutover"))
BACKEND = os.path.join(REPO, "tools", "demo_backend.py")

# The demo backend's body pattern for /bytes: byte i is PATTERN[i % 64].
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"

START_TIMEOUT = 10.0  # seconds to wait for a child to report it is listening
IO_TIMEOUT = 10.0     # default socket timeout for client helpers

_live = []  # every Popen started here, for the atexit backstop
_live_lock = threading.Lock()


def _kill(proc, grace=2.0):
    """Terminates one child by pid: SIGTERM, bounded wait, then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        except ProcessLookupError:
            pass
    with _live_lock:
        if proc in _live:
            _live.remove(proc)


@atexit.register
def _kill_all():
    for p in list(_live):
        _kill(p, grace=1.0)


def _spawn(argv, **kw):
    proc = subprocess.Popen(argv, **kw)
    with _live_lock:
        _live.append(proc)
    return proc


# ---------------------------------------------------------------------------------------------
# Demo backends
# ---------------------------------------------------------------------------------------------

class Backend:
    """A running tools/demo_backend.py. `port` is the kernel-chosen port."""

    def __init__(self, name, proc, port):
        self.name = name
        self.proc = proc
        self.port = port
        self.address = "127.0.0.1:%d" % port
        self._control = None  # keep-alive connection for /stats and /admin
        self.expect_exit = False

    def _control_request(self, method, target):
        # One persistent connection, so querying the counters does not itself open connections
        # after a reset. Reopened once if the backend closed it.
        for attempt in range(2):
            try:
                if self._control is None:
                    self._control = Client(self.port)
                return self._control.request(method, target)
            except (OSError, HttpError):
                if self._control is not None:
                    self._control.close()
                self._control = None
                if attempt == 1:
                    raise

    def stats(self):
        r = self._control_request("GET", "/stats")
        return json.loads(r.body)

    def reset_stats(self):
        self._control_request("POST", "/admin/reset-stats")

    def set_fail(self, percent, status=503):
        self._control_request("POST", "/admin/fail?percent=%d&status=%d" % (percent, status))

    def set_latency(self, ms):
        self._control_request("POST", "/admin/latency?ms=%d" % ms)

    def wait_in_flight(self, n, timeout=5.0):
        """Waits until the backend is handling at least n requests; returns the count seen."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            seen = self.stats()["in_flight"]
            if seen >= n:
                return seen
            time.sleep(0.02)
        return seen

    def stop(self):
        if self._control is not None:
            self._control.close()
            self._control = None
        _kill(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def read_line_bounded(stream, timeout):
    """Reads one line from a pipe with a deadline; returns b"" on timeout or EOF."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return b""
        c = os.read(fd, 1)
        if not c:
            return buf
        buf += c
    return buf


def start_backend(name, backend_path=None, extra_args=()):
    path = backend_path or BACKEND
    proc = _spawn([sys.executable, path, "--name", name, "--port", "0", *extra_args],
                  stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    line = read_line_bounded(proc.stdout, START_TIMEOUT).decode(errors="replace")
    m = re.match(r"LISTENING (\d+)", line)
    if not m:
        _kill(proc)
        raise AssertionError("demo backend %s did not start (got %r)" % (name, line))
    return Backend(name, proc, int(m.group(1)))


def free_port():
    """A port that was free a moment ago and has nothing listening on it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# Config and the proxy
# ---------------------------------------------------------------------------------------------

def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars (enough for cutover configs)."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, k))
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, (dict, list)):
                out.append("%s%s: %s" % (pad, k, "{}" if isinstance(v, dict) else "[]"))
            else:
                out.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2).split("\n")
                out.append("%s- %s" % (pad, inner[0].lstrip()))
                out.extend(inner[1:])
            else:
                out.append("%s- %s" % (pad, _yaml_scalar(v)))
    else:
        out.append(pad + _yaml_scalar(obj))
    return "\n".join(out)


def make_config(backends, split=None, routes=None, workers=1, timeouts=None, limits=None,
                override_header=None, pool=None, admin=False, listeners=None, extra=None):
    """A proxy config dict.

    backends: {"legacy": Backend or [Backend/port/"host:port", ...], "new": ...}
    split: {"new": 10, "legacy": 90} for a single default route on prefix "/" (ignored when
    `routes` is given). admin=False disables the admin listener; True puts it on 127.0.0.1:0.
    """
    def endpoints(v):
        items = v if isinstance(v, (list, tuple)) else [v]
        out = []
        for e in items:
            if isinstance(e, Backend):
                out.append(e.address)
            elif isinstance(e, int):
                out.append("127.0.0.1:%d" % e)
            else:
                out.append(str(e))
        return out

    cfg = {"listeners": listeners or [{"name": "public", "address": "127.0.0.1:0"}],
           "workers": workers}
    if timeouts:
        cfg["timeouts"] = dict(timeouts)
    if limits:
        cfg["limits"] = dict(limits)
    if override_header:
        cfg["override_header"] = override_header
    cfg["backends"] = {}
    for name, v in backends.items():
        b = {"endpoints": endpoints(v)}
        if pool:
            b["pool"] = dict(pool)
        cfg["backends"][name] = b
    if routes is None:
        if split is None:
            split = {name: (100 if i == 0 else 0) for i, name in enumerate(backends)}
        routes = [{"name": "default", "match": {"prefix": "/"}, "split": dict(split)}]
    cfg["routes"] = routes
    cfg["admin"] = {"address": "127.0.0.1:0"} if admin else {"enabled": False}
    if extra:
        cfg.update(extra)
    return cfg


class Proxy:
    """A running cutover. `port` is the first listener's port (read from its "listening" line)."""

    def __init__(self, proc, tmpdir, config_path):
        self.proc = proc
        self.pid = proc.pid
        self.tmpdir = tmpdir
        self.config_path = config_path
        self.lines = []  # decoded log lines from stderr and stdout, in arrival order
        self.events = []  # the lines that parsed as JSON objects
        self.cond = threading.Condition()
        self.port = None
        self.ports = {}  # listener name → port
        self.admin_port = None
        self._threads = []
        self.expect_exit = False  # set when a test stops or signals it on purpose

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            ev = None
            if line.startswith("{"):
                try:
                    ev = json.loads(line)
                except ValueError:
                    ev = None
            with self.cond:
                self.lines.append(line)
                if isinstance(ev, dict):
                    self.events.append(ev)
                self.cond.notify_all()
        stream.close()

    def start_pumps(self):
        for s in (self.proc.stderr, self.proc.stdout):
            t = threading.Thread(target=self._pump, args=(s,), daemon=True)
            t.start()
            self._threads.append(t)

    def find_events(self, name):
        with self.cond:
            return [e for e in self.events if e.get("event") == name]

    def wait_for(self, predicate, timeout):
        """Waits until predicate(self) is truthy, the process exits, or the timeout passes."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = predicate(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return predicate(self)
                self.cond.wait(min(left, 0.1))

    def log_tail(self, n=30):
        with self.cond:
            return "\n".join(self.lines[-n:])

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Exit code, or None when the process is still running after `timeout`."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def rss_kib(self):
        return rss_kib(self.pid)

    def stop(self):
        self.expect_exit = True
        if self.proc.poll() is None:
            # A first SIGTERM starts a drain that keeps accepting for timeouts.drain_delay (5 s by
            # default), or joins one POST /drain started; a second one, once the first is seen,
            # ends it at once.
            def seen(px):
                return ([e for e in px.find_events("drain_started") if e.get("why") == "SIGTERM"]
                        or px.find_events("drain_signal") or px.find_events("drain_forced"))
            try:
                if not seen(self):
                    self.proc.send_signal(signal.SIGTERM)
                    self.wait_for(seen, 2.0)
            except ProcessLookupError:
                pass
        _kill(self.proc, grace=5.0)
        for t in self._threads:
            t.join(timeout=2)


def _address_port(address):
    m = re.search(r":(\d+)$", str(address))
    return int(m.group(1)) if m else None


def binary_path():
    return BINARY


def require_binary():
    if not (os.path.isfile(BINARY) and os.access(BINARY, os.X_OK)):
        raise AssertionError("cutover binary not found or not executable: %s "
                             "(build it, or pass --binary / set CUTOVER_BIN)" % BINARY)
    return BINARY


def start_proxy(config, workers=None, wait_admin=None, timeout=START_TIMEOUT, extra_args=()):
    """Writes `config` (a dict or YAML text) to a temp dir and starts `cutover --config FILE`.

    Waits until every listener of every worker logged "listening" (and the admin listener logged
    "admin_listening" when enabled). Raises AssertionError with the log tail otherwise.
    """
    binary = require_binary()
    tmpdir = tempfile.mkdtemp(prefix="cutover-it-")
    path = os.path.join(tmpdir, "cutover.yaml")
    text = config if isinstance(config, str) else to_yaml(config) + "\n"
    with open(path, "w") as f:
        f.write(text)
    if isinstance(config, dict):
        n_listeners = len(config.get("listeners", [])) or 1
        workers = workers if workers is not None else int(config.get("workers", 1))
        admin = config.get("admin", {})
        if wait_admin is None:
            wait_admin = admin.get("enabled", True) is not False
    else:
        n_listeners = 1
        workers = workers or 1
        wait_admin = bool(wait_admin)
    proc = _spawn([binary, "--config", path, *extra_args], stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    p = Proxy(proc, tmpdir, path)
    p.start_pumps()

    def ready(px):
        listening = [e for e in px.events if e.get("event") == "listening"]
        if len(listening) < n_listeners * workers:
            return False
        if wait_admin and not [e for e in px.events if e.get("event") == "admin_listening"]:
            return False
        return True

    if not p.wait_for(ready, timeout):
        code = proc.poll()
        tail = p.log_tail()
        p.stop()
        raise AssertionError("cutover did not report listening within %.0fs (exit code %s); "
                             "config:\n%s\nlog tail:\n%s" % (timeout, code, text, tail))
    for e in p.find_events("listening"):
        port = _address_port(e.get("address"))
        name = e.get("listener", "")
        if port is not None:
            p.ports.setdefault(name, port)
            if p.port is None:
                p.port = port
    admin = p.find_events("admin_listening")
    if admin:
        p.admin_port = _address_port(admin[0].get("address"))
    if p.port is None:
        tail = p.log_tail()
        p.stop()
        raise AssertionError("no port in the listening lines:\n" + tail)
    return p


def run_binary(args, timeout=20):
    """Runs cutover with `args` to completion: (exit code, stdout, stderr) as text."""
    binary = require_binary()
    r = subprocess.run([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1 client
# ---------------------------------------------------------------------------------------------

class HttpError(Exception):
    """The peer sent something this client cannot parse, or closed early."""


class Response:
    def __init__(self, version, status, reason, headers, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as received
        self.raw_head = raw_head
        self.body = b""
        self.framing = None  # "length", "chunked", "close", "none"
        self.trailers = []

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def tokens(self, name):
        return [t.strip().lower() for v in self.header_all(name) for t in v.split(",")
                if t.strip()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %s %s %r body=%d bytes>" % (self.status, self.reason, self.headers,
                                                      len(self.body))


class Client:
    """One TCP connection with a read buffer; bytes in, parsed responses out."""

    def __init__(self, port, host="127.0.0.1", timeout=IO_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.port = port

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self, n=65536):
        """Reads more bytes into the buffer; returns False at EOF."""
        if self.eof:
            return False
        data = self.sock.recv(n)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                return self._take(i + 1)
            if not self._fill():
                raise HttpError("connection closed mid-line (have %r)" % bytes(self.buf[:200]))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill(max(65536, n - len(self.buf))):
                raise HttpError("connection closed after %d of %d bytes" % (len(self.buf), n))
        return self._take(n)

    def read_head(self):
        """Reads one response head (status line + headers)."""
        raw = bytearray()
        line = self.read_line()
        raw += line
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HttpError("bad status line %r" % line)
        headers = []
        while True:
            line = self.read_line()
            raw += line
            if line in (b"\r\n", b"\n"):
                break
            text = line.decode("latin-1").rstrip("\r\n")
            if ":" not in text:
                raise HttpError("bad header line %r" % line)
            k, v = text.split(":", 1)
            headers.append((k, v.strip()))
        return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers,
                        bytes(raw))

    def body_chunks(self, resp, method="GET", max_read=262144):
        """Yields the response body in pieces as they arrive, per the response's framing."""
        te = resp.tokens("transfer-encoding")
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            resp.framing = "none"
            return
        if te:
            if te[-1] != "chunked":
                raise HttpError("transfer-encoding without final chunked: %r" % te)
            resp.framing = "chunked"
            while True:
                size_line = self.read_line()
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise HttpError("bad chunk size line %r" % size_line)
                if size == 0:
                    while True:
                        t = self.read_line()
                        if t in (b"\r\n", b"\n"):
                            return
                        resp.trailers.append(t)
                left = size
                while left:
                    if not self.buf and not self._fill(max_read):
                        raise HttpError("connection closed inside a chunk")
                    n = min(left, len(self.buf))
                    yield self._take(n)
                    left -= n
                if self.read_line() not in (b"\r\n",):
                    raise HttpError("chunk data not followed by CRLF")
            return
        cl = resp.header_all("content-length")
        if cl:
            if len(set(cl)) != 1:
                raise HttpError("conflicting content-length %r" % cl)
            resp.framing = "length"
            left = int(cl[0])
            while left:
                if not self.buf and not self._fill(min(max_read, left)):
                    raise HttpError("connection closed with %d body bytes missing" % left)
                n = min(left, len(self.buf))
                yield self._take(n)
                left -= n
            return
        resp.framing = "close"
        while True:
            if self.buf:
                yield self._take(len(self.buf))
            if not self._fill(max_read):
                return

    def read_response(self, method="GET", skip_interim=True):
        """Reads one full response. 1xx responses are skipped unless skip_interim is False."""
        while True:
            resp = self.read_head()
            if 100 <= resp.status < 200 and resp.status != 101:
                if skip_interim:
                    continue
                resp.framing = "none"
                return resp
            break
        if resp.status == 101:
            resp.framing = "none"
            return resp
        resp.body = b"".join(self.body_chunks(resp, method))
        return resp

    def request(self, method, target, headers=None, body=None, host="test.local"):
        """Sends one request (Content-Length framing when there is a body) and reads its response."""
        self.send(build_request(method, target, headers, body, host))
        return self.read_response(method)

    def closed_by_peer(self, timeout=3.0):
        """True when the peer closes (EOF or reset) within `timeout` with no further bytes."""
        deadline = time.monotonic() + timeout
        if self.eof:
            return not self.buf
        if self.buf:
            return False
        old = self.sock.gettimeout()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(4096)
                except socket.timeout:
                    return False
                except (ConnectionResetError, BrokenPipeError):
                    self.eof = True
                    return True
                if not data:
                    self.eof = True
                    return True
                self.buf += data
                return False
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass

    def readable(self, timeout=0.0):
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)


def build_request(method, target, headers=None, body=None, host="test.local"):
    lines = ["%s %s HTTP/1.1" % (method, target)]
    names = set()
    for k, v in (headers or []):
        lines.append("%s: %s" % (k, v))
        names.add(k.lower())
    if host is not None and "host" not in names:
        lines.insert(1, "Host: %s" % host)
    if body is not None:
        if isinstance(body, str):
            body = body.encode()
        if "content-length" not in names and "transfer-encoding" not in names:
            lines.append("Content-Length: %d" % len(body))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


def get(port, target, headers=None, host="test.local"):
    """One GET on a fresh connection."""
    with Client(port) as c:
        return c.request("GET", target, headers, host=host)


def chunked_encode(data, sizes):
    """Chunked body for `data`, cut at the given chunk sizes (cycled)."""
    out = bytearray()
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        piece = data[i:i + n]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        i += n
    out += b"0\r\n\r\n"
    return bytes(out)


def pattern_bytes(offset, size):
    start = offset % len(PATTERN)
    reps = (start + size) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + size]


def pattern_sha256(n, block=1 << 20):
    """sha256 of the first n bytes of the demo backend's /bytes pattern."""
    h = hashlib.sha256()
    blk = pattern_bytes(0, block)  # block is a multiple of 64, so every block is the same
    full, rest = divmod(n, block)
    for _ in range(full):
        h.update(blk)
    h.update(blk[:rest])
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# WebSocket helpers
# ---------------------------------------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_client_frame(opcode, payload, mask=None):
    mask = mask or os.urandom(4)
    n = len(payload)
    b0 = 0x80 | opcode
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big") if n else b""
    return head + mask + masked


def ws_read_frame(client):
    """(fin, opcode, payload, masked) of the next frame on a Client."""
    b0, b1 = client.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(client.read_exact(2), "big")
    elif n == 127:
        n = int.from_bytes(client.read_exact(8), "big")
    masked = bool(b1 & 0x80)
    mask = client.read_exact(4) if masked else None
    payload = client.read_exact(n)
    if mask:
        m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")
    return bool(b0 & 0x80), b0 & 0x0F, payload, masked


# ---------------------------------------------------------------------------------------------
# Process measurements
# ---------------------------------------------------------------------------------------------

def rss_kib(pid):
    """VmRSS of a process in KiB (from /proc/<pid>/status), or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def thread_switches(pid):
    """{tid: voluntary context switches} for every thread of pid (how often each woke up)."""
    out = {}
    base = "/proc/%d/task" % pid
    try:
        tids = os.listdir(base)
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open("%s/%s/status" % (base, tid)) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        out[int(tid)] = int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


# ---------------------------------------------------------------------------------------------
# unittest glue
# ---------------------------------------------------------------------------------------------

class ProxyTestCase(unittest.TestCase):
    """Base class: backends and proxies started in a test are stopped at its end, by pid."""

    def backend(self, name, *extra_args):
        b = start_backend(name, extra_args=extra_args)
        self.addCleanup(b.stop)
        return b

    def proxy(self, config, **kw):
        p = start_proxy(config, **kw)
        self.addCleanup(p.stop)
        self.addCleanup(self._check_alive, p)
        return p

    def _check_alive(self, p):
        # Runs before stop(): a proxy that died during the test is a failure of that test.
        code = p.proc.poll()
        if code is not None and not p.expect_exit:
            raise AssertionError("cutover exited during the test with code %s; log tail:\n%s"
                                 % (code, p.log_tail()))

    def assertLocalReply(self, resp, status, reason):
        self.assertEqual(resp.status, status, "%r" % resp)
        self.assertEqual(resp.header("x-cutover-reason"), reason, "%r" % resp)



# ---- shared by the tests: who served, admin requests, Prometheus samples -------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def served_by(resp):
    """The backend named in the response's x-cutover-backend header."""
    return resp.header("x-cutover-backend")


def admin(p, method, path, headers=None, body=None):
    """One request to proxy `p`'s admin listener."""
    with Client(p.admin_port) as c:
        return c.request(method, path, headers, body=body)


def metric(text, name, **labels):
    """Value of the sample `name` whose labels are exactly `labels` in exposition `text`, or None."""
    for line in text.splitlines():
        m = _SAMPLE_RE.match(line)
        if not m or m.group(1) != name:
            continue
        if dict(_LABEL_RE.findall(m.group(2) or "")) == labels:
            return float(m.group(3))
    return None

def main():
    """Entry point for a test file: takes --binary/--backend, passes the rest to unittest."""
    global BINARY, BACKEND
    argv = [sys.argv[0]]
    args = sys.argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--binary", "--backend") and i + 1 < len(args):
            if a == "--binary":
                BINARY = os.path.abspath(args[i + 1])
            else:
                BACKEND = os.path.abspath(args[i + 1])
            i += 2
            continue
        if a.startswith("--binary="):
            BINARY = os.path.abspath(a.split("=", 1)[1])
        elif a.startswith("--backend="):
            BACKEND = os.path.abspath(a.split("=", 1)[1])
        else:
            argv.append(a)
        i += 1
    sys.stderr.write("cutover binary: %s\ndemo backend: %s\n" % (BINARY, BACKEND))
    unittest.main(module="__main__", argv=argv, verbosity=2)
