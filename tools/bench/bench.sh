#!/usr/bin/env bash
# Runs the cutover benchmark (tools/bench/run.py) with a raised file-descriptor limit.
#   tools/bench/bench.sh --quick --out /tmp/bench.json
#   tools/bench/bench.sh --rounds 8 --duration 5 --chain --ratelimit-accuracy --out bench.json
# Needs: wrk haproxy nginx-light curl python3 (Debian packages), and a built cutover for its row
# (default build/proxy/cutover; or --cutover PATH, or CUTOVER_BIN=PATH).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for tool in wrk haproxy nginx curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "bench: missing $tool (apt-get install wrk haproxy nginx-light curl util-linux python3)" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true
exec python3 "$here/run.py" "$@"
