#!/usr/bin/env bash
# Installs what cutover needs to build, test, benchmark and run its demo on Debian 12.
# Does nothing when everything is already there; needs root (or sudo) otherwise.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libuv1-dev libyaml-cpp-dev prometheus-cpp-dev libssl-dev doctest-dev node-llhttp
  python3 python3-yaml curl openssl wrk haproxy nginx-light prometheus util-linux procps
  testssl.sh                # tests/integration/test_tls.py
  clang libclang-rt-14-dev  # the fuzz targets: libFuzzer's runtime is in libclang-rt-14-dev
  clang-format              # tools/check_format.sh
  libhiredis-dev redis-server  # fleet mode: Redis client (libuv adapter) and the server the tests start
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages start nginx and prometheus services; our tests start their own.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now nginx prometheus >/dev/null 2>&1 || true
fi
$SUDO pkill -x nginx >/dev/null 2>&1 || true
