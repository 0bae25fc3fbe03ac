#!/usr/bin/env bash
# Fails when a source file includes a header from a layer above its own.
#
# Layers, bottom first (each may include only itself and what is listed for it):
#   common/   nothing of ours: leaf types (HeaderMap, Reason, StreamInfo, Clock) and pure functions
#   config/   common
#   policy/   config common
#   filters/  policy config common
#   http/     common                 (HTTP/1 codec and writer: no sockets, no loop)
#   net/      common                 (transports over libuv streams: no HTTP)
#   proxy/    everything above
# The CMake libraries mirror this: each links only the libraries below it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
declare -A allowed=(
  [common]="common"
  [config]="config common"
  [policy]="policy config common"
  [filters]="filters policy config common"
  [http]="http common"
  [net]="net common"
  [proxy]="proxy filters policy http net config common"
)
bad=0
for layer in "${!allowed[@]}"; do
  while IFS= read -r line; do
    file=${line%%:*}
    inc=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"$line")
    dir=${inc%%/*}
    [[ $inc == */* ]] || continue
    if [[ " ${allowed[$layer]} " != *" $dir "* ]]; then
      echo "layering: $file includes $inc ($layer/ may include only: ${allowed[$layer]})" >&2
      bad=1
    fi
  done < <(grep -HE '^#include "' "$layer"/*.h "$layer"/*.cc 2>/dev/null || true)
done
if [[ $bad -ne 0 ]]; then exit 1; fi
echo "layering: ok (${!allowed[*]})"
