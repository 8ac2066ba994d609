#!/bin/bash
# dstack-vpc-nginx: build the image, and run its filesystem without an
# engine (README "Operations: the image").
#
#     image.sh build            build $IMAGE from the Dockerfile (make image):
#                               docker where a daemon answers, else podman
#     image.sh mount            print the image's root filesystem (podman
#                               image mount; read-only use)
#     image.sh umount           release it
#     image.sh info             engine, image id and size in bytes
#     image.sh run NS DIR [VAR=value ...] [-- CMD ...]
#                               run CMD (default: the entry script's `run`)
#                               on the image's filesystem as a container
#                               would: in network namespace NS, a private
#                               mount and pid namespace, a writable overlay
#                               (DIR/upper) over the image, DIR/dstack.sock
#                               bind-mounted on /var/run/dstack.sock,
#                               DIR/{conf,tls,run,data} on the image's
#                               /etc/dstack-vpc, /etc/dstack/mesh,
#                               /run/dstack-vpc and /var/lib/dstack-vpc, and
#                               DIR/hosts (when present) on /etc/hosts.
#                               Writes DIR/pid (the chrooted init's pid, for
#                               image.sh exec).
#     image.sh exec DIR CMD ... run CMD in that container's namespaces,
#                               root and environment (DIR/env)
#
# Without Docker: when no daemon answers, podman builds with
# --isolation=chroot (no runc/crun: they fail in sandboxes without cgroup
# delegation) and the Docker format (the OCI one drops HEALTHCHECK).  When
# the registry cannot be reached, the Dockerfile's base image is made with
# `mmdebstrap --variant=minbase` from the Debian mirror apt uses, imported
# and tagged as the FROM name; the tarball is cached in
# build/image/, so later builds start at once.
#
# Environment: IMAGE (default dstack-vpc-nginx:latest), IMAGE_ENGINE
# (docker or podman; default: docker if `docker info` answers),
# IMAGE_CACHE (default <repo>/build/image), IMAGE_PULL_TIMEOUT (seconds
# for trying the registry, default 20; 0 skips it).

set -eu

self=$(readlink -f "$0")
repo=$(dirname "$(dirname "$self")")

: "${IMAGE:=dstack-vpc-nginx:latest}"
: "${IMAGE_CACHE:=$repo/build/image}"
: "${IMAGE_PULL_TIMEOUT:=20}"
: "${IMAGE_ENGINE:=}"

say() { printf 'image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

engine() {
    if [ -n "$IMAGE_ENGINE" ]; then
        echo "$IMAGE_ENGINE"
    elif command -v docker >/dev/null 2>&1 \
        && timeout 10 docker info >/dev/null 2>&1
    then
        echo docker
    elif command -v podman >/dev/null 2>&1; then
        echo podman
    else
        die "neither a Docker daemon nor podman: install podman and" \
            "mmdebstrap (make deps) or start dockerd"
    fi
}

# podman without systemd or cgroup delegation (sandboxes, CI runners)
podman() {
    command podman --cgroup-manager=cgroupfs --events-backend=file "$@"
}

# the FROM images of the Dockerfile, fully qualified
base_images() {
    awk 'toupper($1) == "FROM" { print $2 }' "$repo/Dockerfile" | sort -u \
        | while read -r b; do
            case "$b" in
                */*/*) echo "$b" ;;
                */*) echo "docker.io/$b" ;;
                *) echo "docker.io/library/$b" ;;
            esac
        done
}

# a Debian base as `mmdebstrap --variant=minbase <suite>`, from the mirror
# apt already reaches, cached as a tarball
make_base() {
    local ref=$1 suite tar mirror

    suite=${ref##*:}
    suite=${suite%%-*}
    case "$ref" in
        */debian:*) ;;
        *) die "$ref cannot be pulled and is not a Debian image" ;;
    esac
    tar=$IMAGE_CACHE/debian-$suite-minbase.tar
    if [ ! -s "$tar" ]; then
        command -v mmdebstrap >/dev/null \
            || die "$ref cannot be pulled and mmdebstrap is not installed" \
                   "(make deps)"
        # shellcheck disable=SC2016 # apt's format, not the shell's
        mirror=$(apt-get indextargets --format '$(REPO_URI)' \
            'Identifier: Packages' 2>/dev/null \
            | grep -v security | head -1)
        : "${mirror:=http://deb.debian.org/debian/}"
        say "$ref: mmdebstrap --variant=minbase $suite from $mirror"
        mkdir -p "$IMAGE_CACHE"
        # the format follows the name: .tar
        mmdebstrap --quiet --variant=minbase "$suite" "$tar.tmp.tar" \
            "$mirror" </dev/null
        mv "$tar.tmp.tar" "$tar"
    fi
    say "$ref: importing $tar"
    podman import --quiet "$tar" "$ref" >/dev/null
}

build() {
    local e ref start

    e=$(engine)
    start=$(date +%s)
    if [ "$e" = docker ]; then
        docker build -t "$IMAGE" "$repo"
    else
        for ref in $(base_images); do
            podman image exists "$ref" && continue
            if [ "$IMAGE_PULL_TIMEOUT" != 0 ] \
                && timeout "$IMAGE_PULL_TIMEOUT" \
                    podman pull --quiet "$ref" >/dev/null 2>&1
            then
                continue
            fi
            make_base "$ref"
        done
        podman build --pull=never --isolation=chroot --format docker \
            --layers -t "$IMAGE" "$repo"
    fi
    say "built $IMAGE with $e in $(($(date +%s) - start)) s;" \
        "$(info | tr '\n' ' ')"
}

info() {
    local e

    e=$(engine)
    printf 'engine %s\n' "$e"
    "$e" image inspect --format 'id {{.Id}}
size {{.Size}}' "$IMAGE"
}

mount_image() {
    [ "$(engine)" = podman ] \
        || die "image.sh mount needs podman (docker: docker run works)"
    podman image mount "$IMAGE"
}

umount_image() {
    # every mount of it (each `run` adds one); running containers keep
    # their own copy of the mount in their private mount namespace
    podman image unmount --force "$IMAGE" >/dev/null 2>&1 || true
}

# run NS DIR [VAR=value ...] [-- CMD ...]
run() {
    local ns=$1 dir=$2 root lower
    local -a envs=() cmd=()

    shift 2
    while [ $# -gt 0 ]; do
        case "$1" in
            --) shift; cmd=("$@"); break ;;
            *=*) envs+=("$1"); shift ;;
            *) die "run: expected VAR=value or --, got \"$1\"" ;;
        esac
    done
    [ ${#cmd[@]} -gt 0 ] \
        || cmd=(/usr/local/lib/dstack-vpc/scripts/entrypoint.sh run)

    lower=$(mount_image)
    [ -d "$lower/usr" ] || die "no image filesystem at \"$lower\""
    dir=$(readlink -f "$dir")
    root=$dir/root
    mkdir -p "$dir/upper" "$dir/work" "$root" "$dir/conf" "$dir/tls" \
        "$dir/run" "$dir/data"
    [ -S "$dir/dstack.sock" ] || die "no guest-agent socket $dir/dstack.sock"

    # the container's environment: the image's ENV, then the caller's
    local -a image_env
    mapfile -t image_env < <(command podman image inspect \
        --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" \
        | grep .)

    # for `image.sh exec`: the same environment (the role)
    (umask 077; printf '%s\n' "${image_env[@]}" "${envs[@]}" >"$dir/env")

    # everything below happens in a private mount namespace: nothing is
    # left mounted on the host when the namespace's last process ends
    # SIGTERM or SIGINT to this script goes to the container's init
    # (supervisord: it stops its programs and exits, and the kernel ends
    # whatever is left in the pid namespace); SIGKILL after 25 s.  If
    # unshare itself dies, --kill-child ends the init.
    rm -f "$dir/pid"
    # shellcheck disable=SC2016 # the inner script's own variables
    ip netns exec "$ns" unshare --mount --pid --fork \
        --propagation private --kill-child \
        /bin/bash -euc '
        lower=$1 dir=$2 root=$3
        shift 3
        mount -t overlay overlay \
            -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$root"
        mount -t proc proc "$root/proc"
        mount -t sysfs sysfs "$root/sys" 2>/dev/null || true
        mount --rbind /dev "$root/dev"
        mount -t tmpfs tmpfs "$root/tmp"
        mkdir -p "$root/etc/dstack-vpc" "$root/etc/dstack/mesh" \
            "$root/run/dstack-vpc" "$root/var/lib/dstack-vpc"
        mount --bind "$dir/conf" "$root/etc/dstack-vpc"
        mount --bind "$dir/tls" "$root/etc/dstack/mesh"
        mount --bind "$dir/run" "$root/run/dstack-vpc"
        mount --bind "$dir/data" "$root/var/lib/dstack-vpc"
        : >"$root/run/dstack.sock"
        mount --bind "$dir/dstack.sock" "$root/run/dstack.sock"
        if [ -f "$dir/hosts" ]; then
            mount --bind "$dir/hosts" "$root/etc/hosts"
        fi
        if [ -f "$dir/sys-config.json" ]; then
            mkdir -p "$root/dstack/.host-shared"
            : >"$root/dstack/.host-shared/.sys-config.json"
            mount --bind "$dir/sys-config.json" \
                "$root/dstack/.host-shared/.sys-config.json"
        fi
        # this shell becomes the chroot (pid 1 inside): its host pid,
        # read by the shell itself, not by a child
        read -r hostpid _ </proc/self/stat
        echo "$hostpid" >"$dir/pid"
        exec chroot "$root" "$@"
    ' image-run "$lower" "$dir" "$root" \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root "${image_env[@]}" "${envs[@]}" "${cmd[@]}" &
    child=$!
    trap 'stop_container "$dir"' TERM INT
    rc=0
    while kill -0 "$child" 2>/dev/null; do
        wait "$child" && rc=0 || rc=$?
    done
    exit "$rc"
}

stop_container() {
    local pid

    pid=$(cat "$1/pid" 2>/dev/null) || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    ( sleep 25; kill -KILL "$pid" 2>/dev/null ) &
}

# exec DIR CMD ...: in the namespaces and root of `run DIR`
exec_in() {
    local dir=$1 pid
    local -a envs=()

    shift
    pid=$(cat "$dir/pid" 2>/dev/null) || die "no $dir/pid: not running"
    [ -f "$dir/env" ] && mapfile -t envs <"$dir/env"
    # $dir/pid is the shell that became chroot's init (pid 1 inside)
    exec nsenter -t "$pid" -m -n -p -r -w env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root "${envs[@]}" "$@"
}

case "${1:-}" in
    build) build ;;
    info) info ;;
    mount) mount_image ;;
    umount) umount_image ;;
    run) shift; [ $# -ge 2 ] || die "usage: image.sh run NS DIR ..."; run "$@" ;;
    exec) shift; [ $# -ge 2 ] || die "usage: image.sh exec DIR CMD ..."; exec_in "$@" ;;
    -h|--help|'') sed -n '2,37p' "$self" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command \"$1\" (image.sh --help)" ;;
esac
