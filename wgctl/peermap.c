/*
 * wgctl: the map stream's frames, the peer table they update, and the
 * desired device and hosts entries that the table gives.  Pure: no I/O.
 */


#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <jansson.h>

#include "peermap.h"


#define WG_MAP_DROP_PEER  0x01
#define WG_MAP_DROP_HOST  0x02


typedef struct {
    const wg_map_node_t    *node;
    wg_allowedip_t          aip;
    size_t                  order;
} wg_map_claim_t;


static void wg_map_quote(char *buf, size_t size, const char *text);
static void wg_map_log(const wg_peermap_t *pm, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int wg_map_aips_parse(const wg_peermap_t *pm, json_t *array,
    wg_allowedip_t *out, size_t max, size_t *n, int hosts, const char *field,
    char *why, size_t whylen);
static int wg_map_endpoints_parse(json_t *array, wg_endpoint_t *out,
    size_t *n, char *why, size_t whylen);
static int wg_map_node_parse(const wg_peermap_t *pm, json_t *obj,
    wg_map_node_t *node, char *why, size_t whylen);
static int wg_map_node_equal(const wg_map_node_t *a, const wg_map_node_t *b);
static int wg_map_id_cmp(const void *a, const void *b);
static wg_map_node_t *wg_map_find(wg_map_node_t **peers, size_t n,
    int64_t id);
static int wg_map_reserve(wg_peermap_t *pm, size_t n);
static void wg_map_settle(wg_peermap_t *pm, size_t sorted);
static int wg_map_full(wg_peermap_t *pm, json_t *peers,
    wg_map_result_t *res);
static int wg_map_changed(wg_peermap_t *pm, json_t *peers,
    wg_map_result_t *res);
static void wg_map_removed(wg_peermap_t *pm, json_t *ids,
    wg_map_result_t *res);
static void wg_map_patch(wg_peermap_t *pm, json_t *patches,
    wg_map_result_t *res);
static int wg_map_key_claim_cmp(const void *a, const void *b);
static int wg_map_aip_claim_cmp(const void *a, const void *b);
static int wg_map_name_claim_cmp(const void *a, const void *b);
static int wg_map_peer_key_cmp(const void *a, const void *b);
static void wg_map_drop_keys(const wg_peermap_t *pm, wg_map_claim_t *claims,
    uint8_t *drop, int log);
static void wg_map_drop_addresses(const wg_peermap_t *pm,
    wg_map_claim_t *claims, uint8_t *drop, int log);
static void wg_map_drop_names(const wg_peermap_t *pm, wg_map_claim_t *claims,
    uint8_t *drop, int log);


/* --- frames ---------------------------------------------------------- */


void
wg_frames_init(wg_frames_t *fr, size_t max)
{
    memset(fr, 0, sizeof(wg_frames_t));
    fr->max = max;
}


void
wg_frames_free(wg_frames_t *fr)
{
    free(fr->body);
    fr->body = NULL;
    fr->head_len = 0;
    fr->body_len = 0;
    fr->body_have = 0;
}


/*
 * Cuts frames out of whatever the transport delivers.  A frame that
 * arrives whole is handed over in place; only a partial one is copied.
 * Returns 0, -EMSGSIZE for a frame above the limit, -EPROTO for an empty
 * one, -ENOMEM, or the handler's non-zero result.
 */

int
wg_frames_feed(wg_frames_t *fr, const void *data, size_t len,
    wg_frame_handler_pt handler, void *ctx)
{
    int             rc;
    size_t          n, flen;
    const uint8_t  *p;

    p = data;

    while (len > 0) {

        if (fr->body == NULL) {
            n = 4 - fr->head_len;
            n = (n < len) ? n : len;

            memcpy(fr->head + fr->head_len, p, n);
            fr->head_len += n;
            p += n;
            len -= n;

            if (fr->head_len < 4) {
                break;
            }

            flen = (size_t) fr->head[0] | (size_t) fr->head[1] << 8
                   | (size_t) fr->head[2] << 16 | (size_t) fr->head[3] << 24;

            if (flen == 0) {
                return -EPROTO;
            }

            if (flen > fr->max) {
                return -EMSGSIZE;
            }

            if (len >= flen) {
                fr->head_len = 0;
                rc = handler(ctx, (const char *) p, flen);
                p += flen;
                len -= flen;

                if (rc != 0) {
                    return rc;
                }

                continue;
            }

            fr->body = malloc(flen);
            if (fr->body == NULL) {
                return -ENOMEM;
            }

            fr->body_len = flen;
            fr->body_have = 0;
        }

        n = fr->body_len - fr->body_have;
        n = (n < len) ? n : len;

        memcpy(fr->body + fr->body_have, p, n);
        fr->body_have += n;
        p += n;
        len -= n;

        if (fr->body_have == fr->body_len) {
            rc = handler(ctx, fr->body, fr->body_len);
            wg_frames_free(fr);

            if (rc != 0) {
                return rc;
            }
        }
    }

    return 0;
}


/* jansson has no depth limit of its own below 2048 */

int
wg_json_depth_ok(const char *p, size_t len, unsigned max)
{
    int       in_string;
    size_t    i;
    unsigned  depth;

    depth = 0;
    in_string = 0;

    for (i = 0; i < len; i++) {

        if (in_string) {
            if (p[i] == '\\') {
                i++;

            } else if (p[i] == '"') {
                in_string = 0;
            }

            continue;
        }

        switch (p[i]) {

        case '"':
            in_string = 1;
            break;

        case '[':
        case '{':
            if (++depth > max) {
                return 0;
            }
            break;

        case ']':
        case '}':
            if (depth > 0) {
                depth--;
            }
            break;
        }
    }

    return 1;
}


/* --- values ---------------------------------------------------------- */


/* a value from the wire, safe to log: printable, bounded */

static void
wg_map_quote(char *buf, size_t size, const char *text)
{
    size_t  i, max;

    max = (size > 4) ? size - 4 : 0;

    for (i = 0; text[i] != '\0' && i < max; i++) {
        buf[i] = (text[i] >= 0x20 && text[i] < 0x7f) ? text[i] : '?';
    }

    if (text[i] != '\0' && size >= 4) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }

    buf[i] = '\0';
}


static void
wg_map_log(const wg_peermap_t *pm, const char *fmt, ...)
{
    char     msg[512];
    va_list  args;

    if (pm->log == NULL) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(msg, sizeof(msg), fmt, args);
    va_end(args);

    pm->log(pm->log_data, "%s", msg);
}


int
wg_map_prefix_contains(const wg_allowedip_t *prefix,
    const wg_allowedip_t *aip)
{
    wg_allowedip_t  masked;

    if (aip->family != prefix->family || aip->cidr < prefix->cidr) {
        return 0;
    }

    masked = *aip;
    masked.cidr = prefix->cidr;
    wg_allowedip_normalize(&masked);

    return memcmp(&masked.addr, &prefix->addr,
                  prefix->family == AF_INET6 ? 16 : 4) == 0;
}


/* "node1.dstack.internal." (or without the dot, or the bare label) */

int
wg_map_name_parse(char *out, size_t size, const char *name)
{
    char               label[WG_MAP_NAME_MAX + sizeof(WG_HOSTS_DOMAIN) + 4];
    size_t             len, dlen;
    static const char  domain[] = "." WG_HOSTS_DOMAIN;

    len = strlen(name);

    if (len == 0 || len >= sizeof(label)) {
        return -1;
    }

    memcpy(label, name, len + 1);

    if (label[len - 1] == '.') {
        label[--len] = '\0';
    }

    dlen = sizeof(domain) - 1;

    if (len > dlen && strcmp(label + len - dlen, domain) == 0) {
        len -= dlen;
        label[len] = '\0';
    }

    if (!wg_hosts_name_valid(label) || len >= size) {
        return -1;
    }

    memcpy(out, label, len + 1);

    return 0;
}


int
wg_map_key_parse(uint8_t *key, const char *text)
{
    size_t  plen;

    plen = sizeof(WG_MAP_KEY_PREFIX) - 1;

    if (strncmp(text, WG_MAP_KEY_PREFIX, plen) != 0
        || wg_key_from_hex(key, text + plen) != 0
        || wg_key_is_zero(key))
    {
        return -1;
    }

    return 0;
}


int
wg_map_path_parse(const char *text, wg_map_path_e *path)
{
    if (strcmp(text, "auto") == 0) {
        *path = WG_MAP_PATH_AUTO;

    } else if (strcmp(text, "direct") == 0) {
        *path = WG_MAP_PATH_DIRECT;

    } else if (strcmp(text, "relay") == 0) {
        *path = WG_MAP_PATH_RELAY;

    } else {
        return -1;
    }

    return 0;
}


const char *
wg_map_path_name(wg_map_path_e path)
{
    switch (path) {
    case WG_MAP_PATH_AUTO:
        return "auto";
    case WG_MAP_PATH_DIRECT:
        return "direct";
    case WG_MAP_PATH_RELAY:
        return "relay";
    default:
        return "none";
    }
}


void
wg_map_key_format(char *out, const uint8_t *key)
{
    memcpy(out, WG_MAP_KEY_PREFIX, sizeof(WG_MAP_KEY_PREFIX) - 1);
    wg_key_to_hex(out + sizeof(WG_MAP_KEY_PREFIX) - 1, key);
}


/*
 * A list of prefixes inside the VPC prefix.  With "hosts", each must be
 * a single address (a node's Addresses).
 */

static int
wg_map_aips_parse(const wg_peermap_t *pm, json_t *array, wg_allowedip_t *out,
    size_t max, size_t *n, int hosts, const char *field, char *why,
    size_t whylen)
{
    char            q[80];
    size_t          i;
    json_t         *v;
    const char     *s;
    wg_allowedip_t  aip;

    *n = 0;

    if (!json_is_array(array) || json_array_size(array) > max) {
        snprintf(why, whylen, "%s is not an array of at most %zu", field,
                 max);
        return -1;
    }

    json_array_foreach(array, i, v) {
        s = json_string_value(v);

        if (s == NULL) {
            snprintf(why, whylen, "%s has a non-string entry", field);
            return -1;
        }

        if (wg_allowedip_parse(&aip, s) != 0
            || (hosts && aip.cidr != (aip.family == AF_INET6 ? 128 : 32)))
        {
            wg_map_quote(q, sizeof(q), s);
            snprintf(why, whylen, "invalid %s entry \"%s\"", field, q);
            return -1;
        }

        if (!wg_map_prefix_contains(&pm->prefix, &aip)) {
            wg_map_quote(q, sizeof(q), s);
            snprintf(why, whylen, "%s entry \"%s\" is outside the VPC "
                     "prefix", field, q);
            return -1;
        }

        out[(*n)++] = aip;
    }

    return 0;
}


/* endpoints that do not parse are dropped alone: a peer may roam */

static int
wg_map_endpoints_parse(json_t *array, wg_endpoint_t *out, size_t *n,
    char *why, size_t whylen)
{
    size_t       i;
    json_t      *v;
    const char  *s;

    *n = 0;

    if (array == NULL || json_is_null(array)) {
        return 0;
    }

    if (!json_is_array(array)) {
        snprintf(why, whylen, "Endpoints is not an array");
        return -1;
    }

    json_array_foreach(array, i, v) {
        s = json_string_value(v);

        if (*n == WG_MAP_MAX_ENDPOINTS) {
            break;
        }

        if (s != NULL && wg_endpoint_parse(&out[*n], s) == 0) {
            (*n)++;
        }
    }

    return 0;
}


static int
wg_map_node_parse(const wg_peermap_t *pm, json_t *obj, wg_map_node_t *node,
    char *why, size_t whylen)
{
    char         q[80];
    json_t      *v;
    json_int_t   id;
    const char  *s;

    memset(node, 0, sizeof(wg_map_node_t));

    if (!json_is_object(obj)) {
        snprintf(why, whylen, "not an object");
        return -1;
    }

    v = json_object_get(obj, "ID");
    id = json_is_integer(v) ? json_integer_value(v) : 0;

    if (id <= 0) {
        snprintf(why, whylen, "missing or invalid ID");
        return -1;
    }

    node->id = id;

    s = json_string_value(json_object_get(obj, "Key"));

    if (s == NULL || wg_map_key_parse(node->key, s) != 0) {
        wg_map_quote(q, sizeof(q), s ? s : "");
        snprintf(why, whylen, "invalid key \"%s\"", q);
        return -1;
    }

    s = json_string_value(json_object_get(obj, "Name"));

    if (s == NULL || wg_map_name_parse(node->name, sizeof(node->name), s)
                     != 0)
    {
        wg_map_quote(q, sizeof(q), s ? s : "");
        snprintf(why, whylen, "invalid name \"%s\"", q);
        return -1;
    }

    if (wg_map_aips_parse(pm, json_object_get(obj, "Addresses"),
                          node->addrs, WG_MAP_MAX_ADDRS, &node->naddrs, 1,
                          "Addresses", why, whylen)
        != 0)
    {
        return -1;
    }

    if (node->naddrs == 0) {
        snprintf(why, whylen, "no Addresses");
        return -1;
    }

    if (inet_ntop(node->addrs[0].family, &node->addrs[0].addr,
                  node->address, sizeof(node->address))
        == NULL)
    {
        snprintf(why, whylen, "unprintable address");
        return -1;
    }

    v = json_object_get(obj, "AllowedIPs");

    if (v != NULL && !json_is_null(v)
        && wg_map_aips_parse(pm, v, node->allowedips,
                             WG_MAP_MAX_ALLOWEDIPS, &node->nallowedips, 0,
                             "AllowedIPs", why, whylen)
           != 0)
    {
        return -1;
    }

    if (wg_map_endpoints_parse(json_object_get(obj, "Endpoints"),
                               node->endpoints, &node->nendpoints, why,
                               whylen)
        != 0)
    {
        return -1;
    }

    /*
     * AppID and InstanceID address the peer's relay through the gateway
     * (docs/wg-relay.md): AppID is 40 hex digits or absent (such a peer is
     * reached directly only), InstanceID hex or empty
     */
    v = json_object_get(obj, "AppID");

    if (v != NULL && !json_is_null(v)) {
        s = json_string_value(v);

        if (s == NULL
            || (s[0] != '\0'
                && (strlen(s) != WG_MAP_APP_LEN
                    || strspn(s, "0123456789abcdefABCDEF")
                       != WG_MAP_APP_LEN)))
        {
            wg_map_quote(q, sizeof(q), s ? s : "(not a string)");
            snprintf(why, whylen, "invalid AppID \"%s\"", q);
            return -1;
        }

        memcpy(node->app, s, strlen(s) + 1);
    }

    v = json_object_get(obj, "InstanceID");

    if (v != NULL && !json_is_null(v)) {
        s = json_string_value(v);

        if (s == NULL || strlen(s) > WG_MAP_INSTANCE_MAX
            || strspn(s, "0123456789abcdefABCDEF") != strlen(s))
        {
            wg_map_quote(q, sizeof(q), s ? s : "(not a string)");
            snprintf(why, whylen, "invalid InstanceID \"%s\"", q);
            return -1;
        }

        memcpy(node->instance, s, strlen(s) + 1);
    }

    v = json_object_get(obj, "Online");
    node->online = json_is_boolean(v) ? json_is_true(v) : 1;

    s = json_string_value(json_object_get(obj, "LastSeen"));
    if (s != NULL) {
        wg_map_quote(node->last_seen, sizeof(node->last_seen), s);
    }

    return 0;
}


static int
wg_map_node_equal(const wg_map_node_t *a, const wg_map_node_t *b)
{
    return memcmp(a->key, b->key, WG_KEY_SIZE) == 0
           && strcmp(a->name, b->name) == 0
           && strcmp(a->last_seen, b->last_seen) == 0
           && strcmp(a->app, b->app) == 0
           && strcmp(a->instance, b->instance) == 0
           && a->online == b->online
           && a->naddrs == b->naddrs
           && a->nallowedips == b->nallowedips
           && a->nendpoints == b->nendpoints
           && memcmp(a->addrs, b->addrs, a->naddrs * sizeof(a->addrs[0]))
              == 0
           && memcmp(a->allowedips, b->allowedips,
                     a->nallowedips * sizeof(a->allowedips[0])) == 0
           && memcmp(a->endpoints, b->endpoints,
                     a->nendpoints * sizeof(a->endpoints[0])) == 0;
}


/* --- the table ------------------------------------------------------- */


void
wg_peermap_init(wg_peermap_t *pm, const wg_allowedip_t *prefix,
    const uint8_t *self_key, wg_map_log_pt log, void *log_data)
{
    memset(pm, 0, sizeof(wg_peermap_t));

    pm->prefix = *prefix;
    wg_allowedip_normalize(&pm->prefix);
    pm->log = log;
    pm->log_data = log_data;

    if (self_key != NULL) {
        memcpy(pm->self_key, self_key, WG_KEY_SIZE);
        pm->has_self_key = 1;
    }
}


void
wg_peermap_free(wg_peermap_t *pm)
{
    size_t  i;

    for (i = 0; i < pm->npeers; i++) {
        free(pm->peers[i]);
    }

    free(pm->peers);
    pm->peers = NULL;
    pm->npeers = 0;
    pm->cap = 0;
}


/* by id, and for one id the newest first */

static int
wg_map_id_cmp(const void *a, const void *b)
{
    const wg_map_node_t  *na, *nb;

    na = *(const wg_map_node_t * const *) a;
    nb = *(const wg_map_node_t * const *) b;

    if (na->id != nb->id) {
        return na->id < nb->id ? -1 : 1;
    }

    if (na->seq != nb->seq) {
        return na->seq > nb->seq ? -1 : 1;
    }

    return 0;
}


static wg_map_node_t *
wg_map_find(wg_map_node_t **peers, size_t n, int64_t id)
{
    size_t          lo, hi, mid;
    wg_map_node_t  *node;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        node = peers[mid];

        if (node->id == id) {
            return node;
        }

        if (node->id < id) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


static int
wg_map_reserve(wg_peermap_t *pm, size_t n)
{
    size_t           cap;
    wg_map_node_t  **p;

    if (n <= pm->cap) {
        return 0;
    }

    cap = pm->cap ? pm->cap : 64;

    while (cap < n) {
        cap *= 2;
    }

    p = realloc(pm->peers, cap * sizeof(wg_map_node_t *));
    if (p == NULL) {
        return -ENOMEM;
    }

    pm->peers = p;
    pm->cap = cap;

    return 0;
}


/*
 * Restores the table's order after entries were appended past "sorted"
 * or marked removed: one sort, the newest of each id kept.
 */

static void
wg_map_settle(wg_peermap_t *pm, size_t sorted)
{
    size_t          i, j;
    wg_map_node_t  *node;

    if (sorted < pm->npeers) {
        qsort(pm->peers, pm->npeers, sizeof(wg_map_node_t *),
              wg_map_id_cmp);
    }

    for (i = 0, j = 0; i < pm->npeers; i++) {
        node = pm->peers[i];

        if (node->removed || (j > 0 && pm->peers[j - 1]->id == node->id)) {
            free(node);
            continue;
        }

        pm->peers[j++] = node;
    }

    pm->npeers = j;
}


static int
wg_map_full(wg_peermap_t *pm, json_t *peers, wg_map_result_t *res)
{
    char             why[160];
    size_t           i, n, old_n, old_cap;
    json_t          *v;
    wg_map_node_t   *node, *old, **old_peers;

    n = json_array_size(peers);

    if (n > WG_MAP_MAX_PEERS) {
        return -E2BIG;
    }

    old_peers = pm->peers;
    old_n = pm->npeers;
    old_cap = pm->cap;

    pm->peers = NULL;
    pm->npeers = 0;
    pm->cap = 0;

    if (wg_map_reserve(pm, n) != 0) {
        goto failed;
    }

    json_array_foreach(peers, i, v) {
        node = malloc(sizeof(wg_map_node_t));
        if (node == NULL) {
            wg_peermap_free(pm);
            goto failed;
        }

        if (wg_map_node_parse(pm, v, node, why, sizeof(why)) != 0) {
            if (node->id > 0) {
                wg_map_log(pm, "skipped peer %lld: %s",
                           (long long) node->id, why);

            } else {
                wg_map_log(pm, "skipped peer #%zu of Peers: %s", i, why);
            }

            res->skipped++;
            free(node);
            continue;
        }

        node->seq = ++pm->seq;
        pm->peers[pm->npeers++] = node;
    }

    wg_map_settle(pm, 0);

    /* what changed against the old table, for the caller's log */
    for (i = 0; i < pm->npeers; i++) {
        node = pm->peers[i];
        old = wg_map_find(old_peers, old_n, node->id);

        if (old == NULL) {
            res->added++;
            continue;
        }

        if (!wg_map_node_equal(old, node)) {
            res->changed++;
        }

        old->removed = 1;
    }

    for (i = 0; i < old_n; i++) {
        if (!old_peers[i]->removed) {
            res->removed++;
        }

        free(old_peers[i]);
    }

    free(old_peers);

    return 0;

failed:

    free(pm->peers);
    pm->peers = old_peers;
    pm->npeers = old_n;
    pm->cap = old_cap;

    return -ENOMEM;
}


/*
 * New peers are appended past the sorted part and found by lookups only
 * once the table is settled at the end; for one id the newest entry wins.
 */

static int
wg_map_changed(wg_peermap_t *pm, json_t *peers, wg_map_result_t *res)
{
    int              rc;
    char             why[160];
    size_t           i, sorted, kept;
    json_t          *v;
    wg_map_node_t   *node, *old;

    sorted = pm->npeers;
    rc = 0;

    json_array_foreach(peers, i, v) {
        node = malloc(sizeof(wg_map_node_t));
        if (node == NULL) {
            rc = -ENOMEM;
            break;
        }

        if (wg_map_node_parse(pm, v, node, why, sizeof(why)) != 0) {
            res->skipped++;

            if (node->id <= 0) {
                wg_map_log(pm, "skipped peer #%zu of PeersChanged: %s", i,
                           why);
                free(node);
                continue;
            }

            /* its old state is stale now: better gone than wrong */
            old = wg_map_find(pm->peers, sorted, node->id);

            wg_map_log(pm, "skipped peer %lld: %s%s",
                       (long long) node->id, why,
                       (old && !old->removed) ? "; its old entry removed"
                                              : "");

            if (old != NULL) {
                old->removed = 1;
            }

            free(node);
            continue;
        }

        node->seq = ++pm->seq;
        old = wg_map_find(pm->peers, sorted, node->id);

        if (old != NULL) {
            if (old->removed || !wg_map_node_equal(old, node)) {
                res->changed++;
            }

            *old = *node;
            free(node);
            continue;
        }

        if (pm->npeers >= WG_MAP_MAX_PEERS) {
            free(node);
            rc = -E2BIG;
            break;
        }

        if (wg_map_reserve(pm, pm->npeers + 1) != 0) {
            free(node);
            rc = -ENOMEM;
            break;
        }

        pm->peers[pm->npeers++] = node;
    }

    kept = 0;

    for (i = 0; i < sorted; i++) {
        if (!pm->peers[i]->removed) {
            kept++;
        }
    }

    res->removed += sorted - kept;

    wg_map_settle(pm, sorted);

    res->added += pm->npeers - kept;

    return rc;
}


static void
wg_map_removed(wg_peermap_t *pm, json_t *ids, wg_map_result_t *res)
{
    size_t          i;
    json_t         *v;
    wg_map_node_t  *node;

    json_array_foreach(ids, i, v) {
        if (!json_is_integer(v)) {
            wg_map_log(pm, "skipped entry #%zu of PeersRemoved: not an "
                       "ID", i);
            res->skipped++;
            continue;
        }

        node = wg_map_find(pm->peers, pm->npeers, json_integer_value(v));

        if (node != NULL && !node->removed) {
            node->removed = 1;
            res->removed++;
        }
    }

    wg_map_settle(pm, pm->npeers);
}


static void
wg_map_patch(wg_peermap_t *pm, json_t *patches, wg_map_result_t *res)
{
    char            why[160], q[80];
    size_t          i, n;
    json_t         *v, *f;
    json_int_t      id;
    const char     *s;
    wg_map_node_t  *node, tmp;

    json_array_foreach(patches, i, v) {
        f = json_object_get(v, "NodeID");
        id = json_is_integer(f) ? json_integer_value(f) : 0;

        if (id <= 0) {
            wg_map_log(pm, "skipped entry #%zu of PeersChangedPatch: "
                       "missing or invalid NodeID", i);
            res->skipped++;
            continue;
        }

        node = wg_map_find(pm->peers, pm->npeers, id);

        if (node == NULL) {
            wg_map_log(pm, "skipped patch for unknown peer %lld",
                       (long long) id);
            res->skipped++;
            continue;
        }

        tmp = *node;
        why[0] = '\0';

        f = json_object_get(v, "Endpoints");

        if (f != NULL
            && wg_map_endpoints_parse(f, tmp.endpoints, &n, why,
                                      sizeof(why))
               == 0)
        {
            tmp.nendpoints = n;
        }

        f = json_object_get(v, "Key");

        if (f != NULL && why[0] == '\0') {
            s = json_string_value(f);

            if (s == NULL || wg_map_key_parse(tmp.key, s) != 0) {
                wg_map_quote(q, sizeof(q), s ? s : "");
                snprintf(why, sizeof(why), "invalid key \"%s\"", q);
            }
        }

        f = json_object_get(v, "Online");

        if (json_is_boolean(f)) {
            tmp.online = json_is_true(f);
        }

        s = json_string_value(json_object_get(v, "LastSeen"));
        if (s != NULL) {
            wg_map_quote(tmp.last_seen, sizeof(tmp.last_seen), s);
        }

        if (why[0] != '\0') {
            wg_map_log(pm, "skipped patch for peer %lld: %s",
                       (long long) id, why);
            res->skipped++;
            continue;
        }

        *node = tmp;
        res->patched++;
    }
}


int
wg_peermap_apply(wg_peermap_t *pm, const char *json, size_t len,
    wg_map_result_t *res, char *err, size_t errlen)
{
    int            rc;
    char           why[160], q[80];
    json_t        *root, *v;
    json_error_t   jerr;
    wg_map_node_t  self;
    wg_map_path_e  path;

    memset(res, 0, sizeof(wg_map_result_t));

    if (len > WG_MAP_FRAME_MAX) {
        snprintf(err, errlen, "frame of %zu bytes is too large", len);
        return -EMSGSIZE;
    }

    if (!wg_json_depth_ok(json, len, WG_MAP_JSON_DEPTH)) {
        snprintf(err, errlen, "frame nested deeper than %d",
                 WG_MAP_JSON_DEPTH);
        return -EPROTO;
    }

    root = json_loadb(json, len, 0, &jerr);

    if (root == NULL) {
        snprintf(err, errlen, "invalid JSON at line %d: %s", jerr.line,
                 jerr.text);
        return -EPROTO;
    }

    rc = -EPROTO;

    if (!json_is_object(root)) {
        snprintf(err, errlen, "frame is not a JSON object");
        goto done;
    }

    /* every list is checked before anything changes */
    if (!json_is_array(json_object_get(root, "Peers"))
        && json_object_get(root, "Peers") != NULL
        && !json_is_null(json_object_get(root, "Peers")))
    {
        snprintf(err, errlen, "Peers is not an array");
        goto done;
    }

    if (!json_is_array(json_object_get(root, "PeersChanged"))
        && json_object_get(root, "PeersChanged") != NULL
        && !json_is_null(json_object_get(root, "PeersChanged")))
    {
        snprintf(err, errlen, "PeersChanged is not an array");
        goto done;
    }

    if (!json_is_array(json_object_get(root, "PeersRemoved"))
        && json_object_get(root, "PeersRemoved") != NULL
        && !json_is_null(json_object_get(root, "PeersRemoved")))
    {
        snprintf(err, errlen, "PeersRemoved is not an array");
        goto done;
    }

    if (!json_is_array(json_object_get(root, "PeersChangedPatch"))
        && json_object_get(root, "PeersChangedPatch") != NULL
        && !json_is_null(json_object_get(root, "PeersChangedPatch")))
    {
        snprintf(err, errlen, "PeersChangedPatch is not an array");
        goto done;
    }

    res->keepalive = json_is_true(json_object_get(root, "KeepAlive"));

    v = json_object_get(root, "Node");

    if (v != NULL && !json_is_null(v)) {
        if (wg_map_node_parse(pm, v, &self, why, sizeof(why)) != 0) {
            wg_map_log(pm, "ignored this node's entry: %s", why);
            res->skipped++;

        } else if (pm->has_self_key
                   && memcmp(self.key, pm->self_key, WG_KEY_SIZE) != 0)
        {
            wg_map_key_format(q, self.key);
            wg_map_log(pm, "ignored this node's entry: key \"%s\" is not "
                       "this node's", q);
            res->skipped++;

        } else {
            res->self = !pm->has_self || !wg_map_node_equal(&pm->self, &self);
            pm->self = self;
            pm->has_self = 1;
        }
    }

    /* an invalid WGPath is logged and leaves the path as it was */
    v = json_object_get(root, "WGPath");

    if (v != NULL && !json_is_null(v)) {
        if (json_is_string(v)
            && wg_map_path_parse(json_string_value(v), &path) == 0)
        {
            pm->wg_path = path;

        } else {
            wg_map_quote(q, sizeof(q), json_is_string(v)
                                       ? json_string_value(v)
                                       : "(not a string)");
            wg_map_log(pm, "ignored WGPath \"%s\" (auto, direct or relay)",
                       q);
        }

    } else if (json_is_array(json_object_get(root, "Peers"))) {
        /* a full map without it: the server leaves the choice to us */
        pm->wg_path = WG_MAP_PATH_NONE;
    }

    v = json_object_get(root, "Peers");

    if (json_is_array(v)) {
        rc = wg_map_full(pm, v, res);

        if (rc != 0) {
            snprintf(err, errlen, "full map not applied: %s",
                     rc == -E2BIG ? "too many peers" : strerror(-rc));
            goto done;
        }

        res->full = 1;
        pm->has_full = 1;
    }

    v = json_object_get(root, "PeersChanged");

    if (json_is_array(v)) {
        rc = wg_map_changed(pm, v, res);

        if (rc != 0) {
            snprintf(err, errlen, "PeersChanged not applied: %s",
                     rc == -E2BIG ? "too many peers" : strerror(-rc));
            goto done;
        }
    }

    v = json_object_get(root, "PeersRemoved");

    if (json_is_array(v)) {
        wg_map_removed(pm, v, res);
    }

    v = json_object_get(root, "PeersChangedPatch");

    if (json_is_array(v)) {
        wg_map_patch(pm, v, res);
    }

    rc = 0;

done:

    json_decref(root);

    return rc;
}


/* --- the desired device ---------------------------------------------- */


/*
 * Conflicts between nodes are settled by "order": 0 is this node, i + 1
 * is peers[i] (by id).  This node, then the lowest id, wins, so that the
 * outcome depends on the table alone, not on the order frames came in.
 */

static int
wg_map_key_claim_cmp(const void *a, const void *b)
{
    int                    rc;
    const wg_map_claim_t  *ca, *cb;

    ca = a;
    cb = b;

    rc = memcmp(ca->node->key, cb->node->key, WG_KEY_SIZE);
    if (rc != 0) {
        return rc;
    }

    return (ca->order > cb->order) - (ca->order < cb->order);
}


static int
wg_map_aip_claim_cmp(const void *a, const void *b)
{
    int                    rc;
    const wg_map_claim_t  *ca, *cb;

    ca = a;
    cb = b;

    rc = wg_allowedip_cmp(&ca->aip, &cb->aip);
    if (rc != 0) {
        return rc;
    }

    return (ca->order > cb->order) - (ca->order < cb->order);
}


static int
wg_map_name_claim_cmp(const void *a, const void *b)
{
    int                    rc;
    const wg_map_claim_t  *ca, *cb;

    ca = a;
    cb = b;

    rc = strcmp(ca->node->name, cb->node->name);
    if (rc != 0) {
        return rc;
    }

    return (ca->order > cb->order) - (ca->order < cb->order);
}


static int
wg_map_peer_key_cmp(const void *a, const void *b)
{
    const wg_peer_t  *pa, *pb;

    pa = *(const wg_peer_t * const *) a;
    pb = *(const wg_peer_t * const *) b;

    return memcmp(pa->public_key, pb->public_key, WG_KEY_SIZE);
}


/* marks peers whose public key is this node's or a lower id's */

static void
wg_map_drop_keys(const wg_peermap_t *pm, wg_map_claim_t *claims,
    uint8_t *drop, int log)
{
    size_t                 i, m, first;
    const wg_map_node_t   *node;

    m = 0;

    for (i = 0; i < pm->npeers; i++) {
        node = pm->peers[i];

        if (pm->has_self_key
            && memcmp(node->key, pm->self_key, WG_KEY_SIZE) == 0)
        {
            drop[i + 1] |= WG_MAP_DROP_PEER;

            if (log) {
                wg_map_log(pm, "skipped peer %lld (%s): it has this node's "
                           "public key", (long long) node->id, node->name);
            }

            continue;
        }

        claims[m].node = node;
        claims[m].order = i + 1;
        m++;
    }

    qsort(claims, m, sizeof(wg_map_claim_t), wg_map_key_claim_cmp);

    for (i = 1, first = 0; i < m; i++) {
        if (memcmp(claims[i].node->key, claims[first].node->key,
                   WG_KEY_SIZE) != 0)
        {
            first = i;
            continue;
        }

        drop[claims[i].order] |= WG_MAP_DROP_PEER;

        if (log) {
            wg_map_log(pm, "skipped peer %lld (%s): its public key is also "
                       "peer %lld's", (long long) claims[i].node->id,
                       claims[i].node->name,
                       (long long) claims[first].node->id);
        }
    }
}


/* marks peers that claim an address this node or a lower id holds */

static void
wg_map_drop_addresses(const wg_peermap_t *pm, wg_map_claim_t *claims,
    uint8_t *drop, int log)
{
    char                   text[INET6_ADDRSTRLEN + 8];
    size_t                 i, j, m, first, naips;
    const wg_map_node_t   *node;
    const wg_allowedip_t  *aips;

    m = 0;

    if (pm->has_self) {
        for (j = 0; j < pm->self.naddrs; j++) {
            claims[m].node = &pm->self;
            claims[m].aip = pm->self.addrs[j];
            claims[m].order = 0;
            m++;
        }
    }

    for (i = 0; i < pm->npeers; i++) {
        if (drop[i + 1] & WG_MAP_DROP_PEER) {
            continue;
        }

        node = pm->peers[i];
        aips = node->nallowedips ? node->allowedips : node->addrs;
        naips = node->nallowedips ? node->nallowedips : node->naddrs;

        for (j = 0; j < naips; j++) {
            claims[m].node = node;
            claims[m].aip = aips[j];
            claims[m].order = i + 1;
            m++;
        }
    }

    qsort(claims, m, sizeof(wg_map_claim_t), wg_map_aip_claim_cmp);

    for (i = 1, first = 0; i < m; i++) {
        if (wg_allowedip_cmp(&claims[i].aip, &claims[first].aip) != 0) {
            first = i;
            continue;
        }

        if (claims[i].order == claims[first].order
            || (drop[claims[i].order] & WG_MAP_DROP_PEER))
        {
            continue;
        }

        drop[claims[i].order] |= WG_MAP_DROP_PEER;

        if (log) {
            if (wg_allowedip_format(text, sizeof(text), &claims[i].aip)
                != 0)
            {
                text[0] = '\0';
            }

            wg_map_log(pm, "skipped peer %lld (%s): %s is also %s%lld's",
                       (long long) claims[i].node->id, claims[i].node->name,
                       text, claims[first].order ? "peer " : "this node ",
                       (long long) claims[first].node->id);
        }
    }
}


/* a name held by this node or a lower id: no hosts entry for it */

static void
wg_map_drop_names(const wg_peermap_t *pm, wg_map_claim_t *claims,
    uint8_t *drop, int log)
{
    size_t  i, m, first;

    m = 0;

    if (pm->has_self) {
        claims[m].node = &pm->self;
        claims[m].order = 0;
        m++;
    }

    for (i = 0; i < pm->npeers; i++) {
        if (!(drop[i + 1] & WG_MAP_DROP_PEER)) {
            claims[m].node = pm->peers[i];
            claims[m].order = i + 1;
            m++;
        }
    }

    qsort(claims, m, sizeof(wg_map_claim_t), wg_map_name_claim_cmp);

    for (i = 1, first = 0; i < m; i++) {
        if (strcmp(claims[i].node->name, claims[first].node->name) != 0) {
            first = i;
            continue;
        }

        drop[claims[i].order] |= WG_MAP_DROP_HOST;

        if (log) {
            wg_map_log(pm, "no hosts entry for peer %lld: name \"%s\" is "
                       "also %s%lld's", (long long) claims[i].node->id,
                       claims[i].node->name,
                       claims[first].order ? "peer " : "this node ",
                       (long long) claims[first].node->id);
        }
    }
}


/*
 * The device the table asks for, and the hosts entries (self first, then
 * peers by id; they point into the table, valid until its next change).
 * A peer's endpoint is left to the device when the device already uses
 * one of the endpoints the peer announced (it may have roamed there).
 */

int
wg_peermap_desired(const wg_peermap_t *pm, const wg_device_t *actual,
    const uint8_t *private_key, uint16_t listen_port, int log,
    wg_device_t **desired, wg_host_t **hosts, size_t *nhosts,
    wg_map_desired_stats_t *stats)
{
    int                    rc, keep;
    size_t                 i, j, n, nh, naips;
    uint8_t               *drop;
    wg_peer_t             *peer, probe, *pprobe;
    wg_host_t             *h;
    wg_device_t           *dev;
    wg_map_claim_t        *claims;
    const wg_peer_t      **sorted, **found;
    const wg_map_node_t   *node;
    const wg_allowedip_t  *aips;

    *desired = NULL;
    *hosts = NULL;
    *nhosts = 0;
    memset(stats, 0, sizeof(wg_map_desired_stats_t));

    n = pm->npeers;
    rc = -ENOMEM;
    dev = NULL;
    h = NULL;
    sorted = NULL;

    drop = calloc(n + 1, 1);
    claims = calloc((n + 1) * (WG_MAP_MAX_ALLOWEDIPS + WG_MAP_MAX_ADDRS),
                    sizeof(wg_map_claim_t));
    h = calloc(n + 1, sizeof(wg_host_t));
    dev = wg_device_new(actual ? actual->name : NULL);

    if (drop == NULL || claims == NULL || h == NULL || dev == NULL) {
        goto failed;
    }

    wg_map_drop_keys(pm, claims, drop, log);
    wg_map_drop_addresses(pm, claims, drop, log);
    wg_map_drop_names(pm, claims, drop, log);

    if (actual != NULL && actual->npeers > 0) {
        sorted = calloc(actual->npeers, sizeof(wg_peer_t *));
        if (sorted == NULL) {
            goto failed;
        }

        for (i = 0; i < actual->npeers; i++) {
            sorted[i] = &actual->peers[i];
        }

        qsort(sorted, actual->npeers, sizeof(wg_peer_t *),
              wg_map_peer_key_cmp);
    }

    dev->flags = WG_DEV_HAS_PRIVATE_KEY | WG_DEV_HAS_LISTEN_PORT;
    memcpy(dev->private_key, private_key, WG_KEY_SIZE);
    dev->listen_port = listen_port;

    for (i = 0; i < n; i++) {
        if (drop[i + 1] & WG_MAP_DROP_PEER) {
            stats->dropped++;
            continue;
        }

        node = pm->peers[i];

        peer = wg_device_add_peer(dev, node->key);
        if (peer == NULL) {
            rc = -errno;
            goto failed;
        }

        aips = node->nallowedips ? node->allowedips : node->addrs;
        naips = node->nallowedips ? node->nallowedips : node->naddrs;

        for (j = 0; j < naips; j++) {
            rc = wg_peer_add_allowedip(peer, &aips[j]);
            if (rc != 0) {
                goto failed;
            }
        }

        peer->flags |= WG_PEER_REPLACE_ALLOWEDIPS | WG_PEER_HAS_KEEPALIVE;
        peer->keepalive = WG_MAP_KEEPALIVE;

        if (node->nendpoints == 0) {
            continue;
        }

        keep = 0;

        if (sorted != NULL) {
            memcpy(probe.public_key, node->key, WG_KEY_SIZE);
            pprobe = &probe;

            found = bsearch(&pprobe, sorted, actual->npeers,
                            sizeof(wg_peer_t *), wg_map_peer_key_cmp);

            for (j = 0; found != NULL && j < node->nendpoints; j++) {
                if ((*found)->endpoint.sa.sa_family != AF_UNSPEC
                    && wg_endpoint_equal(&(*found)->endpoint,
                                         &node->endpoints[j]))
                {
                    keep = 1;
                    break;
                }
            }
        }

        if (!keep) {
            peer->endpoint = node->endpoints[0];
        }
    }

    nh = 0;

    if (pm->has_self && !(drop[0] & WG_MAP_DROP_HOST)) {
        h[nh].name = pm->self.name;
        h[nh].ip = pm->self.address;
        nh++;
    }

    for (i = 0; i < n; i++) {
        if (drop[i + 1] & (WG_MAP_DROP_PEER | WG_MAP_DROP_HOST)) {
            if (!(drop[i + 1] & WG_MAP_DROP_PEER)) {
                stats->unnamed++;
            }

            continue;
        }

        h[nh].name = pm->peers[i]->name;
        h[nh].ip = pm->peers[i]->address;
        nh++;
    }

    stats->peers = dev->npeers;
    stats->hosts = nh;

    *desired = dev;
    *hosts = h;
    *nhosts = nh;

    dev = NULL;
    h = NULL;
    rc = 0;

failed:

    wg_memzero(&probe, sizeof(probe));
    free(drop);
    free(claims);
    free(sorted);
    wg_device_free(dev);
    free(h);

    return rc;
}
