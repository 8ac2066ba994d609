
/*
 * The counters the dstack modules share with ngx_http_dstack_metrics_module
 * (docs/metrics.md).  One shared-memory zone, "dstack_metrics", holds one
 * ngx_dstack_metrics_t; every worker of every module adds to it with
 * atomics.  Dynamic modules share no symbols, so a module finds the zone
 * at configuration time by the metrics module's name (the zone's tag is
 * that module), and does nothing when the metrics module is not loaded.
 * Counters survive a reload: the zone is reused while its size, and so
 * this layout, stays the same.
 */


#ifndef _NGX_DSTACK_METRICS_H_INCLUDED_
#define _NGX_DSTACK_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_DSTACK_METRICS_MODULE    "ngx_http_dstack_metrics_module"
#define NGX_DSTACK_METRICS_ZONE      "dstack_metrics"

/* app ids kept apart; the rest count under app="_other" */
#define NGX_DSTACK_METRICS_APPS      64
#define NGX_DSTACK_METRICS_APP_LEN   64
#define NGX_DSTACK_METRICS_APP_NONE  0       /* no target app */
#define NGX_DSTACK_METRICS_APP_OTHER 1
#define NGX_DSTACK_METRICS_APP_SLOTS (NGX_DSTACK_METRICS_APPS + 2)

/* histogram bucket bounds, microseconds; one more bucket for +Inf */
#define NGX_DSTACK_METRICS_BUCKETS   14

#define NGX_DSTACK_METRICS_CLASSES   5       /* 1xx .. 5xx */

/* mesh error codes, as in the JSON error bodies; "none" is no error */
#define NGX_DSTACK_METRICS_MESH_CODES  17
#define NGX_DSTACK_METRICS_MESH_CODE_NAMES                                   \
    "none", "BAD_TARGET", "USE_TLS_REFUSED", "METHOD_NOT_ALLOWED",           \
    "RESOLVE_FAILED", "PEER_REJECTED", "TLS_HANDSHAKE_FAILED",               \
    "CONNECT_FAILED", "UPSTREAM_ERROR", "TIMEOUT", "BAD_GATEWAY",            \
    "AGENT_UNAVAILABLE", "REQUEST_TOO_LARGE", "REQUEST_TIMEOUT",             \
    "BAD_REQUEST", "INTERNAL_ERROR", "OTHER"

/* why the mesh refused a peer's certificate */
#define NGX_DSTACK_METRICS_REJECT_UNTRUSTED     0
#define NGX_DSTACK_METRICS_REJECT_NO_APP_ID     1
#define NGX_DSTACK_METRICS_REJECT_WRONG_APP     2
#define NGX_DSTACK_METRICS_REJECT_APP_CA        3
#define NGX_DSTACK_METRICS_REJECT_ATTESTATION   4
#define NGX_DSTACK_METRICS_REJECTS              5

/* auth decisions: accepted, or denied for a reason */
#define NGX_DSTACK_METRICS_AUTH_ACCEPTED        0
#define NGX_DSTACK_METRICS_AUTH_NO_IDENTITY     1
#define NGX_DSTACK_METRICS_AUTH_NOT_ALLOWED     2
#define NGX_DSTACK_METRICS_AUTH_ATTESTATION     3
#define NGX_DSTACK_METRICS_AUTH_RESULTS         4

/* API endpoints, in the API module's order */
#define NGX_DSTACK_METRICS_ENDPOINTS            8


typedef struct {
    ngx_atomic_t                buckets[NGX_DSTACK_METRICS_BUCKETS + 1];
    ngx_atomic_t                sum_us;
} ngx_dstack_metrics_hist_t;


typedef struct {
    ngx_atomic_t                state;   /* 0 free, 1 writing, 2 ready */
    size_t                      len;
    u_char                      id[NGX_DSTACK_METRICS_APP_LEN];
} ngx_dstack_metrics_app_t;


typedef struct {
    ngx_atomic_t                reloads;

    ngx_dstack_metrics_app_t    apps[NGX_DSTACK_METRICS_APP_SLOTS];

    /* mesh */
    ngx_atomic_t                mesh_requests[NGX_DSTACK_METRICS_APP_SLOTS]
                                    [NGX_DSTACK_METRICS_CLASSES]
                                    [NGX_DSTACK_METRICS_MESH_CODES];
    ngx_dstack_metrics_hist_t   mesh_upstream;
    ngx_atomic_t                mesh_handshakes;
    ngx_atomic_t                mesh_reused;
    ngx_atomic_t                mesh_rejects[NGX_DSTACK_METRICS_REJECTS];

    /* auth */
    ngx_atomic_t                auth[NGX_DSTACK_METRICS_AUTH_RESULTS];
    ngx_atomic_t                auth_cache_hits;
    ngx_atomic_t                auth_cache_misses;
    ngx_dstack_metrics_hist_t   auth_verify;

    /* API and control plane */
    ngx_atomic_t                api_requests[NGX_DSTACK_METRICS_ENDPOINTS]
                                    [NGX_DSTACK_METRICS_CLASSES];
    ngx_dstack_metrics_hist_t   redis_rtt;
    ngx_atomic_t                redis_reconnects;
    ngx_atomic_t                cp_streams;
    ngx_dstack_metrics_hist_t   cp_propagation;
    ngx_atomic_t                cp_keys_issued;
    ngx_atomic_t                cp_keys_used;
    ngx_atomic_t                cp_frames;
    ngx_atomic_t                cp_sweep[3]; /* offline, removed, expired */
} ngx_dstack_metrics_t;


#define NGX_DSTACK_METRICS_BOUNDS                                            \
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,      \
    1000000, 2500000, 5000000, 10000000


/*
 * At configuration time: the zone, or NULL without the metrics module.
 * The zone's data is the ngx_dstack_metrics_t once the cycle has begun.
 */

static ngx_inline ngx_shm_zone_t *
ngx_dstack_metrics_zone(ngx_conf_t *cf)
{
    ngx_str_t      name = ngx_string(NGX_DSTACK_METRICS_ZONE);
    ngx_uint_t     i;
    ngx_module_t  *m;

    for (i = 0; cf->cycle->modules[i] != NULL; i++) {
        m = cf->cycle->modules[i];

        if (m->name != NULL
            && ngx_strcmp(m->name, NGX_DSTACK_METRICS_MODULE) == 0)
        {
            return ngx_shared_memory_add(cf, &name, 0, m);
        }
    }

    return NULL;
}


static ngx_inline ngx_dstack_metrics_t *
ngx_dstack_metrics(ngx_shm_zone_t *zone)
{
    return (zone != NULL) ? zone->data : NULL;
}


static ngx_inline void
ngx_dstack_metrics_inc(ngx_atomic_t *a)
{
    (void) ngx_atomic_fetch_add(a, 1);
}


static ngx_inline void
ngx_dstack_metrics_observe(ngx_dstack_metrics_hist_t *h, uint64_t us)
{
    ngx_uint_t  i;

    static const ngx_msec_t  bounds[] = { NGX_DSTACK_METRICS_BOUNDS };

    for (i = 0; i < NGX_DSTACK_METRICS_BUCKETS; i++) {
        if (us <= bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->buckets[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum_us, us);
}


static ngx_inline uint64_t
ngx_dstack_metrics_now_us(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;
}


static ngx_inline ngx_uint_t
ngx_dstack_metrics_class(ngx_uint_t status)
{
    if (status < 100 || status > 599) {
        return NGX_DSTACK_METRICS_CLASSES - 1;
    }

    return status / 100 - 1;
}


/*
 * The slot of an app id, taken on first sight without a lock: a slot goes
 * free (0) -> being written (1) -> ready (2) and never back, so a reader
 * that meets a slot being written waits for it rather than claim a second
 * slot for the same id.
 */

static ngx_inline ngx_uint_t
ngx_dstack_metrics_app(ngx_dstack_metrics_t *m, ngx_str_t *id)
{
    uint64_t                   v;
    ngx_uint_t                 i, n, k, spin;
    ngx_dstack_metrics_app_t  *app;

    if (id->len == 0) {
        return NGX_DSTACK_METRICS_APP_NONE;
    }

    if (id->len > NGX_DSTACK_METRICS_APP_LEN) {
        return NGX_DSTACK_METRICS_APP_OTHER;
    }

    /* app ids are random hex: their first 8 bytes spread well enough */
    v = 0;
    ngx_memcpy(&v, id->data, ngx_min(id->len, sizeof(uint64_t)));
    k = (ngx_uint_t) ((v * 0x9e3779b97f4a7c15ULL) >> 32)
        % NGX_DSTACK_METRICS_APPS;

    for (n = 0; n < NGX_DSTACK_METRICS_APPS; n++) {
        i = 2 + (k + n) % NGX_DSTACK_METRICS_APPS;
        app = &m->apps[i];

        if (app->state == 0 && ngx_atomic_cmp_set(&app->state, 0, 1)) {
            app->len = id->len;
            ngx_memcpy(app->id, id->data, id->len);
            ngx_memory_barrier();
            app->state = 2;
            return i;
        }

        for (spin = 0; app->state == 1 && spin < 100000; spin++) {
            ngx_cpu_pause();
        }

        if (app->state != 2) {
            return NGX_DSTACK_METRICS_APP_OTHER;
        }

        /* the id written before the state (a compiler barrier on x86) */
        ngx_memory_barrier();

        if (app->len == id->len
            && ngx_memcmp(app->id, id->data, id->len) == 0)
        {
            return i;
        }
    }

    return NGX_DSTACK_METRICS_APP_OTHER;
}


#endif /* _NGX_DSTACK_METRICS_H_INCLUDED_ */
