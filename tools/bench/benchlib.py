"""Shared pieces of the cutover benchmarks: processes, configs, wrk, /proc accounting.

Everything listens on 127.0.0.1 only. Every child is started by this module, remembered by pid,
and stopped by pid (SIGTERM, then SIGKILL after a bounded wait). Every wait is bounded.
"""

import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TEMPLATES = os.path.join(HERE, "templates")
CLK_TCK = os.sysconf("SC_CLK_TCK")

SMALL_BODY = b"x" * 99 + b"\n"  # 100 bytes
LARGE_SIZE = 65536
SIZES = {"small": len(SMALL_BODY), "64k": LARGE_SIZE}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Environment

def raise_nofile(want=65536):
    """Raises RLIMIT_NOFILE as far as allowed; children inherit it. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (want, hard):
        try:
            new_hard = max(hard, target) if os.geteuid() == 0 else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Cpus:
    """Which CPU the load generator uses and which the servers use (None = no pinning)."""

    def __init__(self, client, server):
        self.client = client
        self.server = server

    @staticmethod
    def default():
        n = os.cpu_count() or 1
        if n < 2:
            log("warning: fewer than 2 CPUs, running unpinned")
            return Cpus(None, None)
        return Cpus("0", "1")

    def wrap_server(self, argv):
        return (["taskset", "-c", self.server] + argv) if self.server else argv

    def wrap_client(self, argv):
        return (["taskset", "-c", self.client] + argv) if self.client else argv

    def wrap_any(self, argv):
        return ["taskset", "-c", f"0-{(os.cpu_count() or 1) - 1}"] + argv

    def pin_self_to_client(self):
        if self.client:
            os.sched_setaffinity(0, {int(c) for c in self.client.split(",")})


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, alive=lambda: True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def render(template_name, **values):
    with open(os.path.join(TEMPLATES, template_name)) as f:
        return string.Template(f.read()).substitute(**values)


# ---------------------------------------------------------------------------------------------
# /proc accounting

def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # comm may contain spaces and parentheses: fields start after the last ')'.
    return data[data.rindex(")") + 2:].split()


def cpu_ticks(pids):
    """utime+stime (all threads) summed over pids, in clock ticks. Vanished pids count 0."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total


def rss_bytes(pids, field="RssAnon"):
    """A /proc/<pid>/status memory field summed over pids, in bytes.

    RssAnon (heap, stacks, anonymous mmaps) is what per-connection state grows; VmRSS also counts
    file-backed pages (the binary, shared libraries), which the kernel may drop and fault back in
    at any time, so differences of VmRSS are noisy and can even be negative."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry))[1]) == pid:
                kids.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return kids


# ---------------------------------------------------------------------------------------------
# Processes

class Proc:
    """One started server. `pids()` is the process and its children (nginx workers)."""

    def __init__(self, name, argv, workdir, cpus, env=None, pin=True):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        # Unpinned still needs taskset: this script pins itself to the client CPU and children
        # would inherit that.
        argv = cpus.wrap_server(argv) if pin else cpus.wrap_any(argv)
        self.popen = subprocess.Popen(argv, stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def pids(self):
        return [self.pid] + children_of(self.pid)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        if self.popen.poll() is None:
            kids = children_of(self.pid)
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
            for kid in kids:  # workers left behind by a killed master
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()


class Workspace:
    """A temp dir plus every process started in it; `close()` stops them all by pid."""

    def __init__(self, cpus, keep=False):
        self.dir = tempfile.mkdtemp(prefix="cutover-bench-")
        os.chmod(self.dir, 0o755)  # nginx workers drop privileges and must read the docroot
        self.cpus = cpus
        self.keep = keep
        self.procs = []

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def start(self, name, argv, port=None, env=None, pin=True):
        proc = Proc(name, argv, self.dir, self.cpus, env, pin)
        self.procs.append(proc)
        if port is not None and not wait_port(port, alive=proc.alive):
            raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port}:\n{proc.log_tail()}")
        if not proc.alive():
            raise RuntimeError(f"{name} exited at start:\n{proc.log_tail()}")
        return proc

    def stop(self, proc):
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self):
        for proc in reversed(self.procs):
            proc.stop()
        self.procs = []
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def _nginx_dirs(ws, name):
    prefix = ws.path(name)
    os.makedirs(prefix, exist_ok=True)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(prefix, "tmp", sub), exist_ok=True)
        os.chmod(os.path.join(prefix, "tmp", sub), 0o777)
    os.chmod(prefix, 0o755)
    return prefix


def _nginx_argv(prefix, conf):
    return ["nginx", "-p", prefix, "-e", os.path.join(prefix, "error.log"), "-c", conf]


def start_nginx_backend(ws, ports):
    """nginx serving /small (100 B) and /64k (65536 B) on each port in `ports`, 1 worker."""
    prefix = _nginx_dirs(ws, "backend")
    www = os.path.join(prefix, "www")
    os.makedirs(www, exist_ok=True)
    os.chmod(www, 0o755)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(SMALL_BODY)
    with open(os.path.join(www, "64k"), "wb") as f:
        f.write(bytes(random.Random(1).getrandbits(8) for _ in range(LARGE_SIZE)))
    for fname in ("small", "64k"):
        os.chmod(os.path.join(www, fname), 0o644)
    listens = "\n".join(f"    listen 127.0.0.1:{p} backlog=4096;" for p in ports)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(render("backend-nginx.conf", prefix=prefix, www=www, listens=listens))
    proc = ws.start("backend-nginx", _nginx_argv(prefix, conf), port=ports[0])
    for p in ports[1:]:
        if not wait_port(p):
            raise RuntimeError(f"backend did not listen on {p}")
    return proc


def start_nginx_proxy(ws, port, backend_port):
    prefix = _nginx_dirs(ws, "proxy-nginx")
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(render("proxy-nginx.conf", prefix=prefix, port=port, backend_port=backend_port))
    return ws.start("nginx", _nginx_argv(prefix, conf), port=port)


def start_haproxy(ws, port, backend_port):
    conf = ws.path("haproxy.cfg")
    with open(conf, "w") as f:
        f.write(render("haproxy.cfg", port=port, backend_port=backend_port))
    return ws.start("haproxy", ["haproxy", "-db", "-f", conf], port=port)


# ---------------------------------------------------------------------------------------------
# cutover

def find_cutover(explicit=None):
    candidates = [explicit, os.environ.get("CUTOVER_BIN"),
                  os.path.join(REPO, "build", "proxy", "cutover"),
                  "/work/build-bench/proxy/cutover"]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def cutover_yaml(port, legacy_port, new_port, workers=1, split=(50, 50), admin_port=None,
                 filters=None, rate_limit=None, route_rate_limit=None, metrics_enabled=None,
                 override_header=None, max_connections=None, listener_tls=None):
    """cutover config text. split = (new, legacy) weights. rate limits are dicts of YAML scalars.
    max_connections sets limits.max_connections_per_worker (default 1024), which the idle-memory
    figure must exceed. listener_tls = (cert path, key path) makes the listener terminate TLS."""
    lines = [
        "# generated by tools/bench",
        "listeners:",
        "  - name: bench",
        f"    address: 127.0.0.1:{port}",
    ]
    if listener_tls is not None:
        lines.append(f"    tls: {{ certificates: [{{ cert: {listener_tls[0]}, "
                     f"key: {listener_tls[1]} }}] }}")
    lines += [
        f"workers: {workers}",
        "backends:",
        f'  legacy: {{ endpoints: ["127.0.0.1:{legacy_port}"] }}',
        f'  new: {{ endpoints: ["127.0.0.1:{new_port}"] }}',
    ]
    if filters is not None:
        lines.append("filters: [" + ", ".join(filters) + "]")
    if rate_limit is not None:
        lines.append("rate_limit: { " + ", ".join(f"{k}: {v}" for k, v in rate_limit.items())
                     + " }")
    if override_header:
        lines.append(f"override_header: {override_header}")
    lines += [
        "routes:",
        "  - name: default",
        "    match: { prefix: / }",
        f"    split: {{ new: {split[0]}, legacy: {split[1]} }}",
    ]
    if route_rate_limit is not None:
        lines.append("    rate_limit: { " + ", ".join(f"{k}: {v}" for k, v in
                                                     route_rate_limit.items()) + " }")
    if max_connections is not None:
        lines += ["limits:", f"  max_connections_per_worker: {max_connections}"]
    if admin_port is None:
        lines += ["admin:", "  enabled: false"]
    else:
        lines += ["admin:", f"  address: 127.0.0.1:{admin_port}"]
    if metrics_enabled is not None:
        lines += ["metrics:", f"  enabled: {'true' if metrics_enabled else 'false'}"]
    lines += ["access_log:", "  mode: off", ""]
    return "\n".join(lines)


def check_cutover_config(binary, path):
    """Runs `cutover --check path`; returns (ok, output)."""
    try:
        r = subprocess.run([binary, "--check", path], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace").strip()


def start_cutover(ws, binary, name, yaml_text, port, pin=True):
    conf = ws.path(f"{name}.yaml")
    with open(conf, "w") as f:
        f.write(yaml_text)
    ok, out = check_cutover_config(binary, conf)
    if not ok:
        raise RuntimeError(f"{name}: config rejected by `cutover --check`:\n{out}")
    return ws.start(name, [binary, "--config", conf], port=port, pin=pin), conf


# ---------------------------------------------------------------------------------------------
# Clients

def curl_check(port, path, expect_size, timeout=5):
    """One request through curl: returns None when status is 200 and the body size matches."""
    try:
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-m", str(timeout), "-w",
                            "%{http_code} %{size_download}", f"http://127.0.0.1:{port}{path}"],
                           capture_output=True, timeout=timeout + 5)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"curl failed: {e}"
    out = r.stdout.decode().strip()
    if out != f"200 {expect_size}":
        return f"curl http://127.0.0.1:{port}{path}: got '{out}' (want '200 {expect_size}'), " \
               f"{r.stderr.decode().strip()}"
    return None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    """wrk (4.x) --latency output → dict; raises ValueError when the summary is missing."""
    res = {"socket_errors": 0, "non2xx": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out)
    if not m:
        raise ValueError("no request count in wrk output:\n" + out)
    res["requests"] = int(m.group(1))
    res["duration_s"] = _to_ms(m.group(2) + m.group(3)) / 1e3
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else res["requests"] / max(res["duration_s"], 1e-9)
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.\d+)?%\s+([\d.]+(?:us|ms|s|m|h))", out, re.M)
        if m:
            res[f"p{pct}_ms"] = _to_ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(x) for x in m.groups())
        res["socket_error_detail"] = dict(zip(("connect", "read", "write", "timeout"),
                                              (int(x) for x in m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    res["statuses"] = {int(k): int(v) for k, v in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    return res


def run_wrk(cpus, url, duration, connections=32, threads=1, script=None, timeout_s=None):
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if timeout_s:
        argv.append(f"--timeout={timeout_s}s")
    if script:
        argv += ["-s", script]
    argv.append(url)
    r = subprocess.run(cpus.wrap_client(argv), capture_output=True, timeout=duration + 60)
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return parse_wrk(out), out


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def http_get(sock, path, host="bench", extra_headers=""):
    """One keep-alive GET on a connected blocking socket → (status, headers, body).

    Handles Content-Length framing only (the benchmark backends never chunk)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response headers")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return status, headers, body
