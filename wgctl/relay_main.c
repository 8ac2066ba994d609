/*
 * wgctl relay: the relay engine (relay.c) on its own, for tests and
 * benches; "wgctl up" runs the same engine inside the agent.
 */


#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <pthread.h>

#include <jansson.h>

#include "relay.h"
#include "wgctl.h"


#define WG_RELAY_MAIN_PEERS  256


static void relay_usage(FILE *out);
static void relay_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int relay_parse_key(uint8_t *key, const char *text);
static int relay_parse_self(uint8_t *key, const char *arg);
static int relay_parse_peer(wg_relay_peer_t *p, const char *arg);
static int relay_parse_port(const char *text, uint16_t *port);
static int relay_write_status(wg_relay_t *relay, const wg_relay_peer_t *peers,
    size_t n, const char *path);
static long relay_rss_kb(void);


static void
relay_usage(FILE *out)
{
    fprintf(out,
        "Usage: %s relay --listen <unix path> --mesh <host:port> "
        "--key <file|hex>\n"
        "           --device-port <port> --peer <key>,<app>[,<instance>] "
        "...\n"
        "           [--target-port <port>] [--keepalive <seconds>] "
        "[--buffer <bytes>]\n"
        "           [--gid <gid>] [--status <file>]\n\n"
        "Runs the WireGuard relay engine alone: one relay endpoint "
        "(127.0.0.1:<port>)\n"
        "per peer, printed at start; tunnels through the mesh at --mesh, "
        "and accepted\n"
        "on the Unix socket --listen.  --key is this node's private key "
        "file or its\n"
        "public key in hex; a peer's key is base64 or hex.  --status "
        "gets JSON stats\n"
        "every second and on SIGUSR1.  SIGTERM or SIGINT stops.\n",
        wgctl_prog);
}


static void
relay_log(const char *fmt, ...)
{
    char             buf[600];
    va_list          args;
    struct timespec  ts;

    va_start(args, fmt);
    vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);

    clock_gettime(CLOCK_REALTIME, &ts);

    fprintf(stderr, "%lld.%03ld %s\n", (long long) ts.tv_sec,
            ts.tv_nsec / 1000000, buf);
}


static int
relay_parse_key(uint8_t *key, const char *text)
{
    if (strlen(text) == 64) {
        return wg_key_from_hex(key, text);
    }

    return wg_key_from_base64(key, text);
}


/* a public key in hex, else a file with the private key in base64 */

static int
relay_parse_self(uint8_t *key, const char *arg)
{
    int      rc;
    char     buf[128];
    size_t   len;
    FILE    *f;
    uint8_t  priv[WG_KEY_SIZE];

    if (strlen(arg) == 64 && wg_key_from_hex(key, arg) == 0) {
        return 0;
    }

    f = fopen(arg, "r");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open \"%s\": %s\n", wgctl_prog, arg,
                strerror(errno));
        return -1;
    }

    len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);

    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'
                       || buf[len - 1] == ' '))
    {
        len--;
    }

    buf[len] = '\0';

    rc = -1;

    if (wg_key_from_base64(priv, buf) == 0 && wg_key_public(key, priv) == 0)
    {
        rc = 0;

    } else {
        fprintf(stderr, "%s: \"%s\" holds no private key\n", wgctl_prog,
                arg);
    }

    wg_memzero(priv, sizeof(priv));
    wg_memzero(buf, sizeof(buf));

    return rc;
}


static int
relay_parse_peer(wg_relay_peer_t *p, const char *arg)
{
    char        key[128];
    size_t      len;
    const char  *c1, *c2;

    memset(p, 0, sizeof(*p));

    c1 = strchr(arg, ',');
    if (c1 == NULL || (size_t) (c1 - arg) >= sizeof(key)) {
        goto invalid;
    }

    memcpy(key, arg, c1 - arg);
    key[c1 - arg] = '\0';

    if (relay_parse_key(p->key, key) != 0) {
        goto invalid;
    }

    c1++;
    c2 = strchr(c1, ',');
    len = (c2 != NULL) ? (size_t) (c2 - c1) : strlen(c1);

    if (len == 0 || len > WG_RELAY_APP_MAX) {
        goto invalid;
    }

    memcpy(p->app, c1, len);

    if (c2 != NULL) {
        if (strlen(c2 + 1) > WG_RELAY_INSTANCE_MAX) {
            goto invalid;
        }

        strcpy(p->instance, c2 + 1);
    }

    return 0;

invalid:

    fprintf(stderr, "%s: invalid peer \"%s\" (expected "
            "<key>,<app>[,<instance>])\n", wgctl_prog, arg);

    return -1;
}


static int
relay_parse_port(const char *text, uint16_t *port)
{
    char  *end;
    long   n;

    errno = 0;
    n = strtol(text, &end, 10);

    if (errno != 0 || *end != '\0' || end == text || n < 1 || n > 65535) {
        fprintf(stderr, "%s: invalid port \"%s\"\n", wgctl_prog, text);
        return -1;
    }

    *port = (uint16_t) n;

    return 0;
}


static long
relay_rss_kb(void)
{
    char   line[256];
    long   kb;
    FILE  *f;

    kb = -1;

    f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }

    fclose(f);

    return kb;
}


static int
relay_write_status(wg_relay_t *relay, const wg_relay_peer_t *peers,
    size_t n, const char *path)
{
    int                 rc;
    char                b64[WG_KEY_B64_LEN + 1], tmp[4096], ep[32];
    size_t              i;
    json_t             *root, *list, *o;
    long long           now;
    struct timespec     ts;
    wg_relay_stats_t    st;
    struct sockaddr_in  sin;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;

    root = json_object();
    list = json_array();

    if (root == NULL || list == NULL) {
        json_decref(root);
        json_decref(list);
        return -1;
    }

    json_object_set_new(root, "peers", list);
    json_object_set_new(root, "rss_kb", json_integer(relay_rss_kb()));

    for (i = 0; i < n; i++) {
        if (wg_relay_stats(relay, peers[i].key, &st) != 0
            || wg_relay_endpoint(relay, peers[i].key, &sin) != 0)
        {
            continue;
        }

        wg_key_to_base64(b64, peers[i].key);
        snprintf(ep, sizeof(ep), "127.0.0.1:%u",
                 (unsigned) ntohs(sin.sin_port));

        o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:i, s:b, "
                      "s:I, s:s}",
                      "key", b64, "app", peers[i].app, "endpoint", ep,
                      "rx_bytes", (json_int_t) st.rx_bytes,
                      "tx_bytes", (json_int_t) st.tx_bytes,
                      "rx_packets", (json_int_t) st.rx_packets,
                      "tx_packets", (json_int_t) st.tx_packets,
                      "drops", (json_int_t) st.drops,
                      "tunnels", (int) st.tunnels,
                      "dialing", st.dialing,
                      "last_rx_ms_ago",
                      (json_int_t) (st.last_rx ? now - st.last_rx : -1),
                      "last_error", st.last_error);
        if (o != NULL) {
            json_array_append_new(list, o);
        }
    }

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    rc = json_dump_file(root, tmp, JSON_COMPACT);
    json_decref(root);

    if (rc != 0 || rename(tmp, path) != 0) {
        return -1;
    }

    return 0;
}


int
relay_main(int argc, char **argv)
{
    int                  i, rc, sig, ret;
    char                *colon, *end, b64[WG_KEY_B64_LEN + 1];
    double               ka;
    size_t               n;
    sigset_t             set;
    wg_relay_t          *relay;
    const char          *status;
    wg_relay_conf_t      conf;
    wg_relay_peer_t     *peers;
    struct timespec      tick;
    struct sockaddr_in   sin;
    static char          mesh[256];

    if (wgctl_is_help(argc, argv)) {
        relay_usage(stdout);
        return 0;
    }

    memset(&conf, 0, sizeof(conf));
    conf.listen_gid = -1;
    conf.keepalive = WG_RELAY_KEEPALIVE;
    conf.buffer_max = WG_RELAY_BUFFER;
    conf.target_port = 443;
    conf.log = relay_log;

    ret = 1;
    relay = NULL;
    status = NULL;
    n = 0;

    peers = calloc(WG_RELAY_MAIN_PEERS, sizeof(wg_relay_peer_t));
    if (peers == NULL) {
        return 1;
    }

    for (i = 1; i < argc; i++) {
        if (i + 1 == argc) {
            fprintf(stderr, "%s: option \"%s\" needs a value\n",
                    wgctl_prog, argv[i]);
            goto usage;
        }

        if (strcmp(argv[i], "--listen") == 0) {
            conf.listen_path = argv[++i];

        } else if (strcmp(argv[i], "--mesh") == 0) {
            i++;
            colon = strrchr(argv[i], ':');

            if (colon == NULL || (size_t) (colon - argv[i]) >= sizeof(mesh)
                || relay_parse_port(colon + 1, &conf.mesh_port) != 0)
            {
                fprintf(stderr, "%s: invalid mesh \"%s\" (expected "
                        "host:port)\n", wgctl_prog, argv[i]);
                goto done;
            }

            memcpy(mesh, argv[i], colon - argv[i]);
            mesh[colon - argv[i]] = '\0';
            conf.mesh_host = mesh;

        } else if (strcmp(argv[i], "--target-port") == 0) {
            if (relay_parse_port(argv[++i], &conf.target_port) != 0) {
                goto done;
            }

        } else if (strcmp(argv[i], "--device-port") == 0) {
            if (relay_parse_port(argv[++i], &conf.device_port) != 0) {
                goto done;
            }

        } else if (strcmp(argv[i], "--key") == 0) {
            if (relay_parse_self(conf.self_key, argv[++i]) != 0) {
                goto done;
            }

        } else if (strcmp(argv[i], "--peer") == 0) {
            if (n == WG_RELAY_MAIN_PEERS) {
                fprintf(stderr, "%s: more than %d peers\n", wgctl_prog,
                        WG_RELAY_MAIN_PEERS);
                goto done;
            }

            if (relay_parse_peer(&peers[n], argv[++i]) != 0) {
                goto done;
            }

            n++;

        } else if (strcmp(argv[i], "--keepalive") == 0) {
            ka = strtod(argv[++i], &end);

            if (*end != '\0' || end == argv[i] || !(ka >= 0.05)
                || ka > 3600)
            {
                fprintf(stderr, "%s: invalid keepalive \"%s\"\n",
                        wgctl_prog, argv[i]);
                goto done;
            }

            conf.keepalive = (long) (ka * 1000);

        } else if (strcmp(argv[i], "--buffer") == 0) {
            conf.buffer_max = strtoul(argv[++i], &end, 10);

            if (*end != '\0' || conf.buffer_max < 64
                || conf.buffer_max > 64 * 1024 * 1024)
            {
                fprintf(stderr, "%s: invalid buffer \"%s\"\n", wgctl_prog,
                        argv[i]);
                goto done;
            }

        } else if (strcmp(argv[i], "--gid") == 0) {
            conf.listen_gid = (int) strtol(argv[++i], &end, 10);

            if (*end != '\0' || end == argv[i] || conf.listen_gid < 0) {
                fprintf(stderr, "%s: invalid gid \"%s\"\n", wgctl_prog,
                        argv[i]);
                goto done;
            }

        } else if (strcmp(argv[i], "--status") == 0) {
            status = argv[++i];

        } else {
            fprintf(stderr, "%s: invalid option \"%s\"\n", wgctl_prog,
                    argv[i]);
            goto usage;
        }
    }

    if (conf.listen_path == NULL || conf.mesh_host == NULL
        || conf.device_port == 0 || wg_key_is_zero(conf.self_key))
    {
        fprintf(stderr, "%s: --listen, --mesh, --key and --device-port are "
                "required\n", wgctl_prog);
        goto usage;
    }

    /* the engine's thread inherits the mask: signals come to sigwait */

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = wg_relay_start(&relay, &conf);
    if (rc != 0) {
        fprintf(stderr, "%s: relay: %s\n", wgctl_prog, strerror(-rc));
        goto done;
    }

    rc = wg_relay_set_peers(relay, peers, n);
    if (rc != 0) {
        fprintf(stderr, "%s: relay peers: %s\n", wgctl_prog, strerror(-rc));
        goto done;
    }

    for (i = 0; i < (int) n; i++) {
        if (wg_relay_endpoint(relay, peers[i].key, &sin) == 0) {
            wg_key_to_base64(b64, peers[i].key);
            printf("relay endpoint 127.0.0.1:%u peer %s\n",
                   (unsigned) ntohs(sin.sin_port), b64);
        }
    }

    fflush(stdout);

    tick.tv_sec = 1;
    tick.tv_nsec = 0;

    for ( ;; ) {
        if (status != NULL) {
            (void) relay_write_status(relay, peers, n, status);
        }

        sig = sigtimedwait(&set, NULL, &tick);

        if (sig == SIGTERM || sig == SIGINT) {
            break;
        }
    }

    ret = 0;
    goto done;

usage:

    relay_usage(stderr);

done:

    wg_relay_stop(relay);
    wg_memzero(conf.self_key, sizeof(conf.self_key));
    free(peers);

    return ret;
}
