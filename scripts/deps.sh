#!/bin/sh
# Install the Debian 12 packages the build, tests and benchmarks need.
# Idempotent: only missing packages are installed; needs root for that.
#
#     deps.sh [all]      everything (make deps, make test, make demo)
#     deps.sh build      what `make all` needs (the Dockerfile's build stage)
#     deps.sh runtime    what the image runs (the Dockerfile's runtime stage)
set -eu

# nginx with our modules, redis, wgctl's libraries, the entry script's
# tools (curl, jq, envsubst) and supervisord
runtime="nginx-core openssl ca-certificates curl jq gettext-base \
redis-server supervisor socat wireguard-go wireguard-tools iproute2 \
libjansson4 libhiredis0.14 libmnl0 libcurl4"

build="gcc make pkg-config nginx-dev libssl-dev libjansson-dev \
libhiredis-dev libmnl-dev libcurl4-openssl-dev"

pkgs="$build $runtime libnginx-mod-stream \
iputils-ping procps bc perl libio-socket-ssl-perl wrk clang libclang-rt-14-dev \
git shellcheck"
pkgs="$pkgs prometheus"  # promtool checks the metrics format (t/metrics.t)
pkgs="$pkgs podman mmdebstrap python3-yaml"  # make image without Docker; t/readme-examples.t
pkgs="$pkgs qemu-system-x86 busybox-static cpio kmod"  # scripts/vm: kernel WireGuard and CVM-shaped nodes under QEMU
pkgs="$pkgs nftables iperf3"  # VPN relay tests (UDP blocked) and bench/vpn/relay
pkgs="$pkgs valgrind"  # bench: BENCH_CALLGRIND=1 instruction counts
pkgs="$pkgs lua-check"  # make lint: luacheck on the control plane's Lua (lua/)

case "${1:-all}" in
    all) ;;
    build) pkgs=$build ;;
    runtime) pkgs=$runtime ;;
    *) echo "usage: $0 [all|build|runtime]" >&2; exit 1 ;;
esac

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
        | grep -q "install ok installed"
    then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages:$missing" >&2
    echo "deps: run as root (or install them) to continue" >&2
    exit 1
fi

echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null

# the packages' own daemons are not ours: tests start their own instances
for svc in nginx redis-server supervisor; do
    if command -v service >/dev/null 2>&1; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
done
