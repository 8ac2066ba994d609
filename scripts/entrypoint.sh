#!/bin/bash
# dstack-vpc-nginx: the image's entry point, also used by `make demo`.
#
# The role comes from the environment, as in the seed's image:
#     VPC_SERVER_ENABLED=true   server: VPC API + control plane (nginx with
#                               auth, mesh and api modules), redis-server
#     VPC_NODE_NAME=<name>      node: joins the VPC (register, wgctl up)
#     both                      a server that is also a member
#     neither                   mesh only: :80 outbound, :443 to MESH_BACKEND
# Every role runs the mesh: 127.0.0.1:80 for local apps, :443 for peers.
#
#     entrypoint.sh [run]       prepare, then supervise (foreground)
#     entrypoint.sh render      prepare and `nginx -t` only (exit 0 or 1)
#     entrypoint.sh health      the container's HEALTHCHECK
#     entrypoint.sh node-agent  (run by supervisord) register, wgctl up,
#                               nodes/update
#     entrypoint.sh env         print the settings (never a secret)
#
# Paths come from the environment so that several CVMs can run on one
# machine (make demo); the README ("The image") has the table of variables.

set -eu
umask 022

# --- settings ----------------------------------------------------------------

self=$(readlink -f "$0")
share=$(dirname "$(dirname "$self")")

: "${DSTACK_VPC_SHARE:=$share}"
: "${DSTACK_SOCKET:=/var/run/dstack.sock}"
: "${DSTACK_SYS_CONFIG:=/dstack/.host-shared/.sys-config.json}"
: "${DSTACK_VPC_CONF_DIR:=/etc/dstack-vpc}"
: "${DSTACK_VPC_TLS_DIR:=/etc/dstack/mesh}"
: "${DSTACK_VPC_RUN_DIR:=/run/dstack-vpc}"
: "${DSTACK_VPC_DATA_DIR:=/var/lib/dstack-vpc}"
: "${DSTACK_VPC_USER:=root}"
: "${DSTACK_GATEWAY_DOMAIN:=}"
: "${DSTACK_GATEWAY_ADDRESS:=}"
: "${DSTACK_RESOLVER:=}"
: "${MESH_BACKEND:=127.0.0.1:8000}"
: "${MESH_ALLOWED_APPS:=any}"
: "${VPC_SERVER_ENABLED:=false}"
: "${VPC_NODE_NAME:=}"
: "${VPC_NODE_TYPE:=}"
: "${VPC_ALLOWED_APPS=}"
: "${VPC_SERVER_URL:=}"
: "${VPC_SERVER_APP_ID:=}"
: "${VPC_REGISTER_ATTEMPTS:=12}"
: "${VPC_REGISTER_MAX_DELAY:=10}"
: "${WG_INTERFACE:=dstack0}"
: "${WG_LISTEN_PORT:=41641}"
: "${WG_ENDPOINT:=}"
: "${WG_HOSTS_FILE:=/etc/hosts}"
: "${VPC_WG_PATH:=}"
: "${WG_RELAY_TUNNELS:=256}"
: "${DSTACK_VPC_NGINX:=/usr/sbin/nginx}"
# a library preloaded into nginx only (and its `nginx -t`): the ASan runtime
# when the modules are an AddressSanitizer build (make test-asan)
: "${DSTACK_NGINX_PRELOAD:=}"

if [ -z "${DSTACK_VPC_MODULES:-}" ]; then
    DSTACK_VPC_MODULES=$DSTACK_VPC_SHARE/build/modules
    [ -d "$DSTACK_VPC_MODULES" ] || DSTACK_VPC_MODULES=$DSTACK_VPC_SHARE/modules
fi

if [ -z "${WGCTL:-}" ]; then
    WGCTL=$DSTACK_VPC_SHARE/build/bin/wgctl
    [ -x "$WGCTL" ] || WGCTL=$(command -v wgctl || echo wgctl)
fi

templates=$DSTACK_VPC_SHARE/conf
app_dir=$DSTACK_VPC_RUN_DIR/vpc
node_dir=$DSTACK_VPC_DATA_DIR/node
mesh_url=http://127.0.0.1:80

log() {
    printf '%s dstack-vpc: %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

is_true() {
    case "$1" in
        true|TRUE|True|1|yes|on) return 0 ;;
        *) return 1 ;;
    esac
}

is_hex40() {
    case "$1" in
        *[!0-9a-fA-F]*) return 1 ;;
    esac
    [ "${#1}" -eq 40 ]
}

is_server() { is_true "$VPC_SERVER_ENABLED"; }

# ownership changes only where they can happen (a non-root `render`)
as_root() {
    [ "$(id -u)" = 0 ] || return 0
    "$@"
}
is_node() { [ -n "$VPC_NODE_NAME" ]; }

# whether the nginx workers ($DSTACK_VPC_USER) may connect to the guest
# agent's socket themselves (connecting needs write permission on it)
workers_reach_agent() {
    [ "$(id -u)" = 0 ] || return 0
    [ "$(id -u "$DSTACK_VPC_USER")" = 0 ] && return 0
    setpriv --reuid="$(id -u "$DSTACK_VPC_USER")" \
        --regid="$(id -g "$DSTACK_VPC_USER")" --init-groups \
        test -w "$DSTACK_SOCKET"
}

role() {
    if is_server && is_node; then
        echo server+node
    elif is_server; then
        echo server
    elif is_node; then
        echo node
    else
        echo mesh
    fi
}

# --- checks: fail fast, naming the variable ----------------------------------

check_env() {
    case "$VPC_SERVER_ENABLED" in
        true|TRUE|True|1|yes|on|false|FALSE|False|0|no|off|'') ;;
        *) die "VPC_SERVER_ENABLED=\"$VPC_SERVER_ENABLED\": use true or false" ;;
    esac

    case "$MESH_BACKEND" in
        ''|*[!A-Za-z0-9.:_\[\]-]*)
            die "MESH_BACKEND=\"$MESH_BACKEND\": expected host:port" ;;
    esac

    check_app_list MESH_ALLOWED_APPS "$MESH_ALLOWED_APPS"

    case "$VPC_WG_PATH" in
        ''|auto|direct|relay) ;;
        *) die "VPC_WG_PATH=\"$VPC_WG_PATH\": use auto, direct or relay" ;;
    esac

    if is_server; then
        # as the seed's entry: no allowlist, no server
        [ -n "$VPC_ALLOWED_APPS" ] \
            || die "VPC_ALLOWED_APPS is not set, it is required for the" \
                   "VPC server (\"any\" or comma-separated app ids)"
        check_app_list VPC_ALLOWED_APPS "$VPC_ALLOWED_APPS"

        case "$VPC_SERVER_URL" in
            ''|http://*|https://*) ;;
            *) die "VPC_SERVER_URL=\"$VPC_SERVER_URL\": expected an" \
                   "http:// or https:// URL" ;;
        esac
        case "$VPC_SERVER_URL" in
            *[\ \"\;\'\\\$]*)
                die "VPC_SERVER_URL=\"$VPC_SERVER_URL\": invalid character" ;;
        esac
    fi

    if is_node; then
        [ -n "$VPC_SERVER_APP_ID" ] \
            || die "VPC_SERVER_APP_ID is not set, it is required for a VPC" \
                   "node (the server's app id, or \"self\")"
        [ "$VPC_SERVER_APP_ID" = self ] || is_hex40 "$VPC_SERVER_APP_ID" \
            || die "VPC_SERVER_APP_ID=\"$VPC_SERVER_APP_ID\": expected 40" \
                   "hex characters or \"self\""

        # a DNS label: it becomes <name>.dstack.internal
        case "$VPC_NODE_NAME" in
            -*|*-|*[!A-Za-z0-9-]*)
                die "VPC_NODE_NAME=\"$VPC_NODE_NAME\": letters, digits and" \
                    "inner hyphens only" ;;
        esac
        [ "${#VPC_NODE_NAME}" -le 63 ] \
            || die "VPC_NODE_NAME is longer than 63 characters"

        case "$VPC_NODE_TYPE" in
            *[!A-Za-z0-9_.-]*)
                die "VPC_NODE_TYPE=\"$VPC_NODE_TYPE\": letters, digits," \
                    "\"-\", \"_\" and \".\" only" ;;
        esac
        [ "${#VPC_NODE_TYPE}" -le 63 ] \
            || die "VPC_NODE_TYPE is longer than 63 characters"

        case "$WG_INTERFACE" in
            ''|*[!A-Za-z0-9_.-]*)
                die "WG_INTERFACE=\"$WG_INTERFACE\": invalid name" ;;
        esac
        [ "${#WG_INTERFACE}" -le 15 ] \
            || die "WG_INTERFACE=\"$WG_INTERFACE\": longer than 15 characters"

        case "$WG_RELAY_TUNNELS" in
            ''|0*|*[!0-9]*)
                die "WG_RELAY_TUNNELS=\"$WG_RELAY_TUNNELS\": a positive" \
                    "number of tunnels per app" ;;
        esac
        [ "${#WG_RELAY_TUNNELS}" -le 6 ] \
            || die "WG_RELAY_TUNNELS=\"$WG_RELAY_TUNNELS\": too large"
    fi

    for v in DSTACK_SOCKET DSTACK_VPC_CONF_DIR DSTACK_VPC_TLS_DIR \
             DSTACK_VPC_RUN_DIR DSTACK_VPC_DATA_DIR WG_HOSTS_FILE
    do
        p=${!v}
        case "$p" in
            /*) ;;
            *) die "$v=\"$p\": an absolute path is needed" ;;
        esac
        case "$p" in
            *[!A-Za-z0-9/._-]*) die "$v=\"$p\": unusual characters in path" ;;
        esac
    done

    id -u "$DSTACK_VPC_USER" >/dev/null 2>&1 \
        || die "DSTACK_VPC_USER=\"$DSTACK_VPC_USER\": no such user"

    for m in auth mesh metrics; do
        [ -f "$DSTACK_VPC_MODULES/ngx_http_dstack_${m}_module.so" ] \
            || die "ngx_http_dstack_${m}_module.so not found in" \
                   "DSTACK_VPC_MODULES=\"$DSTACK_VPC_MODULES\" (run make)"
    done
    if is_server; then
        [ -f "$DSTACK_VPC_MODULES/ngx_http_dstack_vpc_api_module.so" ] \
            || die "ngx_http_dstack_vpc_api_module.so not found in" \
                   "DSTACK_VPC_MODULES=\"$DSTACK_VPC_MODULES\""
        command -v redis-server >/dev/null \
            || die "redis-server not found (apt-get install redis-server)"
    fi
    if is_node; then
        [ -x "$WGCTL" ] || command -v "$WGCTL" >/dev/null \
            || die "wgctl not found (WGCTL=\"$WGCTL\")"
    fi
    for prog in curl jq envsubst "$DSTACK_VPC_NGINX"; do
        command -v "$prog" >/dev/null || die "$prog not found"
    done
}

# "any" or comma-separated app ids
check_app_list() {
    local name=$1 value=$2 id rest

    [ "$value" = any ] && return 0

    rest=$value,
    while [ -n "$rest" ]; do
        id=${rest%%,*}
        rest=${rest#*,}
        is_hex40 "$id" \
            || die "$name=\"$value\": \"$id\" is not an app id (40 hex" \
                   "characters), use \"any\" or ids separated by commas"
    done
}

# --- the guest agent ---------------------------------------------------------

agent() {
    local path=$1 body=${2:-\{\}}

    [ -S "$DSTACK_SOCKET" ] \
        || die "no guest agent socket at DSTACK_SOCKET=\"$DSTACK_SOCKET\"" \
               "(mount /var/run/dstack.sock into the container)"

    curl -sS --fail-with-body --max-time 30 --unix-socket "$DSTACK_SOCKET" \
        -X POST -H 'Content-Type: application/json' -d "$body" \
        "http://localhost$path" \
        || die "guest agent $path failed"
}

fetch_info() {
    local info

    info=$(agent /Info)
    APP_ID=$(jq -r '.app_id // empty' <<<"$info" | tr 'A-F' 'a-f')
    INSTANCE_ID=$(jq -r '.instance_id // empty' <<<"$info" | tr 'A-F' 'a-f')
    APP_ID=${APP_ID#0x}
    INSTANCE_ID=${INSTANCE_ID#0x}

    is_hex40 "$APP_ID" || die "guest agent /Info: no valid app_id"
    [ -n "$INSTANCE_ID" ] || die "guest agent /Info: no instance_id"
}

# GetTlsKey with server and client usage: the key (0600), the chain, and
# the KMS root (the chain's last certificate) as the CA every peer is
# verified against.  The seed left the key world-readable.
fetch_tls() {
    local tls=$DSTACK_VPC_TLS_DIR resp n

    mkdir -p "$tls"
    chmod 0755 "$tls"

    resp=$(agent /GetTlsKey "$(jq -cn --arg s "$APP_ID" \
        '{subject: $s, alt_names: [], usage_ra_tls: true,
          usage_server_auth: true, usage_client_auth: true}')")

    n=$(jq -r '.certificate_chain | length' <<<"$resp" 2>/dev/null || echo 0)
    [ "$n" -ge 2 ] \
        || die "guest agent /GetTlsKey: expected a chain of 2 or more" \
               "certificates, got $n (is a KMS configured?)"

    (
        umask 077
        jq -r '.key' <<<"$resp" >"$tls/key.pem.tmp"
    )
    jq -r '.certificate_chain[]' <<<"$resp" >"$tls/cert.pem.tmp"
    jq -r '.certificate_chain[-1]' <<<"$resp" >"$tls/ca.pem.tmp"
    chmod 0600 "$tls/key.pem.tmp"
    chmod 0644 "$tls/cert.pem.tmp" "$tls/ca.pem.tmp"
    mv -f "$tls/key.pem.tmp" "$tls/key.pem"
    mv -f "$tls/cert.pem.tmp" "$tls/cert.pem"
    mv -f "$tls/ca.pem.tmp" "$tls/ca.pem"

    log "certificate chain of $n from the guest agent in $tls" \
        "(key 0600, CA = the KMS root)"
}

# --- the gateway -------------------------------------------------------------

# DSTACK_GATEWAY_DOMAIN, else the gateway's Info at the URLs the host shared
# (as the seed did), else a clear error.
detect_gateway() {
    local urls url info domain

    if [ -n "$DSTACK_GATEWAY_DOMAIN" ]; then
        log "gateway domain $DSTACK_GATEWAY_DOMAIN (DSTACK_GATEWAY_DOMAIN)"
        return 0
    fi

    [ -r "$DSTACK_SYS_CONFIG" ] \
        || die "cannot find the gateway domain: DSTACK_GATEWAY_DOMAIN is" \
               "not set and DSTACK_SYS_CONFIG=\"$DSTACK_SYS_CONFIG\" is not" \
               "readable; set DSTACK_GATEWAY_DOMAIN=<base_domain>:<port>"

    urls=$(jq -r '.gateway_urls[]? // empty' "$DSTACK_SYS_CONFIG" 2>/dev/null) \
        || die "DSTACK_SYS_CONFIG=\"$DSTACK_SYS_CONFIG\" is not JSON"
    [ -n "$urls" ] \
        || die "cannot find the gateway domain: no gateway_urls in" \
               "$DSTACK_SYS_CONFIG; set DSTACK_GATEWAY_DOMAIN"

    for url in $urls; do
        # The gateway's RPC certificate is not checked (the seed used -k):
        # a wrong domain can only make peers unreachable, since every peer
        # is verified against the KMS root in the TLS handshake.
        info=$(curl -ksS --max-time 10 --retry 2 --retry-delay 1 \
                   "${url%/}/prpc/Info" 2>/dev/null) || info=
        domain=$(jq -r 'select(.base_domain != null)
                        | "\(.base_domain):\(.external_port // 443)"' \
                     <<<"$info" 2>/dev/null) || domain=
        if [ -n "$domain" ]; then
            DSTACK_GATEWAY_DOMAIN=$domain
            log "gateway domain $domain (from $url)"
            return 0
        fi
        log "gateway $url: no answer"
    done

    die "cannot find the gateway domain: none of the gateway_urls in" \
        "$DSTACK_SYS_CONFIG answered; set DSTACK_GATEWAY_DOMAIN"
}

detect_resolver() {
    [ -n "$DSTACK_RESOLVER" ] && return 0

    DSTACK_RESOLVER=$(awk '$1 == "nameserver" { print $2; exit }' \
                          /etc/resolv.conf 2>/dev/null || true)

    case "$DSTACK_RESOLVER" in
        *:*) DSTACK_RESOLVER="[$DSTACK_RESOLVER]" ;;
        '')
            [ -n "$DSTACK_GATEWAY_ADDRESS" ] \
                || die "no DNS resolver in /etc/resolv.conf to find the" \
                       "gateway: set DSTACK_RESOLVER or DSTACK_GATEWAY_ADDRESS"
            # not used with a fixed gateway address, but must parse
            DSTACK_RESOLVER=127.0.0.1
            ;;
    esac
}

# --- rendering ---------------------------------------------------------------

# envsubst for the ${PLACEHOLDERS}, then the snippets' fixed paths moved to
# this instance's directories (the defaults leave them as they are).
#     render <template> <output> [NAME=value ...]
render() {
    local src=$1 dst=$2

    shift 2
    [ -f "$src" ] || die "template $src not found"

    env "$@" envsubst "$RENDER_VARS" <"$src" | sed \
        -e "s|/etc/dstack/mesh/|$DSTACK_VPC_TLS_DIR/|g" \
        -e "s|/var/run/dstack\.sock|$DSTACK_SOCKET|g" \
        -e "s|/run/dstack-vpc/|$DSTACK_VPC_RUN_DIR/|g" \
        -e "s|/var/lib/dstack-vpc/|$DSTACK_VPC_DATA_DIR/|g" \
        -e "s|/etc/dstack-vpc/|$DSTACK_VPC_CONF_DIR/|g" \
        >"$dst.tmp"
    mv -f "$dst.tmp" "$dst"
}

render_all() {
    local conf=$DSTACK_VPC_CONF_DIR m

    mkdir -p "$conf" "$conf/supervisord.d" "$DSTACK_VPC_RUN_DIR/nginx" \
        "$DSTACK_VPC_DATA_DIR"
    rm -f "$conf"/supervisord.d/*.conf "$conf"/nginx.d/*.conf

    NGINX_LOAD_MODULES=
    for m in auth mesh metrics; do
        NGINX_LOAD_MODULES="${NGINX_LOAD_MODULES}load_module $DSTACK_VPC_MODULES/ngx_http_dstack_${m}_module.so;
"
    done

    DSTACK_GATEWAY=$DSTACK_GATEWAY_DOMAIN
    if [ -n "$DSTACK_GATEWAY_ADDRESS" ]; then
        DSTACK_GATEWAY="$DSTACK_GATEWAY address=$DSTACK_GATEWAY_ADDRESS"
    fi

    MESH_ALLOW=$(tr ',' ' ' <<<"$MESH_ALLOWED_APPS")
    NGINX_SERVER_INCLUDES=
    BACKEND_INCLUDES=
    # the VPC-wide default; a node's own VPC_WG_PATH overrides it there
    VPC_WG_PATH_CONTROL=${VPC_WG_PATH:-auto}

    if is_server; then
        NGINX_LOAD_MODULES="${NGINX_LOAD_MODULES}load_module $DSTACK_VPC_MODULES/ngx_http_dstack_vpc_api_module.so;
"
        NGINX_SERVER_INCLUDES="include $conf/vpc-api.conf;"
        BACKEND_INCLUDES="include $conf/control-plane.conf;"
        mkdir -p "$conf/vpc-api.d"
        rm -f "$conf/vpc-api.d/server-url.conf"
        if [ -n "$VPC_SERVER_URL" ]; then
            printf 'dstack_vpc_api_server_url "%s";\n' "$VPC_SERVER_URL" \
                >"$conf/vpc-api.d/server-url.conf"
        fi
    fi

    # a node's relay end: peers' tunnels arrive at :443 (docs/wg-relay.md);
    # elsewhere the path answers 404
    BACKEND_INCLUDES="$BACKEND_INCLUDES include $conf/wg-relay.conf;"

    NGINX_AGENT_GROUP=$(id -gn "$DSTACK_VPC_USER")

    export DSTACK_GATEWAY DSTACK_GATEWAY_DOMAIN DSTACK_RESOLVER MESH_BACKEND \
        MESH_ALLOW NGINX_LOAD_MODULES NGINX_SERVER_INCLUDES BACKEND_INCLUDES \
        VPC_ALLOWED_APPS DSTACK_VPC_USER APP_ID \
        DSTACK_VPC_ROLE VPC_WG_PATH_CONTROL WG_RELAY_TUNNELS NGINX_AGENT_GROUP
    DSTACK_VPC_ROLE=$(role)

    # shellcheck disable=SC2016 # the names envsubst replaces, not expansions
    RENDER_VARS='${DSTACK_GATEWAY} ${DSTACK_GATEWAY_DOMAIN} ${DSTACK_RESOLVER}
        ${MESH_BACKEND} ${MESH_ALLOW} ${NGINX_LOAD_MODULES}
        ${NGINX_SERVER_INCLUDES} ${BACKEND_INCLUDES} ${VPC_ALLOWED_APPS}
        ${DSTACK_VPC_USER} ${DSTACK_VPC_ROLE}
        ${APP_ID} ${VPC_SERVER_APP_ID}
        ${VPC_WG_PATH_CONTROL} ${WG_RELAY_TUNNELS} ${NGINX_AGENT_GROUP}'

    render "$templates/nginx.conf.template" "$conf/nginx.conf"
    if workers_reach_agent; then
        render "$templates/node-mesh.conf" "$conf/node-mesh.conf"
    else
        # the workers reach the guest agent through a root-side forwarder
        render "$templates/node-mesh.conf" "$conf/node-mesh.conf.tmp"
        sed "s|http://unix:$DSTACK_SOCKET;|http://unix:$DSTACK_VPC_RUN_DIR/agent.sock;|" \
            "$conf/node-mesh.conf.tmp" >"$conf/node-mesh.conf"
        rm -f "$conf/node-mesh.conf.tmp"
        render "$templates/supervisord-agent.conf.template" \
            "$conf/supervisord.d/agent-socket.conf"
    fi
    render "$templates/metrics.conf" "$conf/metrics.conf"
    render "$templates/backend.conf.template" "$conf/backend.conf"
    render "$templates/supervisord.conf.template" "$conf/supervisord.conf"

    if is_server; then
        # in vpc-api.conf, ${VPC_SERVER_APP_ID} is this server's own app id
        render "$templates/vpc-api.conf" "$conf/vpc-api.conf" \
            VPC_SERVER_APP_ID="$APP_ID"
        render "$templates/control-plane.conf.template" \
            "$conf/control-plane.conf" VPC_SERVER_APP_ID="$APP_ID"
        render "$templates/redis.conf" "$conf/redis.conf"
        render "$templates/supervisord-server.conf.template" \
            "$conf/supervisord.d/server.conf"
        mkdir -p "$DSTACK_VPC_RUN_DIR" "$DSTACK_VPC_DATA_DIR/redis"
        as_root chown "$DSTACK_VPC_USER" "$DSTACK_VPC_DATA_DIR/redis"
        chmod 0700 "$DSTACK_VPC_DATA_DIR/redis"
    fi

    if is_node; then
        render "$templates/supervisord-node.conf.template" \
            "$conf/supervisord.d/node.conf"
        render "$templates/wg-relay.conf.template" "$conf/wg-relay.conf"
    else
        render "$templates/wg-relay-off.conf" "$conf/wg-relay.conf"
    fi

    as_root chown "$DSTACK_VPC_USER" "$DSTACK_VPC_RUN_DIR"
}

nginx_test() {
    local out

    if out=$(LD_PRELOAD=$DSTACK_NGINX_PRELOAD \
             "$DSTACK_VPC_NGINX" -t -q -p "$DSTACK_VPC_RUN_DIR/nginx/" \
                 -c "$DSTACK_VPC_CONF_DIR/nginx.conf" -e stderr 2>&1)
    then
        log "nginx -t: $DSTACK_VPC_CONF_DIR/nginx.conf is valid"
        return 0
    fi

    printf '%s\n' "$out" >&2
    die "nginx -t failed for $DSTACK_VPC_CONF_DIR/nginx.conf"
}

prepare() {
    check_env
    log "role: $(role)"
    fetch_info
    log "app_id $APP_ID, instance_id $INSTANCE_ID"
    detect_gateway
    detect_resolver
    fetch_tls
    mkdir -p "$app_dir"
    render_all
    nginx_test
}

# --- the node agent ----------------------------------------------------------

# A request through the local mesh to the VPC server's API ("Host:
# vpc-server", as the seed's setup sent it).
api() {
    local method=$1 path=$2

    curl -sS --max-time 30 --connect-timeout 10 -X "$method" \
        -H "x-dstack-target-app: $SERVER_APP_ID" -H 'Host: vpc-server' \
        -w '\n%{http_code}' "$mesh_url$path"
}

urlencode() {
    jq -rn --arg v "$1" '$v | @uri'
}

write_app_file() {
    printf '%s\n' "$2" >"$app_dir/$1.tmp"
    chmod 0644 "$app_dir/$1.tmp"
    mv -f "$app_dir/$1.tmp" "$app_dir/$1"
}

# register with backoff, as the seed's 12 x 10 s loop (1, 2, 4, 8, 10 ... s)
register() {
    local attempt=0 delay=1 out status body key error

    while :; do
        attempt=$((attempt + 1))
        out=$(api GET "/api/register?instance_id=$(urlencode "$INSTANCE_ID")&node_name=$(urlencode "$VPC_NODE_NAME")" 2>&1) || true
        status=${out##*$'\n'}
        body=${out%$'\n'*}

        key=$(jq -r '.pre_auth_key // empty' <<<"$body" 2>/dev/null || true)
        if [ "$status" = 200 ] && [ "${#key}" -gt 10 ]; then
            break
        fi

        error=$(jq -r '.error // empty' <<<"$body" 2>/dev/null || true)
        log "register attempt $attempt/$VPC_REGISTER_ATTEMPTS failed:" \
            "${status:-no answer} ${error:-$(head -c 200 <<<"$body")}"

        if [ "$attempt" -ge "$VPC_REGISTER_ATTEMPTS" ]; then
            log "could not register with the VPC server $SERVER_APP_ID."
            log "possible causes: the server CVM is down or restarting; the" \
                "gateway is unreachable (curl $mesh_url/gateway); this app" \
                "is not in the server's VPC_ALLOWED_APPS; VPC_SERVER_APP_ID" \
                "is wrong"
            exit 1
        fi
        sleep "$delay"
        delay=$((delay * 2))
        [ "$delay" -le "$VPC_REGISTER_MAX_DELAY" ] || delay=$VPC_REGISTER_MAX_DELAY
    done

    # the pre-auth key stays private to the agent: 0600, outside what nginx
    # serves; apps get the shared key, server URL, VPN address and name
    mkdir -p "$node_dir"
    chmod 0700 "$node_dir"
    (
        umask 077
        printf '%s\n' "$key" >"$node_dir/pre_auth_key"
    )

    SERVER_URL=$(jq -r '.server_url // empty' <<<"$body")
    write_app_file shared_key "$(jq -r '.shared_key // empty' <<<"$body")"
    write_app_file server_url "$SERVER_URL"
    log "registered as $VPC_NODE_NAME with $SERVER_APP_ID" \
        "(control plane $SERVER_URL, reached through the mesh)"
}

node_agent() {
    local wg_state=$DSTACK_VPC_DATA_DIR/wgctl status address name out
    local code body

    fetch_info
    SERVER_APP_ID=$VPC_SERVER_APP_ID
    [ "$SERVER_APP_ID" = self ] && SERVER_APP_ID=$APP_ID
    SERVER_APP_ID=$(tr 'A-F' 'a-f' <<<"$SERVER_APP_ID")

    mkdir -p "$app_dir"
    register

    set -- up --server "$mesh_url" --target-app "$SERVER_APP_ID" \
        --auth-key-file "$node_dir/pre_auth_key" \
        --hostname "$VPC_NODE_NAME" --interface "$WG_INTERFACE" \
        --listen-port "$WG_LISTEN_PORT" --state-dir "$wg_state" \
        --hosts-file "$WG_HOSTS_FILE" --instance-id "$INSTANCE_ID" \
        --relay-socket "$DSTACK_VPC_RUN_DIR/wg-relay.sock" \
        --relay-group "$(id -gn "$DSTACK_VPC_USER")"
    [ -n "$VPC_NODE_TYPE" ] && set -- "$@" --node-type "$VPC_NODE_TYPE"
    [ -n "$WG_ENDPOINT" ] && set -- "$@" --endpoint "$WG_ENDPOINT"
    [ -n "$VPC_WG_PATH" ] && set -- "$@" --path "$VPC_WG_PATH"

    "$WGCTL" "$@" &
    WGCTL_PID=$!
    trap 'kill -TERM "$WGCTL_PID" 2>/dev/null; wait "$WGCTL_PID"; exit 0' \
        TERM INT

    # the address and name the control plane gave us
    address=
    for _ in $(seq 1 600); do
        kill -0 "$WGCTL_PID" 2>/dev/null || break
        status=$("$WGCTL" status --state-dir "$wg_state" --json 2>/dev/null) \
            || status=
        address=$(jq -r '.address // empty' <<<"$status" 2>/dev/null || true)
        [ -n "$address" ] && break
        sleep 0.5
    done

    if [ -n "$address" ]; then
        address=${address%/*}
        name=$(jq -r '.name // empty' <<<"$status")
        name=${name%.}
        write_app_file vpn_ip "$address"
        write_app_file name "$name"
        write_app_file node_type "$VPC_NODE_TYPE"
        jq -n --arg ip "$address" --arg name "$name" \
            --arg type "$VPC_NODE_TYPE" --arg url "$SERVER_URL" \
            --arg app "$APP_ID" --arg inst "$INSTANCE_ID" \
            '{vpn_ip: $ip, name: $name, node_type: $type, server_url: $url,
              app_id: $app, instance_id: $inst}' >"$app_dir/vpc.json.tmp"
        chmod 0644 "$app_dir/vpc.json.tmp"
        mv -f "$app_dir/vpc.json.tmp" "$app_dir/vpc.json"
        log "VPN address $address, name $name"

        # the seed documented node_type but never sent it
        out=$(api POST "/api/nodes/update?uuid=$(urlencode "$INSTANCE_ID")&node_type=$(urlencode "$VPC_NODE_TYPE")&tailscale_ip=$(urlencode "$address")&hostname=$(urlencode "$name")" 2>&1) || true
        code=${out##*$'\n'}
        body=${out%$'\n'*}
        if [ "$code" = 200 ]; then
            log "nodes/update: $(jq -c '{status, node}' <<<"$body" 2>/dev/null || echo "$body")"
        else
            log "nodes/update failed: $code $body"
        fi
    elif kill -0 "$WGCTL_PID" 2>/dev/null; then
        log "wgctl up has no VPN address yet; nodes/update skipped"
    fi

    set +e
    wait "$WGCTL_PID"
    status=$?
    log "wgctl up exited with status $status"
    exit "$status"
}

# --- health ------------------------------------------------------------------

health() {
    curl -fsS --max-time 5 -o /dev/null "$mesh_url/gateway" \
        || { echo "mesh :80 does not answer" >&2; exit 1; }

    if is_server; then
        curl -ksS --max-time 5 -o /dev/null -H 'Host: vpc-server' \
            -w '%{http_code}' https://127.0.0.1:443/health | grep -q 200 \
            || { echo "VPC API /health failed" >&2; exit 1; }
    fi

    if is_node; then
        "$WGCTL" status --state-dir "$DSTACK_VPC_DATA_DIR/wgctl" --json \
            2>/dev/null | jq -e '.address != null' >/dev/null \
            || { echo "wgctl has no VPN address" >&2; exit 1; }
    fi
}

print_env() {
    local v

    echo "role=$(role)"
    for v in VPC_SERVER_ENABLED VPC_NODE_NAME VPC_NODE_TYPE VPC_ALLOWED_APPS \
             VPC_SERVER_URL VPC_SERVER_APP_ID MESH_BACKEND MESH_ALLOWED_APPS \
             DSTACK_GATEWAY_DOMAIN DSTACK_GATEWAY_ADDRESS DSTACK_RESOLVER \
             DSTACK_SOCKET DSTACK_SYS_CONFIG DSTACK_VPC_CONF_DIR \
             DSTACK_VPC_TLS_DIR DSTACK_VPC_RUN_DIR DSTACK_VPC_DATA_DIR \
             DSTACK_VPC_USER DSTACK_VPC_MODULES WGCTL WG_INTERFACE \
             WG_LISTEN_PORT WG_ENDPOINT WG_HOSTS_FILE VPC_WG_PATH \
             WG_RELAY_TUNNELS
    do
        eval "printf '%s=%s\n' \"\$v\" \"\${$v}\""
    done
}

# --- main --------------------------------------------------------------------

export DSTACK_SOCKET DSTACK_SYS_CONFIG DSTACK_VPC_CONF_DIR DSTACK_VPC_TLS_DIR \
    DSTACK_VPC_RUN_DIR DSTACK_VPC_DATA_DIR DSTACK_VPC_USER DSTACK_VPC_SHARE \
    DSTACK_VPC_MODULES WGCTL DSTACK_VPC_NGINX DSTACK_NGINX_PRELOAD

case "${1:-run}" in
    run)
        prepare
        log "starting supervisord ($DSTACK_VPC_CONF_DIR/supervisord.conf)"
        exec supervisord -n -c "$DSTACK_VPC_CONF_DIR/supervisord.conf"
        ;;
    render)
        prepare
        ;;
    node-agent)
        node_agent
        ;;
    health)
        health
        ;;
    env)
        print_env
        ;;
    -h|--help|help)
        sed -n '2,20p' "$self" | sed 's/^# \{0,1\}//'
        ;;
    *)
        die "unknown command \"$1\" (run, render, health, node-agent, env)"
        ;;
esac
