/*
 * wgctl metrics [--state-dir <dir>]: the agent's status file joined with
 * the device's numbers (as "wgctl status" shows them), in the Prometheus
 * text format, for a node_exporter textfile or a scrape through a
 * wrapper (docs/metrics.md).  Peer labels are the VPC's node names:
 * bounded by the VPC's size.
 */


#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "wgctl.h"
#include "state.h"


static void metrics_usage(FILE *out);
static const char *metrics_label(char *buf, size_t size, const char *s);
static uint64_t metrics_int(json_t *obj, const char *key);
static void metrics_peers(json_t *peers);


static void
metrics_usage(FILE *out)
{
    fprintf(out, "Usage: %s metrics [--state-dir <dir>]\n", wgctl_prog);
}


/* a label value, escaped as the text format wants, cut to fit */

static const char *
metrics_label(char *buf, size_t size, const char *s)
{
    size_t  n;

    for (n = 0; s != NULL && *s != '\0' && n + 3 < size; s++) {
        if (*s == '\\' || *s == '"') {
            buf[n++] = '\\';
            buf[n++] = *s;

        } else if (*s == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';

        } else {
            buf[n++] = *s;
        }
    }

    buf[n] = '\0';

    return buf;
}


static uint64_t
metrics_int(json_t *obj, const char *key)
{
    json_int_t  v;

    v = json_integer_value(json_object_get(obj, key));

    return v > 0 ? (uint64_t) v : 0;
}


static void
metrics_peers(json_t *peers)
{
    char         name[256], addr[64];
    size_t       i;
    json_t      *p;
    time_t       now, hs;
    uint64_t     rx, tx, rrx, rtx;
    const char  *path;

    now = time(NULL);

    printf("# HELP dstack_vpn_peer_up Whether the control plane reports the "
           "peer online.\n# TYPE dstack_vpn_peer_up gauge\n");

    json_array_foreach(peers, i, p) {
        printf("dstack_vpn_peer_up{peer=\"%s\",address=\"%s\"} %d\n",
               metrics_label(name, sizeof(name),
                             json_string_value(json_object_get(p, "name"))),
               metrics_label(addr, sizeof(addr),
                             json_string_value(json_object_get(p,
                                                               "address"))),
               json_is_true(json_object_get(p, "online")) ? 1 : 0);
    }

    printf("# HELP dstack_vpn_peer_handshake_age_seconds Seconds since the "
           "latest handshake with the peer (peers with one).\n"
           "# TYPE dstack_vpn_peer_handshake_age_seconds gauge\n");

    json_array_foreach(peers, i, p) {
        hs = (time_t) metrics_int(p, "latest_handshake");

        if (hs <= 0) {
            continue;
        }

        printf("dstack_vpn_peer_handshake_age_seconds{peer=\"%s\"} %lld\n",
               metrics_label(name, sizeof(name),
                             json_string_value(json_object_get(p, "name"))),
               (long long) (now > hs ? now - hs : 0));
    }

    printf("# HELP dstack_vpn_peer_path The path the device sends the peer's "
           "packets on now.\n# TYPE dstack_vpn_peer_path gauge\n");

    json_array_foreach(peers, i, p) {
        path = json_string_value(json_object_get(p, "path"));

        if (path == NULL) {
            /* before the relay existed, or no endpoint yet */
            if (json_is_null(json_object_get(p, "endpoint"))) {
                continue;
            }

            path = "direct";
        }

        printf("dstack_vpn_peer_path{peer=\"%s\",path=\"%s\"} 1\n",
               metrics_label(name, sizeof(name),
                             json_string_value(json_object_get(p, "name"))),
               strcmp(path, "relay") == 0 ? "relay" : "direct");
    }

    printf("# HELP dstack_vpn_peer_receive_bytes_total Bytes received from "
           "the peer, by path.\n"
           "# TYPE dstack_vpn_peer_receive_bytes_total counter\n");

    json_array_foreach(peers, i, p) {
        rx = metrics_int(p, "rx_bytes");
        rrx = metrics_int(p, "relay_rx_bytes");

        if (json_object_get(p, "direct_rx_bytes") != NULL) {
            rx = metrics_int(p, "direct_rx_bytes");
        }

        metrics_label(name, sizeof(name),
                      json_string_value(json_object_get(p, "name")));

        printf("dstack_vpn_peer_receive_bytes_total{peer=\"%s\","
               "path=\"direct\"} %" PRIu64 "\n"
               "dstack_vpn_peer_receive_bytes_total{peer=\"%s\","
               "path=\"relay\"} %" PRIu64 "\n", name, rx, name, rrx);
    }

    printf("# HELP dstack_vpn_peer_transmit_bytes_total Bytes sent to the "
           "peer, by path.\n"
           "# TYPE dstack_vpn_peer_transmit_bytes_total counter\n");

    json_array_foreach(peers, i, p) {
        tx = metrics_int(p, "tx_bytes");
        rtx = metrics_int(p, "relay_tx_bytes");

        if (json_object_get(p, "direct_tx_bytes") != NULL) {
            tx = metrics_int(p, "direct_tx_bytes");
        }

        metrics_label(name, sizeof(name),
                      json_string_value(json_object_get(p, "name")));

        printf("dstack_vpn_peer_transmit_bytes_total{peer=\"%s\","
               "path=\"direct\"} %" PRIu64 "\n"
               "dstack_vpn_peer_transmit_bytes_total{peer=\"%s\","
               "path=\"relay\"} %" PRIu64 "\n", name, tx, name, rtx);
    }
}


int
metrics_main(int argc, char **argv)
{
    int            i, rc, running, connected;
    pid_t          pid;
    size_t         n, online;
    json_t        *st, *peers, *p;
    wg_device_t   *dev;
    wg_backend_e   backend;
    const char    *dir, *ifname;

    if (wgctl_is_help(argc, argv)) {
        metrics_usage(stdout);
        return 0;
    }

    dir = WG_STATE_DIR;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];

        } else {
            fprintf(stderr, "%s: metrics: unexpected argument \"%s\"\n",
                    wgctl_prog, argv[i]);
            metrics_usage(stderr);
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
    connected = running
                && json_is_string(json_object_get(st, "state"))
                && strcmp(json_string_value(json_object_get(st, "state")),
                          "connected") == 0;

    dev = NULL;
    ifname = json_string_value(json_object_get(st, "interface"));

    if (ifname != NULL && wg_ifname_valid(ifname)) {
        backend = wgctl_backend;
        if (backend == WG_BACKEND_AUTO) {
            backend = wg_backend_pick(ifname);
        }

        if (wg_device_get(ifname, backend, &dev) != 0) {
            dev = NULL;
        }
    }

    rc = 1;

    peers = wg_status_peers(st, dev);
    if (peers == NULL) {
        goto done;
    }

    online = 0;

    json_array_foreach(peers, n, p) {
        if (json_is_true(json_object_get(p, "online"))) {
            online++;
        }
    }

    printf("# HELP dstack_vpn_agent_up Whether the node agent (wgctl up) "
           "runs.\n# TYPE dstack_vpn_agent_up gauge\n"
           "dstack_vpn_agent_up %d\n"
           "# HELP dstack_vpn_connected Whether the agent holds a map stream "
           "from the control plane.\n# TYPE dstack_vpn_connected gauge\n"
           "dstack_vpn_connected %d\n"
           "# HELP dstack_vpn_device_up Whether the WireGuard device could "
           "be read.\n# TYPE dstack_vpn_device_up gauge\n"
           "dstack_vpn_device_up %d\n"
           "# HELP dstack_vpn_peers Peers the control plane sent, by state."
           "\n# TYPE dstack_vpn_peers gauge\n"
           "dstack_vpn_peers{state=\"online\"} %zu\n"
           "dstack_vpn_peers{state=\"offline\"} %zu\n",
           running, connected, dev != NULL, online,
           json_array_size(peers) - online);

    metrics_peers(peers);

    json_decref(peers);

    rc = (fflush(stdout) == 0) ? 0 : 1;

done:

    wg_device_free(dev);
    json_decref(st);

    return rc;
}
