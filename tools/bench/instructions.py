#!/usr/bin/env python3
"""User-space instructions per request, from callgrind: deterministic, unlike CPU time.

Runs cutover (one worker, access log and admin off, the bench config's 50/50 split) under
`valgrind --tool=callgrind` in front of the demo backend, sends N1 and then N2 keep-alive GETs in
two separate runs, and reports (Ir(N2) - Ir(N1)) / (N2 - N1): start-up and shutdown cancel out.

    python3 tools/bench/instructions.py --cutover build/proxy/cutover [--size 100] [--n 2000]

Compare two binaries (before/after a change) with --cutover A --cutover B. Build them the same way
(Release) for figures worth quoting.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.dont_write_bytecode = True
import harness as h  # noqa: E402


def run_once(binary, backend, n, size, chain):
    tmp = tempfile.mkdtemp(prefix="cutover-ir-")
    cfg = h.make_config({"legacy": backend, "new": backend}, split={"legacy": 50, "new": 50},
                        extra={"access_log": {"mode": "off"},
                               **({} if chain else {"filters": ["router"]})})
    path = os.path.join(tmp, "cutover.yaml")
    with open(path, "w") as f:
        f.write(h.to_yaml(cfg) + "\n")
    out = os.path.join(tmp, "callgrind.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                             binary, "--config", path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = None
    seen = []
    deadline = time.monotonic() + 60
    while port is None and time.monotonic() < deadline:
        line = proc.stdout.readline()  # event log and valgrind lines
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        m = re.search(r'"event":"listening".*?"address":"127\.0\.0\.1:(\d+)"', line)
        if m:
            port = int(m.group(1))
    if port is None:
        proc.kill()
        sys.exit("cutover under callgrind did not start:\n" + "".join(seen[-10:]))
    req = b"GET /bytes?n=%d HTTP/1.1\r\nHost: bench\r\n\r\n" % size
    with h.Client(port, timeout=30) as c:
        for _ in range(n):
            c.send(req)
            r = c.read_response()
            assert r.status == 200 and len(r.body) == size, r
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    with open(out) as f:
        text = f.read()
    m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    if os.environ.get("KEEP_CALLGRIND"):
        print("callgrind output:", out)
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cutover", action="append", required=True)
    ap.add_argument("--size", type=int, action="append")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--no-chain", action="store_true", help="filters: [router] only")
    args = ap.parse_args()
    sizes = args.size or [100, 65536]
    backend = h.start_backend("bench")
    try:
        for binary in args.cutover:
            for size in sizes:
                a = run_once(binary, backend, args.n // 4, size, not args.no_chain)
                b = run_once(binary, backend, args.n, size, not args.no_chain)
                per = (b - a) / (args.n - args.n // 4)
                print("%s size=%d instructions/request=%.0f" % (binary, size, per), flush=True)
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
