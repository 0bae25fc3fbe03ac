#!/usr/bin/env python3
"""Hot-reload benchmark for cutover (issue 4 goals).

1. Apply latency: time from the start of a config write that flips the weights (new 0 <-> 100) to
   the first response served by the other backend (`x-cutover-backend` header), polled with a tight
   loop of keep-alive requests. Goal: within 100 ms.
2. Reloads under load: constant wrk load while the config file is rewritten N times (default 200,
   alternating weights). Goal: zero socket errors and zero non-2xx responses.

Exit status: 0 ran (goals reported), 1 error, 3 hot reload not available in this build.
    python3 tools/bench/reload_bench.py --out /tmp/reload.json
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

COUNT_STATUS_LUA = os.path.join(bl.HERE, "count_status.lua")


class NoHotReload(Exception):
    pass


class ConfigWriter:
    """Writes the config the way an operator's tool would.

    rename:    temp file + rename over the config (cutoverctl, most editors)
    inplace:   truncate and rewrite the same inode (vim with backupcopy=yes, `cat >`)
    configmap: Kubernetes ConfigMap volume: cutover.yaml -> ..data/cutover.yaml, and ..data is a
               symlink to a timestamped directory swapped atomically by renaming a new symlink.
    """

    def __init__(self, directory, mode):
        self.dir = directory
        self.mode = mode
        self.path = os.path.join(directory, "cutover.yaml")
        self.generation = 0

    def write(self, text):
        self.generation += 1
        if self.mode == "inplace":
            with open(self.path, "w") as f:
                f.write(text)
        elif self.mode == "rename":
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.rename(tmp, self.path)
        else:
            stamp = f"..gen_{self.generation:06d}"
            os.mkdir(os.path.join(self.dir, stamp))
            with open(os.path.join(self.dir, stamp, "cutover.yaml"), "w") as f:
                f.write(text)
            tmp_link = os.path.join(self.dir, "..data_tmp")
            os.symlink(stamp, tmp_link)
            os.rename(tmp_link, os.path.join(self.dir, "..data"))
            if not os.path.islink(self.path):
                os.symlink("..data/cutover.yaml", self.path)
            old = os.path.join(self.dir, f"..gen_{self.generation - 1:06d}")
            if os.path.isdir(old):
                os.remove(os.path.join(old, "cutover.yaml"))
                os.rmdir(old)


class Poller:
    """One keep-alive client connection that asks which backend served each request."""

    def __init__(self, port):
        self.port = port
        self.sock = None

    def backend(self):
        for _ in range(2):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                status, headers, _ = bl.http_get(self.sock, "/small")
                if headers.get("connection", "").lower() == "close":
                    self.close()
                return status, headers.get("x-cutover-backend")
            except (OSError, ConnectionError):
                self.close()
        raise ConnectionError("proxy does not answer")

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def wait_for_backend(poller, want, timeout):
    """Polls until a response comes from `want`; returns (seconds, requests) or (None, requests)."""
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < timeout:
        _, served = poller.backend()
        n += 1
        if served == want:
            return time.monotonic() - start, n
    return None, n


def reload_counts(admin_port):
    """cutover_config_reloads_total by result from /metrics, or None when unavailable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except (OSError, ValueError):
        return None
    counts = {}
    for line in text.splitlines():
        if line.startswith("cutover_config_reloads_total{"):
            labels, _, value = line.rpartition(" ")
            result = labels.split('result="', 1)[1].split('"', 1)[0] if 'result="' in labels \
                else "?"
            counts[result] = counts.get(result, 0) + float(value)
    return counts


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cutover", help="cutover binary (default: $CUTOVER_BIN, build/proxy/cutover)")
    ap.add_argument("--trials", type=int, default=20, help="weight flips timed (default 20)")
    ap.add_argument("--trial-timeout", type=float, default=5.0, help="seconds per flip")
    ap.add_argument("--reloads", type=int, default=200, help="rewrites under load (default 200)")
    ap.add_argument("--interval-ms", type=int, default=50, help="time between rewrites")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--write-mode", choices=("rename", "inplace", "configmap"), default="rename")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--out", help="write JSON results here")
    args = ap.parse_args()

    results = {"args": vars(args), "ran": False}
    binary = bl.find_cutover(args.cutover)
    if not binary:
        print("reload bench: cutover binary not found (build it or pass --cutover)")
        return finish(results, args, 3)

    cpus = bl.Cpus.default()
    bl.raise_nofile()
    cpus.pin_self_to_client()
    ws = bl.Workspace(cpus, keep=args.keep)
    rc = 0
    try:
        legacy_port, new_port, port, admin_port = (bl.free_port() for _ in range(4))
        bl.start_nginx_backend(ws, [legacy_port, new_port])
        confdir = ws.path("conf")
        os.mkdir(confdir)
        writer = ConfigWriter(confdir, args.write_mode)

        def config(new, legacy):
            return bl.cutover_yaml(port, legacy_port, new_port, split=(new, legacy),
                                   admin_port=admin_port)

        writer.write(config(0, 100))
        ok, out = bl.check_cutover_config(binary, writer.path)
        if not ok:
            raise RuntimeError(f"config rejected by `cutover --check`:\n{out}")
        ws.start("cutover", [binary, "--config", writer.path], port=port)
        err = bl.curl_check(port, "/small", bl.SIZES["small"])
        if err:
            raise RuntimeError(err)
        poller = Poller(port)
        status, served = poller.backend()
        if served != "legacy":
            raise RuntimeError(f"with new: 0 expected x-cutover-backend: legacy, got {served!r} "
                               f"(status {status})")

        # Probe: does this build reload at all?
        writer.write(config(100, 0))
        took, _ = wait_for_backend(poller, "new", 3.0)
        if took is None:
            raise NoHotReload()
        results["ran"] = True
        time.sleep(0.5)

        # 1. Apply latency.
        current = "new"
        lat = {"new": [], "legacy": []}
        misses = 0
        for _ in range(args.trials):
            want = "legacy" if current == "new" else "new"
            text = config(100, 0) if want == "new" else config(0, 100)
            t0 = time.monotonic()
            writer.write(text)
            write_s = time.monotonic() - t0
            took, polls = wait_for_backend(poller, want, args.trial_timeout)
            if took is None:
                misses += 1
                bl.log(f"flip to {want}: not applied within {args.trial_timeout} s")
                # Re-sync before the next trial.
                if wait_for_backend(poller, want, args.trial_timeout)[0] is None:
                    raise RuntimeError("proxy stopped applying reloads")
            else:
                lat[want].append((took + write_s) * 1e3)
                bl.log(f"flip to {want}: {(took + write_s) * 1e3:.1f} ms ({polls} polls)")
            current = want
            time.sleep(0.3)
        poller.close()
        all_ms = lat["new"] + lat["legacy"]
        results["apply_latency_ms"] = {
            "to_new": lat["new"], "to_legacy": lat["legacy"], "misses": misses,
            "median": percentile(all_ms, 50), "p90": percentile(all_ms, 90),
            "max": max(all_ms) if all_ms else None,
        }

        # 2. Reloads under constant load.
        before = reload_counts(admin_port)
        seconds = int(args.reloads * args.interval_ms / 1000) + 4
        wrk = subprocess.Popen(cpus.wrap_client(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency", "-s",
             COUNT_STATUS_LUA, f"http://127.0.0.1:{port}/small"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        write_errors = []

        def rewrite():
            for i in range(args.reloads):
                try:
                    writer.write(config(30, 70) if i % 2 == 0 else config(70, 30))
                except OSError as e:
                    write_errors.append(str(e))
                time.sleep(args.interval_ms / 1000)

        th = threading.Thread(target=rewrite)
        th.start()
        th.join()
        out, errout = wrk.communicate(timeout=seconds + 60)
        if wrk.returncode != 0:
            raise RuntimeError(f"wrk failed: {errout.decode(errors='replace')}")
        w = bl.parse_wrk(out.decode(errors="replace"))
        time.sleep(1.0)
        after = reload_counts(admin_port)
        applied = None
        if before is not None and after is not None:
            applied = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        alive = all(p.alive() for p in ws.procs)
        results["under_load"] = {
            "reloads_written": args.reloads - len(write_errors), "write_mode": args.write_mode,
            "requests": w["requests"], "rps": w["rps"], "socket_errors": w["socket_errors"],
            "socket_error_detail": w.get("socket_error_detail"), "non2xx": w["non2xx"],
            "statuses": w["statuses"], "p99_ms": w.get("p99_ms"),
            "reloads_from_metrics": applied, "proxy_alive": alive,
        }

        a = results["apply_latency_ms"]
        u = results["under_load"]
        print()
        print(f"== hot reload ({args.write_mode} writes) ==")
        print(f"apply latency over {len(all_ms)} flips: median {fmt(a['median'])} ms, p90 "
              f"{fmt(a['p90'])} ms, max {fmt(a['max'])} ms, not applied {misses} "
              f"(goal: every flip within 100 ms)")
        print(f"  to new: {', '.join(f'{x:.0f}' for x in lat['new'])}")
        print(f"  to legacy: {', '.join(f'{x:.0f}' for x in lat['legacy'])}")
        print(f"{u['reloads_written']} rewrites under wrk -c{args.connections}: {u['requests']} "
              f"requests, socket errors {u['socket_errors']}, non-2xx {u['non2xx']}, statuses "
              f"{u['statuses']}, proxy alive {alive} (goal: zero errors)")
        print(f"  reloads counted by /metrics: "
              f"{applied if applied is not None else 'unavailable (no admin /metrics)'}")
        goals = (misses == 0 and a["max"] is not None and a["max"] <= 100 and
                 u["socket_errors"] == 0 and u["non2xx"] == 0 and alive)
        results["goals_met"] = goals
        print(f"goals met: {goals}")
    except NoHotReload:
        print("reload bench: hot reload not available in this build (a weight change in the "
              "file was not applied within 3 s); nothing measured")
        results["status"] = "no hot reload"
        rc = 3
    except (RuntimeError, ValueError, ConnectionError, OSError,
            subprocess.TimeoutExpired) as e:
        print(f"reload bench failed: {e}", file=sys.stderr)
        results["error"] = str(e)
        rc = 1
    finally:
        ws.close()
        if args.keep:
            print(f"configs and logs kept in {ws.dir}", file=sys.stderr)
    return finish(results, args, rc)


def fmt(v):
    return f"{v:.1f}" if v is not None else "-"


def finish(results, args, rc):
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
