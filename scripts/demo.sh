#!/bin/bash
# dstack-vpc-nginx: a whole local VPC on one machine, without a TEE.
#
#     scripts/demo.sh           bring it up, walk through the seed's flows,
#                               stay up until Ctrl-C (make demo)
#     scripts/demo.sh --check   the same, then tear down; exit 1 when a step
#                               failed (t/demo.t; also DEMO_EXIT_AFTER_STEPS=1)
#     scripts/demo.sh --down    remove what a previous run left (make demo-down)
#     scripts/demo.sh --udp     let UDP through between the CVMs (also
#                               DEMO_UDP=1): WireGuard goes direct
#
# Each CVM is a network namespace with its own guest-agent simulator socket
# (one shared KMS root), its own folders, and scripts/entrypoint.sh as its
# init, exactly as in the image.  As in dstack, a CVM reaches nothing but
# the gateway's TCP ports, and only the gateway reaches its :443 (nftables
# in each CVM): no UDP between CVMs, so the VPN's WireGuard packets take
# the relay path through the gateway (docs/wg-relay.md) unless --udp.
#
#   <tag>-gw    gateway emulator: nginx stream + ssl_preread maps the SNI
#               <id>-443s.<domain> to that CVM's :443; /prpc/Info on :9202
#   <tag>-srv   VPC server  (VPC_SERVER_ENABLED=true)
#   <tag>-n1    VPC node 1  (VPC_NODE_NAME=node1)
#   <tag>-n2    VPC node 2  (VPC_NODE_NAME=node2, a demo app on :8000)
#
# joined by veth links to a bridge in <tag>-gw (10.77.0.0/24; addresses
# exist only inside these namespaces).  Needs root.
#
# Environment: DEMO_DIR (default /tmp/dstack-vpc-demo), DEMO_TAG (default
# dvpc, at most 8 characters), DSTACK_BUILD (default ./build),
# DEMO_TIMEOUT (seconds to wait for the VPC, default 120), DEMO_KEEP=1
# keeps DEMO_DIR after the end, DEMO_UDP=1 as --udp.

set -eu

self=$(readlink -f "$0")
repo=$(dirname "$(dirname "$self")")

: "${DEMO_DIR:=/tmp/dstack-vpc-demo}"
: "${DEMO_TAG:=dvpc}"
: "${DSTACK_BUILD:=$repo/build}"
: "${DEMO_TIMEOUT:=120}"
: "${DEMO_KEEP:=}"
: "${DEMO_EXIT_AFTER_STEPS:=}"
: "${DEMO_UDP:=}"

domain=demo.dstack
net=10.77.0
gw_ip=$net.1
stream_so=/usr/lib/nginx/modules/ngx_stream_module.so
cvms="srv n1 n2"
mode=run

[ -n "$DEMO_EXIT_AFTER_STEPS" ] && mode=check
for arg in "$@"; do
    case "$arg" in
        --check) mode=check ;;
        --down) mode=down ;;
        --preflight) mode=preflight ;;
        --udp) DEMO_UDP=1 ;;
        -h|--help) sed -n '2,33p' "$self" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--check | --down] [--udp]" >&2; exit 1 ;;
    esac
done
case "$DEMO_UDP" in
    ''|0) DEMO_UDP= ; want_path=relay ;;
    1) want_path=direct ;;
    *) echo "DEMO_UDP=\"$DEMO_UDP\": use 1 or leave it unset" >&2; exit 1 ;;
esac

say() { printf '%s\n' "$*"; }
detail() { printf '    %s\n' "$@"; }
fail_early() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- preconditions -----------------------------------------------------------

if [ "$(id -u)" != 0 ]; then
    fail_early "this needs root: it creates network namespaces (ip netns)," \
        "veth links and WireGuard devices, and runs nginx on ports 80/443" \
        "inside them. Run it as root: sudo make demo"
fi

[ "$mode" = preflight ] && exit 0

case "$DEMO_TAG" in
    ''|*[!a-z0-9]*) fail_early "DEMO_TAG=\"$DEMO_TAG\": lowercase letters and digits" ;;
esac
[ "${#DEMO_TAG}" -le 8 ] || fail_early "DEMO_TAG=\"$DEMO_TAG\": 8 characters at most"

ns() { echo "$DEMO_TAG-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# --- teardown ----------------------------------------------------------------

down() {
    local pid n

    if [ -f "$DEMO_DIR/pids" ]; then
        # entry scripts (supervisord) first: they stop nginx, redis, wgctl
        while read -r pid; do
            kill -TERM "$pid" 2>/dev/null || true
        done <"$DEMO_DIR/pids"
        for _ in $(seq 1 100); do
            alive=
            while read -r pid; do
                kill -0 "$pid" 2>/dev/null && alive=1
            done <"$DEMO_DIR/pids"
            [ -z "$alive" ] && break
            sleep 0.1
        done
        while read -r pid; do
            kill -KILL "$pid" 2>/dev/null || true
        done <"$DEMO_DIR/pids"
        rm -f "$DEMO_DIR/pids"
    fi

    for n in gw $cvms; do
        # whatever still runs in the namespace (wireguard-go, nginx workers)
        for pid in $(ip netns pids "$(ns "$n")" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$(ns "$n")" 2>/dev/null || true
    done

    for n in 1 2; do
        rm -f "/var/run/wireguard/${DEMO_TAG}$n.sock"
    done

    if [ -z "$DEMO_KEEP" ]; then
        rm -rf "$DEMO_DIR"
    fi
}

if [ "$mode" = down ]; then
    down
    say "demo: removed namespaces $(ns gw) $(ns srv) $(ns n1) $(ns n2) and their processes"
    exit 0
fi

for f in "$DSTACK_BUILD/bin/dstack-sim" "$DSTACK_BUILD/bin/wgctl" \
         "$DSTACK_BUILD/modules/ngx_http_dstack_mesh_module.so" \
         "$DSTACK_BUILD/modules/ngx_http_dstack_auth_module.so" \
         "$DSTACK_BUILD/modules/ngx_http_dstack_vpc_api_module.so"
do
    [ -e "$f" ] || fail_early "$f is missing: run make first (make demo does)"
done
for prog in ip nft nginx redis-server supervisord wireguard-go curl jq openssl; do
    command -v "$prog" >/dev/null \
        || fail_early "$prog not found: run make deps (make demo does)"
done
[ -f "$stream_so" ] || fail_early "$stream_so not found (apt-get install libnginx-mod-stream)"

if ip netns list | grep -q "^$(ns gw)\b"; then
    say "demo: a previous demo with tag $DEMO_TAG is still up; removing it"
    down
fi

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
: >"$DEMO_DIR/pids"

cleanup() {
    trap - EXIT INT TERM
    say ""
    say "demo: stopping the VPC and removing its namespaces"
    down
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

track() { echo "$1" >>"$DEMO_DIR/pids"; }

# --- identities: one per CVM, stable across runs -----------------------------

hex40() { printf 'dstack-vpc demo %s' "$1" | sha1sum | cut -c1-40; }

declare -A APP INST IP
for n in $cvms; do
    APP[$n]=$(hex40 "app $n")
    INST[$n]=$(hex40 "instance $n")
done
IP[srv]=$net.10
IP[n1]=$net.11
IP[n2]=$net.12

# --- network -----------------------------------------------------------------

ip netns add "$(ns gw)"
ip -n "$(ns gw)" link set lo up
ip -n "$(ns gw)" link add br0 type bridge
ip -n "$(ns gw)" addr add "$gw_ip/24" dev br0
ip -n "$(ns gw)" link set br0 up

for n in $cvms; do
    ip netns add "$(ns "$n")"
    ip -n "$(ns "$n")" link set lo up
    ip -n "$(ns gw)" link add "v$n" type veth peer name eth0 netns "$(ns "$n")"
    ip -n "$(ns gw)" link set "v$n" master br0 up
    ip -n "$(ns "$n")" addr add "${IP[$n]}/24" dev eth0
    ip -n "$(ns "$n")" link set eth0 up
done

# dstack's reality: a CVM reaches only the gateway's TCP ports (its :443
# and the RPC), and only the gateway reaches the CVM's :443; no UDP
# between CVMs unless --udp.  Loopback and the WireGuard device are free.
if [ -n "$DEMO_UDP" ]; then
    udp_rule='meta l4proto udp accept'
else
    udp_rule='meta l4proto udp counter drop'
fi
for n in $cvms; do
    in_ns "$n" nft -f - <<EOF
table inet dstack_demo {
    chain output {
        type filter hook output priority 0; policy accept;
        oifname != "eth0" accept
        ct state established,related accept
        ip daddr $gw_ip tcp dport { 443, 9202 } accept
        $udp_rule
        counter drop
    }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname != "eth0" accept
        ct state established,related accept
        ip saddr $gw_ip tcp dport 443 accept
        $udp_rule
        counter drop
    }
}
EOF
done

# --- guest agents: one simulator per CVM, one KMS root ------------------------

mkdir -p "$DEMO_DIR/kms"
for n in $cvms; do
    d=$DEMO_DIR/$n
    mkdir -p "$d"
    "$DSTACK_BUILD/bin/dstack-sim" serve --socket "$d/dstack.sock" \
        --state-dir "$DEMO_DIR/kms" --app-id "${APP[$n]}" \
        --instance-id "${INST[$n]}" --app-name "demo-$n" \
        2>>"$d/sim.log" &
    track $!
    printf '{"gateway_urls":["https://%s:9202"]}\n' "$gw_ip" >"$d/sys-config.json"
    printf '127.0.0.1 localhost\n' >"$d/hosts"
done

# --- the gateway emulator ----------------------------------------------------

g=$DEMO_DIR/gw
mkdir -p "$g"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$g/rpc.key" -out "$g/rpc.crt" -days 2 -subj "/CN=gateway" \
    >/dev/null 2>&1

routes=
for n in $cvms; do
    routes="$routes        ${APP[$n]}-443s.$domain ${IP[$n]}:443;
        ${INST[$n]}-443s.$domain ${IP[$n]}:443;
"
done

cat >"$g/nginx.conf" <<EOF
load_module $stream_so;
pid $g/nginx.pid;
error_log $g/error.log notice;
user root;
worker_processes 1;
events {}

# TLS passthrough as the dstack gateway does for <id>-<port>s names
stream {
    map_hash_bucket_size 128;
    map \$ssl_preread_server_name \$cvm {
$routes        default 127.0.0.1:1;
    }
    server {
        listen $gw_ip:443;
        ssl_preread on;
        proxy_pass \$cvm;
        proxy_connect_timeout 5s;
    }
}

# the gateway's RPC, for the entry script's domain detection
http {
    access_log off;
    client_body_temp_path $g/tmp;
    proxy_temp_path $g/tmp;
    fastcgi_temp_path $g/tmp;
    uwsgi_temp_path $g/tmp;
    scgi_temp_path $g/tmp;
    server {
        listen $gw_ip:9202 ssl;
        ssl_certificate $g/rpc.crt;
        ssl_certificate_key $g/rpc.key;
        location = /prpc/Info {
            default_type application/json;
            return 200 '{"base_domain":"$domain","external_port":443}';
        }
    }
}
EOF

ip netns exec "$(ns gw)" nginx -p "$g/" -c "$g/nginx.conf" \
    -g 'daemon off;' 2>>"$g/error.log" &
track $!

# --- a demo app behind node 2's mesh: shows what the backend receives --------

a=$DEMO_DIR/app
mkdir -p "$a"
cat >"$a/nginx.conf" <<EOF
pid $a/nginx.pid;
error_log $a/error.log notice;
user root;
worker_processes 1;
events {}
http {
    access_log off;
    client_body_temp_path $a/tmp;
    proxy_temp_path $a/tmp;
    fastcgi_temp_path $a/tmp;
    uwsgi_temp_path $a/tmp;
    scgi_temp_path $a/tmp;
    server {
        listen 127.0.0.1:8000;
        default_type application/json;
        return 200 '{"app":"node2 demo app","uri":"\$request_uri","x-dstack-app-id":"\$http_x_dstack_app_id"}\n';
    }
}
EOF
ip netns exec "$(ns n2)" nginx -p "$a/" -c "$a/nginx.conf" \
    -g 'daemon off;' 2>>"$a/error.log" &
track $!

# --- the CVMs, through the image's entry script -------------------------------

# start_cvm <ns> VAR=value ...
start_cvm() {
    local n=$1 d=$DEMO_DIR/$1

    shift
    ip netns exec "$(ns "$n")" env -i PATH="$PATH" HOME=/root \
        DSTACK_SOCKET="$d/dstack.sock" \
        DSTACK_SYS_CONFIG="$d/sys-config.json" \
        DSTACK_GATEWAY_ADDRESS="$gw_ip:443" \
        DSTACK_VPC_CONF_DIR="$d/conf" DSTACK_VPC_TLS_DIR="$d/tls" \
        DSTACK_VPC_RUN_DIR="$d/run" DSTACK_VPC_DATA_DIR="$d/data" \
        DSTACK_VPC_MODULES="$DSTACK_BUILD/modules" \
        WGCTL="$DSTACK_BUILD/bin/wgctl" WG_HOSTS_FILE="$d/hosts" \
        VPC_REGISTER_MAX_DELAY=5 \
        "$@" "$repo/scripts/entrypoint.sh" run >>"$d/entrypoint.log" 2>&1 &
    track $!
}

start_cvm srv VPC_SERVER_ENABLED=true \
    VPC_ALLOWED_APPS="${APP[n1]},${APP[n2]}"
start_cvm n1 VPC_NODE_NAME=node1 VPC_NODE_TYPE=web \
    VPC_SERVER_APP_ID="${APP[srv]}" WG_INTERFACE="${DEMO_TAG}1" \
    WG_ENDPOINT="${IP[n1]}:41641"
start_cvm n2 VPC_NODE_NAME=node2 VPC_NODE_TYPE=db \
    VPC_SERVER_APP_ID="${APP[srv]}" WG_INTERFACE="${DEMO_TAG}2" \
    WG_ENDPOINT="${IP[n2]}:41641" MESH_BACKEND=127.0.0.1:8000

# --- the walk-through --------------------------------------------------------

nstep=0
failed=0

step() {
    nstep=$((nstep + 1))
    say ""
    say "==> step $nstep: $*"
}

ok() { say "    [ok] $*"; }
bad() { failed=$((failed + 1)); say "    [FAILED] $*"; }

# a local app's request on a CVM: curl in that namespace
app_curl() {
    local n=$1
    shift
    in_ns "$n" curl -sS --max-time 20 "$@" 2>&1 || true
}

wait_until() {
    local limit=$1
    shift
    for _ in $(seq 1 $((limit * 5))); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

mesh_up() { in_ns "$1" curl -fsS --max-time 2 -o /dev/null http://127.0.0.1/gateway 2>/dev/null; }
registered() { grep -q 'dstack-vpc: registered as' "$DEMO_DIR/$1/entrypoint.log"; }
# vpc.json is the agent's last file: vpn_ip and name are there too
has_vpn_ip() { [ -s "$DEMO_DIR/$1/run/vpc/vpc.json" ]; }
# an address, or a reason why none will come
agent_done() {
    has_vpn_ip "$1" \
        || grep -q 'wgctl up exited\|wgctl up has no VPN address' \
            "$DEMO_DIR/$1/entrypoint.log"
}

say "dstack-vpc demo: a VPC server and two nodes in network namespaces"
say "(work dir $DEMO_DIR; logs in <cvm>/entrypoint.log)"
for n in $cvms; do
    detail "$(ns "$n"): app_id ${APP[$n]}  ${IP[$n]}"
done
detail "$(ns gw): gateway emulator $gw_ip:443 (SNI <id>-443s.$domain), RPC :9202"
if [ -n "$DEMO_UDP" ]; then
    detail "UDP between the CVMs: allowed (--udp); WireGuard can go direct"
else
    detail "UDP between the CVMs: blocked (nftables), as in dstack; --udp lets it through"
fi

step "start: entry script per CVM (certificates, gateway domain, nginx -t, supervisord)"
all_up=1
for n in $cvms; do
    if wait_until "$DEMO_TIMEOUT" mesh_up "$n"; then
        detail "$(ns "$n"): $(grep -o 'role: .*' "$DEMO_DIR/$n/entrypoint.log" | head -1), $(grep -o 'gateway domain .*' "$DEMO_DIR/$n/entrypoint.log" | head -1)"
    else
        all_up=
        detail "$(ns "$n"): not up; last lines of its log:"
        tail -5 "$DEMO_DIR/$n/entrypoint.log" | sed 's/^/      /'
    fi
done
key_mode=$(stat -c %a "$DEMO_DIR/n1/tls/key.pem" 2>/dev/null || echo none)
detail "node1 key file mode: $key_mode"
if [ -n "$all_up" ] && [ "$key_mode" = 600 ]; then
    ok "server, node1 and node2 are up"
else
    bad "not every CVM came up"
fi

step "node registration: GET /api/register through the mesh (Host: vpc-server)"
reg_ok=1
for n in n1 n2; do
    if wait_until "$DEMO_TIMEOUT" registered "$n"; then
        detail "$(grep -o 'registered as .*' "$DEMO_DIR/$n/entrypoint.log" | head -1)"
    else
        reg_ok=
        detail "$n did not register; last lines of its log:"
        tail -5 "$DEMO_DIR/$n/entrypoint.log" | sed 's/^/      /'
    fi
done
k1=$(app_curl n1 http://127.0.0.1/vpc/0/shared_key)
k2=$(app_curl n2 http://127.0.0.1/vpc/0/shared_key)
url=$(app_curl n1 http://127.0.0.1/vpc/0/server_url)
pak=$(app_curl n1 -o /dev/null -w '%{http_code}' http://127.0.0.1/vpc/0/pre_auth_key)
detail "node1$ curl http://127.0.0.1/vpc/0/server_url  ->  $url"
detail "node1$ curl http://127.0.0.1/vpc/0/shared_key  ->  ${k1:0:12}... (${#k1} chars)"
detail "node1$ curl http://127.0.0.1/vpc/0/pre_auth_key -> HTTP $pak (never served)"
if [ -n "$reg_ok" ] && [ "${#k1}" -ge 80 ] && [ "$k1" = "$k2" ] \
    && [ "$pak" = 404 ]
then
    ok "both nodes registered; one VPC-wide shared_key; the pre-auth key stays private"
else
    bad "registration"
fi

step "VPN addresses and names (wgctl up with the pre-auth key)"
for n in n1 n2; do
    wait_until "$DEMO_TIMEOUT" agent_done "$n" || true
done
vpn=1
for n in n1 n2; do
    if has_vpn_ip "$n"; then
        detail "$(ns "$n"): $(cat "$DEMO_DIR/$n/run/vpc/name") = $(cat "$DEMO_DIR/$n/run/vpc/vpn_ip")" \
            "(http://127.0.0.1/vpc/0/vpn_ip, /vpc/0/name)"
    else
        vpn=
        detail "$(ns "$n"): no VPN address: $(grep -o 'wgctl: .*' "$DEMO_DIR/$n/entrypoint.log" | tail -1)"
    fi
done
ip1=$(cat "$DEMO_DIR/n1/run/vpc/vpn_ip" 2>/dev/null || true)
ip2=$(cat "$DEMO_DIR/n2/run/vpc/vpn_ip" 2>/dev/null || true)
if [ -n "$vpn" ] && [ "$ip1" != "$ip2" ]; then
    ok "node1 $ip1, node2 $ip2 in 100.128.0.0/10"
elif [ -n "$vpn" ]; then
    bad "both nodes got $ip1"
else
    bad "no VPN address: the control plane (/machine/register, /machine/map) did not give one"
fi

# node2's line in wgctl status names the path, "direct <endpoint>" or
# "relay", between fields separated by two spaces, then the bytes of each
# path: the path is taken and has carried node2's packets (a direct
# probe shows "direct" before anything came back); the output is kept
if [ "$want_path" = relay ]; then
    path_re='  relay  .*  relay rx [1-9]'
else
    path_re='  direct [0-9.]+:[0-9]+  .*  direct rx [1-9]'
fi
on_path() {
    status_out=$(in_ns n1 "$DSTACK_BUILD/bin/wgctl" status \
        --state-dir "$DEMO_DIR/n1/data/wgctl" 2>&1 || true)
    grep -F "$ip2" <<<"$status_out" | grep -qE "$path_re"
}

# a few echo requests, at least one answered
ping_node2() {
    ping_out=$(in_ns n1 ping -c 3 -i 0.3 -W 2 "$ip2" 2>&1)
}

step "wgctl status on node1: node2 over the $want_path path, ping over WireGuard"
if [ -n "$vpn" ]; then
    # traffic starts the peer's path choice (auto: direct first, the
    # relay when no handshake completes within wgctl's --path-timeout)
    ping_out=
    pinged=
    wait_until 60 ping_node2 && pinged=1
    status_out=
    path_ok=
    wait_until 60 on_path && path_ok=1
    printf '%s\n' "$status_out" | sed 's/^/      /'
    if [ -n "$path_ok" ]; then
        ok "node1 has node2 as a peer on the $want_path path"
    else
        bad "node2 is not node1's peer on the $want_path path"
    fi
    if [ -n "$pinged" ]; then
        detail "node1$ ping -c 3 $ip2 (node2 over WireGuard):" \
            "$(grep -o '[0-9]* received.*' <<<"$ping_out" | head -1)"
        detail "$(grep -o 'rtt .*' <<<"$ping_out")"
        detail "node1 hosts: $(grep 'node2' "$DEMO_DIR/n1/hosts" | head -1)"
        ok "node1 reaches node2 over the VPN"
    else
        bad "no ping reply from node2 over the VPN"
    fi
    # the firewall itself: a datagram from node1 to node2's WireGuard port
    if in_ns n1 bash -c "echo probe >/dev/udp/${IP[n2]}/41641" 2>/dev/null
    then
        udp=sent
    else
        udp=refused
    fi
    if [ -z "$DEMO_UDP" ]; then
        drops=$(in_ns n1 nft list chain inet dstack_demo output 2>/dev/null \
            | grep -o 'udp counter packets [0-9]*' | grep -o '[0-9]*$' || true)
        detail "node1 -> ${IP[n2]}:41641 over UDP: $udp; UDP datagrams node1's nftables dropped: ${drops:-0}"
        [ "$udp" = refused ] || bad "UDP between the CVMs is not blocked"
    else
        detail "node1 -> ${IP[n2]}:41641 over UDP: $udp"
        [ "$udp" = sent ] || bad "UDP between the CVMs is blocked despite --udp"
    fi
else
    bad "no VPN (see the previous step)"
fi

step "mesh call: node1's app -> node2's backend (x-dstack-target-app)"
detail "node1$ curl -H 'x-dstack-target-app: ${APP[n2]}' -H 'x-dstack-app-id: forged' http://127.0.0.1/hello"
out=$(app_curl n1 -H "x-dstack-target-app: ${APP[n2]}" -H 'x-dstack-app-id: forged' http://127.0.0.1/hello)
detail "-> $out"
got=$(jq -r '."x-dstack-app-id" // empty' <<<"$out" 2>/dev/null || true)
if [ "$got" = "${APP[n1]}" ]; then
    ok "node2's backend saw x-dstack-app-id = node1's app id (from its certificate; the forged header was dropped)"
else
    bad "expected x-dstack-app-id ${APP[n1]}, got \"$got\""
fi

step "discover: GET /api/discover/db from node1 (Host: vpc-server)"
detail "node1$ curl -H 'x-dstack-target-app: ${APP[srv]}' -H 'Host: vpc-server' http://127.0.0.1/api/discover/db"
out=$(app_curl n1 -H "x-dstack-target-app: ${APP[srv]}" -H 'Host: vpc-server' http://127.0.0.1/api/discover/db)
detail "-> $out"
if [ -n "$vpn" ]; then
    if jq -e --arg ip "$ip2" '.count >= 1 and any(.nodes[]; .tailscale_ip == $ip)' <<<"$out" >/dev/null 2>&1; then
        ok "node2 is found as a db node with its VPN address"
    else
        bad "node2 not discovered"
    fi
else
    bad "nodes report their type after the VPN gives them an address (nodes/update); no VPN here"
fi

step "guest-agent fallback: no x-dstack-target-app goes to dstack.sock"
detail "node1$ curl http://127.0.0.1/info"
out=$(app_curl n1 http://127.0.0.1/info)
detail "-> $(jq -c '{app_id, instance_id, app_name}' <<<"$out" 2>/dev/null || echo "$out")"
gwd=$(app_curl n1 http://127.0.0.1/gateway)
detail "node1$ curl http://127.0.0.1/gateway  ->  $gwd"
if [ "$(jq -r '.app_id // empty' <<<"$out" 2>/dev/null)" = "${APP[n1]}" ]; then
    ok "node1's own guest agent answered /Info"
else
    bad "/info did not reach node1's guest agent"
fi

say ""
say "demo: $nstep steps, $failed failed"

if [ "$mode" = check ]; then
    [ "$failed" = 0 ]
    exit
fi

cat <<EOF

The VPC stays up until Ctrl-C (or make demo-down from another shell).
Try, as root:
  ip netns exec $(ns n1) curl -H 'x-dstack-target-app: ${APP[n2]}' http://127.0.0.1/
  ip netns exec $(ns n1) curl -H 'x-dstack-target-app: ${APP[srv]}' -H 'Host: vpc-server' http://127.0.0.1/api/nodes
  ip netns exec $(ns n1) $DSTACK_BUILD/bin/wgctl status --state-dir $DEMO_DIR/n1/data/wgctl
  tail -f $DEMO_DIR/n1/entrypoint.log
EOF

while :; do
    sleep 3600 &
    wait $! || true
done
