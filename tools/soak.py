#!/usr/bin/env python3
"""Soak test: the real cutover binary under steady mixed traffic and chaos, for N minutes.

    python3 tools/soak.py --binary build/proxy/cutover --minutes 30
    python3 tools/soak.py --binary build/proxy/cutover --seconds 60      # what CTest runs

Python 3 standard library only; the raw HTTP client and WebSocket helpers come from
tests/integration/harness.py. Everything runs on 127.0.0.1: two tools/demo_backend.py processes
(legacy, new) on fixed ports outside the kernel's ephemeral range (so a restarted backend always
gets its port back), and cutover (2 workers) on a kernel-chosen port.

Traffic (all bodies verified):
  - HTTP/1.1 keep-alive clients (--clients): GET / (body names the backend, which must match the
    backend's x-backend and the proxy's x-cutover-backend), GET /bytes of several sizes with
    Content-Length or chunked framing (the demo pattern, byte by byte), GET /echo (headers seen by
    the backend), POST /echo with bodies up to 300 KB (length + sha256 echoed), chunked POST
    /upload (length + sha256), GET /slow.
  - rate-limited keys on route `limited` (10/s, burst 10, keyed by x-soak-key): "polite" keys at
    2/s must never see a 429; a "hog" key asks every 10 ms and must see 429 (rate_limited,
    Retry-After), and get between half of rate x elapsed and burst + rate x elapsed (+5%) 2xx:
    buckets are not reset by the reloads, which leave that route's limit unchanged.
  - slow clients: a slowloris that sends a whole head byte by byte within header_read (must be
    served), one that trickles forever (must get 408 header_timeout, or a close, between 0.8x and
    header_read + 3 s), and a slow reader of 8 MiB (16 KiB every 20 ms, one 2 s stall; the
    download outlasts upstream_idle) whose body is verified.
  - WebSocket connections that stay open 5-15 s, echoing text/binary frames and ping/pong, then
    close with a close handshake and reconnect.

Chaos:
  - every --kill-every seconds one backend (alternately legacy, new) is SIGKILLed and restarted on
    the same port 0.5-2 s later. Routes retry idempotent requests on the other backend; `new` has
    health checks and a circuit breaker with `fallback: legacy`.
  - every --reload-every seconds the YAML is rewritten (temp file + rename over it) with new
    weights for route `main`; the admin /config generation must advance within 5 s.

Accounting: every exchange ends in one class. "ok", "rate_limited" (429 to a hog key) and
"header_timeout" (408 or close to the endless slowloris) are expected. Errors are "explained" only
by a backend kill: a 502/503/504 local reply (with x-cutover-reason from a fixed list) or a
connection closed/reset (or a truncated body) for a request whose [start, end] overlaps a kill
window [kill, restart + --settle s]; for a WebSocket, only if its own backend was the one killed.
Everything else is unexplained and fails the run (exit 1): any 5xx outside a kill window, a 5xx
without a reason header, a wrong or truncated-but-complete-looking body, a malformed response, a
429 to a polite key, a slowloris cut too early or never, a hang past its bound (no byte for 30 s,
or a whole exchange over request timeout + 5 s; 40 s for the slow reader), a refused connection
to the proxy, a reload not applied, the proxy exiting.

Memory and descriptors (sampled every second from /proc/<pid>/status VmRSS and /proc/<pid>/fd):
  - warm-up = max(10 s, 20% of the run). The samples after it are split into two halves; the run
    fails when max(second half) > 1.10 x max(first half) + 2 MiB. A leak grows with traffic, so
    it shows as a higher peak later; comparing peaks of equal windows (not single samples)
    ignores one-off peaks from a large body in flight, and the high-water marks the allocator
    reaches once (pools, per-worker buffers, arenas) are inside the first half already. The
    config sets limits.high_watermark to 256 KiB (default 1 MiB): each connection's pending
    buffer, and so each such allocator step, is 4x smaller (measured: with 1 MiB, each new mix
    of concurrent large bodies per worker adds a 1-2 MiB step that is not a leak; repeated 8 MiB
    slow downloads plateau after two). Sensitivity scales with the run: over 30 min (12-min
    halves) a leak of ~0.3 MiB/min fails; the 60 s CI run (24 s halves) only catches gross
    leaks (several MiB/min). The least-squares slope after warm-up is printed too (informational).
  - during the run, open fds must stay <= startup fds + 2 per client connection + the idle-pool
    cap + 16; after every client has closed, they must fall back to <= startup fds + 4 within
    10 s (pool idle_timeout is 3 s), so a leaked socket shows however short the run.

Exit: 0 when everything is expected or explained and memory/fds hold, 1 otherwise, 2 on a setup
error. A summary and a final `SOAK_RESULT {json}` line are printed. Children are killed by pid at
exit, on failure and on Ctrl-C (and get SIGKILL if this process dies: PR_SET_PDEATHSIG).
"""

import argparse
import base64
import collections
import ctypes
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import harness as h  # noqa: E402

BACKEND_SCRIPT = os.path.join(REPO, "tools", "demo_backend.py")
WORKERS = 2
HEADER_READ_S = 2.0
UPSTREAM_IDLE_S = 10.0
REQUEST_TIMEOUT_S = 20.0
POOL_MAX_IDLE = 16
RL_RATE, RL_BURST = 10, 10        # route `limited`: 10/s, burst 10, keyed by x-soak-key
IO_BOUND_S = 30.0                 # a request with no byte for this long "hangs"
EXCHANGE_BOUND_S = REQUEST_TIMEOUT_S + 5  # a whole keep-alive exchange, first byte to last
SLOW_READER_BOUND_S = 40.0
SLOW_READER_BYTES = 8 * 1024 * 1024
# Local-reply reasons a backend kill can explain (502/503/504 only).
KILL_REASONS = {"no_endpoint", "upstream_connect_failure", "upstream_timeout", "upstream_reset",
                "circuit_open", "bad_upstream_response", "request_timeout"}
BIG_PATTERN = h.pattern_bytes(0, (1 << 20) + 64)


def pattern_at(offset, n):
    """n bytes of the /bytes pattern starting at absolute offset (n <= 1 MiB)."""
    start = offset % 64
    return BIG_PATTERN[start:start + n]


def now():
    return time.monotonic()


def first_difference(got, want):
    """Offset of the first byte where got and want differ (the shorter length if one is a
    prefix of the other)."""
    lo, hi = 0, min(len(got), len(want))
    if got[:hi] == want[:hi]:
        return hi
    while hi - lo > 1:  # got[:lo] matches, got[:hi] does not
        mid = (lo + hi) // 2
        if got[:mid] == want[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Children:
    """Every process we start, killed by pid (SIGTERM, bounded wait, SIGKILL) at the end."""

    def __init__(self):
        self.procs = []
        self.lock = threading.Lock()

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    def kill_all(self):
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = now() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - now()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass


def pick_port(used):
    """A free port below the ephemeral range, so no outgoing connection can take it meanwhile."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low - 1)
        if port in used:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            used.add(port)
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port below %d" % low)


class Backend:
    def __init__(self, children, name, port, logdir):
        self.children = children
        self.name = name
        self.port = port
        self.log_path = os.path.join(logdir, "backend-%s.log" % name)
        self.proc = None
        self.down = False  # killed on purpose and not yet restarted

    def start(self, timeout=10.0):
        for attempt in range(5):
            log = open(self.log_path, "ab")
            try:
                proc = self.children.spawn(
                    [sys.executable, BACKEND_SCRIPT, "--name", self.name, "--port",
                     str(self.port)], stdout=subprocess.PIPE, stderr=log)
            finally:
                log.close()
            line = h.read_line_bounded(proc.stdout, timeout).decode(errors="replace")
            proc.stdout.close()
            if line.startswith("LISTENING"):
                self.proc = proc
                return
            proc.kill()
            proc.wait(timeout=5)
            time.sleep(0.3 * (attempt + 1))  # port still held: try again shortly
        raise RuntimeError("backend %s did not come up on port %d (see %s)"
                           % (self.name, self.port, self.log_path))

    def kill(self):
        self.down = True
        self.proc.kill()
        self.proc.wait(timeout=5)


class Proxy:
    def __init__(self, children, binary, config_path, logdir):
        self.err_path = os.path.join(logdir, "proxy.stderr")
        self.out_path = os.path.join(logdir, "proxy.stdout")
        with open(self.err_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = children.spawn([binary, "--config", config_path], stdout=out, stderr=err)
        self.pid = self.proc.pid
        self.port = None
        self.admin_port = None

    def events(self):
        out = []
        try:
            with open(self.err_path, errors="replace") as f:
                for line in f:
                    if line.startswith("{"):
                        try:
                            out.append(json.loads(line))
                        except ValueError:
                            pass
        except OSError:
            pass
        return out

    def wait_ready(self, timeout=10.0):
        deadline = now() + timeout
        while now() < deadline and self.proc.poll() is None:
            evs = self.events()
            listening = [e for e in evs if e.get("event") == "listening"]
            admin = [e for e in evs if e.get("event") == "admin_listening"]
            if len(listening) >= WORKERS and admin:
                self.port = int(str(listening[0]["address"]).rsplit(":", 1)[1])
                self.admin_port = int(str(admin[0]["address"]).rsplit(":", 1)[1])
                return
            time.sleep(0.05)
        raise RuntimeError("cutover not ready within %.0fs (exit %s); stderr tail:\n%s"
                           % (timeout, self.proc.poll(), self.log_tail()))

    def log_tail(self, n=20):
        try:
            with open(self.err_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None


def proc_sample(pid):
    """(VmRSS KiB, open fds) of pid, or (None, None) when it is gone."""
    rss = h.rss_kib(pid)
    try:
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        fds = None
    return rss, fds


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def describe_fds(pid):
    """What a process's fds are: TCP sockets as local->remote port and state, others by target."""
    tcp = {}
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, st, inode = parts[1], parts[2], parts[3], parts[9]
                    tcp[inode] = "%d->%d %s" % (int(local.rsplit(":", 1)[1], 16),
                                                 int(remote.rsplit(":", 1)[1], 16),
                                                 TCP_STATES.get(st, st))
        except OSError:
            pass
    out = collections.Counter()
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return "gone"
    for name in names:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, name))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        out[tcp.get(m.group(1), "socket") if m else re.sub(r"\d+", "N", target)] += 1
    return ", ".join("%s x%d" % kv for kv in sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

def config_text(ports, new_weight, logdir, generation):
    retry = ("{ attempts: 2, on: [connect_error, reset, timeout, 502, 503, 504], "
             "idempotent_only: true, backoff_base: 25ms, backoff_max: 250ms, "
             "retry_on_other_backend: true, budget_ratio: 0.2, budget_min: 3 }")
    pool = "{ max_idle_per_endpoint: %d, idle_timeout: 3s }" % POOL_MAX_IDLE
    return """# written by tools/soak.py (rewrite %d)
listeners:
  - { name: public, address: "127.0.0.1:0" }
workers: %d
timeouts:
  connect: 1s
  header_read: %dms
  request: %dms
  downstream_idle: 30s
  upstream_idle: %dms
  drain: 5s
  drain_delay: 0s  # the run ends with SIGTERM: no load balancer to wait for
limits: { high_watermark: 256KiB }
filters: [request_id, rate_limit, router]
backends:
  legacy:
    endpoints: ["127.0.0.1:%d"]
    pool: %s
  new:
    endpoints: ["127.0.0.1:%d"]
    pool: %s
    circuit_breaker: { consecutive_failures: 5, cooldown: 1s, max_cooldown: 2s }
    health_check:
      path: /health
      interval: 1s
      timeout: 1s
      healthy_threshold: 2
      unhealthy_threshold: 2
      backoff_base: 500ms
      backoff_max: 1s
routes:
  - name: limited
    match: { prefix: /rl/ }
    split: { new: 50, legacy: 50 }
    fallback: legacy
    rate_limit: { rate: %d/s, burst: %d, key: { header: x-soak-key } }
    retry: %s
  - name: main
    match: { prefix: / }
    split: { new: %d, legacy: %d }
    fallback: legacy
    retry: %s
admin: { address: "127.0.0.1:0" }
access_log: { mode: errors, path: "%s" }
""" % (generation, WORKERS, HEADER_READ_S * 1000, REQUEST_TIMEOUT_S * 1000,
       UPSTREAM_IDLE_S * 1000, ports["legacy"], pool, ports["new"], pool, RL_RATE, RL_BURST,
       retry, new_weight, 100 - new_weight, retry, os.path.join(logdir, "access.log"))


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Accounting
# ---------------------------------------------------------------------------------------------

class Outcome(Exception):
    """Ends one exchange with a class other than ok. kind: closed | malformed | bad_body | hang |
    status | connect_failed | ... ; explainable: a backend kill may explain it."""

    def __init__(self, kind, detail, explainable=False):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.explainable = explainable


class Ledger:
    def __init__(self, settle):
        self.lock = threading.Lock()
        self.settle = settle
        self.t0 = now()
        self.classes = collections.Counter()      # class → count (every exchange)
        self.per_op = collections.Counter()       # op → count
        self.explained = collections.Counter()    # class → count
        self.unexplained = collections.Counter()
        self.unexplained_samples = []              # first few, with details
        self.windows = []                          # [backend, start, end or None]
        self.kills = 0
        self.reloads = 0
        self.hog_ok = collections.Counter()
        self.hog_429 = 0
        self.bytes_in = 0
        self.closing = False  # interrupted: children are going away, errors are ours

    def rel(self, t):
        return t - self.t0

    def kill_started(self, backend, t):
        with self.lock:
            self.kills += 1
            w = [backend, t, None]
            self.windows.append(w)
            return w

    def kill_ended(self, w, t):
        with self.lock:
            w[2] = t + self.settle

    def in_window(self, t_start, t_end, backend=None):
        with self.lock:
            for b, s, e in self.windows:
                if backend is not None and b != backend:
                    continue
                if t_end >= s and (e is None or t_start <= e):
                    return True
        return False

    def ok(self, op, cls="ok", nbytes=0):
        with self.lock:
            self.classes[cls] += 1
            self.per_op[op] += 1
            self.bytes_in += nbytes

    def error(self, op, o, t_start, t_end, backend=None):
        cls = o.kind
        explained = o.explainable and self.in_window(t_start, t_end, backend)
        with self.lock:
            self.classes[cls] += 1
            self.per_op[op] += 1
            if explained:
                self.explained[cls] += 1
            else:
                self.unexplained[cls] += 1
                if len(self.unexplained_samples) < 40:
                    self.unexplained_samples.append(
                        "t=%.2f-%.2fs %s: %s: %s" % (self.rel(t_start), self.rel(t_end), op,
                                                      cls, o.detail))
        if not explained and not self.closing:
            sys.stderr.write("UNEXPLAINED t=%.2fs %s %s: %s\n"
                             % (self.rel(t_end), op, cls, o.detail))

    def fail(self, cls, detail):
        """An unexplained failure not tied to one exchange (reload, crash, limiter, memory)."""
        with self.lock:
            self.unexplained[cls] += 1
            if len(self.unexplained_samples) < 40:
                self.unexplained_samples.append("t=%.2fs %s: %s" % (self.rel(now()), cls, detail))
        sys.stderr.write("UNEXPLAINED t=%.2fs %s: %s\n" % (self.rel(now()), cls, detail))


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------

def classify_io(e):
    if isinstance(e, Outcome):
        return e
    if isinstance(e, socket.timeout):
        return Outcome("hang", "no byte for %.0fs" % IO_BOUND_S)
    if isinstance(e, ConnectionRefusedError):
        return Outcome("connect_failed", "proxy refused the connection")
    if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return Outcome("closed", repr(e), explainable=True)
    if isinstance(e, h.HttpError):
        msg = str(e)
        if msg.startswith("connection closed"):
            return Outcome("closed", msg, explainable=True)
        return Outcome("malformed", msg)
    if isinstance(e, OSError):
        return Outcome("closed", repr(e), explainable=True)
    return Outcome("client_bug", repr(e))


def check_status(r, expect=200):
    """Raises the right Outcome for a response whose status is not `expect`."""
    if r.status == expect:
        return
    reason = r.header("x-cutover-reason")
    if r.status in (502, 503, 504) and reason in KILL_REASONS:
        raise Outcome("5xx_" + reason, "%d %s" % (r.status, reason), explainable=True)
    raise Outcome("status_%d" % r.status, "%d reason=%s body=%r"
                  % (r.status, reason, r.body[:120]))


def check_backend(r):
    """The backend's own x-backend and the proxy's x-cutover-backend agree; returns the name."""
    b = r.header("x-backend")
    pb = r.header("x-cutover-backend")
    if b not in ("legacy", "new") or pb != b:
        raise Outcome("bad_headers", "x-backend=%r x-cutover-backend=%r" % (b, pb))
    return b


class Session:
    """One keep-alive connection to the proxy, reopened after a close or an error."""

    def __init__(self, port):
        self.port = port
        self.c = None

    def exchange(self, raw, method):
        if self.c is None:
            self.c = h.Client(self.port, timeout=IO_BOUND_S)
        self.c.send(raw)
        r = self.c.read_response(method)
        if "close" in r.tokens("connection"):
            self.close()
        return r

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


class Traffic:
    def __init__(self, soak, rng, idx):
        self.soak = soak
        self.rng = rng
        self.idx = idx
        self.seq = 0

    def run_ops(self, session, ops, pause):
        stop = self.soak.stop
        names = [o[0] for o in ops]
        weights = [o[1] for o in ops]
        while not stop.is_set():
            name = self.rng.choices(names, weights)[0]
            fn = getattr(self, "op_" + name)
            self.seq += 1
            t_start = now()
            try:
                nbytes = fn(session)
                if now() - t_start > EXCHANGE_BOUND_S:
                    raise Outcome("over_bound", "took %.1fs (bound %.0fs)"
                                  % (now() - t_start, EXCHANGE_BOUND_S))
                self.soak.ledger.ok(name, nbytes=nbytes or 0)
            except Exception as e:  # every failure is classified, none escapes
                o = classify_io(e)
                session.close()
                self.soak.ledger.error(name, o, t_start, now())
                stop.wait(0.05)
            if pause:
                stop.wait(self.rng.uniform(0, pause))

    def tag(self):
        return "c%d-%d" % (self.idx, self.seq)

    def op_hello(self, s):
        r = s.exchange(h.build_request("GET", "/?id=" + self.tag()), "GET")
        check_status(r)
        b = check_backend(r)
        if r.body != b"hello from %s\n" % b.encode():
            raise Outcome("bad_body", "GET / body %r" % r.body[:100])
        return len(r.body)

    def op_bytes(self, s):
        n = self.rng.choice([0, 1, 100, 4096, 65536, 262144, 1 << 20])
        chunked = self.rng.random() < 0.4
        q = "/bytes?n=%d&id=%s" % (n, self.tag())
        if chunked:
            q += "&chunked=1&chunk=%d" % self.rng.choice([1000, 4096, 65536])
        r = s.exchange(h.build_request("GET", q), "GET")
        check_status(r)
        check_backend(r)
        want = "chunked" if chunked else "length"
        if r.framing != want:
            raise Outcome("bad_framing", "%s framing %s, expected %s" % (q, r.framing, want))
        if len(r.body) != n or r.body != BIG_PATTERN[:n]:
            raise Outcome("bad_body", "%s: %d bytes, first wrong byte at %s" % (
                q, len(r.body), first_difference(r.body, BIG_PATTERN[:n])))
        return n

    def op_echo_get(self, s):
        tag = self.tag()
        r = s.exchange(h.build_request("GET", "/echo?id=" + tag, [("x-soak-id", tag)]), "GET")
        check_status(r)
        b = check_backend(r)
        try:
            j = json.loads(r.body)
        except ValueError:
            raise Outcome("bad_body", "echo not JSON: %r" % r.body[:100])
        seen = [v for k, v in j.get("headers", []) if k.lower() == "x-soak-id"]
        if (j.get("backend") != b or j.get("method") != "GET" or j.get("path") != "/echo"
                or seen != [tag] or j.get("body_length") != 0):
            raise Outcome("bad_body", "echo mismatch for %s: %r" % (tag, r.body[:300]))
        return len(r.body)

    def _check_digest(self, r, data, length_key, sha_key, what):
        check_status(r)
        b = check_backend(r)
        try:
            j = json.loads(r.body)
        except ValueError:
            raise Outcome("bad_body", "%s answer not JSON: %r" % (what, r.body[:100]))
        if (j.get("backend") != b or j.get(length_key) != len(data)
                or j.get(sha_key) != hashlib.sha256(data).hexdigest()):
            raise Outcome("bad_body", "%s of %d bytes came back as %r" % (what, len(data), j))
        return len(r.body)

    def op_post_echo(self, s):
        n = self.rng.choice([0, 10, 1000, 65536, 300000])
        data = self.rng.randbytes(n)
        r = s.exchange(h.build_request("POST", "/echo?id=" + self.tag(),
                                       [("Content-Type", "application/octet-stream")], data),
                       "POST")
        return self._check_digest(r, data, "body_length", "body_sha256", "POST /echo")

    def op_upload_chunked(self, s):
        n = self.rng.choice([1, 5000, 100000, 500000])
        data = self.rng.randbytes(n)
        # Tiny chunks, but never only tiny ones: 500 KB in 1-byte chunks keeps the Python
        # backend's loop busy for seconds (its health checks time out), which is not the proxy.
        sizes = [self.rng.choice([1, 17, 100]), self.rng.choice([1000, 8192, 65536]),
                 self.rng.choice([4096, 65536])]
        head = ("POST /upload?id=%s HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                % self.tag()).encode()
        r = s.exchange(head + h.chunked_encode(data, sizes), "POST")
        return self._check_digest(r, data, "bytes", "sha256", "chunked /upload")

    def op_slow(self, s):
        target = "/slow?ms=100&id=" + self.tag()
        r = s.exchange(h.build_request("GET", target), "GET")
        check_status(r)
        check_backend(r)
        if r.body != ("slept 100 ms for %s\n" % target).encode():
            raise Outcome("bad_body", "/slow body %r" % r.body[:100])
        return len(r.body)


MAIN_OPS = [("hello", 20), ("bytes", 30), ("echo_get", 10), ("post_echo", 20),
            ("upload_chunked", 15), ("slow", 5)]


def main_client(soak, idx):
    t = Traffic(soak, random.Random(soak.seed * 1000 + idx), idx)
    s = Session(soak.proxy.port)
    try:
        t.run_ops(s, MAIN_OPS, pause=0.1)
    finally:
        s.close()


def rate_limit_client(soak, idx, hog):
    """hog: one key, a request every 10 ms (far above the limit) for the whole run; polite: two
    keys, one request every 0.25 s each (2/s per key, a fifth of the limit)."""
    s = Session(soak.proxy.port)
    stop = soak.stop
    led = soak.ledger
    keys = ["hog-%d" % idx] if hog else ["polite-%d-%d" % (idx, k) for k in range(2)]
    op = "rl_hog" if hog else "rl_polite"
    try:
        while not stop.is_set():
            for key in keys:
                t_start = now()
                try:
                    r = s.exchange(h.build_request("GET", "/rl/x?k=" + key,
                                                   [("x-soak-key", key)]), "GET")
                    if r.status == 429 and hog:
                        if r.header("x-cutover-reason") != "rate_limited" or \
                                not r.header("retry-after"):
                            raise Outcome("bad_429", "429 without reason/Retry-After: %r"
                                          % r.headers)
                        led.ok(op, "rate_limited")
                        with led.lock:
                            led.hog_429 += 1
                        continue
                    check_status(r)
                    b = check_backend(r)
                    if r.body != b"hello from %s\n" % b.encode():
                        raise Outcome("bad_body", "GET /rl body %r" % r.body[:100])
                    led.ok(op)
                    if hog:
                        with led.lock:
                            led.hog_ok[key] += 1
                except Exception as e:
                    o = classify_io(e)
                    if o.kind == "status_429":
                        o = Outcome("429_polite", "polite key %s got 429" % key)
                    s.close()
                    led.error(op, o, t_start, now())
            stop.wait(0.01 if hog else 0.25)
    finally:
        s.close()


def slowloris_client(soak):
    """Alternates a head sent byte by byte within header_read (served) and an endless trickle
    (cut with 408 header_timeout, or closed, near header_read)."""
    stop = soak.stop
    led = soak.ledger
    k = 0
    while not stop.is_set():
        k += 1
        patient = k % 2 == 1
        op = "slowloris_ok" if patient else "slowloris_cut"
        t_start = now()
        c = None
        try:
            c = h.Client(soak.proxy.port, timeout=IO_BOUND_S)
            if patient:
                head = b"GET /?slowloris=%d HTTP/1.1\r\nHost: soak\r\nX-Slow: abc\r\n\r\n" % k
                for i in range(len(head)):
                    c.send(head[i:i + 1])
                    time.sleep(0.005)
                sent_in = now() - t_start
                r = c.read_response()
                if r.status == 408 and sent_in > HEADER_READ_S * 0.75:
                    # A starved machine made this client slower than meant: the 408 is right.
                    led.ok(op, "header_timeout")
                    continue
                check_status(r)
                b = check_backend(r)
                if r.body != b"hello from %s\n" % b.encode():
                    raise Outcome("bad_body", "slowloris body %r" % r.body[:100])
                led.ok(op)
            else:
                trickle = b"GET /?slowloris=%d HTTP/1.1\r\nHost: soak\r\nX-Slow: " % k
                trickle += b"z" * 1000
                i = 0
                cut = None
                limit = HEADER_READ_S + 5
                while now() - t_start < limit:
                    if c.readable(0):
                        cut = "answered"
                        break
                    try:
                        c.send(trickle[i:i + 1])
                    except OSError:
                        cut = "send_failed"
                        break
                    i = min(i + 1, len(trickle) - 1)
                    time.sleep(0.1)
                elapsed = now() - t_start
                if cut is None:
                    raise Outcome("slowloris_not_cut",
                                  "endless head not cut after %.1fs (header_read %.1fs)"
                                  % (elapsed, HEADER_READ_S))
                if elapsed < HEADER_READ_S * 0.8:
                    raise Outcome("slowloris_cut_early", "cut after %.2fs (header_read %.1fs)"
                                  % (elapsed, HEADER_READ_S))
                try:
                    c.settimeout(3)
                    r = c.read_response()
                except (OSError, h.HttpError):
                    led.ok(op, "slow_client_closed")  # closed after the timeout: explained
                else:
                    if r.status != 408 or r.header("x-cutover-reason") != "header_timeout":
                        raise Outcome("slowloris_bad_reply", "%r" % r)
                    led.ok(op, "header_timeout")
        except Exception as e:
            led.error(op, classify_io(e), t_start, now())
        finally:
            if c is not None:
                c.close()
        stop.wait(0.5)


def slow_reader_client(soak):
    """Downloads 8 MiB 16 KiB at a time every 20 ms, with a 2 s stall in the middle: about 12 s,
    longer than upstream_idle, while the backend is held back by the proxy's backpressure."""
    stop = soak.stop
    led = soak.ledger
    k = 0
    while not stop.is_set():
        k += 1
        chunked = k % 2 == 0
        op = "slow_reader"
        t_start = now()
        c = None
        try:
            c = h.Client(soak.proxy.port, timeout=IO_BOUND_S)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            q = "/bytes?n=%d&id=slow%d%s" % (SLOW_READER_BYTES, k,
                                             "&chunked=1&chunk=65536" if chunked else "")
            c.send(h.build_request("GET", q))
            r = c.read_head()
            check_status(r)
            check_backend(r)
            got = 0
            stalled = False
            for piece in c.body_chunks(r, max_read=16384):
                if piece != pattern_at(got, len(piece)):
                    raise Outcome("bad_body", "slow reader: wrong byte at %d" % (
                        got + first_difference(piece, pattern_at(got, len(piece)))))
                got += len(piece)
                if not stalled and got >= SLOW_READER_BYTES // 2:
                    stalled = True
                    time.sleep(2.0)
                time.sleep(0.02)
                if now() - t_start > SLOW_READER_BOUND_S:
                    raise Outcome("hang", "slow reader past %.0fs at %d bytes"
                                  % (SLOW_READER_BOUND_S, got))
            if got != SLOW_READER_BYTES:
                raise Outcome("bad_body", "slow reader got %d bytes" % got)
            led.ok(op, nbytes=got)
        except Exception as e:
            led.error(op, classify_io(e), t_start, now())
        finally:
            if c is not None:
                c.close()
        stop.wait(0.5)


def websocket_client(soak, idx):
    """A WebSocket through route `main` kept open 5-15 s, echoing frames, then closed cleanly
    (a backend is killed every ~10 s, alternately: longer tunnels would rarely end cleanly)."""
    rng = random.Random(soak.seed * 1000 + 900 + idx)
    stop = soak.stop
    led = soak.ledger
    while not stop.is_set():
        t_start = now()
        backend = None
        c = None
        try:
            c = h.Client(soak.proxy.port, timeout=IO_BOUND_S)
            key = base64.b64encode(rng.randbytes(16)).decode()
            c.send(h.build_request("GET", "/ws?c=%d" % idx, [
                ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
            r = c.read_response()
            check_status(r, 101)
            backend = check_backend(r)
            if r.header("sec-websocket-accept") != h.ws_accept(key):
                raise Outcome("bad_headers", "wrong Sec-WebSocket-Accept")
            led.ok("ws_open")
            lifetime = rng.uniform(5, 15)
            n = 0
            while not stop.is_set() and now() - t_start < lifetime:
                n += 1
                if n % 5 == 0:
                    payload = b"ping %d" % n
                    c.send(h.ws_client_frame(0x9, payload))
                    want_op = 0xA
                else:
                    size = rng.choice([1, 100, 1000, 70000]) if n % 7 else 0
                    want_op = 0x2 if n % 2 else 0x1
                    payload = (rng.randbytes(size) if want_op == 0x2
                               else ("frame %d " % n).encode() * (size // 8 + 1))[:max(size, 1)]
                    c.send(h.ws_client_frame(want_op, payload))
                fin, op, got, masked = h.ws_read_frame(c)
                if (fin, op, got, masked) != (True, want_op, payload, False):
                    raise Outcome("bad_body", "ws frame %d: op %d len %d (sent op %d len %d)"
                                  % (n, op, len(got), want_op, len(payload)))
                led.ok("ws_frame", nbytes=len(got))
                stop.wait(rng.uniform(0.2, 0.6))
            c.send(h.ws_client_frame(0x8, b"\x03\xe8"))
            fin, op, got, masked = h.ws_read_frame(c)
            if (op, got) != (0x8, b"\x03\xe8"):
                raise Outcome("bad_body", "ws close echoed as op %d %r" % (op, got))
            if not c.closed_by_peer(5):
                raise Outcome("ws_not_closed", "tunnel still open 5 s after the close frames")
            led.ok("ws_close")
        except Exception as e:
            o = classify_io(e)
            # A tunnel only dies with its own backend; an upgrade answered with a 5xx is like any
            # other request.
            led.error("ws", o, t_start, now(), backend)
        finally:
            if c is not None:
                c.close()
        stop.wait(0.3)


# ---------------------------------------------------------------------------------------------
# Chaos
# ---------------------------------------------------------------------------------------------

def admin_get(port, path):
    with h.Client(port, timeout=5) as c:
        return c.request("GET", path)


def config_generation(soak):
    r = admin_get(soak.proxy.admin_port, "/config")
    m = re.search(rb"^generation: (\d+)$", r.body, re.M)
    err = re.search(rb"^last_reload_error: (.*)$", r.body, re.M)
    return (int(m.group(1)) if m else None), (err.group(1).decode() if err else None)


def reloader(soak):
    rng = random.Random(soak.seed * 1000 + 77)
    stop = soak.stop
    while not stop.wait(soak.args.reload_every):
        try:
            before, _ = config_generation(soak)
            weight = rng.choice([w for w in (0, 10, 25, 50, 75, 90, 100) if w != soak.weight])
            soak.rewrite(weight)
            soak.chaos_log("rewrite: main new=%d" % weight)
            deadline = now() + 5
            after, err = before, None
            while now() < deadline:
                after, err = config_generation(soak)
                if after is not None and before is not None and after > before:
                    break
                time.sleep(0.05)
            if after is None or before is None or after <= before:
                soak.ledger.fail("reload_not_applied", "generation %s -> %s after rename-over "
                                 "(weight %d), last_reload_error %s" % (before, after, weight, err))
            elif err not in (None, "null"):
                soak.ledger.fail("reload_error", err)
            else:
                with soak.ledger.lock:
                    soak.ledger.reloads += 1
        except (OSError, h.HttpError) as e:
            if soak.proxy.alive():
                soak.ledger.fail("admin_unreachable", repr(e))


def killer(soak):
    try:
        kill_loop(soak)
    finally:
        # A restarted backend dies with the thread that forked it (PR_SET_PDEATHSIG is per
        # thread), so this thread outlives the run until the children are reaped.
        soak.reaped.wait(60)


def kill_loop(soak):
    rng = random.Random(soak.seed * 1000 + 99)
    stop = soak.stop
    order = ["legacy", "new"]
    k = 0
    first = min(8.0, soak.duration / 4)
    if stop.wait(first):
        return
    while not stop.is_set() and now() < soak.t_end - 5:
        b = soak.backends[order[k % 2]]
        k += 1
        w = soak.ledger.kill_started(b.name, now())
        soak.chaos_log("kill %s pid %d" % (b.name, b.proc.pid))
        b.kill()
        stop.wait(rng.uniform(0.5, 2.0))  # down time (also cut short at the end of the run)
        try:
            b.start()
        except RuntimeError as e:
            soak.ledger.fail("restart_failed", str(e))
            soak.stop.set()
            return
        b.down = False
        soak.ledger.kill_ended(w, now())
        soak.chaos_log("restarted %s pid %d" % (b.name, b.proc.pid))
        stop.wait(max(1.0, soak.args.kill_every + rng.uniform(-1.0, 1.0)))


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.duration = args.seconds if args.seconds else args.minutes * 60.0
        self.seed = args.seed if args.seed is not None else random.randrange(1 << 30)
        self.children = Children()
        self.stop = threading.Event()
        self.reaped = threading.Event()  # set once every child is gone
        self.ledger = Ledger(args.settle)
        self.tmpdir = tempfile.mkdtemp(prefix="cutover-soak-")
        self.config_path = os.path.join(self.tmpdir, "cutover.yaml")
        self.weight = 50
        self.rewrites = 0
        self.samples = []   # (t, rss KiB, fds)
        self.base_fds = None
        self.end_fds = None
        self.end_fds_text = ""
        self.proxy = None
        self.backends = {}

    def chaos_log(self, text):
        with self.ledger.lock, open(os.path.join(self.tmpdir, "chaos.log"), "a") as f:
            f.write("%s t=%.2fs %s\n" % (time.strftime("%H:%M:%S"), self.ledger.rel(now()), text))

    def rewrite(self, weight):
        self.rewrites += 1
        self.weight = weight
        write_atomic(self.config_path, config_text(self.ports, weight, self.tmpdir,
                                                   self.rewrites))

    def setup(self):
        used = set()
        self.ports = {"legacy": pick_port(used), "new": pick_port(used)}
        for name in ("legacy", "new"):
            b = Backend(self.children, name, self.ports[name], self.tmpdir)
            b.start()
            self.backends[name] = b
        self.rewrite(self.weight)
        self.proxy = Proxy(self.children, self.args.binary, self.config_path, self.tmpdir)
        self.proxy.wait_ready()
        # Startup fds: the fewest seen over a moment (a health check may be in flight).
        fds = []
        for _ in range(5):
            fds.append(proc_sample(self.proxy.pid)[1])
            time.sleep(0.1)
        self.base_fds = min(f for f in fds if f is not None)

    def client_connections(self):
        a = self.args
        return a.clients + 2 * a.rl_clients + 2 + a.websockets

    def run(self):
        a = self.args
        led = self.ledger
        led.t0 = now()
        self.t_start = led.t0
        self.t_end = self.t_start + self.duration
        threads = []

        def spawn(fn, *fargs):
            t = threading.Thread(target=fn, args=(self,) + fargs, daemon=True)
            t.start()
            threads.append(t)

        for i in range(a.clients):
            spawn(main_client, i)
        for i in range(a.rl_clients):
            spawn(rate_limit_client, i, True)
            spawn(rate_limit_client, i, False)
        spawn(slowloris_client)
        spawn(slow_reader_client)
        for i in range(a.websockets):
            spawn(websocket_client, i)
        chaos = []
        for fn in ((killer,) if not a.no_kill else ()) + ((reloader,) if not a.no_reload else ()):
            t = threading.Thread(target=fn, args=(self,), daemon=True)
            t.start()
            chaos.append(t)

        fd_cap = self.base_fds + 2 * self.client_connections() + 2 * WORKERS * POOL_MAX_IDLE + 16
        self.fd_cap = fd_cap
        next_print = self.t_start + 10
        while not self.stop.is_set():
            t = now()
            if t >= self.t_end:
                break
            rss, fds = proc_sample(self.proxy.pid)
            if not self.proxy.alive() or rss is None:
                led.fail("proxy_exit", "cutover exited with %s; stderr tail:\n%s"
                         % (self.proxy.proc.poll(), self.proxy.log_tail()))
                break
            self.samples.append((t - self.t_start, rss, fds))
            if fds is not None and fds > fd_cap:
                led.fail("fd_bound", "%d open fds > bound %d" % (fds, fd_cap))
                fd_cap = 1 << 30  # reported once
            for b in self.backends.values():
                if not b.down and b.proc.poll() is not None:
                    led.fail("backend_exit", "backend %s exited by itself (%s)"
                             % (b.name, b.proc.poll()))
                    b.down = True
            if t >= next_print:
                next_print += 10 if self.duration <= 120 else 60
                with led.lock:
                    total = sum(led.classes.values())
                    une = sum(led.unexplained.values())
                sys.stderr.write("soak t=%4.0fs requests=%d unexplained=%d kills=%d reloads=%d "
                                 "rss=%.1fMiB fds=%s\n" % (t - self.t_start, total, une,
                                                            led.kills, led.reloads,
                                                            rss / 1024.0, fds))
            self.stop.wait(max(0.0, min(1.0, self.t_end - now())))
        self.elapsed = now() - self.t_start
        self.stop.set()
        for t in threads + chaos[1:]:
            t.join(timeout=SLOW_READER_BOUND_S + 5)
            if t.is_alive():
                led.fail("client_stuck", "thread %s did not stop" % t.name)
        self.killer_thread = chaos[0] if chaos else None
        # Every backend up again (a kill may have been cut short), then the fds must settle.
        for b in self.backends.values():
            if b.down:
                b.start()
                b.down = False
        self.check_fds_settle()

    def check_fds_settle(self):
        if not self.proxy.alive():
            if not self.ledger.unexplained["proxy_exit"]:
                self.ledger.fail("proxy_exit", "cutover exited with %s; stderr tail:\n%s"
                                 % (self.proxy.proc.poll(), self.proxy.log_tail()))
            return
        deadline = now() + 10
        fds = None
        while now() < deadline:  # until back to the startup count, or 10 s
            fds = proc_sample(self.proxy.pid)[1]
            if fds is not None and fds <= self.base_fds:
                break
            time.sleep(0.25)
        self.end_fds = fds
        self.end_fds_text = describe_fds(self.proxy.pid)
        if fds is None or fds > self.base_fds + 4:
            self.ledger.fail("fd_leak", "%s open fds 10 s after every client closed (startup %d)"
                             ": %s" % (fds, self.base_fds, describe_fds(self.proxy.pid)))

    def memory_verdict(self):
        warm = max(10.0, 0.2 * self.elapsed)
        after = [(t, rss) for t, rss, _ in self.samples if t >= warm and rss is not None]
        out = {"warmup_s": round(warm, 1)}
        rss_all = [rss for _, rss, _ in self.samples if rss is not None]
        out["rss_max_kib"] = max(rss_all) if rss_all else None
        out["rss_end_kib"] = rss_all[-1] if rss_all else None
        warm_samples = [rss for t, rss, _ in self.samples if t < warm and rss is not None]
        out["rss_warmup_end_kib"] = warm_samples[-1] if warm_samples else None
        if len(after) < 6:
            if not self.ledger.unexplained["proxy_exit"]:  # else that is the failure
                self.ledger.fail("rss_samples", "only %d RSS samples after warm-up" % len(after))
            return out
        half = len(after) // 2
        first = max(r for _, r in after[:half])
        second = max(r for _, r in after[half:])
        limit = first * 1.10 + 2048
        n = len(after)
        mt = sum(t for t, _ in after) / n
        mr = sum(r for _, r in after) / n
        var = sum((t - mt) ** 2 for t, _ in after)
        slope = sum((t - mt) * (r - mr) for t, r in after) / var if var else 0.0
        out.update({"rss_first_half_max_kib": first, "rss_second_half_max_kib": second,
                    "rss_limit_kib": round(limit), "rss_slope_kib_per_min": round(slope * 60, 1)})
        if second > limit:
            self.ledger.fail("rss_growth", "max RSS %d KiB in the second half > %d KiB "
                             "(1.10 x %d + 2048)" % (second, limit, first))
        return out

    def limiter_verdict(self):
        led = self.ledger
        if self.args.rl_clients == 0:
            return
        if led.hog_429 == 0:
            led.fail("limiter_never_limited", "no hog request got 429")
        # A hog key asks ~8x the rate all run long: it must get about rate x time, never more
        # than burst + rate x time (+5%: a reload that reset its bucket adds a burst each time),
        # and not less than half of it (kill windows cost some).
        cap = RL_BURST + RL_RATE * self.elapsed * 1.05 + 2
        floor = 0.5 * RL_RATE * self.elapsed
        for i in range(self.args.rl_clients):
            key = "hog-%d" % i
            n = led.hog_ok.get(key, 0)
            if n > cap:
                led.fail("limiter_overadmit", "hog key %s got %d 2xx > %.0f (burst %d + %d/s x "
                         "%.0fs + 5%%)" % (key, n, cap, RL_BURST, RL_RATE, self.elapsed))
            elif n < floor:
                led.fail("limiter_underadmit", "hog key %s got %d 2xx < %.0f (half of %d/s x "
                         "%.0fs)" % (key, n, floor, RL_RATE, self.elapsed))

    def report(self):
        led = self.ledger
        mem = self.memory_verdict()
        self.limiter_verdict()
        fds_seen = [f for _, _, f in self.samples if f is not None]
        total = sum(led.classes.values())
        n_unexplained = sum(led.unexplained.values())
        events = collections.Counter(e.get("event") for e in self.proxy.events())
        result = {
            "result": "PASS" if n_unexplained == 0 else "FAIL",
            "seed": self.seed, "duration_s": round(self.elapsed, 1),
            "exchanges": total, "per_class": dict(led.classes), "per_op": dict(led.per_op),
            "explained": dict(led.explained), "unexplained": dict(led.unexplained),
            "kills": led.kills, "reloads": led.reloads, "hog_429": led.hog_429,
            "bytes_received": led.bytes_in,
            "fds_startup": self.base_fds, "fds_max": max(fds_seen) if fds_seen else None,
            "fds_bound": self.fd_cap, "fds_end": self.end_fds,
            "proxy_events": {k: v for k, v in events.items() if k in (
                "config_reloaded", "config_rejected", "breaker_transition", "health_transition",
                "endpoint_health")},
            "logs": self.tmpdir,
        }
        result.update(mem)
        p = print
        p("=" * 78)
        p("cutover soak: %s  (seed %d, logs in %s)" % (result["result"], self.seed, self.tmpdir))
        p("duration        %.1f s" % self.elapsed)
        p("exchanges       %d  (%.0f/s), %.1f MiB received"
          % (total, total / max(self.elapsed, 1e-9), led.bytes_in / 1048576.0))
        p("per class       %s" % ", ".join("%s=%d" % kv for kv in sorted(led.classes.items())))
        p("per op          %s" % ", ".join("%s=%d" % kv for kv in sorted(led.per_op.items())))
        p("explained       %d  %s" % (sum(led.explained.values()), dict(led.explained)))
        p("unexplained     %d  %s" % (n_unexplained, dict(led.unexplained)))
        for s in led.unexplained_samples:
            p("   " + s)
        p("chaos           %d backend kills, %d reloads applied (%d rewrites)"
          % (led.kills, led.reloads, self.rewrites - 1))
        p("rate limit      %d x 429 to hog keys; hog 2xx per key max %d"
          % (led.hog_429, max(led.hog_ok.values()) if led.hog_ok else 0))
        p("RSS             warm-up end %s KiB, end %s KiB, max %s KiB; halves after warm-up "
          "%s / %s KiB (limit %s), slope %s KiB/min"
          % (mem.get("rss_warmup_end_kib"), mem.get("rss_end_kib"), mem.get("rss_max_kib"),
             mem.get("rss_first_half_max_kib"), mem.get("rss_second_half_max_kib"),
             mem.get("rss_limit_kib"), mem.get("rss_slope_kib_per_min")))
        p("fds             startup %s, max %s (bound %s), 10 s after clients closed %s"
          % (self.base_fds, result["fds_max"], self.fd_cap, self.end_fds))
        if self.end_fds is not None and self.end_fds > self.base_fds:
            p("fds at the end  %s" % self.end_fds_text)
        with open(os.path.join(self.tmpdir, "samples.csv"), "w") as f:
            f.write("t_s,rss_kib,fds\n")
            for t, rss, fds in self.samples:
                f.write("%.1f,%s,%s\n" % (t, rss, fds))
        p("SOAK_RESULT " + json.dumps(result, sort_keys=True))
        sys.stdout.flush()
        return 0 if n_unexplained == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.environ.get(
        "CUTOVER_BIN", os.path.join(REPO, "build", "proxy", "cutover")))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float)
    g.add_argument("--seconds", type=float)
    ap.add_argument("--clients", type=int, default=6, help="keep-alive traffic threads")
    ap.add_argument("--rl-clients", type=int, default=1, help="pairs of hog/polite key threads")
    ap.add_argument("--websockets", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=10.0, help="seconds between kills")
    ap.add_argument("--reload-every", type=float, default=3.0)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds after a restart during which kill-related errors are explained")
    ap.add_argument("--no-kill", action="store_true")
    ap.add_argument("--no-reload", action="store_true")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()
    if not args.minutes and not args.seconds:
        args.seconds = 60.0
    args.binary = os.path.abspath(args.binary)
    if not os.access(args.binary, os.X_OK):
        sys.stderr.write("cutover binary not found: %s\n" % args.binary)
        return 2

    soak = Soak(args)

    def on_term(signum, frame):
        raise KeyboardInterrupt()

    # Explicit for SIGINT too: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        try:
            soak.setup()
        except (RuntimeError, OSError) as e:
            sys.stderr.write("soak setup failed: %s\n" % e)
            return 2
        sys.stderr.write("soak: %.0f s, seed %d, proxy pid %d port %d, backends %s, logs %s\n"
                         % (soak.duration, soak.seed, soak.proxy.pid, soak.proxy.port,
                            soak.ports, soak.tmpdir))
        soak.run()
        return soak.report()
    except KeyboardInterrupt:
        soak.ledger.closing = True
        sys.stderr.write("soak interrupted\n")
        soak.stop.set()
        return 130
    finally:
        soak.stop.set()
        soak.children.kill_all()
        soak.reaped.set()


if __name__ == "__main__":
    sys.exit(main())
