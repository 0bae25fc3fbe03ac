#!/usr/bin/env python3
"""TLS benchmark: HAProxy vs NGINX vs cutover terminating TLS, one worker each, interleaved rounds.

Same method as run.py (see tools/bench/README.md, section "TLS"): one ECDSA P-256 certificate made
at run time for all three proxies, the same plain NGINX backend behind them.

    tools/bench/bench.sh --tls --quick --out /tmp/tls.json     # smoke run, about 2 minutes
    tools/bench/bench.sh --tls --rounds 6 --duration 4        # figures worth quoting

cutover is measured only when `cutover --check` accepts a listener with `tls:`; otherwise this
prints "cutover: no TLS listener support in this build" and compares HAProxy with NGINX.
"""

import argparse
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import run  # noqa: E402

REFERENCE = run.REFERENCE
NO_TLS = "cutover: no TLS listener support in this build"

# Handshake kinds: (name, s_time arguments, what one "connection" is).
# TLS 1.3 sends its session ticket after the handshake, so `s_time -reuse` only resumes when it
# reads from the connection: the TLS 1.3 kinds fetch /small (HTTP/1.0, closed by the server)
# after each handshake. TLS 1.2 resumes without reading, so its kinds are the handshake alone.
HANDSHAKES = [
    ("tls13-full", ["-new", "-tls1_3", "-www", "/small"], "TLS 1.3 handshake + GET /small"),
    ("tls13-resumed", ["-reuse", "-tls1_3", "-www", "/small"],
     "TLS 1.3 resumed (ticket) + GET /small"),
    ("tls12-full", ["-new", "-tls1_2"], "TLS 1.2 handshake only"),
    ("tls12-resumed", ["-reuse", "-tls1_2"], "TLS 1.2 resumed handshake only"),
]


# ---------------------------------------------------------------------------------------------
# Certificates

def _openssl(argv, cwd):
    r = subprocess.run(["openssl"] + argv, cwd=cwd, capture_output=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(argv)}: {r.stderr.decode(errors='replace')}")


def make_certs(workdir):
    """An ECDSA P-256 CA and a server certificate for localhost / 127.0.0.1 signed by it.
    Returns paths: ca, cert, key, pem (cert + key, HAProxy's format)."""
    d = os.path.join(workdir, "certs")
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
              "-subj", "/CN=cutover bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    _openssl(["req", "-new"] + ec + ["-keyout", "server.key", "-out", "server.csr",
              "-subj", "/CN=localhost"], d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile", "server.ext"], d)
    _openssl(["verify", "-CAfile", "ca.crt", "server.crt"], d)
    paths = {k: os.path.join(d, v) for k, v in
             (("ca", "ca.crt"), ("cert", "server.crt"), ("key", "server.key"),
              ("pem", "server.pem"))}
    with open(paths["pem"], "w") as out:
        for part in ("cert", "key"):
            with open(paths[part]) as f:
                out.write(f.read())
    for p in paths.values():
        os.chmod(p, 0o644)  # nginx reads them as root at start; keep them readable anyway
    return paths


# ---------------------------------------------------------------------------------------------
# Proxies

class TlsTarget(run.Target):
    def url(self, size):
        return f"https://127.0.0.1:{self.port}/{size}"


def start_haproxy_tls(ws, port, backend_port, certs):
    conf = ws.path("haproxy-tls.cfg")
    with open(conf, "w") as f:
        f.write(bl.render("haproxy-tls.cfg", port=port, backend_port=backend_port,
                          pem=certs["pem"]))
    return ws.start("haproxy-tls", ["haproxy", "-db", "-f", conf], port=port)


def start_nginx_tls(ws, port, backend_port, certs):
    prefix = bl._nginx_dirs(ws, "proxy-nginx-tls")
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(bl.render("proxy-nginx-tls.conf", prefix=prefix, port=port,
                          backend_port=backend_port, cert=certs["cert"], key=certs["key"]))
    return ws.start("nginx-tls", bl._nginx_argv(prefix, conf), port=port)


def cutover_tls_config(ws, args, backend_port, certs):
    """(binary, yaml, port) when this cutover build accepts a TLS listener, else (None, reason)."""
    binary = bl.find_cutover(args.cutover)
    if not binary:
        return None, "cutover: binary not found (build it, or pass --cutover PATH)"
    port = bl.free_port()
    text = bl.cutover_yaml(port, backend_port, backend_port,
                           max_connections=max(1024, args.idle_connections + 100),
                           listener_tls=(certs["cert"], certs["key"]))
    path = ws.path("cutover-tls.check.yaml")
    with open(path, "w") as f:
        f.write(text)
    ok, out = bl.check_cutover_config(binary, path)
    if not ok:
        bl.log(f"`cutover --check` on a TLS listener config said:\n{out}")
        return None, NO_TLS
    return (binary, text, port), None


def curl_tls(port, path, expect_size, ca, timeout=5):
    """One request through curl verifying the certificate against our CA; None when OK."""
    url = f"https://127.0.0.1:{port}{path}"
    try:
        r = subprocess.run(["curl", "-sS", "--cacert", ca, "-o", "/dev/null", "-m", str(timeout),
                            "-w", "%{http_code} %{size_download}", url],
                           capture_output=True, timeout=timeout + 5)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"curl failed: {e}"
    out = r.stdout.decode().strip()
    if out != f"200 {expect_size}":
        return f"curl {url}: got '{out}' (want '200 {expect_size}'), {r.stderr.decode().strip()}"
    return None


def s_time_request_check(port, ca, timeout=10):
    """The request `s_time -www /small` sends (HTTP/1.0, no Host) must get a 200 with the whole
    body, or the handshake figures would count error responses. None when OK."""
    try:
        r = subprocess.run(["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{port}",
                            "-CAfile", ca, "-verify_return_error"],
                           input=b"GET /small HTTP/1.0\r\n\r\n", capture_output=True,
                           timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"s_client failed: {e}"
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if not re.fullmatch(r"HTTP/1\.[01] 200 .*", status) or body != bl.SMALL_BODY:
        return f"HTTP/1.0 GET /small over s_client: got '{status}' and {len(body)} body bytes"
    return None


def verify(target, ca):
    for size, length in bl.SIZES.items():
        err = curl_tls(target.port, f"/{size}", length, ca)
        if err:
            return f"{target.name}: {err}"
    err = s_time_request_check(target.port, ca)
    return f"{target.name}: {err}" if err else None


def negotiated(port, ca):
    """Protocol and cipher a default client gets, from `openssl s_client -brief`."""
    try:
        r = subprocess.run(["openssl", "s_client", "-brief", "-connect", f"127.0.0.1:{port}",
                            "-CAfile", ca, "-servername", "localhost"],
                           input=b"", capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    text = (r.stdout + r.stderr).decode(errors="replace")
    out = {}
    for key, label in (("protocol", "Protocol version"), ("cipher", "Ciphersuite"),
                       ("key_exchange", "(?:Peer|Server) Temp Key"),
                       ("verification", "Verification")):
        m = re.search(rf"^{label}:\s*(.+)$", text, re.M)
        if m:
            out[key] = m.group(1).strip()
    return out


# ---------------------------------------------------------------------------------------------
# Handshakes per second, CPU per handshake of the proxy

def parse_s_time(out):
    """s_time prints one mark per connection ('r' = resumed) and a summary line."""
    m = re.search(r"(\d+) connections in (\d+) real seconds, (\d+) bytes read per connection",
                  out)
    if not m:
        raise ValueError("no summary in s_time output:\n" + out[-2000:])
    marks = "".join(line for line in out.splitlines()
                    if line and re.fullmatch(r"[*r0-9]+", line))
    return {"connections": int(m.group(1)), "real_s": int(m.group(2)),
            "bytes_per_conn": int(m.group(3)), "resumed": marks.count("r")}


def measure_handshakes(cpus, target, kind, seconds, ca):
    name, extra, _ = kind
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{target.port}", "-CAfile", ca,
            "-time", str(seconds)] + extra
    pids = target.proc.pids()
    ticks0 = bl.cpu_ticks(pids)
    t0 = time.monotonic()
    r = subprocess.run(cpus.wrap_client(argv), capture_output=True, timeout=seconds + 60)
    wall = time.monotonic() - t0
    ticks1 = bl.cpu_ticks(pids)
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0:
        raise RuntimeError(f"s_time against {target.name} failed ({r.returncode}): "
                           f"{r.stderr.decode(errors='replace')[-500:]}")
    st = parse_s_time(out)
    n = st["connections"]
    cpu_s = (ticks1 - ticks0) / bl.CLK_TCK
    # -reuse: after one full handshake every counted connection should resume.
    resumed_frac = st["resumed"] / n if "-reuse" in extra and n else None
    # With -www, a connection that did not get a whole /small response read fewer bytes.
    short = "-www" in extra and st["bytes_per_conn"] < bl.SIZES["small"]
    return {"target": target.name, "kind": name, "connections": n, "wall_s": wall,
            "per_s": n / wall if wall > 0 else None, "cpu_s": cpu_s,
            "cpu_us_per_hs": cpu_s * 1e6 / n if n else None,
            "resumed": st["resumed"], "resumed_frac": resumed_frac,
            "bytes_per_conn": st["bytes_per_conn"], "short_reads": short}


def run_handshake_rounds(cpus, targets, kinds, rounds, seconds, ca, seed):
    rng = random.Random(seed + 1)
    samples = []
    for r in range(rounds):
        order = [(t, k) for t in targets for k in kinds]
        rng.shuffle(order)
        round_samples = []
        for t, k in order:
            s = measure_handshakes(cpus, t, k, seconds, ca)
            s["round"] = r
            round_samples.append(s)
            bl.log(f"round {r + 1}/{rounds} {t.name:>12} {k[0]:>14}: {s['per_s']:8.0f} conn/s "
                   f"cpu {run._fmt(s['cpu_us_per_hs'], '.1f')} us/conn"
                   + (f" resumed {s['resumed_frac']:.3f}" if s["resumed_frac"] is not None
                      else ""))
        for k in kinds:
            ref = [s["cpu_us_per_hs"] for s in round_samples
                   if s["kind"] == k[0] and s["target"] in REFERENCE]
            best = run._best(min, ref)
            for s in round_samples:
                if s["kind"] == k[0]:
                    s["cpu_ratio"] = run._ratio(s["cpu_us_per_hs"], best)
        samples += round_samples
    return samples


def summarize_handshakes(samples, targets, kinds):
    summary = {}
    for k in kinds:
        summary[k[0]] = {}
        for t in targets:
            mine = [s for s in samples if s["target"] == t.name and s["kind"] == k[0]]
            ratios = [s["cpu_ratio"] for s in mine if s.get("cpu_ratio") is not None]
            summary[k[0]][t.name] = {
                "per_s": bl.median([s["per_s"] for s in mine]),
                "cpu_us_per_hs": bl.median([s["cpu_us_per_hs"] for s in mine]),
                "cpu_ratio": bl.median(ratios),
                "cpu_ratio_min": min(ratios) if ratios else None,
                "cpu_ratio_max": max(ratios) if ratios else None,
                "resumed_frac": bl.median([s["resumed_frac"] for s in mine]),
                "short_reads": sum(1 for s in mine if s["short_reads"]),
                "rounds": len(mine),
            }
    return summary


def print_handshakes(summary, kinds, rounds):
    print()
    print(f"== handshakes (openssl s_time on the client CPU): medians over {rounds} rounds; "
          f"CPU = proxy's utime+stime / connections; ratio against the best of "
          f"{' and '.join(REFERENCE)} in the same round ==")
    header = (f"{'kind':>14} {'target':>12} {'conn/s':>8} {'CPU us/conn':>11} | {'CPU x':>6} "
              f"{'CPU x range':>13} {'resumed':>7}")
    print(header)
    print("-" * len(header))
    for name, what in ((k[0], k[2]) for k in kinds):
        for tname, e in summary[name].items():
            rng = f"{run._fmt(e['cpu_ratio_min'], '.3f')}-{run._fmt(e['cpu_ratio_max'], '.3f')}"
            print(f"{name:>14} {tname:>12} {run._fmt(e['per_s'], '8.0f')} "
                  f"{run._fmt(e['cpu_us_per_hs'], '11.1f')} | {run._fmt(e['cpu_ratio'], '6.3f')} "
                  f"{rng:>13} {run._fmt(e['resumed_frac'], '7.3f')}"
                  + (f"  ({e['short_reads']} runs with short reads)" if e["short_reads"] else ""))
    print("kinds: " + "; ".join(f"{k[0]} = {k[2]}" for k in kinds))
    for name in summary:
        for tname, e in summary[name].items():
            if e["resumed_frac"] is not None and e["resumed_frac"] < 0.9:
                print(f"warning: {tname} resumed only {e['resumed_frac']:.1%} of {name} "
                      f"connections: its row is mostly full handshakes")


# ---------------------------------------------------------------------------------------------

def tls_connector(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    def connect(port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        return ctx.wrap_socket(raw, server_hostname="localhost")
    return connect


def print_goals(ka, hs, memory):
    """cutover against the issue's goals (called only when it was measured)."""
    print()
    print("== cutover against the goals (median per-round ratio to the best of HAProxy/NGINX) ==")
    for size, per in ka.items():
        r = per["cutover"]["cpu_ratio"]
        print(f"keep-alive {size:>5}: CPU x {run._fmt(r, '.3f')} (goal <= 0.90)")
    for kind, per in hs.items():
        r = per["cutover"]["cpu_ratio"]
        print(f"handshake {kind:>14}: CPU x {run._fmt(r, '.3f')} (goal <= 1.00)")
    if "cutover" in memory:
        r = memory["cutover"].get("ratio")
        print(f"idle TLS connection: memory x {run._fmt(r, '.3f')} (goal <= 0.333)")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    ap.add_argument("--duration", type=int, default=4,
                    help="seconds per wrk or s_time run (default 4)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--idle-connections", type=int, default=3000,
                    help="idle TLS keep-alive connections for the memory figure (0 = skip)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 3 rounds of 2 s, 500 idle connections")
    ap.add_argument("--no-keepalive", action="store_true", help="skip keep-alive requests")
    ap.add_argument("--no-handshakes", action="store_true", help="skip handshakes")
    ap.add_argument("--handshakes", default=",".join(k[0] for k in HANDSHAKES),
                    help="handshake kinds, comma-separated (default: all of "
                    + ", ".join(k[0] for k in HANDSHAKES) + ")")
    ap.add_argument("--cutover", help="cutover binary (default: $CUTOVER_BIN, build/proxy/cutover,"
                    " /work/build-bench/proxy/cutover)")
    ap.add_argument("--client-cpu", help="CPU list for wrk and s_time (default 0)")
    ap.add_argument("--server-cpu", help="CPU list for proxies and backend (default 1)")
    ap.add_argument("--seed", type=int, default=None, help="shuffle seed (default: random)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, certs, logs)")
    ap.add_argument("--out", help="write JSON results to this file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 3, 2
        args.idle_connections = min(args.idle_connections, 500)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    kinds = [k for k in HANDSHAKES if k[0] in args.handshakes.split(",")]
    if not kinds and not args.no_handshakes:
        ap.error(f"--handshakes: none of {args.handshakes!r} is a known kind")

    cpus = bl.Cpus.default()
    if args.client_cpu is not None or args.server_cpu is not None:
        cpus = bl.Cpus(args.client_cpu or cpus.client, args.server_cpu or cpus.server)
    nofile = bl.raise_nofile()
    if nofile < args.idle_connections + 1000:
        bl.log(f"warning: RLIMIT_NOFILE is {nofile}; idle-connection test may run out of fds")
    cpus.pin_self_to_client()

    versions = run.versions()
    versions["openssl"] = subprocess.run(["openssl", "version"], capture_output=True,
                                         text=True).stdout.strip()
    results = {"args": vars(args), "versions": versions, "started": time.time(),
               "pinning": {"client": cpus.client, "server": cpus.server}}
    ws = bl.Workspace(cpus, keep=args.keep)
    rc = 0
    try:
        certs = make_certs(ws.dir)
        backend_port = bl.free_port()
        bl.start_nginx_backend(ws, [backend_port])
        for size, length in bl.SIZES.items():
            err = bl.curl_check(backend_port, f"/{size}", length)
            if err:
                raise RuntimeError(f"backend: {err}")
        targets = []
        for name, start in (("haproxy", start_haproxy_tls), ("nginx", start_nginx_tls)):
            port = bl.free_port()
            targets.append(TlsTarget(name, port, start(ws, port, backend_port, certs)))
        cfg, reason = cutover_tls_config(ws, args, backend_port, certs)
        status = reason
        if cfg:
            binary, text, port = cfg
            try:
                proc, _ = bl.start_cutover(ws, binary, "cutover-tls", text, port)
                t = TlsTarget("cutover", port, proc)
                err = verify(t, certs["ca"])
                if err:
                    status = f"cutover: TLS listener accepted by --check but does not proxy: {err}"
                    ws.stop(proc)
                else:
                    targets.append(t)
                    status = f"cutover: measured ({binary})"
            except RuntimeError as e:
                status = f"cutover: did not start with a TLS listener: {e}"
        print(status, flush=True)
        results["cutover_status"] = status
        results["negotiated"] = {}
        for t in targets:
            err = verify(t, certs["ca"])
            if err:
                raise RuntimeError(err)
            results["negotiated"][t.name] = negotiated(t.port, certs["ca"])
            bl.log(f"verified: {t.name} on https://127.0.0.1:{t.port} proxies /small and /64k "
                   f"({results['negotiated'][t.name]})")

        ka, hs, memory = {}, {}, {}
        if not args.no_keepalive:
            sizes = list(bl.SIZES)
            samples = run.run_rounds(cpus, targets, sizes, args.rounds, args.duration,
                                     args.connections, REFERENCE, args.seed)
            ka = run.summarize(samples, targets, sizes)
            results["keepalive"] = {"samples": samples, "summary": ka}
            run.print_summary("keep-alive requests over TLS (wrk https)", ka, REFERENCE,
                              args.rounds)
        if not args.no_handshakes:
            samples = run_handshake_rounds(cpus, targets, kinds, args.rounds, args.duration,
                                           certs["ca"], args.seed)
            hs = summarize_handshakes(samples, targets, kinds)
            results["handshakes"] = {"samples": samples, "summary": hs}
            print_handshakes(hs, kinds, args.rounds)
        if args.idle_connections > 0:
            connect = tls_connector(certs["ca"])
            for t in targets:
                bl.log(f"idle memory: {args.idle_connections} TLS keep-alive connections to "
                       f"{t.name}")
                memory[t.name] = run.idle_memory(t, args.idle_connections, connect)
            run.print_memory(memory, REFERENCE, "memory per idle TLS keep-alive connection")
            results["memory"] = memory
        if "cutover" in [t.name for t in targets]:
            print_goals(ka, hs, memory)
        else:
            print(f"\n{status}")
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        results["error"] = str(e)
        rc = 1
    finally:
        ws.close()
        if args.keep:
            print(f"configs, certificates and logs kept in {ws.dir}", file=sys.stderr)
    results["finished"] = time.time()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nresults written to {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
