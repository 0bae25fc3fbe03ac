#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, in build-fuzz/) and runs each one for a bounded
# time on its seed corpus. Fails on any finding and prints the reproducer's path.
#   tools/fuzz.sh                          every target, 60 s each, one at a time
#   tools/fuzz.sh --seconds 600 fuzz_request_decoder
#   tools/fuzz.sh --seconds 45 --jobs 2    two targets at a time (tools/test.sh does this)
# New inputs go to build-fuzz/work/<target>/corpus (kept between runs, never into the tree); the
# committed seeds in tests/fuzz/corpus/<target>/ are read, not written. Reproduce a finding with
#   build-fuzz/tests/fuzz/<target> <reproducer>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
jobs=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(fuzz_request_decoder fuzz_response_decoder fuzz_request_roundtrip fuzz_config_loader
     fuzz_proxy_header)
if [ ${#targets[@]} -eq 0 ]; then targets=("${all[@]}"); fi
for t in "${targets[@]}"; do
  case " ${all[*]} " in *" $t "*) ;; *) echo "unknown target: $t (one of: ${all[*]})" >&2; exit 2 ;; esac
done

command -v clang++ >/dev/null || { echo "clang++ not found: run tools/install_deps.sh" >&2; exit 2; }
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DCUTOVER_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"

dict_for() {
  case "$1" in
    fuzz_config_loader) echo tests/fuzz/yaml.dict ;;
    fuzz_proxy_header) echo tests/fuzz/proxy.dict ;;
    *) echo tests/fuzz/http.dict ;;
  esac
}

# Runs one target; its log is build-fuzz/work/<target>/fuzz.log.
run_one() {
  local t="$1" work="build-fuzz/work/$1"
  mkdir -p "$work/corpus" "$work/artifacts"
  rm -f "$work"/artifacts/*
  local rc=0
  UBSAN_OPTIONS=print_stacktrace=1 "build-fuzz/tests/fuzz/$t" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -dict="$(dict_for "$t")" \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "tests/fuzz/corpus/$t" \
    >"$work/fuzz.log" 2>&1 || rc=$?
  return "$rc"
}

summary() {
  local t="$1" log="build-fuzz/work/$1/fuzz.log"
  local execs rate cov
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
  echo "$t: ${execs:-?} runs, ${rate:-?} exec/s, ${cov:-no coverage line}"
}

failed=0
pids=()
names=()
wait_one() {
  local pid="${pids[0]}" t="${names[0]}"
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
  if wait "$pid"; then
    echo "PASS $(summary "$t")"
  else
    failed=1
    echo "FAIL $(summary "$t")"
    grep -E '^(=== |payload:|cuts:|SUMMARY:|==[0-9]+==ERROR)' "build-fuzz/work/$t/fuzz.log" | head -20
    for a in "build-fuzz/work/$t"/artifacts/*; do
      [ -e "$a" ] && echo "  reproducer: $a  (run: build-fuzz/tests/fuzz/$t $a)"
    done
    echo "  log: build-fuzz/work/$t/fuzz.log"
  fi
}

echo "fuzzing ${targets[*]} for ${seconds}s each, ${jobs} at a time"
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=("$!")
  names+=("$t")
  if [ ${#pids[@]} -ge "$jobs" ]; then wait_one; fi
done
while [ ${#pids[@]} -gt 0 ]; do wait_one; done
exit "$failed"
