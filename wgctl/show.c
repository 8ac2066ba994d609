/*
 * wgctl show [<if> | all] [dump | --json]: the device's state from either
 * backend.  Secrets are never printed: the private and preshared keys show
 * as "(hidden)" and are absent from the JSON.  "dump" is wg(8)'s
 * tab-separated format, field for field, but for those two keys.
 */


#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "wgctl.h"


static void show_usage(FILE *out);
static void show_ago(time_t seconds);
static void show_bytes(uint64_t bytes);
static void show_text(const wg_device_t *dev, wg_backend_e backend);
static void show_json(const wg_device_t *dev, wg_backend_e backend);
static void show_dump(const wg_device_t *dev, int all);
static int show_one(const char *ifname, int format, int all, size_t *shown);


#define WGCTL_SHOW_TEXT  0
#define WGCTL_SHOW_JSON  1
#define WGCTL_SHOW_DUMP  2


static void
show_usage(FILE *out)
{
    fprintf(out, "Usage: %s show [<interface> | all] [dump | --json]\n",
            wgctl_prog);
}


static void
show_ago(time_t seconds)
{
    int          printed;
    size_t       i;
    time_t       n;
    static const struct {
        const char  *unit;
        time_t       size;
    } units[] = {
        { "day", 86400 }, { "hour", 3600 }, { "minute", 60 },
        { "second", 1 }
    };

    printed = 0;

    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        n = seconds / units[i].size;
        seconds %= units[i].size;

        if (n == 0) {
            continue;
        }

        printf("%s%lld %s%s", printed ? ", " : "", (long long) n,
               units[i].unit, n == 1 ? "" : "s");
        printed = 1;
    }

    printf(printed ? " ago" : "now");
}


static void
show_bytes(uint64_t bytes)
{
    if (bytes < 1024) {
        printf("%" PRIu64 " B", bytes);

    } else if (bytes < 1024 * 1024) {
        printf("%.2f KiB", (double) bytes / 1024);

    } else if (bytes < 1024ULL * 1024 * 1024) {
        printf("%.2f MiB", (double) bytes / (1024 * 1024));

    } else {
        printf("%.2f GiB", (double) bytes / (1024.0 * 1024 * 1024));
    }
}


static void
show_text(const wg_device_t *dev, wg_backend_e backend)
{
    char              key[WG_KEY_B64_LEN + 1], text[INET6_ADDRSTRLEN + 8];
    size_t            i, j;
    time_t            now;
    const wg_peer_t  *peer;

    now = time(NULL);

    printf("interface: %s\n", dev->name);

    if (dev->flags & WG_DEV_HAS_PUBLIC_KEY) {
        wg_key_to_base64(key, dev->public_key);
        printf("  public key: %s\n", key);
    }

    if (dev->flags & WG_DEV_HAS_PRIVATE_KEY) {
        printf("  private key: (hidden)\n");
    }

    if (dev->listen_port) {
        printf("  listening port: %u\n", dev->listen_port);
    }

    if (dev->fwmark) {
        printf("  fwmark: 0x%x\n", dev->fwmark);
    }

    if (wgctl_verbose) {
        printf("  backend: %s\n", wg_backend_name(backend));
    }

    for (i = 0; i < dev->npeers; i++) {
        peer = &dev->peers[i];

        wg_key_to_base64(key, peer->public_key);
        printf("\npeer: %s\n", key);

        if (peer->flags & WG_PEER_HAS_PRESHARED_KEY) {
            printf("  preshared key: (hidden)\n");
        }

        if (wg_endpoint_format(text, sizeof(text), &peer->endpoint) == 0) {
            printf("  endpoint: %s\n", text);
        }

        printf("  allowed ips: ");

        for (j = 0; j < peer->nallowedips; j++) {
            if (wg_allowedip_format(text, sizeof(text), &peer->allowedips[j])
                == 0)
            {
                printf("%s%s", j ? ", " : "", text);
            }
        }

        printf("%s\n", peer->nallowedips ? "" : "(none)");

        if (peer->last_handshake.tv_sec) {
            printf("  latest handshake: ");
            show_ago(now > peer->last_handshake.tv_sec
                     ? now - peer->last_handshake.tv_sec : 0);
            printf("\n");
        }

        if (peer->rx_bytes || peer->tx_bytes) {
            printf("  transfer: ");
            show_bytes(peer->rx_bytes);
            printf(" received, ");
            show_bytes(peer->tx_bytes);
            printf(" sent\n");
        }

        if (peer->keepalive) {
            printf("  persistent keepalive: every %u seconds\n",
                   peer->keepalive);
        }
    }
}


/* every string printed here is a key, an address or a validated name */

static void
show_json(const wg_device_t *dev, wg_backend_e backend)
{
    char              key[WG_KEY_B64_LEN + 1], text[INET6_ADDRSTRLEN + 8];
    size_t            i, j;
    const wg_peer_t  *peer;

    printf("{\"interface\":\"%s\",\"backend\":\"%s\"", dev->name,
           wg_backend_name(backend));

    if (dev->flags & WG_DEV_HAS_PUBLIC_KEY) {
        wg_key_to_base64(key, dev->public_key);
        printf(",\"public_key\":\"%s\"", key);

    } else {
        printf(",\"public_key\":null");
    }

    printf(",\"listen_port\":%u,\"fwmark\":%u,\"peers\":[",
           dev->listen_port, dev->fwmark);

    for (i = 0; i < dev->npeers; i++) {
        peer = &dev->peers[i];

        wg_key_to_base64(key, peer->public_key);
        printf("%s{\"public_key\":\"%s\"", i ? "," : "", key);

        if (wg_endpoint_format(text, sizeof(text), &peer->endpoint) == 0) {
            printf(",\"endpoint\":\"%s\"", text);

        } else {
            printf(",\"endpoint\":null");
        }

        printf(",\"allowed_ips\":[");

        for (j = 0; j < peer->nallowedips; j++) {
            if (wg_allowedip_format(text, sizeof(text), &peer->allowedips[j])
                == 0)
            {
                printf("%s\"%s\"", j ? "," : "", text);
            }
        }

        printf("],\"latest_handshake\":%lld,\"rx_bytes\":%" PRIu64
               ",\"tx_bytes\":%" PRIu64 ",\"persistent_keepalive\":%u}",
               (long long) peer->last_handshake.tv_sec, peer->rx_bytes,
               peer->tx_bytes, peer->keepalive);
    }

    printf("]}");
}


/*
 * wg(8)'s "dump": one line per device, then one per peer, tab-separated,
 * each line led by the interface name under "all".  The peers and their
 * allowed IPs are in the order the backend gave them.
 */

static void
show_dump(const wg_device_t *dev, int all)
{
    char              key[WG_KEY_B64_LEN + 1], text[INET6_ADDRSTRLEN + 8];
    size_t            i, j;
    const wg_peer_t  *peer;

    if (all) {
        printf("%s\t", dev->name);
    }

    if (dev->flags & WG_DEV_HAS_PUBLIC_KEY) {
        wg_key_to_base64(key, dev->public_key);

    } else {
        strcpy(key, "(none)");
    }

    printf("%s\t%s\t%u\t", (dev->flags & WG_DEV_HAS_PRIVATE_KEY)
                                ? "(hidden)" : "(none)",
           key, dev->listen_port);

    if (dev->fwmark) {
        printf("0x%x\n", dev->fwmark);

    } else {
        printf("off\n");
    }

    for (i = 0; i < dev->npeers; i++) {
        peer = &dev->peers[i];

        if (all) {
            printf("%s\t", dev->name);
        }

        wg_key_to_base64(key, peer->public_key);
        printf("%s\t%s\t", key,
               (peer->flags & WG_PEER_HAS_PRESHARED_KEY)
               && !wg_key_is_zero(peer->preshared_key)
               ? "(hidden)" : "(none)");

        if (wg_endpoint_format(text, sizeof(text), &peer->endpoint) == 0) {
            printf("%s\t", text);

        } else {
            printf("(none)\t");
        }

        for (j = 0; j < peer->nallowedips; j++) {
            if (wg_allowedip_format(text, sizeof(text), &peer->allowedips[j])
                == 0)
            {
                printf("%s%s", j ? "," : "", text);
            }
        }

        printf("%s\t%lld\t%" PRIu64 "\t%" PRIu64 "\t",
               peer->nallowedips ? "" : "(none)",
               (long long) peer->last_handshake.tv_sec, peer->rx_bytes,
               peer->tx_bytes);

        if (peer->keepalive) {
            printf("%u\n", peer->keepalive);

        } else {
            printf("off\n");
        }
    }
}


static int
show_one(const char *ifname, int format, int all, size_t *shown)
{
    int            rc;
    wg_device_t   *dev;
    wg_backend_e   backend;

    backend = wgctl_backend;
    if (backend == WG_BACKEND_AUTO) {
        backend = wg_backend_pick(ifname);
    }

    rc = wg_device_get(ifname, backend, &dev);
    if (rc != 0) {
        fprintf(stderr, "%s: unable to access interface \"%s\": %s\n",
                wgctl_prog, ifname, wg_strerror(rc));
        return rc;
    }

    if (*shown && format != WGCTL_SHOW_DUMP) {
        printf(format == WGCTL_SHOW_JSON ? "," : "\n");
    }

    switch (format) {

    case WGCTL_SHOW_JSON:
        show_json(dev, backend);
        break;

    case WGCTL_SHOW_DUMP:
        show_dump(dev, all);
        break;

    default:
        show_text(dev, backend);
    }

    (*shown)++;
    wg_device_free(dev);

    return 0;
}


int
show_main(int argc, char **argv)
{
    int           i, format, rc, failed;
    char        **names;
    size_t        n, k, shown;
    const char   *ifname;

    if (wgctl_is_help(argc, argv)) {
        show_usage(stdout);
        return 0;
    }

    format = WGCTL_SHOW_TEXT;
    ifname = NULL;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 && format == WGCTL_SHOW_TEXT) {
            format = WGCTL_SHOW_JSON;

        } else if (strcmp(argv[i], "dump") == 0 && ifname != NULL
                   && format == WGCTL_SHOW_TEXT)
        {
            format = WGCTL_SHOW_DUMP;

        } else if (ifname == NULL && argv[i][0] != '-') {
            ifname = argv[i];

        } else {
            fprintf(stderr, "%s: show: unexpected argument \"%s\"\n",
                    wgctl_prog, argv[i]);
            show_usage(stderr);
            return 1;
        }
    }

    if (ifname != NULL && strcmp(ifname, "all") == 0) {
        ifname = NULL;
    }

    if (ifname != NULL) {
        if (!wg_ifname_valid(ifname)) {
            fprintf(stderr, "%s: invalid interface name \"%s\"\n",
                    wgctl_prog, ifname);
            return 1;
        }

        n = 0;
        rc = show_one(ifname, format, 0, &n);

        if (rc == 0 && format == WGCTL_SHOW_JSON) {
            printf("\n");
        }

        return rc ? 1 : 0;
    }

    rc = wg_device_list(&names, &n);
    if (rc != 0) {
        fprintf(stderr, "%s: unable to list interfaces: %s\n", wgctl_prog,
                wg_strerror(rc));
        return 1;
    }

    failed = 0;

    if (format == WGCTL_SHOW_JSON) {
        printf("[");
    }

    shown = 0;

    for (k = 0; k < n; k++) {
        if (show_one(names[k], format, 1, &shown) != 0) {
            failed = 1;
        }
    }

    if (format == WGCTL_SHOW_JSON) {
        printf("]\n");
    }

    wg_device_list_free(names, n);

    return failed;
}
