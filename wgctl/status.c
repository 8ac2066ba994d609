/*
 * wgctl status [--state-dir <dir>] [--json]: the agent's view (this node,
 * its server and connection, the peers it was told of) joined with the
 * device's own numbers (endpoint, latest handshake, bytes) per peer.
 */


#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "wgctl.h"
#include "peermap.h"
#include "state.h"


static void status_usage(FILE *out);
static const char *status_str(json_t *obj, const char *key, const char *def);
static void status_ago(char *buf, size_t size, time_t seconds);
static void status_bytes(char *buf, size_t size, uint64_t bytes);
static void status_path(json_t *o, json_t *p, const wg_peer_t *wp);
static json_t *status_peers(json_t *st, const wg_device_t *dev);
static void status_text(json_t *st, json_t *peers, int running, long pid,
    const wg_device_t *dev);


static void
status_usage(FILE *out)
{
    fprintf(out, "Usage: %s status [--state-dir <dir>] [--json]\n",
            wgctl_prog);
}


static const char *
status_str(json_t *obj, const char *key, const char *def)
{
    const char  *s;

    s = json_string_value(json_object_get(obj, key));

    return s ? s : def;
}


static void
status_ago(char *buf, size_t size, time_t seconds)
{
    if (seconds < 60) {
        snprintf(buf, size, "%lld s ago", (long long) seconds);

    } else if (seconds < 3600) {
        snprintf(buf, size, "%lld min ago", (long long) seconds / 60);

    } else if (seconds < 86400) {
        snprintf(buf, size, "%lld h ago", (long long) seconds / 3600);

    } else {
        snprintf(buf, size, "%lld days ago", (long long) seconds / 86400);
    }
}


static void
status_bytes(char *buf, size_t size, uint64_t bytes)
{
    if (bytes < 1024) {
        snprintf(buf, size, "%" PRIu64 " B", bytes);

    } else if (bytes < 1024 * 1024) {
        snprintf(buf, size, "%.1f KiB", (double) bytes / 1024);

    } else if (bytes < 1024ULL * 1024 * 1024) {
        snprintf(buf, size, "%.1f MiB", (double) bytes / (1024 * 1024));

    } else {
        snprintf(buf, size, "%.1f GiB",
                 (double) bytes / (1024.0 * 1024 * 1024));
    }
}


int
wg_state_status(const char *dir, json_t **out)
{
    int            rc;
    char          *text;
    size_t         len;
    json_t        *root;
    json_error_t   jerr;

    *out = NULL;

    rc = wg_state_read(dir, WG_STATE_STATUS, &text, &len);
    if (rc != 0) {
        return rc;
    }

    root = NULL;

    if (wg_json_depth_ok(text, len, WG_MAP_JSON_DEPTH)) {
        root = json_loadb(text, len, 0, &jerr);
    }

    free(text);

    if (!json_is_object(root)) {
        json_decref(root);
        return -EINVAL;
    }

    *out = root;

    return 0;
}


/* the agent's peers with the device's numbers for each, by public key */

/*
 * The path from the device's endpoint as it is now (the relay endpoint
 * the agent recorded, or another address: direct), and the bytes on each
 * path: the relay's from the agent (at most a few seconds old), direct
 * ones the device's totals less those
 */

static void
status_path(json_t *o, json_t *p, const wg_peer_t *wp)
{
    char         text[INET6_ADDRSTRLEN + 16];
    json_t      *relay;
    uint64_t     rrx, rtx, rx, tx;
    const char  *path, *rep;

    relay = json_object_get(p, "relay");
    rep = status_str(p, "relay_endpoint", NULL);

    if (wp == NULL) {
        path = status_str(p, "path", NULL);

    } else if (wp->endpoint.sa.sa_family == AF_UNSPEC
               || wg_endpoint_format(text, sizeof(text), &wp->endpoint) != 0)
    {
        path = NULL;

    } else {
        path = (rep != NULL && strcmp(rep, text) == 0) ? "relay" : "direct";
    }

    json_object_set_new(o, "path", path ? json_string(path) : json_null());

    rrx = (uint64_t) json_integer_value(json_object_get(relay, "rx_bytes"));
    rtx = (uint64_t) json_integer_value(json_object_get(relay, "tx_bytes"));
    rx = wp ? wp->rx_bytes : 0;
    tx = wp ? wp->tx_bytes : 0;

    json_object_set_new(o, "direct_rx_bytes",
                        json_integer((json_int_t) (rx > rrx ? rx - rrx : 0)));
    json_object_set_new(o, "direct_tx_bytes",
                        json_integer((json_int_t) (tx > rtx ? tx - rtx : 0)));
    json_object_set_new(o, "relay_rx_bytes", json_integer((json_int_t) rrx));
    json_object_set_new(o, "relay_tx_bytes", json_integer((json_int_t) rtx));

    json_object_set_new(o, "relay_endpoint",
                        rep ? json_string(rep) : json_null());
    json_object_set(o, "relay", relay ? relay : json_null());
    json_object_set(o, "path_since", json_object_get(p, "path_since")
                                     ? json_object_get(p, "path_since")
                                     : json_null());
    json_object_set_new(o, "path_switches",
                        json_integer(json_integer_value(
                            json_object_get(p, "path_switches"))));
    json_object_set(o, "app_id", json_object_get(p, "app_id")
                                 ? json_object_get(p, "app_id")
                                 : json_null());
    json_object_set(o, "instance_id", json_object_get(p, "instance_id")
                                      ? json_object_get(p, "instance_id")
                                      : json_null());
}


static json_t *
status_peers(json_t *st, const wg_device_t *dev)
{
    char              text[INET6_ADDRSTRLEN + 16];
    size_t            i;
    json_t           *peers, *p, *out;
    uint8_t           key[WG_KEY_SIZE];
    time_t            now;
    const char       *b64;
    const wg_peer_t  *wp;

    now = time(NULL);
    out = json_array();
    if (out == NULL) {
        return NULL;
    }

    peers = json_object_get(st, "peers");

    json_array_foreach(peers, i, p) {
        json_t  *o;

        o = json_object();
        if (o == NULL) {
            break;
        }

        b64 = status_str(p, "public_key", "");

        json_object_set(o, "id", json_object_get(p, "id"));
        json_object_set_new(o, "name", json_string(status_str(p, "name",
                                                               "")));
        json_object_set_new(o, "address",
                            json_string(status_str(p, "address", "")));
        json_object_set_new(o, "public_key", json_string(b64));
        json_object_set_new(o, "online",
                            json_boolean(json_is_true(
                                json_object_get(p, "online"))));

        wp = NULL;

        if (dev != NULL && wg_key_from_base64(key, b64) == 0) {
            wp = wg_device_find_peer(dev, key);
        }

        json_object_set_new(o, "on_device", json_boolean(wp != NULL));

        if (wp != NULL
            && wg_endpoint_format(text, sizeof(text), &wp->endpoint) == 0)
        {
            json_object_set_new(o, "endpoint", json_string(text));

        } else {
            json_object_set_new(o, "endpoint", json_null());
        }

        json_object_set_new(o, "latest_handshake",
                            json_integer(wp ? wp->last_handshake.tv_sec : 0));
        json_object_set_new(o, "handshake_age",
                            wp && wp->last_handshake.tv_sec > 0
                            ? json_integer(now > wp->last_handshake.tv_sec
                                           ? now - wp->last_handshake.tv_sec
                                           : 0)
                            : json_null());
        json_object_set_new(o, "rx_bytes",
                            json_integer(wp ? (json_int_t) wp->rx_bytes : 0));
        json_object_set_new(o, "tx_bytes",
                            json_integer(wp ? (json_int_t) wp->tx_bytes : 0));

        status_path(o, p, wp);

        json_array_append_new(out, o);
    }

    return out;
}


static void
status_text(json_t *st, json_t *peers, int running, long pid,
    const wg_device_t *dev)
{
    char         ago[64], rx[32], tx[32], rrx[32], rtx[32], path[80];
    json_t      *relay;
    size_t       i;
    json_t      *p;
    time_t       now, hs;
    const char  *state, *app;

    now = time(NULL);
    state = status_str(st, "state", "unknown");

    printf("%-15s %s (this node)\n", status_str(st, "address", "-"),
           status_str(st, "name", "-"));
    printf("  public key: %s\n", status_str(st, "public_key", "-"));
    printf("  interface: %s", status_str(st, "interface", "-"));

    if (dev != NULL && dev->listen_port) {
        printf(", listening port %u", dev->listen_port);
    }

    printf("\n");

    app = status_str(st, "target_app", NULL);
    printf("  server: %s%s%s%s\n", status_str(st, "server", "-"),
           app ? " (app " : "", app ? app : "", app ? ")" : "");

    if (!running) {
        printf("  agent: not running (last state: %s)\n", state);

    } else if (strcmp(state, "connected") == 0) {
        printf("  agent: pid %ld, connected since %s\n", pid,
               status_str(st, "connected_since", "?"));

    } else {
        printf("  agent: pid %ld, %s\n", pid, state);
    }

    if (json_is_string(json_object_get(st, "last_error"))) {
        printf("  last error: %s\n", status_str(st, "last_error", ""));
    }

    relay = json_object_get(st, "relay");

    if (json_is_object(relay)) {
        printf("  paths: %s; relay %s%s%s\n",
               status_str(st, "path_mode", "auto"),
               json_is_true(json_object_get(relay, "running"))
               ? "tunnels in on " : "off",
               json_is_true(json_object_get(relay, "running"))
               ? status_str(relay, "socket", "-")
               : json_is_string(json_object_get(relay, "error")) ? ": " : "",
               json_is_true(json_object_get(relay, "running"))
               ? "" : status_str(relay, "error", ""));
    }

    if (json_array_size(peers) == 0) {
        printf("\nno peers\n");
        return;
    }

    printf("\n");

    json_array_foreach(peers, i, p) {
        hs = (time_t) json_integer_value(json_object_get(p,
                                                         "latest_handshake"));

        if (hs > 0) {
            status_ago(ago, sizeof(ago), now > hs ? now - hs : 0);

        } else {
            snprintf(ago, sizeof(ago), "never");
        }

        status_bytes(rx, sizeof(rx), (uint64_t) json_integer_value(
                                 json_object_get(p, "direct_rx_bytes")));
        status_bytes(tx, sizeof(tx), (uint64_t) json_integer_value(
                                 json_object_get(p, "direct_tx_bytes")));
        status_bytes(rrx, sizeof(rrx), (uint64_t) json_integer_value(
                                   json_object_get(p, "relay_rx_bytes")));
        status_bytes(rtx, sizeof(rtx), (uint64_t) json_integer_value(
                                   json_object_get(p, "relay_tx_bytes")));

        if (strcmp(status_str(p, "path", ""), "relay") == 0) {
            snprintf(path, sizeof(path), "relay");

        } else if (strcmp(status_str(p, "path", ""), "direct") == 0) {
            snprintf(path, sizeof(path), "direct %s",
                     status_str(p, "endpoint", "-"));

        } else {
            snprintf(path, sizeof(path), "no endpoint");
        }

        printf("%-15s %s  %s%s  %s  handshake %s  direct rx %s tx %s",
               status_str(p, "address", "-"), status_str(p, "name", "-"),
               json_is_true(json_object_get(p, "online")) ? "online"
                                                          : "offline",
               json_is_true(json_object_get(p, "on_device"))
               ? "" : " (not on the device)",
               path, ago, rx, tx);

        relay = json_object_get(p, "relay");

        if (json_is_object(relay)) {
            printf("  relay rx %s tx %s (%s, %" JSON_INTEGER_FORMAT
                   " drops)", rrx, rtx, status_str(relay, "state", "?"),
                   json_integer_value(json_object_get(relay, "drops")));
        }

        printf("\n");
    }
}


int
status_main(int argc, char **argv)
{
    int            i, rc, json, running;
    char          *dump;
    pid_t          pid;
    json_t        *st, *peers, *out;
    wg_device_t   *dev;
    wg_backend_e   backend;
    const char    *dir, *ifname;

    if (wgctl_is_help(argc, argv)) {
        status_usage(stdout);
        return 0;
    }

    json = 0;
    dir = WG_STATE_DIR;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;

        } else if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];

        } else {
            fprintf(stderr, "%s: status: unexpected argument \"%s\"\n",
                    wgctl_prog, argv[i]);
            status_usage(stderr);
            return 1;
        }
    }

    rc = wg_state_status(dir, &st);
    if (rc != 0) {
        fprintf(stderr, "%s: no agent status in \"%s\": %s\n", wgctl_prog,
                dir, rc == -ENOENT ? "wgctl up has not run there"
                                   : wg_strerror(rc));
        return 1;
    }

    running = wg_state_agent(dir, &pid) == 1;

    dev = NULL;
    ifname = status_str(st, "interface", "");

    if (wg_ifname_valid(ifname)) {
        backend = wgctl_backend;
        if (backend == WG_BACKEND_AUTO) {
            backend = wg_backend_pick(ifname);
        }

        if (wg_device_get(ifname, backend, &dev) != 0) {
            dev = NULL;
        }
    }

    peers = status_peers(st, dev);
    rc = 1;

    if (peers == NULL) {
        goto done;
    }

    if (!json) {
        status_text(st, peers, running, (long) pid, dev);
        json_decref(peers);
        rc = 0;
        goto done;
    }

    /* this node's fields at the top, where scripts look for them */
    out = json_pack("{s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:b,s:o,s:s,"
                    "s:O?,s:O?,s:O?,s:O?}",
                    "name", json_object_get(st, "name"),
                    "address", json_object_get(st, "address"),
                    "public_key", json_object_get(st, "public_key"),
                    "interface", json_object_get(st, "interface"),
                    "prefix", json_object_get(st, "prefix"),
                    "server", json_object_get(st, "server"),
                    "target_app", json_object_get(st, "target_app"),
                    "running", running,
                    "pid", running ? json_integer(pid) : json_null(),
                    "state", running ? status_str(st, "state", "")
                                     : "stopped",
                    "connected_since",
                    running ? json_object_get(st, "connected_since") : NULL,
                    "last_error", json_object_get(st, "last_error"),
                    "path_mode", json_object_get(st, "path_mode"),
                    "relay", json_object_get(st, "relay"));

    if (out == NULL) {
        json_decref(peers);
        goto done;
    }

    json_object_set_new(out, "peers", peers);

    dump = json_dumps(out, JSON_COMPACT);
    json_decref(out);

    if (dump != NULL) {
        printf("%s\n", dump);
        free(dump);
        rc = 0;
    }

done:

    wg_device_free(dev);
    json_decref(st);

    return rc;
}
