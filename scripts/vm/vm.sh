#!/usr/bin/env bash
# A small QEMU (TCG) test VM around Debian's own kernels, for kernel
# WireGuard tests and CVM-shaped nodes.  Everything lives under
# $DSTACK_BUILD/vm (default build/vm) and is reused: a second run boots at
# once.
#
#   vm.sh prepare [cloud|generic]     fetch and unpack the kernel package
#                                     (apt-get download, never installed),
#                                     build the initramfs
#   vm.sh run [options] <script>      boot, run <script> in the guest as
#                                     root, power off; exit with its status
#   vm.sh info [cloud|generic]        print kernel version and paths
#
# run options:
#   --kernel cloud|generic   cloud (default): initramfs only, fast boot;
#                            generic: the host's / read-only over virtio-9p
#                            with a tmpfs overlay (the guest runs whatever
#                            is installed here, at the same paths)
#   --mem 512M  --smp 1      guest size
#   --out FILE               the script's stdout+stderr (serial port 2),
#                            written while the guest runs; default: copied
#                            to this process's stdout at the end
#   --console FILE           kernel console (serial port 1); default: discarded
#   --net user[,OPTS]        a virtio NIC on QEMU's user-mode NAT (slirp):
#                            outbound only, the host's loopback is 10.0.2.2;
#                            OPTS are passed on (hostfwd=tcp:127.0.0.1:P-:443)
#   --file SRC[:DST]         also put SRC at DST (default: same path) in the
#                            guest's initramfs (repeatable); the generic
#                            kernel's guest sees only what is under /vm
#   --env NAME=VALUE         exported to the script (repeatable)
#   --timeout SECONDS        kill QEMU after this long (default 300): exit 124
#   --pidfile FILE           QEMU's pid, for callers that stop it
#
# The guest's init prints "VM-EXIT <status>" on both serial ports after the
# script; `run` exits with that status, or 125 when the guest died without
# printing it (kernel panic, QEMU error), 124 on timeout.
#
# Kernels: Debian's linux-image-cloud-amd64 (wireguard.ko and its crypto and
# UDP tunnel dependencies, veth, tun) and linux-image-amd64 (which also has
# 9p); the versions are whatever the configured apt sources carry, or
# $VM_KERNEL_VERSION (e.g. 6.1.0-57).  KVM is not used (TCG): it fails on
# the machines this was written on, and TCG boots the cloud kernel in ~5 s.
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${DSTACK_BUILD:-$REPO/build}
VMDIR=$BUILD/vm
QEMU=${QEMU:-qemu-system-x86_64}

die() {
    echo "vm: $*" >&2
    exit 1
}

need() {
    for p in "$@"; do
        command -v "$p" >/dev/null 2>&1 \
            || die "$p not found (scripts/deps.sh installs it)"
    done
}

# modules each flavour loads at boot, in the order given (dependencies are
# resolved with modprobe --show-depends and loaded first)
modules_of() {
    case $1 in
        cloud) echo "wireguard veth tun virtio_pci virtio_net" ;;
        generic) echo "virtio_pci 9pnet_virtio 9p overlay virtio_net" \
                      "wireguard veth tun" ;;
    esac
}

kernel_pkg() {
    case $1 in
        cloud) meta=linux-image-cloud-amd64; suffix=cloud-amd64 ;;
        generic) meta=linux-image-amd64; suffix=amd64 ;;
        *) die "unknown kernel flavour \"$1\" (cloud or generic)" ;;
    esac

    if [ -n "${VM_KERNEL_VERSION:-}" ]; then
        echo "linux-image-$VM_KERNEL_VERSION-$suffix"
        return
    fi

    # a cached kernel is used as it is: no apt needed for a second run
    if [ -f "$VMDIR/$1/package" ]; then
        cat "$VMDIR/$1/package"
        return
    fi

    pkg=$(apt-cache depends "$meta" 2>/dev/null \
          | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)

    # a clean image may have no package lists yet
    if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2 || true
        pkg=$(apt-cache depends "$meta" 2>/dev/null \
              | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' \
              | head -1)
    fi

    [ -n "$pkg" ] || die "apt-cache knows no $meta (run apt-get update)"
    echo "$pkg"
}

# fetch and unpack the kernel package into $VMDIR/<flavour>/root
kernel_fetch() {
    flavour=$1
    dir=$VMDIR/$flavour
    pkg=$(kernel_pkg "$flavour")

    if [ -f "$dir/package" ] && [ "$(cat "$dir/package")" = "$pkg" ] \
        && [ -f "$dir/vmlinuz" ]
    then
        return
    fi

    need apt-get dpkg-deb depmod
    mkdir -p "$VMDIR/deb"
    rm -rf "$dir" && mkdir -p "$dir"

    if ! ls "$VMDIR/deb/${pkg}_"*.deb >/dev/null 2>&1; then
        # apt's _apt user cannot write into build/: download beside, as is
        (cd "$VMDIR/deb" && apt-get download -q "$pkg" >&2) \
            || die "apt-get download $pkg failed"
    fi

    dpkg-deb -x "$VMDIR/deb/${pkg}_"*.deb "$dir/root"
    ver=$(find "$dir/root/lib/modules" -mindepth 1 -maxdepth 1 \
          -printf '%f\n' | head -1)
    [ -n "$ver" ] || die "$pkg has no modules"
    depmod -b "$dir/root" "$ver"
    cp "$dir/root/boot/vmlinuz-$ver" "$dir/vmlinuz"
    echo "$ver" >"$dir/version"
    echo "$pkg" >"$dir/package"
}

# copy a program and the shared libraries ldd names into the tree $1
add_prog() {
    tree=$1
    prog=$2
    dst=${3:-$prog}

    mkdir -p "$tree$(dirname "$dst")"
    cp -L "$prog" "$tree$dst"

    ldd "$prog" 2>/dev/null | while read -r a b c _; do
        case "$a" in
            /*) lib=$a ;;
            *) if [ "$b" = "=>" ] && [ -n "$c" ]; then lib=$c; else continue; fi ;;
        esac
        case "$lib" in /*) ;; *) continue ;; esac
        if [ ! -e "$tree$lib" ]; then
            mkdir -p "$tree$(dirname "$lib")"
            cp -L "$lib" "$tree$lib"
        fi
    done
}

write_init() {
    cat >"$1/init" <<'EOF'
#!/bin/busybox sh
# the test VM's init: mount, load modules, run /vm/run.sh, power off
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /var /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
. /etc/vm.conf
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
ln -sfn /run /var/run

while read -r m; do
    insmod "$m" || echo "vm: insmod $m failed" >/dev/console
done </etc/vm-modules

ip link set lo up
out=/dev/ttyS1
[ -f /vm/env ] && . /vm/env

if [ "$VM_FLAVOUR" = generic ]; then
    # the host's root read-only, a tmpfs overlay on top
    mkdir -p /mnt/host /mnt/rw /mnt/root
    if mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose \
        hostroot /mnt/host
    then
        mount -t tmpfs -o size=256m tmpfs /mnt/rw
        mkdir -p /mnt/rw/upper /mnt/rw/work
        mount -t overlay overlay \
            -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work \
            /mnt/root
        # /tmp is the host's, under the overlay: test directories there
        # are seen as they were at boot, writes stay in the guest
        for d in proc sys dev run; do
            mkdir -p /mnt/root/$d && mount --move /$d /mnt/root/$d
        done
        mkdir -p /mnt/root/vm && cp -a /vm/. /mnt/root/vm/
        echo vm >/mnt/root/etc/hostname
        chroot /mnt/root /bin/sh -c '
            [ -f /vm/env ] && . /vm/env
            cd /; exec /bin/sh /vm/run.sh' \
            >/mnt/root$out 2>&1 </mnt/root/dev/null
        rc=$?
        out=/mnt/root$out
    else
        echo "vm: cannot mount the host's root over 9p" >$out
        rc=125
    fi
else
    (cd / && exec sh /vm/run.sh) >$out 2>&1 </dev/null
    rc=$?
fi

echo "VM-EXIT $rc" >$out
echo "VM-EXIT $rc" >/dev/console
sync
reboot -f
EOF
    chmod 0755 "$1/init"
}

# the initramfs of a flavour: busybox, the modules, wgctl, wg, ip, tools
initramfs_build() {
    flavour=$1
    dir=$VMDIR/$flavour
    ver=$(cat "$dir/version")
    img=$dir/initrd.cpio
    wgctl=$BUILD/bin/wgctl

    [ -x "$wgctl" ] || die "$wgctl not built (make all)"

    need busybox cpio modprobe ldd
    [ "$(file_static /bin/busybox)" = static ] \
        || die "/bin/busybox is not static (install busybox-static)"

    # rebuild when anything it holds is newer than the image
    if [ -f "$img" ] && [ "$img" -nt "$wgctl" ] && [ "$img" -nt "$0" ] \
        && [ "$img" -nt "$dir/version" ]
    then
        return
    fi

    tree=$dir/tree
    rm -rf "$tree" && mkdir -p "$tree/bin" "$tree/etc" "$tree/vm" \
        "$tree/lib/modules"
    cp /bin/busybox "$tree/bin/busybox"

    mods=$(modules_of "$flavour")
    : >"$tree/etc/vm-modules"

    for m in $mods; do
        modprobe -d "$dir/root" -S "$ver" --show-depends "$m" \
            | sed -n 's/^insmod \([^ ]*\).*/\1/p' | while read -r ko; do
                rel=${ko#"$dir/root"}
                grep -qx "$rel" "$tree/etc/vm-modules" && continue
                mkdir -p "$tree$(dirname "$rel")"
                cp "$ko" "$tree$rel"
                echo "$rel" >>"$tree/etc/vm-modules"
            done
    done

    grep -q wireguard.ko "$tree/etc/vm-modules" \
        || die "no wireguard.ko in $(cat "$dir/package")"

    if [ "$flavour" = cloud ]; then
        add_prog "$tree" "$wgctl" /usr/bin/wgctl
        for p in wg ip wireguard-go; do
            path=$(command -v "$p") || die "$p not found"
            add_prog "$tree" "$path" "/usr/bin/$p"
        done
        # wgctl's libcurl and OpenSSL want these at hand
        mkdir -p "$tree/etc/ssl"
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$tree/etc/passwd"
        printf 'root:x:0:\n' >"$tree/etc/group"
        printf '127.0.0.1 localhost\n' >"$tree/etc/hosts"
    fi

    echo "VM_FLAVOUR=$flavour" >"$tree/etc/vm.conf"
    write_init "$tree"

    (cd "$tree" && find . -print | LC_ALL=C sort \
        | cpio -o -H newc --quiet -R 0:0) >"$img.tmp"
    mv "$img.tmp" "$img"
    rm -rf "$tree"
}

file_static() {
    if ldd "$1" >/dev/null 2>&1; then echo dynamic; else echo static; fi
}

prepare() {
    flavour=${1:-cloud}
    need "$QEMU" flock
    mkdir -p "$VMDIR"
    # tests run in parallel (prove -j): one builder at a time
    (
        flock 9
        kernel_fetch "$flavour"
        initramfs_build "$flavour"
    ) 9>"$VMDIR/.lock"
}

run() {
    flavour=cloud mem=512M smp=1 out='' console=/dev/null net='' timeout=300
    pidfile='' files='' envs=''

    while [ $# -gt 1 ]; do
        case $1 in
            --kernel) flavour=$2 ;;
            --mem) mem=$2 ;;
            --smp) smp=$2 ;;
            --out) out=$2 ;;
            --console) console=$2 ;;
            --net) net=$2 ;;
            --timeout) timeout=$2 ;;
            --pidfile) pidfile=$2 ;;
            --file) files="$files $2" ;;
            --env) envs="$envs
$2" ;;
            *) die "run: unknown option \"$1\"" ;;
        esac
        shift 2
    done

    [ $# -eq 1 ] || die "usage: vm.sh run [options] <script>"
    script=$1
    [ -f "$script" ] || die "no script \"$script\""

    prepare "$flavour"
    dir=$VMDIR/$flavour

    work=$(mktemp -d "${TMPDIR:-/tmp}/dstack-vm.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT INT TERM

    # this run's script (and files) as a second cpio archive: the kernel
    # unpacks concatenated archives one over the other
    mkdir -p "$work/extra/vm"
    cp "$script" "$work/extra/vm/run.sh"
    : >"$work/extra/vm/env"
    printf '%s\n' "$envs" | while IFS= read -r e; do
        [ -n "$e" ] || continue
        name=${e%%=*}
        value=${e#*=}
        printf "export %s='%s'\n" "$name" \
            "$(printf '%s' "$value" | sed "s/'/'\\\\''/g")" \
            >>"$work/extra/vm/env"
    done
    for f in $files; do
        src=${f%%:*}
        dst=${f#*:}
        [ "$dst" = "$f" ] && dst=$src
        mkdir -p "$work/extra$(dirname "$dst")"
        cp -a "$src" "$work/extra$dst"
    done
    (cd "$work/extra" && find . -print | cpio -o -H newc --quiet -R 0:0) \
        >"$work/extra.cpio"
    cat "$dir/initrd.cpio" "$work/extra.cpio" >"$work/initrd"

    # the script's output goes straight to its file (callers may follow it
    # while the guest runs), or is copied to stdout at the end
    log=${out:-$work/out}
    : >"$log"

    set -- -machine q35 -accel tcg -cpu max -m "$mem" -smp "$smp" \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$dir/vmlinuz" -initrd "$work/initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init" \
        -serial "file:$console" -serial "file:$log"

    if [ "$flavour" = generic ]; then
        set -- "$@" -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
            -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    fi

    if [ -n "$net" ]; then
        case $net in
            user|user,*) ;;
            *) die "--net: only user[,options] (slirp) is supported" ;;
        esac
        set -- "$@" -netdev "$net,id=n0" -device virtio-net-pci,netdev=n0
    fi

    "$QEMU" "$@" &
    qpid=$!
    [ -z "$pidfile" ] || echo "$qpid" >"$pidfile"

    waited=0
    while kill -0 "$qpid" 2>/dev/null; do
        if [ "$waited" -ge "$((timeout * 5))" ]; then
            kill "$qpid" 2>/dev/null || true
            wait "$qpid" 2>/dev/null || true
            [ -n "$out" ] || cat "$log"
            echo "vm: timed out after ${timeout}s" >&2
            return 124
        fi
        sleep 0.2
        waited=$((waited + 1))
    done

    wait "$qpid" 2>/dev/null || true
    [ -n "$out" ] || cat "$log"

    rc=$(sed -n 's/^VM-EXIT \([0-9]*\).*/\1/p' "$log" | tail -1)
    [ -n "$rc" ] || { echo "vm: the guest ended without VM-EXIT" >&2; \
                      return 125; }
    return "$rc"
}

case ${1:-} in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    info)
        shift
        f=${1:-cloud}
        echo "kernel $(cat "$VMDIR/$f/package" 2>/dev/null || echo '?')"
        echo "vmlinuz $VMDIR/$f/vmlinuz"
        echo "initrd $VMDIR/$f/initrd.cpio"
        ;;
    *) sed -n '2,40s/^# \{0,1\}//p' "$0" >&2; exit 1 ;;
esac
