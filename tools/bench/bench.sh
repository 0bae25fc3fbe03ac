#!/usr/bin/env bash
# Runs the cutover benchmark (tools/bench/run.py) with a raised file-descriptor limit.
#   tools/bench/bench.sh --quick --out /tmp/bench.json
#   tools/bench/bench.sh --rounds 8 --duration 5 --chain --ratelimit-accuracy --out bench.json
#   tools/bench/bench.sh --tls --quick --out /tmp/tls.json   # TLS termination (tls_bench.py)
# Needs: wrk haproxy nginx-light curl python3 (Debian packages), and a built cutover for its row
# (default build/proxy/cutover; or --cutover PATH, or CUTOVER_BIN=PATH).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for tool in wrk haproxy nginx curl taskset python3 openssl; do
  command -v "$tool" >/dev/null || { echo "bench: missing $tool (apt-get install wrk haproxy nginx-light curl util-linux python3 openssl)" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true
# --tls anywhere on the command line runs the TLS benchmark instead, with the other arguments.
args=()
script="$here/run.py"
for a in "$@"; do
  if [[ "$a" == "--tls" ]]; then script="$here/tls_bench.py"; else args+=("$a"); fi
done
exec python3 "$script" ${args[@]+"${args[@]}"}
