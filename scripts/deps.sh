#!/bin/sh
# Install the Debian 12 packages the build, tests and benchmarks need.
# Idempotent: only missing packages are installed; needs root for that.
set -eu

pkgs="gcc make pkg-config nginx-core nginx-dev libnginx-mod-stream \
libssl-dev openssl libjansson-dev libhiredis-dev libmnl-dev \
libcurl4-openssl-dev curl redis-server wireguard-go wireguard-tools \
iproute2 iputils-ping procps bc perl libio-socket-ssl-perl wrk clang libclang-rt-14-dev \
git"

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
for svc in nginx redis-server; do
    if command -v service >/dev/null 2>&1; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
done
