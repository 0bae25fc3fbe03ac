#!/usr/bin/env python3
"""Times `cutover --check` on generated configs with many routes (issue: --check was quadratic).

    tools/bench/route_scale.py [--cutover PATH] [--routes 10000,100000] [--repeat 3] [--keep DIR]

Each config has two backends and N routes mixing exact and prefix matches, a header condition on
every 10th, `case_sensitive: false` on every 7th, a split and a per-route rate limit on every 50th,
then a catch-all; every route name is distinct, so the config is valid. Prints one line per size:
routes, file size, best and median wall time and best CPU time (user + system: steadier on a
shared machine) of `cutover --check`, which must print OK.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def find_binary(arg):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    for c in (arg, os.environ.get("CUTOVER_BIN"), os.path.join(root, "build/proxy/cutover")):
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("cutover binary not found: build it or pass --cutover PATH")


def generate(n):
    out = ["listeners: [{name: p, address: 127.0.0.1:0}]",
           "admin: {enabled: false}",
           "backends:",
           "  legacy: {endpoints: [\"127.0.0.1:9001\"]}",
           "  new: {endpoints: [\"127.0.0.1:9002\"]}",
           "routes:"]
    for i in range(n):
        kind = "exact" if i % 3 == 0 else "prefix"
        path = "/svc%d/api/v%d/items%d" % (i % 997, i % 5, i)
        match = "{%s: %s" % (kind, path)
        if i % 10 == 0:
            match += ", header: {name: x-beta, value: \"%d\"}" % (i % 4)
        if i % 7 == 0:
            match += ", case_sensitive: false"
        match += "}"
        line = "  - {name: r%d, match: %s, split: {new: %d, legacy: %d}" % (
            i, match, i % 101, 100 - i % 101)
        if i % 50 == 0:
            line += ", rate_limit: {rate: 100/s, key: client_ip}"
        out.append(line + "}")
    out.append("  - {name: all, match: {prefix: /}, split: {legacy: 100}}")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cutover")
    ap.add_argument("--routes", default="10000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--keep", help="write the configs into this directory and keep them")
    ap.add_argument("--no-case-sensitive-key", action="store_true",
                    help="omit case_sensitive (for binaries that predate the key)")
    args = ap.parse_args()
    binary = find_binary(args.cutover)
    tmp = args.keep or tempfile.mkdtemp(prefix="route_scale.")
    os.makedirs(tmp, exist_ok=True)
    try:
        for n in (int(x) for x in args.routes.split(",")):
            text = generate(n)
            if args.no_case_sensitive_key:
                text = text.replace(", case_sensitive: false", "")
            path = os.path.join(tmp, "routes_%d.yaml" % n)
            with open(path, "w") as f:
                f.write(text)
            times = []
            cpu = []
            for _ in range(args.repeat):
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.monotonic()
                try:
                    r = subprocess.run([binary, "--check", path], capture_output=True, text=True,
                                       timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print("routes=%d: --check did not finish within %.0f s" % (n, args.timeout))
                    break
                times.append(time.monotonic() - t0)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
                if r.returncode != 0 or "OK" not in r.stdout:
                    sys.exit("routes=%d: --check failed:\n%s%s" % (n, r.stdout, r.stderr[-2000:]))
            if times:
                print("routes=%d bytes=%d wall_best=%.3fs wall_median=%.3fs cpu_best=%.3fs runs=%d"
                      % (n, len(text), min(times), statistics.median(times), min(cpu), len(times)),
                      flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
