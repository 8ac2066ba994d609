# shellcheck shell=bash disable=SC2154  # $d, $build, $repo: the caller's
# bench/lib/callgrind.sh: instruction counts per request, sourced by the
# benches (bench/mesh, bench/auth, bench/api) when BENCH_CALLGRIND=1.
#
# One nginx at a time runs under valgrind --tool=callgrind, one process
# (master_process off, the conf's worker_processes 1), the packaged
# /usr/sbin/nginx (stripped: its own functions appear as addresses, the
# modules', OpenSSL's and libc's by name).  Each run starts nginx, waits
# for its port, sends
# a warm-up, then either a fixed number of requests or nothing for as
# long (the idle run), and stops it; an idle run's instructions (start-up,
# warm-up, timers, shutdown) are subtracted from each loaded run's.
#
# Needs from the caller: $d (the bench's directory), $build, $repo.

cg_warm=${BENCH_CG_WARMUP:-20}
cg_reqs=${BENCH_CG_REQUESTS:-200}

cg_check() {
    local x
    for x in valgrind callgrind_annotate python3 ss curl; do
        command -v $x >/dev/null || {
            echo "bench: BENCH_CALLGRIND=1 needs $x (scripts/deps.sh)" >&2
            return 1
        }
    done
    mkdir -p "$d/cg"
}

# stop an nginx started by the bench, by its pid file, and wait for it
cg_stop_pidfile() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    kill -QUIT "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

# cg_requests <count> <url> [curl arguments]: <count> GETs, one after the
# other on one keep-alive connection; fails unless every answer is 200
cg_requests() {
    local n=$1 url=$2 _ codes
    shift 2
    [ "$n" -gt 0 ] || return 0
    for _ in $(seq "$n"); do
        printf 'url = "%s"\noutput = /dev/null\n' "$url"
    done > "$d/cg/curl.cfg"
    codes=$(curl -s -w '%{http_code}\n' "$@" -K "$d/cg/curl.cfg" \
            | sort | uniq -c | awk '{ printf "%s", $0 }')
    [ "$(echo $codes)" = "$n 200" ] || {
        echo "bench: callgrind requests to $url answered: $codes" >&2
        return 1
    }
}

# cg_run <out> <conf> <port> <count> <url> [curl arguments]: nginx from
# <conf> under callgrind, listening on <port>; <count> requests after the
# warm-up (0: the idle run, lasting as long as the previous loaded run)
cg_run() {
    local out=$1 conf=$2 port=$3 n=$4 url=$5 vp t0 t1 _
    shift 5
    valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$out" \
        nginx -p "$d/" -c "$conf" \
        -g 'daemon off; master_process off;' \
        > "$out.log" 2>&1 &
    vp=$!
    for _ in $(seq 1200); do
        ss -Hltn "sport = :$port" | grep -q . && break
        kill -0 "$vp" 2>/dev/null || {
            echo "bench: nginx under callgrind exited" >&2
            cat "$out.log" >&2
            return 1
        }
        sleep 0.1
    done
    # time for what a process sets up after it listens (the API's Redis
    # connections), so that no warm-up request meets it half done
    sleep "${cg_settle:-0}"
    cg_requests "$cg_warm" "$url" "$@"
    t0=$(date +%s.%N)
    if [ "$n" -gt 0 ]; then
        cg_requests "$n" "$url" "$@"
        t1=$(date +%s.%N)
        cg_last=$(echo "$t1 - $t0" | bc -l)
    else
        sleep "${cg_last:-2}"
    fi
    kill -QUIT "$vp"
    wait "$vp" || true
    [ -s "$out" ] || { echo "bench: no callgrind output $out" >&2; return 1; }
}

# cg_report <project label> <loaded out> <idle out>
#           <baseline label> <loaded out> <idle out>: instructions per
# request of both, their ratio, and the functions whose cost per request
# differs most
cg_report() {
    python3 "$repo/bench/lib/cgdiff" --requests "$cg_reqs" "$@"
}
