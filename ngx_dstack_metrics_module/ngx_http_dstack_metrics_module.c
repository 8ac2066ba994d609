
/*
 * ngx_http_dstack_metrics_module: owns the "dstack_metrics" shared-memory
 * zone the other dstack modules count into (ngx_dstack_metrics.h) and
 * serves it in the Prometheus text format from "dstack_metrics;" in a
 * location (docs/metrics.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_dstack_metrics.h"


/* room kept free in an output buffer: the longest line is well below */
#define NGX_HTTP_DSTACK_METRICS_LINE   512
#define NGX_HTTP_DSTACK_METRICS_CHUNK  16384


typedef struct {
    ngx_shm_zone_t             *zone;
} ngx_http_dstack_metrics_main_conf_t;


typedef struct {
    ngx_http_request_t         *request;
    ngx_chain_t                *out;
    ngx_chain_t               **last;
    ngx_buf_t                  *buf;
} ngx_http_dstack_metrics_out_t;


static ngx_int_t ngx_http_dstack_metrics_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_metrics_render(
    ngx_http_dstack_metrics_out_t *o, ngx_dstack_metrics_t *m);
static ngx_int_t ngx_http_dstack_metrics_hist(ngx_http_dstack_metrics_out_t *o,
    const char *name, const char *help, ngx_dstack_metrics_hist_t *h);
static ngx_int_t ngx_http_dstack_metrics_family(
    ngx_http_dstack_metrics_out_t *o, const char *name, const char *type,
    const char *help);
static ngx_int_t ngx_http_dstack_metrics_printf(
    ngx_http_dstack_metrics_out_t *o, const char *fmt, ...);
static ngx_int_t ngx_http_dstack_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void *ngx_http_dstack_metrics_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_dstack_metrics_commands[] = {

    { ngx_string("dstack_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_dstack_metrics,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_metrics_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_dstack_metrics_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_metrics_module_ctx,   /* module context */
    ngx_http_dstack_metrics_commands,      /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static const char  *ngx_http_dstack_metrics_classes[] = {
    "1xx", "2xx", "3xx", "4xx", "5xx"
};

static const char  *ngx_http_dstack_metrics_mesh_codes[] = {
    NGX_DSTACK_METRICS_MESH_CODE_NAMES
};

static const char  *ngx_http_dstack_metrics_rejects[] = {
    "untrusted_certificate", "no_app_id", "wrong_app_id", "app_ca_mismatch",
    "attestation"
};

static const char  *ngx_http_dstack_metrics_auth[] = {
    "accepted", "no_identity", "not_allowed", "attestation"
};

/* in the API module's order (NGX_HTTP_DSTACK_VPC_API_*) */
static const char  *ngx_http_dstack_metrics_endpoints[] = {
    "health", "register", "nodes_update", "discover", "nodes", "machine",
    "unknown", "ping"
};

static const char  *ngx_http_dstack_metrics_le[] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10"
};


static ngx_int_t
ngx_http_dstack_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                             rc;
    ngx_dstack_metrics_t                 *m;
    ngx_http_dstack_metrics_out_t         o;
    ngx_http_dstack_metrics_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_metrics_module);
    m = ngx_dstack_metrics(mmcf->zone);

    if (m == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_memzero(&o, sizeof(ngx_http_dstack_metrics_out_t));
    o.request = r;
    o.last = &o.out;

    if (ngx_http_dstack_metrics_render(&o, m) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = 0;

    for (o.last = &o.out; *o.last != NULL; o.last = &(*o.last)->next) {
        r->headers_out.content_length_n += ngx_buf_size((*o.last)->buf);
    }

    o.buf->last_buf = (r == r->main) ? 1 : 0;
    o.buf->last_in_chain = 1;

    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, o.out);
}


static ngx_int_t
ngx_http_dstack_metrics_render(ngx_http_dstack_metrics_out_t *o,
    ngx_dstack_metrics_t *m)
{
    size_t                     len;
    u_char                    *id;
    ngx_uint_t                 a, c, e, n;
    ngx_atomic_uint_t          v;
    ngx_dstack_metrics_app_t  *app;

#define ngx_http_dstack_metrics_check(rc)                                     \
    if ((rc) != NGX_OK) {                                                     \
        return NGX_ERROR;                                                     \
    }

    /* the service mesh */

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_mesh_requests_total", "counter",
        "Requests through the mesh by target app (empty: none named, "
        "_other: past the table of 64), status class and mesh error code."));

    for (a = 0; a < NGX_DSTACK_METRICS_APP_SLOTS; a++) {

        if (a == NGX_DSTACK_METRICS_APP_NONE) {
            id = (u_char *) "";
            len = 0;

        } else if (a == NGX_DSTACK_METRICS_APP_OTHER) {
            id = (u_char *) "_other";
            len = sizeof("_other") - 1;

        } else {
            app = &m->apps[a];

            if (app->state != 2) {
                continue;
            }

            id = app->id;
            len = app->len;
        }

        for (c = 0; c < NGX_DSTACK_METRICS_CLASSES; c++) {
            for (e = 0; e < NGX_DSTACK_METRICS_MESH_CODES; e++) {
                v = m->mesh_requests[a][c][e];

                if (v == 0) {
                    continue;
                }

                ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
                    "dstack_mesh_requests_total{app=\"%*s\",class=\"%s\","
                    "error=\"%s\"} %uA\n", len, id,
                    ngx_http_dstack_metrics_classes[c],
                    ngx_http_dstack_metrics_mesh_codes[e], v));
            }
        }
    }

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_hist(o,
        "dstack_mesh_upstream_response_seconds",
        "Time from connecting to a peer to its response header, all "
        "attempts of a request.", &m->mesh_upstream));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_mesh_upstream_connections_total", "counter",
        "Upstream connections to peers: new TLS handshakes and pooled "
        "connections reused."));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
        "dstack_mesh_upstream_connections_total{kind=\"handshake\"} %uA\n"
        "dstack_mesh_upstream_connections_total{kind=\"reused\"} %uA\n",
        m->mesh_handshakes, m->mesh_reused));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_mesh_peer_rejections_total", "counter",
        "Peers whose certificate the mesh refused, by reason."));

    for (n = 0; n < NGX_DSTACK_METRICS_REJECTS; n++) {
        ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
            "dstack_mesh_peer_rejections_total{reason=\"%s\"} %uA\n",
            ngx_http_dstack_metrics_rejects[n], m->mesh_rejects[n]));
    }

    /* inbound authentication */

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_auth_requests_total", "counter",
        "Requests dstack_auth decided: accepted, or denied by reason."));

    for (n = 0; n < NGX_DSTACK_METRICS_AUTH_RESULTS; n++) {
        ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
            "dstack_auth_requests_total{result=\"%s\",reason=\"%s\"} %uA\n",
            n == NGX_DSTACK_METRICS_AUTH_ACCEPTED ? "accepted" : "denied",
            n == NGX_DSTACK_METRICS_AUTH_ACCEPTED
                ? "ok" : ngx_http_dstack_metrics_auth[n],
            m->auth[n]));
    }

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_auth_attestation_cache_total", "counter",
        "Attestation look-ups in the cache zone: hits, and misses that "
        "verified the attestation."));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
        "dstack_auth_attestation_cache_total{result=\"hit\"} %uA\n"
        "dstack_auth_attestation_cache_total{result=\"miss\"} %uA\n",
        m->auth_cache_hits, m->auth_cache_misses));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_hist(o,
        "dstack_auth_attestation_verify_seconds",
        "Time to verify a caller's attestation (cache misses).",
        &m->auth_verify));

    /* the VPC API and the VPN control plane */

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_api_requests_total", "counter",
        "VPC API and control plane requests by endpoint and status class."));

    for (e = 0; e < NGX_DSTACK_METRICS_ENDPOINTS; e++) {
        for (c = 0; c < NGX_DSTACK_METRICS_CLASSES; c++) {
            v = m->api_requests[e][c];

            if (v == 0) {
                continue;
            }

            ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
                "dstack_api_requests_total{endpoint=\"%s\",class=\"%s\"} "
                "%uA\n", ngx_http_dstack_metrics_endpoints[e],
                ngx_http_dstack_metrics_classes[c], v));
        }
    }

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_hist(o,
        "dstack_redis_roundtrip_seconds",
        "Redis command round trips, sent to reply.", &m->redis_rtt));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_redis_reconnects_total", "counter",
        "Redis connections lost or refused, each followed by a reconnect."));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
        "dstack_redis_reconnects_total %uA\n", m->redis_reconnects));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_cp_map_streams", "gauge",
        "Open map streams to node agents, all workers."));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
        "dstack_cp_map_streams %uA\n", m->cp_streams));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_cp_change_frames_total", "counter",
        "Change frames written to map streams."));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
        "dstack_cp_change_frames_total %uA\n", m->cp_frames));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_hist(o,
        "dstack_cp_propagation_seconds",
        "From a change's publish to Redis to its frame on a map stream.",
        &m->cp_propagation));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_cp_preauth_keys_total", "counter",
        "Pre-auth keys issued by /api/register and used by a node's "
        "registration."));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
        "dstack_cp_preauth_keys_total{event=\"issued\"} %uA\n"
        "dstack_cp_preauth_keys_total{event=\"used\"} %uA\n",
        m->cp_keys_issued, m->cp_keys_used));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_cp_sweep_total", "counter",
        "What the expiry sweep did: nodes marked offline after the "
        "inactivity timeout, ephemeral nodes removed, node keys expired."));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_printf(o,
        "dstack_cp_sweep_total{event=\"offline\"} %uA\n"
        "dstack_cp_sweep_total{event=\"ephemeral_removed\"} %uA\n"
        "dstack_cp_sweep_total{event=\"key_expired\"} %uA\n",
        m->cp_sweep[0], m->cp_sweep[1], m->cp_sweep[2]));

    ngx_http_dstack_metrics_check(ngx_http_dstack_metrics_family(o,
        "dstack_metrics_reloads_total", "counter",
        "Configuration reloads the counters survived."));

    return ngx_http_dstack_metrics_printf(o,
               "dstack_metrics_reloads_total %uA\n", m->reloads);

#undef ngx_http_dstack_metrics_check
}


static ngx_int_t
ngx_http_dstack_metrics_hist(ngx_http_dstack_metrics_out_t *o,
    const char *name, const char *help, ngx_dstack_metrics_hist_t *h)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  total, sum;

    if (ngx_http_dstack_metrics_family(o, name, "histogram", help)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the sum first: it may trail the buckets read after it, never lead */
    sum = h->sum_us;
    total = 0;

    for (i = 0; i < NGX_DSTACK_METRICS_BUCKETS; i++) {
        total += h->buckets[i];

        if (ngx_http_dstack_metrics_printf(o, "%s_bucket{le=\"%s\"} %uA\n",
                                           name, ngx_http_dstack_metrics_le[i],
                                           total)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    total += h->buckets[i];

    return ngx_http_dstack_metrics_printf(o,
               "%s_bucket{le=\"+Inf\"} %uA\n"
               "%s_sum %uA.%06uA\n"
               "%s_count %uA\n",
               name, total, name, sum / 1000000, sum % 1000000, name, total);
}


static ngx_int_t
ngx_http_dstack_metrics_family(ngx_http_dstack_metrics_out_t *o,
    const char *name, const char *type, const char *help)
{
    return ngx_http_dstack_metrics_printf(o, "# HELP %s %s\n# TYPE %s %s\n",
                                          name, help, name, type);
}


static ngx_int_t
ngx_http_dstack_metrics_printf(ngx_http_dstack_metrics_out_t *o,
    const char *fmt, ...)
{
    va_list       args;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = o->buf;

    if (b == NULL || b->end - b->last < NGX_HTTP_DSTACK_METRICS_LINE) {
        b = ngx_create_temp_buf(o->request->pool,
                                NGX_HTTP_DSTACK_METRICS_CHUNK);
        if (b == NULL) {
            return NGX_ERROR;
        }

        cl = ngx_alloc_chain_link(o->request->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;

        *o->last = cl;
        o->last = &cl->next;
        o->buf = b;
    }

    va_start(args, fmt);
    b->last = ngx_vslprintf(b->last, b->end, fmt, args);
    va_end(args);

    return NGX_OK;
}


/*
 * Kept across reloads while the size, and so the layout, is unchanged;
 * a new layout gets a new zone.
 */

static ngx_int_t
ngx_http_dstack_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t       *shpool;
    ngx_dstack_metrics_t  *m;

    if (data != NULL) {
        m = data;
        m->reloads++;
        shm_zone->data = m;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    m = ngx_slab_calloc(shpool, sizeof(ngx_dstack_metrics_t));
    if (m == NULL) {
        return NGX_ERROR;
    }

    shpool->data = m;
    shm_zone->data = m;

    return NGX_OK;
}


static void *
ngx_http_dstack_metrics_create_main_conf(ngx_conf_t *cf)
{
    size_t                                size;
    ngx_str_t                             name;
    ngx_http_dstack_metrics_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_metrics_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /* the counters, the slab pool's own pages and headers */
    size = ngx_align(sizeof(ngx_dstack_metrics_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    ngx_str_set(&name, NGX_DSTACK_METRICS_ZONE);

    mmcf->zone = ngx_shared_memory_add(cf, &name, size,
                                       &ngx_http_dstack_metrics_module);
    if (mmcf->zone == NULL) {
        return NULL;
    }

    mmcf->zone->init = ngx_http_dstack_metrics_init_zone;

    return mmcf;
}


static char *
ngx_http_dstack_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_dstack_metrics_handler;

    return NGX_CONF_OK;
}
