/*
 * wgctl unit tests: map stream frames, the peer table (full map and each
 * kind of delta), bad entries, conflicts, and 1000 peers.
 */


#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test.h"
#include "peermap.h"


typedef struct {
    char                   *text;
    size_t                  len;
    size_t                  cap;
} test_buf_t;


typedef struct {
    size_t                  n;
    size_t                  bytes;
    char                    last[64];
} test_frames_ctx_t;


static void test_log(void *data, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void test_buf_add(test_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void test_node(test_buf_t *b, unsigned id, unsigned key,
    const char *name, const char *addr, const char *endpoint);
static int test_apply(wg_peermap_t *pm, test_buf_t *b, wg_map_result_t *res);
static wg_device_t *test_desired(wg_peermap_t *pm, const wg_device_t *actual,
    wg_host_t **hosts, size_t *nhosts);
static wg_device_t *test_device_state(wg_peermap_t *pm);
static int test_frame_cb(void *data, const char *frame, size_t len);
static void test_frames(void);
static void test_map_full(void);
static void test_map_deltas(void);
static void test_map_bad(void);
static void test_map_conflicts(void);
static void test_map_large(void);
static void test_map_relay(void);


static char      test_logbuf[8192];
static uint8_t   test_self_priv[WG_KEY_SIZE];
static uint8_t   test_self_pub[WG_KEY_SIZE];


static void
test_log(void *data, const char *fmt, ...)
{
    size_t   len;
    va_list  args;

    len = strlen(test_logbuf);

    if (len + 2 >= sizeof(test_logbuf)) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(test_logbuf + len, sizeof(test_logbuf) - len - 1, fmt, args);
    va_end(args);

    len = strlen(test_logbuf);
    test_logbuf[len] = '\n';
    test_logbuf[len + 1] = '\0';
}


static void
test_buf_add(test_buf_t *b, const char *fmt, ...)
{
    int      n;
    va_list  args;

    for ( ;; ) {
        va_start(args, fmt);
        n = vsnprintf(b->text ? b->text + b->len : NULL,
                      b->text ? b->cap - b->len : 0, fmt, args);
        va_end(args);

        if (b->text != NULL && (size_t) n < b->cap - b->len) {
            b->len += (size_t) n;
            return;
        }

        b->cap = b->cap ? b->cap * 2 : 4096;
        while (b->cap < b->len + (size_t) n + 1) {
            b->cap *= 2;
        }

        b->text = realloc(b->text, b->cap);
        if (b->text == NULL) {
            abort();
        }
    }
}


/* a node object; key n is test_key(n), 0 means this node's own key */

static void
test_node(test_buf_t *b, unsigned id, unsigned key, const char *name,
    const char *addr, const char *endpoint)
{
    char     hex[WG_KEY_HEX_LEN + 1];
    uint8_t  k[WG_KEY_SIZE];

    if (key == 0) {
        memcpy(k, test_self_pub, WG_KEY_SIZE);

    } else {
        test_key(k, key);
    }

    wg_key_to_hex(hex, k);

    test_buf_add(b, "{\"ID\":%u,\"StableID\":\"s%u\",\"Name\":\"%s\","
                 "\"Key\":\"nodekey:%s\",\"Addresses\":[\"%s/32\"],"
                 "\"AllowedIPs\":[\"%s/32\"],\"Endpoints\":[%s%s%s],"
                 "\"Online\":true,\"LastSeen\":\"2026-11-26T12:00:00Z\","
                 "\"KeyExpiry\":\"0001-01-01T00:00:00Z\","
                 "\"Hostinfo\":{\"Hostname\":\"x\"},\"User\":1}",
                 id, id, name, hex, addr, addr, endpoint ? "\"" : "",
                 endpoint ? endpoint : "", endpoint ? "\"" : "");
}


static int
test_apply(wg_peermap_t *pm, test_buf_t *b, wg_map_result_t *res)
{
    int   rc;
    char  err[256];

    err[0] = '\0';
    rc = wg_peermap_apply(pm, b->text, b->len, res, err, sizeof(err));

    if (rc != 0) {
        test_diag("apply: %s", err);
    }

    b->len = 0;

    return rc;
}


static wg_device_t *
test_desired(wg_peermap_t *pm, const wg_device_t *actual, wg_host_t **hosts,
    size_t *nhosts)
{
    wg_device_t             *dev;
    wg_map_desired_stats_t   st;

    if (wg_peermap_desired(pm, actual, test_self_priv, 41641, 1, &dev, hosts,
                           nhosts, &st)
        != 0)
    {
        return NULL;
    }

    return dev;
}


/* the device once a desired state is applied: every endpoint in place */

static wg_device_t *
test_device_state(wg_peermap_t *pm)
{
    size_t        n;
    wg_host_t    *hosts;
    wg_device_t  *dev;

    dev = test_desired(pm, NULL, &hosts, &n);
    free(hosts);

    return dev;
}


static int
test_frame_cb(void *data, const char *frame, size_t len)
{
    test_frames_ctx_t  *ctx;

    ctx = data;
    ctx->n++;
    ctx->bytes += len;
    snprintf(ctx->last, sizeof(ctx->last), "%.*s",
             (int) (len < 60 ? len : 60), frame);

    return strncmp(frame, "stop", 4) == 0 ? -ECANCELED : 0;
}


static void
test_frames(void)
{
    int                 rc;
    char                stream[256], deep[128];
    size_t              i, len;
    uint8_t             big[4];
    wg_frames_t         fr;
    test_frames_ctx_t   ctx;
    static const char  *frames[] = {
        "{\"KeepAlive\":true}", "{\"PeersRemoved\":[1]}", "{}"
    };

    len = 0;

    for (i = 0; i < 3; i++) {
        size_t  n = strlen(frames[i]);

        stream[len++] = (char) (n & 0xff);
        stream[len++] = (char) (n >> 8);
        stream[len++] = 0;
        stream[len++] = 0;
        memcpy(stream + len, frames[i], n);
        len += n;
    }

    memset(&ctx, 0, sizeof(ctx));
    wg_frames_init(&fr, WG_MAP_FRAME_MAX);
    rc = wg_frames_feed(&fr, stream, len, test_frame_cb, &ctx);
    ok(rc == 0 && ctx.n == 3 && strcmp(ctx.last, "{}") == 0,
       "frames: three frames in one read");

    memset(&ctx, 0, sizeof(ctx));

    for (i = 0, rc = 0; i < len && rc == 0; i++) {
        rc = wg_frames_feed(&fr, stream + i, 1, test_frame_cb, &ctx);
    }

    ok(rc == 0 && ctx.n == 3 && ctx.bytes == len - 12
       && fr.body == NULL && fr.head_len == 0,
       "frames: the same stream byte by byte");

    memset(&ctx, 0, sizeof(ctx));
    rc = wg_frames_feed(&fr, stream, 7, test_frame_cb, &ctx);
    rc |= wg_frames_feed(&fr, stream + 7, len - 7, test_frame_cb, &ctx);
    ok(rc == 0 && ctx.n == 3, "frames: split inside a frame");

    big[0] = (WG_MAP_FRAME_MAX + 1) & 0xff;
    big[1] = ((WG_MAP_FRAME_MAX + 1) >> 8) & 0xff;
    big[2] = ((WG_MAP_FRAME_MAX + 1) >> 16) & 0xff;
    big[3] = ((WG_MAP_FRAME_MAX + 1) >> 24) & 0xff;
    rc = wg_frames_feed(&fr, big, 4, test_frame_cb, &ctx);
    ok(rc == -EMSGSIZE, "frames: 8 MiB + 1 is refused before any copy");
    wg_frames_free(&fr);

    big[0] = WG_MAP_FRAME_MAX & 0xff;
    big[1] = (WG_MAP_FRAME_MAX >> 8) & 0xff;
    big[2] = (WG_MAP_FRAME_MAX >> 16) & 0xff;
    big[3] = (WG_MAP_FRAME_MAX >> 24) & 0xff;
    ok(wg_frames_feed(&fr, big, 4, test_frame_cb, &ctx) == 0
       && fr.body_len == WG_MAP_FRAME_MAX,
       "frames: exactly 8 MiB is accepted");
    wg_frames_free(&fr);

    memset(big, 0, sizeof(big));
    ok(wg_frames_feed(&fr, big, 4, test_frame_cb, &ctx) == -EPROTO,
       "frames: an empty frame is a protocol error");
    wg_frames_free(&fr);

    memcpy(stream, "\x04\0\0\0stop\x02\0\0\0{}", 14);
    memset(&ctx, 0, sizeof(ctx));
    ok(wg_frames_feed(&fr, stream, 14, test_frame_cb, &ctx) == -ECANCELED
       && ctx.n == 1, "frames: the handler's error stops the feed");
    wg_frames_free(&fr);

    memset(deep, '[', 32);
    memset(deep + 32, ']', 32);
    ok(wg_json_depth_ok(deep, 64, WG_MAP_JSON_DEPTH),
       "json depth: 32 levels pass");

    memset(deep, '{', 33);
    ok(!wg_json_depth_ok(deep, 33, WG_MAP_JSON_DEPTH),
       "json depth: 33 levels are refused");

    snprintf(deep, sizeof(deep), "{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
             "[[[[[[\\\"[[\"}");
    ok(wg_json_depth_ok(deep, strlen(deep), WG_MAP_JSON_DEPTH),
       "json depth: brackets in strings do not count");
}


static void
test_map_full(void)
{
    int               rc;
    size_t            nhosts;
    uint8_t           k[WG_KEY_SIZE];
    wg_host_t        *hosts;
    test_buf_t        b;
    wg_peer_t        *p;
    wg_device_t      *dev;
    wg_peermap_t      pm;
    wg_allowedip_t    prefix;
    wg_map_result_t   res;

    memset(&b, 0, sizeof(b));
    wg_allowedip_parse(&prefix, "100.128.0.0/10");
    wg_peermap_init(&pm, &prefix, test_self_pub, test_log, NULL);

    test_buf_add(&b, "{\"Node\":");
    test_node(&b, 1, 0, "self.dstack.internal.", "100.128.0.1", NULL);
    test_buf_add(&b, ",\"Peers\":[");
    test_node(&b, 3, 3, "node3.dstack.internal.", "100.128.0.3",
              "10.0.0.3:41641");
    test_buf_add(&b, ",");
    test_node(&b, 2, 2, "node2.dstack.internal", "100.128.0.2",
              "10.0.0.2:41641");
    test_buf_add(&b, "],\"DNSConfig\":{\"Domains\":[\"dstack.internal\"],"
                 "\"Routes\":{}},\"Domain\":\"dstack.internal\","
                 "\"ControlTime\":\"2026-11-26T12:00:00Z\"}");

    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.full && res.self && res.added == 2 && res.skipped == 0
       && pm.npeers == 2 && pm.peers[0]->id == 2,
       "full map: self and two peers, sorted by id");

    ok(strcmp(pm.self.name, "self") == 0
       && strcmp(pm.self.address, "100.128.0.1") == 0
       && strcmp(pm.peers[1]->name, "node3") == 0,
       "full map: names without the domain, addresses");

    hosts = NULL;
    dev = test_desired(&pm, NULL, &hosts, &nhosts);
    ok(dev != NULL && dev->npeers == 2 && nhosts == 3
       && strcmp(hosts[0].name, "self") == 0
       && strcmp(hosts[0].ip, "100.128.0.1") == 0
       && strcmp(hosts[1].name, "node2") == 0
       && strcmp(hosts[2].ip, "100.128.0.3") == 0,
       "desired: two peers; hosts self first, then by id");

    test_key(k, 2);
    p = dev ? wg_device_find_peer(dev, k) : NULL;
    ok(p != NULL && p->nallowedips == 1 && p->allowedips[0].cidr == 32
       && p->keepalive == 25 && (p->flags & WG_PEER_HAS_KEEPALIVE)
       && p->endpoint.sin.sin_port == htons(41641)
       && (dev->flags & WG_DEV_HAS_PRIVATE_KEY) && dev->listen_port == 41641
       && memcmp(dev->private_key, test_self_priv, WG_KEY_SIZE) == 0,
       "desired: key, port, allowed IPs, endpoint, keepalive 25");

    /* the device already uses an announced endpoint: leave it alone */
    p->endpoint.sin.sin_port = htons(41641);
    {
        wg_device_t  *again;
        wg_host_t    *h2;
        size_t        n2;

        again = test_desired(&pm, dev, &h2, &n2);
        p = again ? wg_device_find_peer(again, k) : NULL;
        ok(p != NULL && p->endpoint.sa.sa_family == AF_UNSPEC,
           "desired: an endpoint the device already uses is not re-sent");
        wg_device_free(again);
        free(h2);
    }

    {
        wg_device_t      *again, *ch;
        wg_host_t        *h2;
        size_t            n2;
        wg_diff_stats_t   st;

        again = test_desired(&pm, dev, &h2, &n2);
        ok(again != NULL && wg_diff(dev, again, &ch, &st) == 0
           && wg_device_is_noop(ch) && st.unchanged == 2,
           "desired against itself: nothing to send");
        wg_device_free(ch);
        wg_device_free(again);
        free(h2);
    }

    wg_device_free(dev);
    free(hosts);

    /* a second full map replaces the table */
    test_buf_add(&b, "{\"Peers\":[");
    test_node(&b, 4, 4, "node4.dstack.internal.", "100.128.0.4",
              "10.0.0.4:41641");
    test_buf_add(&b, ",");
    test_node(&b, 2, 2, "node2.dstack.internal.", "100.128.0.22",
              "10.0.0.2:41641");
    test_buf_add(&b, "]}");

    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.full && !res.self && res.added == 1
       && res.changed == 1 && res.removed == 1 && pm.npeers == 2
       && pm.peers[1]->id == 4 && pm.has_self,
       "full map again: 1 added, 1 changed, 1 removed; self kept");

    test_buf_add(&b, "{\"Peers\":[]}");
    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.removed == 2 && pm.npeers == 0,
       "an empty full map removes every peer");

    wg_peermap_free(&pm);
    free(b.text);
}


static void
test_map_deltas(void)
{
    int                rc;
    size_t             nhosts, i;
    uint8_t            k[WG_KEY_SIZE];
    wg_host_t         *hosts;
    test_buf_t         b;
    wg_peer_t         *p;
    wg_device_t       *before, *after, *ch;
    wg_peermap_t       pm;
    wg_allowedip_t     prefix;
    wg_map_result_t    res;
    wg_diff_stats_t    st;

    memset(&b, 0, sizeof(b));
    wg_allowedip_parse(&prefix, "100.128.0.0/10");
    wg_peermap_init(&pm, &prefix, test_self_pub, test_log, NULL);

    test_buf_add(&b, "{\"Node\":");
    test_node(&b, 1, 0, "self", "100.128.0.1", NULL);
    test_buf_add(&b, ",\"Peers\":[");

    for (i = 2; i <= 10; i++) {
        char  name[16], addr[32], ep[32];

        snprintf(name, sizeof(name), "n%zu", i);
        snprintf(addr, sizeof(addr), "100.128.0.%zu", i);
        snprintf(ep, sizeof(ep), "10.0.0.%zu:41641", i);
        test_buf_add(&b, "%s", i > 2 ? "," : "");
        test_node(&b, (unsigned) i, (unsigned) i, name, addr, ep);
    }

    test_buf_add(&b, "]}");
    rc = test_apply(&pm, &b, &res);
    before = test_desired(&pm, NULL, &hosts, &nhosts);
    free(hosts);
    ok(rc == 0 && before != NULL && before->npeers == 9,
       "deltas: a full map of 9 peers");

    /* PeersChanged: one new, one changed endpoint, one unchanged */
    test_buf_add(&b, "{\"PeersChanged\":[");
    test_node(&b, 11, 11, "n11", "100.128.0.11", "10.0.0.11:41641");
    test_buf_add(&b, ",");
    test_node(&b, 5, 5, "n5", "100.128.0.5", "10.0.0.55:41641");
    test_buf_add(&b, ",");
    test_node(&b, 6, 6, "n6", "100.128.0.6", "10.0.0.6:41641");
    test_buf_add(&b, "]}");

    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && !res.full && res.added == 1 && res.changed == 1
       && res.removed == 0 && pm.npeers == 10,
       "PeersChanged: 1 added, 1 changed, 1 the same");

    after = test_desired(&pm, before, &hosts, &nhosts);
    rc = wg_diff(before, after, &ch, &st);
    ok(rc == 0 && st.added == 1 && st.changed == 1 && st.removed == 0
       && st.unchanged == 8 && ch->npeers == 2 && nhosts == 11,
       "PeersChanged: the device change set holds just those two");

    test_key(k, 5);
    p = wg_device_find_peer(ch, k);
    ok(p != NULL && p->endpoint.sin.sin_family == AF_INET
       && p->nallowedips == 0 && !(p->flags & WG_PEER_REPLACE_ALLOWEDIPS),
       "PeersChanged: only the endpoint of the changed peer is sent");

    wg_device_free(ch);
    wg_device_free(before);
    wg_device_free(after);
    free(hosts);
    before = test_device_state(&pm);

    /* PeersRemoved, with an unknown id and a non-id */
    test_buf_add(&b, "{\"PeersRemoved\":[3, 4, 999, \"x\"]}");
    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.removed == 2 && res.skipped == 1 && pm.npeers == 8
       && pm.peers[0]->id == 2 && pm.peers[1]->id == 5,
       "PeersRemoved: two removed, unknown ignored, non-id skipped");

    after = test_desired(&pm, before, &hosts, &nhosts);
    rc = wg_diff(before, after, &ch, &st);
    ok(rc == 0 && st.removed == 2 && st.added == 0 && st.changed == 0
       && ch->npeers == 2 && (ch->peers[0].flags & WG_PEER_REMOVE)
       && nhosts == 9,
       "PeersRemoved: two removals on the device, hosts shrink");

    wg_device_free(ch);
    wg_device_free(before);
    wg_device_free(after);
    free(hosts);
    before = test_device_state(&pm);

    /* PeersChangedPatch */
    test_buf_add(&b, "{\"PeersChangedPatch\":["
                 "{\"NodeID\":7,\"Endpoints\":[\"10.9.9.7:5000\"],"
                 "\"Online\":false,\"LastSeen\":\"2026-11-26T13:00:00Z\"},"
                 "{\"NodeID\":8,\"Online\":false},"
                 "{\"NodeID\":4242,\"Online\":true},"
                 "{\"NodeID\":9,\"Key\":\"nodekey:zz\"},"
                 "{\"Online\":true}]}");
    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.patched == 2 && res.skipped == 3,
       "PeersChangedPatch: 2 applied; unknown, bad key, no id skipped");

    ok(pm.peers[3]->id == 7 && !pm.peers[3]->online
       && strcmp(pm.peers[3]->last_seen, "2026-11-26T13:00:00Z") == 0
       && pm.peers[3]->nendpoints == 1 && !pm.peers[4]->online
       && pm.peers[4]->nendpoints == 1 && pm.peers[2]->online,
       "PeersChangedPatch: endpoint, online, last seen");

    after = test_desired(&pm, before, &hosts, &nhosts);
    rc = wg_diff(before, after, &ch, &st);
    ok(rc == 0 && st.changed == 1 && ch->npeers == 1
       && ntohs(ch->peers[0].endpoint.sin.sin_port) == 5000,
       "PeersChangedPatch: only the new endpoint reaches the device");

    wg_device_free(ch);
    wg_device_free(before);
    wg_device_free(after);
    free(hosts);
    before = test_device_state(&pm);

    /* KeepAlive changes nothing */
    test_buf_add(&b, "{\"KeepAlive\":true}");
    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.keepalive && !res.full && res.added == 0
       && res.removed == 0 && res.patched == 0 && pm.npeers == 8,
       "KeepAlive: nothing changes");

    /* one frame with every delta kind */
    test_buf_add(&b, "{\"PeersChanged\":[");
    test_node(&b, 20, 20, "n20", "100.128.0.20", NULL);
    test_buf_add(&b, "],\"PeersRemoved\":[20, 2],"
                 "\"PeersChangedPatch\":[{\"NodeID\":5,\"Online\":false}]}");
    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.added == 1 && res.removed == 2 && res.patched == 1
       && pm.npeers == 7 && pm.peers[0]->id == 5,
       "one frame with all deltas: changed, then removed, then patched");

    /* the same new id twice in one frame: the later entry wins */
    test_buf_add(&b, "{\"PeersChanged\":[");
    test_node(&b, 30, 30, "first", "100.128.0.30", NULL);
    test_buf_add(&b, ",");
    test_node(&b, 30, 30, "second", "100.128.0.30", NULL);
    test_buf_add(&b, "]}");
    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.added == 1 && pm.npeers == 8
       && strcmp(pm.peers[7]->name, "second") == 0,
       "a repeated new id in one frame counts once, the later wins");

    wg_device_free(before);
    wg_peermap_free(&pm);
    free(b.text);
}


static void
test_map_bad(void)
{
    int               rc;
    char              err[256], hex[WG_KEY_HEX_LEN + 1];
    size_t            nhosts;
    uint8_t           k[WG_KEY_SIZE];
    wg_host_t        *hosts;
    test_buf_t        b;
    wg_device_t      *dev;
    wg_peermap_t      pm;
    wg_allowedip_t    prefix;
    wg_map_result_t   res;

    memset(&b, 0, sizeof(b));
    wg_allowedip_parse(&prefix, "100.128.0.0/10");
    wg_peermap_init(&pm, &prefix, test_self_pub, test_log, NULL);
    test_logbuf[0] = '\0';

    test_key(k, 9);
    wg_key_to_hex(hex, k);

    test_buf_add(&b, "{\"Peers\":[");
    test_node(&b, 2, 2, "good", "100.128.0.2", "10.0.0.2:1");
    test_buf_add(&b, ",{\"ID\":3,\"Name\":\"badkey\",\"Key\":\"nodekey:12\","
                 "\"Addresses\":[\"100.128.0.3/32\"]}");
    test_buf_add(&b, ",");
    test_node(&b, 4, 4, "outside", "10.1.2.3", NULL);
    test_buf_add(&b, ",");
    test_node(&b, 5, 5, "Bad_Name", "100.128.0.5", NULL);
    test_buf_add(&b, ",{\"Name\":\"noid\",\"Key\":\"nodekey:%s\","
                 "\"Addresses\":[\"100.128.0.6/32\"]}", hex);
    test_buf_add(&b, ",42,\"str\",null");
    test_buf_add(&b, ",{\"ID\":7,\"Name\":\"wide\",\"Key\":\"nodekey:%s\","
                 "\"Addresses\":[\"100.128.0.0/24\"]}", hex);
    test_buf_add(&b, ",{\"ID\":8,\"Name\":\"route\",\"Key\":\"nodekey:%s\","
                 "\"Addresses\":[\"100.128.0.8/32\"],"
                 "\"AllowedIPs\":[\"0.0.0.0/0\"]}", hex);
    test_buf_add(&b, ",{\"ID\":9,\"Name\":\"noaddr\",\"Key\":\"nodekey:%s\","
                 "\"Addresses\":[]}", hex);
    test_buf_add(&b, ",{\"ID\":10,\"Name\":\"eps\",\"Key\":\"nodekey:%s\","
                 "\"Addresses\":[\"100.128.0.10/32\"],"
                 "\"Endpoints\":[\"nonsense\", 5, \"10.0.0.10:7\"]}", hex);
    test_buf_add(&b, ",{\"ID\":11,\"Name\":\"zero\",\"Key\":\"nodekey:%064d\","
                 "\"Addresses\":[\"100.128.0.11/32\"]}", 0);
    test_buf_add(&b, ",{\"ID\":-4,\"Name\":\"neg\",\"Key\":\"nodekey:%s\","
                 "\"Addresses\":[\"100.128.0.12/32\"]}", hex);
    test_key(k, 12);
    wg_key_to_hex(hex, k);
    test_buf_add(&b, ",{\"ID\":12,\"Name\":\"minimal\",\"Key\":\"nodekey:%s\","
                 "\"Addresses\":[\"100.128.0.12/32\"]}", hex);
    test_buf_add(&b, "]}");

    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && pm.npeers == 3 && res.added == 3 && res.skipped == 12,
       "bad peers: 12 skipped, the 3 good ones kept");

    ok(pm.peers[0]->id == 2 && pm.peers[1]->id == 10
       && pm.peers[1]->nendpoints == 1,
       "bad peers: unparsable endpoints dropped alone");

    ok(pm.peers[2]->id == 12 && pm.peers[2]->nendpoints == 0
       && pm.peers[2]->nallowedips == 0 && pm.peers[2]->online,
       "a node with only ID, Name, Key and Addresses is valid");

    ok(strstr(test_logbuf, "skipped peer 3: invalid key \"nodekey:12\"")
       && strstr(test_logbuf, "skipped peer 4: Addresses entry "
                 "\"10.1.2.3/32\" is outside the VPC prefix")
       && strstr(test_logbuf, "skipped peer 5: invalid name \"Bad_Name\"")
       && strstr(test_logbuf, "skipped peer #4 of Peers: missing or invalid "
                 "ID")
       && strstr(test_logbuf, "skipped peer 7: invalid Addresses entry")
       && strstr(test_logbuf, "skipped peer 8: AllowedIPs entry "
                 "\"0.0.0.0/0\" is outside")
       && strstr(test_logbuf, "skipped peer 9: no Addresses")
       && strstr(test_logbuf, "skipped peer 11: invalid key"),
       "bad peers: one log line each, quoting the value");

    dev = test_desired(&pm, NULL, &hosts, &nhosts);
    ok(dev != NULL && dev->npeers == 3 && nhosts == 3
       && dev->peers[2].nallowedips == 1
       && dev->peers[2].allowedips[0].cidr == 32,
       "bad peers: the device gets the good ones (Addresses as allowed IPs)");
    wg_device_free(dev);
    free(hosts);

    /* an entry that turns bad removes the stale one */
    test_logbuf[0] = '\0';
    test_buf_add(&b, "{\"PeersChanged\":[");
    test_node(&b, 2, 2, "good", "192.168.0.2", NULL);
    test_buf_add(&b, "]}");
    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && res.skipped == 1 && res.removed == 1 && pm.npeers == 2
       && strstr(test_logbuf, "its old entry removed"),
       "PeersChanged: a peer whose update is invalid is removed");

    /* this node's entry with someone else's key is ignored */
    test_buf_add(&b, "{\"Node\":");
    test_node(&b, 1, 77, "self", "100.128.0.1", NULL);
    test_buf_add(&b, "}");
    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && !pm.has_self && res.skipped == 1
       && strstr(test_logbuf, "is not this node's"),
       "Node with another key is ignored");

    /* protocol errors: the frame is refused whole, the table unchanged */
    rc = wg_peermap_apply(&pm, "{\"Peers\":[", 10, &res, err, sizeof(err));
    ok(rc == -EPROTO && strstr(err, "invalid JSON") && pm.npeers == 2,
       "truncated JSON: protocol error, table unchanged");

    rc = wg_peermap_apply(&pm, "[1,2]", 5, &res, err, sizeof(err));
    ok(rc == -EPROTO && strstr(err, "not a JSON object"),
       "a JSON array frame: protocol error");

    rc = wg_peermap_apply(&pm, "{\"Peers\":{}}", 12, &res, err, sizeof(err));
    ok(rc == -EPROTO && strstr(err, "Peers is not an array")
       && pm.npeers == 2, "Peers not an array: protocol error");

    rc = wg_peermap_apply(&pm, "{\"PeersChanged\":[],\"PeersRemoved\":7}", 36,
                          &res, err, sizeof(err));
    ok(rc == -EPROTO && strstr(err, "PeersRemoved"),
       "PeersRemoved not an array: nothing applied");

    {
        char  deep[200];

        memset(deep, '[', 40);
        snprintf(deep, sizeof(deep), "{\"Peers\":%.*s", 40,
                 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[");
        rc = wg_peermap_apply(&pm, deep, strlen(deep), &res, err,
                              sizeof(err));
        ok(rc == -EPROTO && strstr(err, "deeper than 32"),
           "JSON nested too deep: refused before parsing");
    }

    rc = wg_peermap_apply(&pm, "{}", WG_MAP_FRAME_MAX + 1, &res, err,
                          sizeof(err));
    ok(rc == -EMSGSIZE, "a frame above 8 MiB is refused");

    wg_peermap_free(&pm);
    free(b.text);
}


static void
test_map_conflicts(void)
{
    int               rc;
    size_t            nhosts;
    wg_host_t        *hosts;
    test_buf_t        b;
    wg_device_t      *dev;
    wg_peermap_t      pm;
    wg_allowedip_t    prefix;
    wg_map_result_t   res;

    memset(&b, 0, sizeof(b));
    wg_allowedip_parse(&prefix, "100.128.0.0/10");
    wg_peermap_init(&pm, &prefix, test_self_pub, test_log, NULL);
    test_logbuf[0] = '\0';

    test_buf_add(&b, "{\"Node\":");
    test_node(&b, 1, 0, "self", "100.128.0.1", NULL);
    test_buf_add(&b, ",\"Peers\":[");
    test_node(&b, 9, 5, "late", "100.128.0.9", NULL);      /* key of 5 */
    test_buf_add(&b, ",");
    test_node(&b, 5, 5, "early", "100.128.0.5", NULL);
    test_buf_add(&b, ",");
    test_node(&b, 6, 0, "mine", "100.128.0.6", NULL);      /* self key */
    test_buf_add(&b, ",");
    test_node(&b, 7, 7, "addr", "100.128.0.1", NULL);      /* self addr */
    test_buf_add(&b, ",");
    test_node(&b, 8, 8, "a8", "100.128.0.5", NULL);        /* 5's addr */
    test_buf_add(&b, ",");
    test_node(&b, 10, 10, "early", "100.128.0.10", NULL);  /* 5's name */
    test_buf_add(&b, ",");
    test_node(&b, 11, 11, "self", "100.128.0.11", NULL);   /* self name */
    test_buf_add(&b, "]}");

    rc = test_apply(&pm, &b, &res);
    ok(rc == 0 && pm.npeers == 7, "conflicts: all seven are in the table");

    dev = test_desired(&pm, NULL, &hosts, &nhosts);
    ok(dev != NULL && dev->npeers == 3 && nhosts == 2
       && strcmp(hosts[0].name, "self") == 0
       && strcmp(hosts[1].name, "early") == 0
       && strcmp(hosts[1].ip, "100.128.0.5") == 0,
       "conflicts: 5, 10, 11 on the device; only self and 5 named");

    ok(strstr(test_logbuf, "skipped peer 9 (late): its public key is also "
              "peer 5's")
       && strstr(test_logbuf, "skipped peer 6 (mine): it has this node's "
                 "public key")
       && strstr(test_logbuf, "skipped peer 7 (addr): 100.128.0.1/32 is "
                 "also this node 1's")
       && strstr(test_logbuf, "skipped peer 8 (a8): 100.128.0.5/32 is also "
                 "peer 5's")
       && strstr(test_logbuf, "no hosts entry for peer 10: name \"early\"")
       && strstr(test_logbuf, "no hosts entry for peer 11: name \"self\""),
       "conflicts: the lower id (or this node) wins, each logged");

    wg_device_free(dev);
    free(hosts);
    wg_peermap_free(&pm);
    free(b.text);
}


static void
test_map_large(void)
{
    int                rc;
    char               name[16], addr[32], ep[32];
    size_t             nhosts, i;
    double             ms;
    wg_host_t         *hosts;
    test_buf_t         b;
    wg_device_t       *before, *after, *ch;
    wg_peermap_t       pm;
    struct timespec    t0, t1;
    wg_allowedip_t     prefix;
    wg_map_result_t    res;
    wg_diff_stats_t    st;

    memset(&b, 0, sizeof(b));
    wg_allowedip_parse(&prefix, "100.128.0.0/10");
    wg_peermap_init(&pm, &prefix, test_self_pub, test_log, NULL);

    test_buf_add(&b, "{\"Node\":");
    test_node(&b, 1, 0, "self", "100.128.0.1", NULL);
    test_buf_add(&b, ",\"Peers\":[");

    /* in reverse order: the table sorts */
    for (i = 1001; i >= 2; i--) {
        snprintf(name, sizeof(name), "n%zu", i);
        snprintf(addr, sizeof(addr), "100.128.%zu.%zu", i >> 8, i & 0xff);
        snprintf(ep, sizeof(ep), "10.1.%zu.%zu:41641", i >> 8, i & 0xff);
        test_buf_add(&b, "%s", i < 1001 ? "," : "");
        test_node(&b, (unsigned) i, (unsigned) i, name, addr, ep);
    }

    test_buf_add(&b, "]}");
    test_diag("full map of 1000 peers: %zu bytes", b.len);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = test_apply(&pm, &b, &res);
    before = test_desired(&pm, NULL, &hosts, &nhosts);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(hosts);

    ms = (double) (t1.tv_sec - t0.tv_sec) * 1e3
         + (double) (t1.tv_nsec - t0.tv_nsec) / 1e6;
    test_diag("1000 peers: apply + desired in %.1f ms", ms);

    ok(rc == 0 && res.added == 1000 && before != NULL
       && before->npeers == 1000 && pm.peers[0]->id == 2
       && pm.peers[999]->id == 1001,
       "1000 peers: full map applied, sorted");

    test_buf_add(&b, "{\"PeersChanged\":[");
    test_node(&b, 500, 500, "n500", "100.128.1.244", "10.99.0.1:41641");
    test_buf_add(&b, "]}");

    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = test_apply(&pm, &b, &res);
    after = test_desired(&pm, before, &hosts, &nhosts);
    rc |= wg_diff(before, after, &ch, &st);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    ms = (double) (t1.tv_sec - t0.tv_sec) * 1e3
         + (double) (t1.tv_nsec - t0.tv_nsec) / 1e6;
    test_diag("1000 peers: one delta, desired and diff in %.1f ms", ms);

    ok(rc == 0 && res.changed == 1 && st.changed == 1 && st.unchanged == 999
       && ch->npeers == 1 && nhosts == 1001,
       "1000 peers: one changed peer is one change on the device");

    wg_device_free(ch);
    wg_device_free(after);
    free(hosts);

    test_buf_add(&b, "{\"PeersRemoved\":[");
    for (i = 2; i <= 1001; i += 2) {
        test_buf_add(&b, "%s%zu", i > 2 ? "," : "", i);
    }
    test_buf_add(&b, "]}");

    rc = test_apply(&pm, &b, &res);
    after = test_desired(&pm, before, &hosts, &nhosts);
    rc |= wg_diff(before, after, &ch, &st);
    ok(rc == 0 && res.removed == 500 && pm.npeers == 500
       && st.removed == 500 && st.unchanged == 500 && st.changed == 0
       && ch->npeers == 500,
       "1000 peers: 500 removed in one frame");

    wg_device_free(ch);
    wg_device_free(after);
    wg_device_free(before);
    free(hosts);
    wg_peermap_free(&pm);
    free(b.text);
}


/* AppID, InstanceID per node and the map's WGPath (docs/wg-relay.md) */

static void
test_map_relay(void)
{
    char              hex[WG_KEY_HEX_LEN + 1];
    uint8_t           k[WG_KEY_SIZE];
    test_buf_t        b;
    wg_peermap_t      pm;
    wg_allowedip_t    prefix;
    wg_map_result_t   res;
    wg_map_path_e     path;

    static const char  *app = "5bb4ff9a38375bb4ff9a38375bb4ff9a38375bb4";

    memset(&b, 0, sizeof(b));
    wg_allowedip_parse(&prefix, "100.128.0.0/10");
    wg_peermap_init(&pm, &prefix, test_self_pub, test_log, NULL);
    test_logbuf[0] = '\0';

#define TEST_RELAY_NODE(id, extra)                                            \
    test_key(k, id);                                                          \
    wg_key_to_hex(hex, k);                                                    \
    test_buf_add(&b, "{\"ID\":%d,\"Name\":\"n%d.dstack.internal\","          \
                 "\"Key\":\"nodekey:%s\",\"Addresses\":"                     \
                 "[\"100.128.0.%d/32\"]%s}", id, id, hex, id, extra)

    test_buf_add(&b, "{\"WGPath\":\"relay\",\"Peers\":[");
    TEST_RELAY_NODE(1, ",\"AppID\":\"5bb4ff9a38375bb4ff9a38375bb4ff9a3837"
                    "5bb4\",\"InstanceID\":\"c0ffee\"");
    test_buf_add(&b, ",");
    TEST_RELAY_NODE(2, ",\"AppID\":\"\",\"InstanceID\":null");
    test_buf_add(&b, ",");
    TEST_RELAY_NODE(3, ",\"AppID\":\"5bb4ff9a3837\"");
    test_buf_add(&b, ",");
    TEST_RELAY_NODE(4, ",\"AppID\":\"zzb4ff9a38375bb4ff9a38375bb4ff9a3837"
                    "5bb4\"");
    test_buf_add(&b, ",");
    TEST_RELAY_NODE(5, ",\"AppID\":7");
    test_buf_add(&b, ",");
    TEST_RELAY_NODE(6, ",\"InstanceID\":\"c0ffee-1\"");
    test_buf_add(&b, ",");
    TEST_RELAY_NODE(7, "");
    test_buf_add(&b, "]}");

    ok(test_apply(&pm, &b, &res) == 0 && res.full && pm.npeers == 3
       && res.skipped == 4, "relay map: bad AppID/InstanceID skip the node");

    ok(pm.npeers == 3 && pm.peers[0]->id == 1
       && strcmp(pm.peers[0]->app, app) == 0
       && strcmp(pm.peers[0]->instance, "c0ffee") == 0,
       "relay map: AppID and InstanceID kept");

    ok(pm.npeers == 3 && pm.peers[1]->app[0] == '\0'
       && pm.peers[1]->instance[0] == '\0' && pm.peers[2]->id == 7
       && pm.peers[2]->app[0] == '\0',
       "relay map: empty, null and absent are none");

    ok(strstr(test_logbuf, "skipped peer 3: invalid AppID \"5bb4ff9a3837\"")
       != NULL
       && strstr(test_logbuf, "skipped peer 6: invalid InstanceID "
                 "\"c0ffee-1\"") != NULL,
       "relay map: the skip is logged with the value");

    ok(pm.wg_path == WG_MAP_PATH_RELAY, "relay map: WGPath relay");

    /* a delta changing the AppID is a change */
    test_buf_add(&b, "{\"PeersChanged\":[");
    TEST_RELAY_NODE(7, ",\"AppID\":\"5bb4ff9a38375bb4ff9a38375bb4ff9a3837"
                    "5bb4\"");
    test_buf_add(&b, "]}");

    ok(test_apply(&pm, &b, &res) == 0 && res.changed == 1
       && strcmp(pm.peers[2]->app, app) == 0
       && pm.wg_path == WG_MAP_PATH_RELAY,
       "relay map: a delta sets the AppID; WGPath stays");

    /* an invalid WGPath: logged, the last one stays */
    test_logbuf[0] = '\0';
    test_buf_add(&b, "{\"WGPath\":\"udp\",\"Peers\":[]}");

    ok(test_apply(&pm, &b, &res) == 0 && pm.wg_path == WG_MAP_PATH_RELAY
       && strstr(test_logbuf, "ignored WGPath \"udp\"") != NULL,
       "relay map: an invalid WGPath is logged and ignored");

    test_buf_add(&b, "{\"WGPath\":\"direct\",\"Peers\":[]}");
    ok(test_apply(&pm, &b, &res) == 0 && pm.wg_path == WG_MAP_PATH_DIRECT,
       "relay map: WGPath direct");

    test_buf_add(&b, "{\"Peers\":[]}");
    ok(test_apply(&pm, &b, &res) == 0 && pm.wg_path == WG_MAP_PATH_NONE,
       "relay map: a full map without WGPath leaves the choice to the node");

    ok(wg_map_path_parse("auto", &path) == 0 && path == WG_MAP_PATH_AUTO
       && wg_map_path_parse("Relay", &path) != 0
       && strcmp(wg_map_path_name(WG_MAP_PATH_DIRECT), "direct") == 0,
       "relay map: path names");

#undef TEST_RELAY_NODE

    free(b.text);
    wg_peermap_free(&pm);
}


void
test_peermap(void)
{
    char            name[16];
    uint8_t         k[WG_KEY_SIZE];
    wg_allowedip_t  prefix, aip;

    memset(test_self_priv, 0x11, WG_KEY_SIZE);
    wg_key_clamp(test_self_priv, test_self_priv);
    wg_key_public(test_self_pub, test_self_priv);

    wg_allowedip_parse(&prefix, "100.128.0.0/10");
    wg_allowedip_parse(&aip, "100.191.255.255/32");
    ok(wg_map_prefix_contains(&prefix, &aip), "prefix: last address inside");
    wg_allowedip_parse(&aip, "100.192.0.0/32");
    ok(!wg_map_prefix_contains(&prefix, &aip), "prefix: next one outside");
    wg_allowedip_parse(&aip, "100.0.0.0/8");
    ok(!wg_map_prefix_contains(&prefix, &aip), "prefix: a wider one outside");

    ok(wg_map_name_parse(name, sizeof(name), "db-1.dstack.internal.") == 0
       && strcmp(name, "db-1") == 0
       && wg_map_name_parse(name, sizeof(name), "db-1") == 0
       && wg_map_name_parse(name, sizeof(name), "a.b.dstack.internal") != 0
       && wg_map_name_parse(name, sizeof(name), ".dstack.internal") != 0
       && wg_map_name_parse(name, sizeof(name), "x.example.com") != 0
       && wg_map_name_parse(name, sizeof(name), "") != 0,
       "names: <label>.dstack.internal[.] or a bare label");

    ok(wg_map_key_parse(k, "nodekey:000000000000000000000000000000000000"
                        "0000000000000000000000000001") == 0
       && k[31] == 1
       && wg_map_key_parse(k, "0000000000000000000000000000000000000000"
                           "000000000000000000000001") != 0
       && wg_map_key_parse(k, "nodekey:" "0000") != 0,
       "keys: nodekey:<64 hex>");

    test_frames();
    test_map_full();
    test_map_deltas();
    test_map_bad();
    test_map_conflicts();
    test_map_large();
    test_map_relay();
}
