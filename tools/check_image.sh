#!/usr/bin/env bash
# Builds deploy/Dockerfile for real and runs the image, without a container daemon:
#   1. a Debian 12 base image made locally: `mmdebstrap --variant=minbase bookworm` from this
#      machine's Debian mirror (tarball cached per day), imported under every name the Dockerfile's
#      FROM lines use, so nothing is pulled from a registry;
#   2. `buildah bud --isolation chroot` with STORAGE_DRIVER=vfs in a private storage directory;
#   3. in a container of the built image: `cutover --check` on the ConfigMap's cutover.yaml
#      (deploy/kubernetes/configmap.yaml), then cutover started with a small loopback config (chroot
#      isolation shares the host's network) in front of a python http.server on the host, one
#      request through it (body and x-cutover-backend asserted) and one /metrics scrape.
# Containers, images and the storage directory are removed on exit, pass or fail.
# Needs root (apt-get install buildah mmdebstrap when missing, chroot, mounts).
#   tools/check_image.sh                 CUTOVER_IMAGE_CACHE=dir (default ~/.cache/cutover-image)
# Exit status 0 when the image built and every check passed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dockerfile="$root/deploy/Dockerfile"
start=$SECONDS
step() { printf '== [%3ds] %s\n' "$((SECONDS - start))" "$*"; }
die() {
  echo "check_image: FAILED: $*" >&2
  exit 1
}

[[ $(id -u) -eq 0 ]] || die "needs root (buildah chroot isolation, mmdebstrap)"

step "tools"
need=()
for p in buildah mmdebstrap uidmap python3 curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
work="$(mktemp -d /var/tmp/cutover-image.XXXXXX)"
buildah_cmd=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
bah() { "${buildah_cmd[@]}" "$@"; }
backend_pid=""
proxy_pid=""
cleanup() {
  local rc=$?
  # SIGTERM (cutover drains and exits 0), bounded: SIGKILL after 10 s.
  local target
  for target in ${proxy_pid:+"-$proxy_pid"} $backend_pid; do
    kill -TERM -- "$target" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 -- "$target" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "$target" 2>/dev/null || true
  done
  bah rm --all >/dev/null 2>&1 || true
  bah rmi --all --force >/dev/null 2>&1 || true
  # Nothing may stay mounted below $work before it is deleted (rm would follow into a mount).
  findmnt -rno TARGET | grep "^$work/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# This machine's Debian mirrors (the first non-comment /debian and /debian-security URIs of its
# apt sources), so the base comes from where this machine's packages come from.
sources=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
mirror_of() {
  cat "${sources[@]}" 2>/dev/null | grep -v '^[[:space:]]*#' |
    grep -oE "https?://[^[:space:]]+/$1/?([[:space:]]|\$)" | head -n1 | tr -d '[:space:]' || true
}
mirror="$(mirror_of debian)"
security="$(mirror_of debian-security)"
mirror="${mirror:-http://deb.debian.org/debian}"
security="${security:-http://deb.debian.org/debian-security}"

cache="${CUTOVER_IMAGE_CACHE:-${HOME:-/root}/.cache/cutover-image}"
mkdir -p "$cache"
base_tar="$cache/bookworm-minbase-$(date -u +%Y%m%d).tar"
if [[ -f $base_tar && -s $base_tar ]]; then
  step "base tarball: cached $base_tar"
else
  step "base tarball: mmdebstrap --variant=minbase bookworm from $mirror"
  # Older days' tarballs go; a concurrent run's partial file (.part-PID.tar) is left alone.
  find "$cache" -mindepth 1 -maxdepth 1 -name 'bookworm-minbase-*' ! -name "${base_tar##*/}" \
    -exec rm -rf {} +
  rm -rf "$base_tar"
  part="$cache/.part-$$.tar"
  mmdebstrap --quiet --format=tar --variant=minbase bookworm "$part" \
    "deb ${mirror%/} bookworm main" "deb ${mirror%/} bookworm-updates main" \
    "deb ${security%/} bookworm-security main"
  mv "$part" "$base_tar"
fi
# Every FROM name that is not an earlier stage's name, e.g. debian:12-slim.
mapfile -t bases < <(awk 'toupper($1) == "FROM" {
    name = $2; for (i = 2; i <= NF; i++) if ($i ~ /^--/) name = $(i + 1); else { name = $i; break }
    if (!(name in stage)) print name
    for (i = 1; i < NF; i++) if (toupper($i) == "AS") stage[$(i + 1)] = 1
  }' "$dockerfile" | sort -u)
[[ ${#bases[@]} -gt 0 ]] || die "no FROM line in $dockerfile"
step "base image: importing the tarball as ${bases[*]}"
ctr="$(bah from scratch)"
bah add --quiet "$ctr" "$base_tar" / >/dev/null
bah config --cmd /bin/bash \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
# A short name such as debian:12-slim means docker.io/library/debian:12-slim.
qualified=()
for b in "${bases[@]}"; do
  case "$b" in
    */*/*) qualified+=("$b") ;;
    */*) qualified+=("docker.io/$b") ;;
    *) qualified+=("docker.io/library/$b") ;;
  esac
done
bah commit --quiet --rm "$ctr" "${qualified[0]}" >/dev/null
[[ ${#qualified[@]} -gt 1 ]] && bah tag "${qualified[0]}" "${qualified[@]:1}"

step "buildah bud --isolation chroot -f deploy/Dockerfile (log: build.log, tail on failure)"
image=localhost/cutover:check
if ! bah bud --isolation chroot --pull=never --layers=false -f "$dockerfile" \
  --ignorefile "$root/deploy/Dockerfile.dockerignore" -t "$image" "$root" >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  die "buildah bud"
fi
bah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep cutover
user="$(bah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")"
[[ $user == 10001:10001 ]] || die "image runs as '$user', not 10001:10001"
ctr="$(bah from --pull=never "$image")"

# The ConfigMap's data."cutover.yaml" (a literal block indented four spaces), as mounted in a pod.
mkdir -p "$work/checkconf" "$work/smokeconf" "$work/www"
awk '/^  cutover.yaml: \|/ { on = 1; next }
     on && /^    / { print substr($0, 5); next }
     on && /^[[:space:]]*$/ { print ""; next }
     on { exit }' "$root/deploy/kubernetes/configmap.yaml" >"$work/checkconf/cutover.yaml"
grep -q '^listeners:' "$work/checkconf/cutover.yaml" ||
  die "no cutover.yaml found in deploy/kubernetes/configmap.yaml"
chmod -R a+rX "$work/checkconf" "$work/smokeconf" "$work/www"
chmod a+x "$work"

step "image: cutover --check on deploy/kubernetes/configmap.yaml's cutover.yaml"
# The pod gets CUTOVER_ADMIN_TOKEN from its Secret; the check needs one the same way.
bah run --volume "$work/checkconf:/etc/cutover:ro" "$ctr" -- \
  /usr/bin/env CUTOVER_ADMIN_TOKEN=check-image-token \
  /usr/local/bin/cutover --check /etc/cutover/cutover.yaml || die "cutover --check in the image"

step "image: smoke request through cutover to a python http.server on the host"
token="smoke-$RANDOM-$RANDOM"
echo "$token" >"$work/www/index.html"
echo ok >"$work/www/health"
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$work/www" >"$work/backend.log" 2>&1 &
backend_pid=$!
wait_for() { # file regex seconds: prints the first match of regex in file
  local deadline=$((SECONDS + $3)) hit
  while ((SECONDS < deadline)); do
    hit="$(grep -oE "$2" "$1" 2>/dev/null | head -n1 || true)"
    [[ -n $hit ]] && { echo "$hit"; return 0; }
    sleep 0.1
  done
  return 1
}
backend_port="$(wait_for "$work/backend.log" 'port [0-9]+' 10)" || die "backend did not start"
backend_port="${backend_port#port }"
cat >"$work/smokeconf/cutover.yaml" <<EOF
listeners:
  - name: public
    address: 127.0.0.1:0
backends:
  legacy:
    endpoints: ["127.0.0.1:$backend_port"]
  new:
    endpoints: ["127.0.0.1:$backend_port"]
routes:
  - name: default
    match: { prefix: / }
    split: { new: 0, legacy: 100 }
admin:
  address: 127.0.0.1:0
EOF
chmod a+r "$work/smokeconf/cutover.yaml"
# setsid: its own process group, so cleanup stops buildah and cutover together by that id.
setsid "${buildah_cmd[@]}" run --volume "$work/smokeconf:/etc/cutover:ro" "$ctr" -- \
  /usr/local/bin/cutover --config /etc/cutover/cutover.yaml \
  >"$work/proxy.out" 2>"$work/proxy.err" &
proxy_pid=$!
addr_re='"address":"127\.0\.0\.1:[0-9]+"'
listen="$(wait_for "$work/proxy.err" "\"listening\".*$addr_re" 20)" || {
  cat "$work/proxy.err" >&2
  die "cutover in the image did not start listening"
}
proxy_port="$(grep -oE "$addr_re" <<<"$listen" | grep -oE '[0-9]+"$' | tr -d '"')"
admin="$(wait_for "$work/proxy.err" "\"admin_listening\".*$addr_re" 10)" || die "no admin listener"
admin_port="$(grep -oE "$addr_re" <<<"$admin" | grep -oE '[0-9]+"$' | tr -d '"')"

curl -sS -m 5 -D "$work/headers" -o "$work/body" "http://127.0.0.1:$proxy_port/" ||
  die "smoke request failed"
head -n1 "$work/headers" | grep -q ' 200' || die "smoke request: $(head -n1 "$work/headers")"
grep -qx "$token" "$work/body" || die "smoke request: body is not the backend's: $(head -c 200 "$work/body")"
grep -qix 'x-cutover-backend: legacy'$'\r' "$work/headers" ||
  die "smoke request: no 'x-cutover-backend: legacy' header"
echo "GET / -> 200, backend body, x-cutover-backend: legacy"
curl -sS -m 5 "http://127.0.0.1:$admin_port/metrics" >"$work/metrics" || die "GET /metrics failed"
grep -qE '^cutover_requests_total\{.*backend="legacy".*code_class="2xx".*\} 1$' "$work/metrics" ||
  die "/metrics does not count the smoke request"
echo "GET /metrics -> cutover_requests_total{backend=\"legacy\",code_class=\"2xx\"} 1"

step "check_image: ok"
