#!/usr/bin/env python3
"""cutover benchmark: HAProxy vs NGINX vs cutover, each with one worker, in interleaved rounds.

See tools/bench/README.md for what each figure means. Quick smoke run:
    tools/bench/bench.sh --quick --out /tmp/bench.json
"""

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

REFERENCE = ["haproxy", "nginx"]
COUNT_STATUS_LUA = os.path.join(bl.HERE, "count_status.lua")


class Target:
    def __init__(self, name, port, proc):
        self.name = name
        self.port = port
        self.proc = proc

    def url(self, size):
        return f"http://127.0.0.1:{self.port}/{size}"


def verify(target):
    """Fails unless the target proxies both sizes with status 200 and the right body size."""
    for size, length in bl.SIZES.items():
        err = bl.curl_check(target.port, f"/{size}", length)
        if err:
            return f"{target.name}: {err}"
    return None


# ---------------------------------------------------------------------------------------------
# Interleaved rounds

def measure_once(cpus, target, size, duration, connections):
    pids = target.proc.pids()
    ticks0 = bl.cpu_ticks(pids)
    wrk, _ = bl.run_wrk(cpus, target.url(size), duration, connections)
    ticks1 = bl.cpu_ticks(pids)
    cpu_s = (ticks1 - ticks0) / bl.CLK_TCK
    requests = wrk["requests"]
    return {
        "target": target.name, "size": size, "requests": requests, "rps": wrk["rps"],
        "p50_ms": wrk.get("p50_ms"), "p99_ms": wrk.get("p99_ms"), "cpu_s": cpu_s,
        "cpu_us_per_req": cpu_s * 1e6 / requests if requests else None,
        "socket_errors": wrk["socket_errors"], "non2xx": wrk["non2xx"],
    }


def _ratio(value, best):
    if value is None or not best:
        return None
    return value / best


def _best(pick, values):
    values = [v for v in values if v]
    return pick(values) if values else None


def run_rounds(cpus, targets, sizes, rounds, duration, connections, reference, seed):
    """Runs every (target, size) once per round in shuffled order. Returns the raw samples and,
    per sample, its ratios against the best reference target of the same round and size."""
    rng = random.Random(seed)
    bl.log("warm-up: 1 s per target and size")
    for t in targets:
        for size in sizes:
            bl.run_wrk(cpus, t.url(size), 1, connections)
    samples = []
    for r in range(rounds):
        order = [(t, s) for t in targets for s in sizes]
        rng.shuffle(order)
        round_samples = []
        for t, size in order:
            sample = measure_once(cpus, t, size, duration, connections)
            sample["round"] = r
            round_samples.append(sample)
            bl.log(f"round {r + 1}/{rounds} {t.name:>20} {size:>5}: {sample['rps']:10.0f} req/s "
                   f"p99 {_fmt(sample['p99_ms'], '.3f')} ms  cpu "
                   f"{_fmt(sample['cpu_us_per_req'], '.2f')} us/req"
                   + (f"  ERRORS {sample['socket_errors']} socket, {sample['non2xx']} non-2xx"
                      if sample["socket_errors"] or sample["non2xx"] else ""))
        for size in sizes:
            ref = [s for s in round_samples if s["size"] == size and s["target"] in reference]
            best_rps = _best(max, [s["rps"] for s in ref])
            best_cpu = _best(min, [s["cpu_us_per_req"] for s in ref])
            best_p50 = _best(min, [s["p50_ms"] for s in ref])
            best_p99 = _best(min, [s["p99_ms"] for s in ref])
            for s in round_samples:
                if s["size"] != size:
                    continue
                s["rps_ratio"] = _ratio(s["rps"], best_rps)
                s["cpu_ratio"] = _ratio(s["cpu_us_per_req"], best_cpu)
                s["p50_ratio"] = _ratio(s["p50_ms"], best_p50)
                s["p99_ratio"] = _ratio(s["p99_ms"], best_p99)
        samples += round_samples
    return samples


def summarize(samples, targets, sizes):
    summary = {}
    for size in sizes:
        summary[size] = {}
        for t in targets:
            mine = [s for s in samples if s["target"] == t.name and s["size"] == size]
            entry = {k: bl.median([s[k] for s in mine]) for k in
                     ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rps_ratio", "cpu_ratio",
                      "p50_ratio", "p99_ratio")}
            cpu_ratios = [s["cpu_ratio"] for s in mine if s.get("cpu_ratio") is not None]
            entry["cpu_ratio_min"] = min(cpu_ratios) if cpu_ratios else None
            entry["cpu_ratio_max"] = max(cpu_ratios) if cpu_ratios else None
            entry["rounds"] = len(mine)
            entry["errors"] = sum(s["socket_errors"] + s["non2xx"] for s in mine)
            summary[size][t.name] = entry
    return summary


def _fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def print_summary(title, summary, reference, rounds):
    print()
    print(f"== {title}: medians over {rounds} rounds; ratio = target / best of "
          f"{' and '.join(reference)} in the same round (lower is better except req/s) ==")
    header = (f"{'size':>5} {'target':>20} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU us/req':>10} | {'req/s x':>7} {'CPU x':>6} {'CPU x range':>13} "
              f"{'p99 x':>6} {'errors':>6}")
    print(header)
    print("-" * len(header))
    for size, per_target in summary.items():
        for name, e in per_target.items():
            rng = (f"{_fmt(e['cpu_ratio_min'], '.3f')}-{_fmt(e['cpu_ratio_max'], '.3f')}")
            print(f"{size:>5} {name:>20} {_fmt(e['rps'], '10.0f')} {_fmt(e['p50_ms'], '8.3f')} "
                  f"{_fmt(e['p99_ms'], '8.3f')} {_fmt(e['cpu_us_per_req'], '10.2f')} | "
                  f"{_fmt(e['rps_ratio'], '7.3f')} {_fmt(e['cpu_ratio'], '6.3f')} {rng:>13} "
                  f"{_fmt(e['p99_ratio'], '6.3f')} {e['errors']:>6}")


# ---------------------------------------------------------------------------------------------
# Memory per idle keep-alive connection

def idle_memory(target, count, connect=None):
    """connect(port) -> a connected blocking socket (default: plain TCP)."""
    connect = connect or (lambda port: socket.create_connection(("127.0.0.1", port), timeout=10))
    pids = target.proc.pids()
    time.sleep(0.5)
    before = bl.rss_bytes(pids)
    before_total = bl.rss_bytes(pids, "VmRSS")
    socks = []
    error = None
    try:
        for _ in range(count):
            s = connect(target.port)
            socks.append(s)
            status, _, body = bl.http_get(s, "/small")
            if status != 200 or len(body) != bl.SIZES["small"]:
                raise RuntimeError(f"status {status}, body {len(body)} bytes")
    except (OSError, RuntimeError) as e:
        error = f"after {len(socks)} connections: {e}"
    time.sleep(1.0)
    pids = target.proc.pids()
    after = bl.rss_bytes(pids)
    after_total = bl.rss_bytes(pids, "VmRSS")
    for s in socks:
        s.close()
    opened = len(socks) if error is None else max(len(socks) - 1, 0)
    time.sleep(0.5)
    return {
        "connections": opened, "rss_anon_before": before, "rss_anon_after": after,
        "vmrss_before": before_total, "vmrss_after": after_total,
        "bytes_per_conn": (after - before) / opened if opened else None,
        "vmrss_bytes_per_conn": (after_total - before_total) / opened if opened else None,
        "error": error,
    }


def print_memory(memory, reference, title="memory per idle keep-alive connection"):
    ref = [m["bytes_per_conn"] for n, m in memory.items() if n in reference and
           m["bytes_per_conn"] is not None]
    best = min(ref) if ref else None
    print()
    print(f"== {title}: (RssAnon after - before) / connections ==")
    print(f"{'target':>20} {'conns':>6} {'anon before':>12} {'anon after':>12} {'B/conn':>8} "
          f"{'x best':>7} {'VmRSS B/conn':>13}")
    for name, m in memory.items():
        m["ratio"] = _ratio(m["bytes_per_conn"], best) if best and best > 0 else None
        print(f"{name:>20} {m['connections']:>6} {m['rss_anon_before']:>12} "
              f"{m['rss_anon_after']:>12} {_fmt(m['bytes_per_conn'], '8.0f')} "
              f"{_fmt(m['ratio'], '7.3f')} {_fmt(m['vmrss_bytes_per_conn'], '13.0f')}"
              + (f"  ({m['error']})" if m["error"] else ""))


# ---------------------------------------------------------------------------------------------
# Modes

def mode_compare(ws, args, cpus, backend_port, results):
    targets = []
    for name, start in (("haproxy", bl.start_haproxy), ("nginx", bl.start_nginx_proxy)):
        port = bl.free_port()
        targets.append(Target(name, port, start(ws, port, backend_port)))
    binary = bl.find_cutover(args.cutover)
    cutover_status = "not found (build it, or pass --cutover PATH)"
    if binary:
        port = bl.free_port()
        try:
            proc, _ = bl.start_cutover(ws, binary, "cutover", bl.cutover_yaml(
                port, backend_port, backend_port,
                max_connections=max(1024, args.idle_connections + 100)), port)
            t = Target("cutover", port, proc)
            err = verify(t)
            if err:
                cutover_status = f"does not proxy: {err}"
                ws.stop(proc)
            else:
                targets.append(t)
                cutover_status = f"measured ({binary})"
        except RuntimeError as e:
            cutover_status = f"did not start: {e}"
    bl.log(f"cutover: {cutover_status}")
    results["cutover_status"] = cutover_status
    if args.baseline:
        # A second cutover build (e.g. the commit before a change) in the same rounds, so a change
        # is judged by two ratios taken side by side rather than by runs minutes apart.
        port = bl.free_port()
        try:
            proc, _ = bl.start_cutover(ws, args.baseline, "cutover-baseline", bl.cutover_yaml(
                port, backend_port, backend_port,
                max_connections=max(1024, args.idle_connections + 100)), port)
        except RuntimeError:
            # A build from before limits.max_connections_per_worker existed has no such limit.
            proc, _ = bl.start_cutover(ws, args.baseline, "cutover-baseline", bl.cutover_yaml(
                port, backend_port, backend_port), port)
        t = Target("cutover-baseline", port, proc)
        err = verify(t)
        if err:
            raise RuntimeError(f"baseline {args.baseline}: {err}")
        targets.append(t)
        results["baseline"] = args.baseline
    for t in targets:
        err = verify(t)
        if err:
            raise RuntimeError(err)
        bl.log(f"verified: {t.name} on 127.0.0.1:{t.port} proxies /small and /64k")
    sizes = list(bl.SIZES)
    samples = run_rounds(cpus, targets, sizes, args.rounds, args.duration, args.connections,
                         REFERENCE, args.seed)
    summary = summarize(samples, targets, sizes)
    memory = {}
    if args.idle_connections > 0:
        for t in targets:
            bl.log(f"idle memory: {args.idle_connections} keep-alive connections to {t.name}")
            memory[t.name] = idle_memory(t, args.idle_connections)
    results["compare"] = {"samples": samples, "summary": summary, "memory": memory}
    print_summary("throughput, latency, CPU", summary, REFERENCE, args.rounds)
    if memory:
        print_memory(memory, REFERENCE)
    if "cutover" not in [t.name for t in targets]:
        print(f"\ncutover not measured: {cutover_status}")
    for t in targets:
        ws.stop(t.proc)


def _start_variants(ws, args, variants, unsupported_key, pin=True):
    """Starts cutover once per (name, yaml) variant. Returns targets, or None when a config is
    rejected (printing why: the proxy does not support that feature yet)."""
    binary = bl.find_cutover(args.cutover)
    if not binary:
        print(f"\n{unsupported_key}: skipped, cutover binary not found")
        return None
    for name, text, _ in variants:
        path = ws.path(f"{name}.check.yaml")
        with open(path, "w") as f:
            f.write(text)
        ok, out = bl.check_cutover_config(binary, path)
        if not ok:
            print(f"\n{unsupported_key}: skipped, this cutover build rejects the '{name}' config "
                  f"(feature unsupported):\n{out}")
            return None
    targets = []
    for name, text, port in variants:
        proc, _ = bl.start_cutover(ws, binary, name, text, port, pin=pin)
        t = Target(name, port, proc)
        err = verify(t)
        if err:
            print(f"\n{unsupported_key}: skipped, {err}")
            return None
        targets.append(t)
    return targets


def mode_ab(ws, args, cpus, backend_port, results, key, title, variants, goal):
    """Two cutover configs in interleaved rounds; the first variant is the reference."""
    targets = _start_variants(ws, args, variants, key)
    if targets is None:
        results[key] = {"status": "unsupported"}
        return
    sizes = list(bl.SIZES)
    samples = run_rounds(cpus, targets, sizes, args.rounds, args.duration, args.connections,
                         [targets[0].name], args.seed)
    summary = summarize(samples, targets, sizes)
    results[key] = {"status": "measured", "samples": samples, "summary": summary}
    print_summary(title, summary, [targets[0].name], args.rounds)
    for size in sizes:
        r = summary[size][targets[1].name]["cpu_ratio"]
        print(f"{key} {size}: CPU/request {targets[1].name} / {targets[0].name} = "
              f"{_fmt(r, '.3f')} (goal < {goal})")
    for t in targets:
        ws.stop(t.proc)


def mode_chain(ws, args, cpus, backend_port, results):
    p_off, p_on = bl.free_port(), bl.free_port()
    huge = {"rate": "10000000/s", "burst": 10000000, "key": "route"}  # never empties in a run
    variants = [
        ("cutover-chain-off", bl.cutover_yaml(p_off, backend_port, backend_port,
                                              filters=["router"]), p_off),
        ("cutover-chain-on", bl.cutover_yaml(p_on, backend_port, backend_port,
                                             filters=["request_id", "rate_limit", "router"],
                                             rate_limit=huge), p_on),
    ]
    mode_ab(ws, args, cpus, backend_port, results, "chain", "filter chain on vs off", variants,
            "1.10")


def mode_metrics(ws, args, cpus, backend_port, results):
    p_off, p_on = bl.free_port(), bl.free_port()
    variants = [
        ("cutover-metrics-off", bl.cutover_yaml(p_off, backend_port, backend_port,
                                                admin_port=bl.free_port(),
                                                metrics_enabled=False), p_off),
        ("cutover-metrics-on", bl.cutover_yaml(p_on, backend_port, backend_port,
                                               admin_port=bl.free_port(),
                                               metrics_enabled=True), p_on),
    ]
    mode_ab(ws, args, cpus, backend_port, results, "metrics", "metrics on vs off", variants,
            "1.05")


def mode_ratelimit(ws, args, cpus, backend_port, results):
    rate, burst, seconds = args.rl_rate, args.rl_rate, args.rl_duration
    port = bl.free_port()
    text = bl.cutover_yaml(port, backend_port, backend_port, workers=2,
                           filters=["rate_limit", "router"],
                           route_rate_limit={"rate": f"{rate}/s", "burst": burst, "key": "route"})
    # Unpinned proxy: its two workers really run in parallel; wrk stays on the client CPU.
    targets = _start_variants(ws, args, [("cutover-ratelimit", text, port)], "ratelimit",
                              pin=False)
    if targets is None:
        results["ratelimit"] = {"status": "unsupported"}
        return
    t = targets[0]
    time.sleep(2.0 + burst / rate)  # refill what the verification requests took
    wrk, _ = bl.run_wrk(cpus, t.url("small"), seconds, connections=64, script=COUNT_STATUS_LUA)
    statuses = wrk["statuses"]
    admitted = statuses.get(200, 0)
    limited = statuses.get(429, 0)
    other = sum(v for k, v in statuses.items() if k not in (200, 429))
    expected = rate * wrk["duration_s"] + burst
    error_pct = (admitted - expected) / expected * 100
    offered = sum(statuses.values()) / wrk["duration_s"]
    results["ratelimit"] = {
        "status": "measured", "rate_per_s": rate, "burst": burst, "duration_s": wrk["duration_s"],
        "admitted": admitted, "limited": limited, "other": other, "expected": expected,
        "error_pct": error_pct, "offered_rps": offered, "socket_errors": wrk["socket_errors"],
    }
    print()
    print(f"== rate-limit accuracy: {rate}/s burst {burst}, key route, 2 workers, wrk -c64 "
          f"{wrk['duration_s']:.2f} s ==")
    print(f"offered {offered:.0f} req/s ({offered / rate:.0f}x the limit); admitted {admitted} "
          f"(200), limited {limited} (429), other {other}, socket errors {wrk['socket_errors']}")
    print(f"expected rate x time + burst = {expected:.0f}; error {error_pct:+.2f}% (goal within "
          f"1%)")
    ws.stop(t.proc)


# ---------------------------------------------------------------------------------------------

def versions():
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, timeout=10)
            return (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return None
    return {"haproxy": first_line(["haproxy", "-v"]), "nginx": first_line(["nginx", "-v"]),
            "wrk": first_line(["wrk", "--version"]), "kernel": platform.release(),
            "cpus": os.cpu_count()}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    ap.add_argument("--duration", type=int, default=4, help="seconds per wrk run (default 4)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--idle-connections", type=int, default=5000,
                    help="idle keep-alive connections for the memory figure (0 = skip)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run of about a minute: 3 rounds of 2 s")
    ap.add_argument("--baseline", help="a second cutover binary measured in the same rounds "
                    "(row cutover-baseline), to compare a change with the build before it")
    ap.add_argument("--cutover", help="cutover binary (default: $CUTOVER_BIN, build/proxy/cutover,"
                    " /work/build-bench/proxy/cutover)")
    ap.add_argument("--no-compare", action="store_true",
                    help="skip the HAProxy / NGINX / cutover comparison")
    ap.add_argument("--chain", action="store_true",
                    help="cutover CPU/request with the full filter chain on vs off")
    ap.add_argument("--metrics", action="store_true",
                    help="cutover CPU/request with metrics on vs off (needs `metrics.enabled`)")
    ap.add_argument("--ratelimit-accuracy", action="store_true",
                    help="admitted vs expected under 2 workers, 64 connections, far over the limit")
    ap.add_argument("--rl-rate", type=int, default=100, help="rate limit per second (and burst)")
    ap.add_argument("--rl-duration", type=int, default=10, help="rate-limit run seconds")
    ap.add_argument("--client-cpu", help="CPU list for wrk (default 0)")
    ap.add_argument("--server-cpu", help="CPU list for proxies and backend (default 1)")
    ap.add_argument("--seed", type=int, default=None, help="shuffle seed (default: random)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs and logs)")
    ap.add_argument("--out", help="write JSON results to this file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 3, 2
    if args.seed is None:
        args.seed = random.randrange(1 << 30)

    cpus = bl.Cpus.default()
    if args.client_cpu is not None or args.server_cpu is not None:
        cpus = bl.Cpus(args.client_cpu or cpus.client, args.server_cpu or cpus.server)
    nofile = bl.raise_nofile()
    if nofile < args.idle_connections + 1000:
        bl.log(f"warning: RLIMIT_NOFILE is {nofile}; idle-connection test may run out of fds")
    cpus.pin_self_to_client()

    results = {"args": vars(args), "versions": versions(), "started": time.time(),
               "pinning": {"client": cpus.client, "server": cpus.server}}
    ws = bl.Workspace(cpus, keep=args.keep)
    rc = 0
    try:
        backend_port = bl.free_port()
        bl.start_nginx_backend(ws, [backend_port])
        for size, length in bl.SIZES.items():
            err = bl.curl_check(backend_port, f"/{size}", length)
            if err:
                raise RuntimeError(f"backend: {err}")
        if not args.no_compare:
            mode_compare(ws, args, cpus, backend_port, results)
        if args.chain:
            mode_chain(ws, args, cpus, backend_port, results)
        if args.metrics:
            mode_metrics(ws, args, cpus, backend_port, results)
        if args.ratelimit_accuracy:
            mode_ratelimit(ws, args, cpus, backend_port, results)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        results["error"] = str(e)
        rc = 1
    finally:
        ws.close()
        if args.keep:
            print(f"configs and logs kept in {ws.dir}", file=sys.stderr)
    results["finished"] = time.time()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nresults written to {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
