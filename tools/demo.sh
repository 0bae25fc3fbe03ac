#!/usr/bin/env bash
# The demo: installs what is missing, builds, then runs cutover on :8080 in front of two demo
# backends (legacy on :9001, new on :9002) with config/examples/demo.yaml until Ctrl-C.
#
#   curl -si localhost:8080/                       # who answered: body and x-cutover-backend
#   curl -si -H 'x-cutover-backend: new' localhost:8080/
#   edit the weights in the config file and save: the proxy reloads it
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target cutover

CONFIG=${CUTOVER_DEMO_CONFIG:-config/examples/demo.yaml}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

python3 tools/demo_backend.py --name legacy --port 9001 >/dev/null &
pids+=($!)
python3 tools/demo_backend.py --name new --port 9002 >/dev/null &
pids+=($!)
sleep 0.3

cat >&2 <<MSG

cutover demo: proxy on http://localhost:8080 (admin on http://127.0.0.1:9901)
  curl -si localhost:8080/                         who answered (body and x-cutover-backend)
  for i in \$(seq 20); do curl -s localhost:8080/; done | sort | uniq -c
  curl -si -H 'x-cutover-backend: new' localhost:8080/    force a backend
  edit the split in $CONFIG and save: the change applies to the next request
Ctrl-C stops everything.

MSG
build/proxy/cutover --config "$CONFIG" &
pids+=($!)
wait "${pids[-1]}"
