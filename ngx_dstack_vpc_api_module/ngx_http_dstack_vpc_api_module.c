
/*
 * ngx_dstack_vpc_api_module: the VPC API (register, update, discover) in
 * nginx, with all state in Redis (DESIGN section 6).
 *
 * The caller is the app named by $dstack_app_id, which ngx_dstack_auth
 * computes from the verified client certificate; no header can supply
 * it.  Requests wait for Redis without blocking the worker: the handler
 * parks the request and the reply callback finishes it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/err.h>

#include <jansson.h>

#include "ngx_dstack_redis.h"
#include "ngx_dstack_vpc_check.h"
#include "ngx_http_dstack_vpc_api.h"


#define NGX_HTTP_DSTACK_VPC_API_HEALTH     0
#define NGX_HTTP_DSTACK_VPC_API_REGISTER   1
#define NGX_HTTP_DSTACK_VPC_API_UPDATE     2
#define NGX_HTTP_DSTACK_VPC_API_DISCOVER   3
#define NGX_HTTP_DSTACK_VPC_API_NODES      4
#define NGX_HTTP_DSTACK_VPC_API_MACHINE    5
#define NGX_HTTP_DSTACK_VPC_API_UNKNOWN    6
#define NGX_HTTP_DSTACK_VPC_API_PING       7

#define NGX_HTTP_DSTACK_VPC_API_ALLOW_UNSET  0
#define NGX_HTTP_DSTACK_VPC_API_ALLOW_NONE   1
#define NGX_HTTP_DSTACK_VPC_API_ALLOW_ANY    2
#define NGX_HTTP_DSTACK_VPC_API_ALLOW_LIST   3

#define NGX_HTTP_DSTACK_VPC_API_APP_ID_LEN     40
#define NGX_HTTP_DSTACK_VPC_API_ID_MAX         128
#define NGX_HTTP_DSTACK_VPC_API_NAME_MAX       63
#define NGX_HTTP_DSTACK_VPC_API_TYPE_MAX       32
#define NGX_HTTP_DSTACK_VPC_API_HOSTNAME_MAX   253
#define NGX_HTTP_DSTACK_VPC_API_KEY_ID_LEN     12
#define NGX_HTTP_DSTACK_VPC_API_KEY_SECRET_LEN 64
#define NGX_HTTP_DSTACK_VPC_API_SHARED_LEN     64

/* per-app limits: the whole VPC of DESIGN's scale is 10000 nodes */
#define NGX_HTTP_DSTACK_VPC_API_MAX_PER_APP    10000


typedef struct {
    ngx_flag_t                  enable;
    ngx_uint_t                  allow_mode;
    ngx_array_t                *allow;        /* of ngx_str_t, lowercase */
    ngx_http_complex_value_t   *server_url;
    ngx_str_t                   gateway_url;
    time_t                      key_ttl;
    ngx_flag_t                  key_reusable;
    ngx_flag_t                  key_ephemeral;
    size_t                      max_body;
    size_t                      max_args;
    ngx_uint_t                  max_keys;     /* outstanding, per app */
    ngx_uint_t                  max_records;  /* node records, per app */
} ngx_http_dstack_vpc_api_loc_conf_t;


typedef struct {
    ngx_uint_t                  endpoint;
    ngx_uint_t                  render;       /* the view was missing */
    ngx_uint_t                  cache_gen;    /* 0: not to be kept */
    ngx_str_t                   app_id;
    ngx_str_t                   node_type;
    ngx_str_t                   key;
    ngx_str_t                   server_url;
} ngx_http_dstack_vpc_api_ctx_t;


typedef struct {
    ngx_str_t                   uuid;
    ngx_str_t                   node_type;
    ngx_str_t                   tailscale_ip;
    ngx_str_t                   hostname;
} ngx_http_dstack_vpc_api_node_t;


static ngx_int_t ngx_http_dstack_vpc_api_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_vpc_api_log_metrics(ngx_http_request_t *r);
static ngx_uint_t ngx_http_dstack_vpc_api_route(ngx_http_request_t *r,
    ngx_str_t *type);
static ngx_int_t ngx_http_dstack_vpc_api_identify(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_vpc_api_park(ngx_http_request_t *r,
    ngx_uint_t count);
static ngx_int_t ngx_http_dstack_vpc_api_unavailable(ngx_http_request_t *r,
    const char *why);

static ngx_int_t ngx_http_dstack_vpc_api_health(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_vpc_api_ping(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_vpc_api_register(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx);
static void ngx_http_dstack_vpc_api_update_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_vpc_api_update(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_vpc_api_read_json(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_node_t *node, const char **field);
static ngx_int_t ngx_http_dstack_vpc_api_discover(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_vpc_api_view(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx, ngx_uint_t count);
static ngx_int_t ngx_http_dstack_vpc_api_eval(ngx_http_request_t *r,
    ngx_dstack_redis_script_t *script, int argc, const char **argv,
    size_t *lens, ngx_uint_t count);

static void ngx_http_dstack_vpc_api_reply(void *data, redisReply *reply,
    const char *err);
static ngx_int_t ngx_http_dstack_vpc_api_health_reply(ngx_http_request_t *r,
    redisReply *reply, const char *err);
static ngx_int_t ngx_http_dstack_vpc_api_register_reply(
    ngx_http_request_t *r, ngx_http_dstack_vpc_api_ctx_t *ctx,
    redisReply *reply);
static ngx_int_t ngx_http_dstack_vpc_api_limit(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_dstack_vpc_api_update_reply(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_http_dstack_vpc_api_document_reply(
    ngx_http_request_t *r, ngx_http_dstack_vpc_api_ctx_t *ctx,
    redisReply *reply);

static ngx_int_t ngx_http_dstack_vpc_api_arg(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);
static ngx_int_t ngx_http_dstack_vpc_api_lower_id(ngx_str_t *s,
    ngx_uint_t hex_only);
static ngx_int_t ngx_http_dstack_vpc_api_node_name(ngx_str_t *s);
static ngx_int_t ngx_http_dstack_vpc_api_node_type(ngx_str_t *s);
static ngx_int_t ngx_http_dstack_vpc_api_hostname(ngx_str_t *s);
static ngx_int_t ngx_http_dstack_vpc_api_random(u_char *dst, size_t len);
static ngx_int_t ngx_http_dstack_vpc_api_sha256_hex(u_char *dst,
    ngx_str_t *data);

static size_t ngx_http_dstack_vpc_api_json_len(ngx_str_t *s);
static u_char *ngx_http_dstack_vpc_api_json_put(u_char *p, ngx_str_t *s);
static ngx_int_t ngx_http_dstack_vpc_api_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *fmt, ...);
static ngx_int_t ngx_http_dstack_vpc_api_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_buf_t *b);

static ngx_int_t ngx_http_dstack_vpc_api_init_process(ngx_cycle_t *cycle);
static void ngx_http_dstack_vpc_api_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_dstack_vpc_api_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_vpc_api_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_dstack_vpc_api_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_vpc_api_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_dstack_vpc_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_vpc_api_allow(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_dstack_vpc_api_server_gateway(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_dstack_vpc_api_redis(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_dstack_vpc_api_init(ngx_conf_t *cf);


static ngx_command_t  ngx_http_dstack_vpc_api_commands[] = {

    { ngx_string("dstack_vpc_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_dstack_vpc_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_vpc_api_allow"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_vpc_api_allow,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_vpc_api_server_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_loc_conf_t, server_url),
      NULL },

    { ngx_string("dstack_vpc_api_server_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE23,
      ngx_http_dstack_vpc_api_server_gateway,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_vpc_api_key_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_loc_conf_t, key_ttl),
      NULL },

    { ngx_string("dstack_vpc_api_key_reusable"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_loc_conf_t, key_reusable),
      NULL },

    { ngx_string("dstack_vpc_api_key_ephemeral"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_loc_conf_t, key_ephemeral),
      NULL },

    { ngx_string("dstack_vpc_api_max_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_loc_conf_t, max_body),
      NULL },

    { ngx_string("dstack_vpc_api_max_args"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_loc_conf_t, max_args),
      NULL },

    { ngx_string("dstack_vpc_api_max_keys_per_app"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_loc_conf_t, max_keys),
      NULL },

    { ngx_string("dstack_vpc_api_max_records_per_app"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_loc_conf_t, max_records),
      NULL },

    { ngx_string("dstack_vpc_api_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_vpc_api_cache_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_vpc_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_vpc_api_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_vpc_redis_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_main_conf_t, prefix),
      NULL },

    { ngx_string("dstack_vpc_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_api_main_conf_t, timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_vpc_api_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_dstack_vpc_api_init,          /* postconfiguration */

    ngx_http_dstack_vpc_api_create_main_conf, /* create main configuration */
    ngx_http_dstack_vpc_api_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_dstack_vpc_api_create_loc_conf, /* create location configuration */
    ngx_http_dstack_vpc_api_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_vpc_api_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_vpc_api_module_ctx,   /* module context */
    ngx_http_dstack_vpc_api_commands,      /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_dstack_vpc_api_init_process,  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_dstack_vpc_api_exit_process,  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_dstack_vpc_api_app_id_var =
    ngx_string("dstack_app_id");

static u_char  ngx_http_dstack_vpc_api_base62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";


static ngx_int_t
ngx_http_dstack_vpc_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_str_t                            type;
    ngx_uint_t                           endpoint, methods;
    ngx_table_elt_t                     *h;
    ngx_http_dstack_vpc_api_ctx_t       *ctx;
    ngx_http_dstack_vpc_api_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_vpc_api_module);

    endpoint = ngx_http_dstack_vpc_api_route(r, &type);

    switch (endpoint) {

    case NGX_HTTP_DSTACK_VPC_API_UPDATE:
    case NGX_HTTP_DSTACK_VPC_API_MACHINE:
        methods = NGX_HTTP_POST;
        break;

    case NGX_HTTP_DSTACK_VPC_API_REGISTER:
        methods = NGX_HTTP_GET;
        break;

    default:
        methods = NGX_HTTP_GET|NGX_HTTP_HEAD;
        break;
    }

    if (endpoint != NGX_HTTP_DSTACK_VPC_API_UPDATE
        && endpoint != NGX_HTTP_DSTACK_VPC_API_MACHINE)
    {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (endpoint == NGX_HTTP_DSTACK_VPC_API_UNKNOWN) {
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_NOT_FOUND,
                                             "Not found");
    }

    if (!(r->method & methods)) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");

        if (methods == NGX_HTTP_POST) {
            ngx_str_set(&h->value, "POST");

        } else if (methods == NGX_HTTP_GET) {
            ngx_str_set(&h->value, "GET");

        } else {
            ngx_str_set(&h->value, "GET, HEAD");
        }

        if (methods == NGX_HTTP_POST) {
            rc = ngx_http_discard_request_body(r);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_NOT_ALLOWED,
                                             "Method not allowed");
    }

    if (endpoint == NGX_HTTP_DSTACK_VPC_API_PING) {
        return ngx_http_dstack_vpc_api_ping(r);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_vpc_api_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->endpoint = endpoint;
    ctx->node_type = type;

    ngx_http_set_ctx(r, ctx, ngx_http_dstack_vpc_api_module);

    if (endpoint == NGX_HTTP_DSTACK_VPC_API_HEALTH) {
        return ngx_http_dstack_vpc_api_health(r);
    }

    rc = ngx_http_dstack_vpc_api_identify(r, ctx);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (endpoint == NGX_HTTP_DSTACK_VPC_API_MACHINE) {
        /* the VPN control plane: ngx_http_dstack_vpc_cp_module.c */
        return ngx_http_dstack_vpc_cp_handler(r, &ctx->app_id);
    }

    if (r->args.len > alcf->max_args) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: query string of %uz bytes refused",
                      r->args.len);
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "query string too long");
    }

    switch (endpoint) {

    case NGX_HTTP_DSTACK_VPC_API_REGISTER:
        return ngx_http_dstack_vpc_api_register(r, ctx);

    case NGX_HTTP_DSTACK_VPC_API_DISCOVER:
        return ngx_http_dstack_vpc_api_discover(r, ctx);

    case NGX_HTTP_DSTACK_VPC_API_NODES:
        return ngx_http_dstack_vpc_api_view(r, ctx, 1);

    default: /* NGX_HTTP_DSTACK_VPC_API_UPDATE */
        break;
    }

    if (r->headers_in.content_length_n > (off_t) alcf->max_body) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_dstack_vpc_api_error(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        "request body too large");
    }

    /* also without a body: the update always runs as the body handler */

    rc = ngx_http_read_client_request_body(r,
                                         ngx_http_dstack_vpc_api_update_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* once per request of an API location: by endpoint and status class */

static ngx_int_t
ngx_http_dstack_vpc_api_log_metrics(ngx_http_request_t *r)
{
    ngx_str_t                             type;
    ngx_uint_t                            endpoint, status;
    ngx_dstack_metrics_t                 *m;
    ngx_http_dstack_vpc_api_loc_conf_t   *alcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_vpc_api_module);

    if (!alcf->enable || r != r->main) {
        return NGX_OK;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);
    m = ngx_dstack_metrics(amcf->redis.metrics);

    if (m == NULL) {
        return NGX_OK;
    }

    endpoint = ngx_http_dstack_vpc_api_route(r, &type);

    if (endpoint >= NGX_DSTACK_METRICS_ENDPOINTS) {
        endpoint = NGX_HTTP_DSTACK_VPC_API_UNKNOWN;
    }

    status = r->err_status ? r->err_status : r->headers_out.status;

    ngx_dstack_metrics_inc(
        &m->api_requests[endpoint][ngx_dstack_metrics_class(status)]);

    return NGX_OK;
}


static ngx_uint_t
ngx_http_dstack_vpc_api_route(ngx_http_request_t *r, ngx_str_t *type)
{
    ngx_str_t  *uri;

    uri = &r->uri;

    ngx_str_null(type);

#define ngx_http_dstack_vpc_api_is(s)                                         \
    (uri->len == sizeof(s) - 1 && ngx_strncmp(uri->data, s, uri->len) == 0)

    if (ngx_http_dstack_vpc_api_is("/health")) {
        return NGX_HTTP_DSTACK_VPC_API_HEALTH;
    }

    if (ngx_http_dstack_vpc_api_is("/api/ping")) {
        return NGX_HTTP_DSTACK_VPC_API_PING;
    }

    if (ngx_http_dstack_vpc_api_is("/api/register")) {
        return NGX_HTTP_DSTACK_VPC_API_REGISTER;
    }

    if (ngx_http_dstack_vpc_api_is("/api/nodes/update")) {
        return NGX_HTTP_DSTACK_VPC_API_UPDATE;
    }

    if (ngx_http_dstack_vpc_api_is("/api/nodes")) {
        return NGX_HTTP_DSTACK_VPC_API_NODES;
    }

#undef ngx_http_dstack_vpc_api_is

    if (uri->len > sizeof("/machine/") - 1
        && ngx_strncmp(uri->data, "/machine/", sizeof("/machine/") - 1) == 0)
    {
        return NGX_HTTP_DSTACK_VPC_API_MACHINE;
    }

    if (uri->len >= sizeof("/api/discover/") - 1
        && ngx_strncmp(uri->data, "/api/discover/",
                       sizeof("/api/discover/") - 1)
           == 0)
    {
        type->data = uri->data + sizeof("/api/discover/") - 1;
        type->len = uri->len - (sizeof("/api/discover/") - 1);
        return NGX_HTTP_DSTACK_VPC_API_DISCOVER;
    }

    return NGX_HTTP_DSTACK_VPC_API_UNKNOWN;
}


/*
 * Returns NGX_DECLINED when the caller may go on, or the result of the
 * error response.
 */

static ngx_int_t
ngx_http_dstack_vpc_api_identify(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx)
{
    ngx_str_t                            *ids;
    ngx_uint_t                            i;
    ngx_http_variable_value_t            *vv;
    ngx_http_dstack_vpc_api_loc_conf_t   *alcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_vpc_api_module);

    vv = ngx_http_get_indexed_variable(r, amcf->app_id_index);

    if (vv == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (vv->not_found || vv->len != NGX_HTTP_DSTACK_VPC_API_APP_ID_LEN) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: no caller identity");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                             "Unauthorized");
    }

    ctx->app_id.data = vv->data;
    ctx->app_id.len = vv->len;

    if (alcf->allow_mode == NGX_HTTP_DSTACK_VPC_API_ALLOW_ANY) {
        return NGX_DECLINED;
    }

    if (alcf->allow_mode == NGX_HTTP_DSTACK_VPC_API_ALLOW_LIST) {
        ids = alcf->allow->elts;

        /*
         * both sides lowercase: the list since configuration, the
         * identity as dstack_auth renders it (any other fails closed)
         */

        for (i = 0; i < alcf->allow->nelts; i++) {
            if (ngx_memcmp(ids[i].data, vv->data,
                           NGX_HTTP_DSTACK_VPC_API_APP_ID_LEN)
                == 0)
            {
                return NGX_DECLINED;
            }
        }
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "dstack vpc api: app \"%V\" is not allowed", &ctx->app_id);

    return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_FORBIDDEN, "Forbidden");
}


/*
 * The request waits for Redis.  Straight from the content handler it
 * takes a reference of its own; from the body handler it keeps the one
 * that reading the body took.
 */

static ngx_int_t
ngx_http_dstack_vpc_api_park(ngx_http_request_t *r, ngx_uint_t count)
{
    if (count) {
        r->main->count++;
    }

    if (r == r->main && !r->discard_body) {
        /* notice a client that goes away; the pool cleanup cancels */
        r->read_event_handler = ngx_http_test_reading;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    return NGX_DONE;
}


static ngx_int_t
ngx_http_dstack_vpc_api_unavailable(ngx_http_request_t *r, const char *why)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "dstack vpc api: redis unavailable: %s", why);

    return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "redis unavailable: %s", why);
}


static ngx_int_t
ngx_http_dstack_vpc_api_health(ngx_http_request_t *r)
{
    size_t                                lens[1];
    const char                           *argv[1];
    ngx_dstack_redis_cmd_t               *cmd;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);

    argv[0] = "PING";
    lens[0] = 4;

    cmd = ngx_dstack_redis_command(amcf->rds, r->pool, 1, argv, lens,
                                   amcf->timeout,
                                   ngx_http_dstack_vpc_api_reply, r);

    if (cmd == NULL) {
        return ngx_http_dstack_vpc_api_health_reply(r, NULL,
                                        ngx_dstack_redis_error(amcf->rds));
    }

    return ngx_http_dstack_vpc_api_park(r, 1);
}


/*
 * The seed's liveness probe: plain "pong", no identity, no Redis (its
 * scripts poll it while the rest starts; /health tells about Redis).
 */

static ngx_int_t
ngx_http_dstack_vpc_api_ping(ngx_http_request_t *r)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = sizeof("pong") - 1;

    ngx_str_set(&r->headers_out.content_type, "text/plain");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = (u_char *) "pong";
    b->last = b->pos + sizeof("pong") - 1;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_dstack_vpc_api_register(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx)
{
    u_char                               *p;
    size_t                                lens[12];
    u_char                                shared_raw[64];
    u_char                                max_keys[NGX_INT_T_LEN];
    u_char                                max_records[NGX_INT_T_LEN];
    ngx_str_t                             id, name, hash, shared, ttl;
    ngx_str_t                             key_id, secret, url, raw;
    const char                           *argv[12];
    ngx_http_dstack_vpc_api_loc_conf_t   *alcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_vpc_api_module);

    if (ngx_http_dstack_vpc_api_arg(r, "instance_id", &id) != NGX_OK
        || ngx_http_dstack_vpc_api_arg(r, "node_name", &name) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (id.len == 0 || ngx_http_dstack_vpc_api_lower_id(&id, 1) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: register without a valid instance_id");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "Missing required parameters");
    }

    if (name.len == 0) {
        /* as the seed: "node-<instance_id>", bounded to a DNS label */
        name.len = ngx_min(sizeof("node-") - 1 + id.len,
                           NGX_HTTP_DSTACK_VPC_API_NAME_MAX);
        name.data = ngx_pnalloc(r->pool, name.len);
        if (name.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_cpymem(name.data, "node-", sizeof("node-") - 1);
        ngx_memcpy(p, id.data, name.len - (sizeof("node-") - 1));

    } else if (ngx_http_dstack_vpc_api_node_name(&name) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: register with an invalid node_name");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid node_name");
    }

    /* the key: hskey-auth-<id>-<secret>; Redis only sees its SHA-256 */

    ctx->key.len = sizeof("hskey-auth-") - 1
                   + NGX_HTTP_DSTACK_VPC_API_KEY_ID_LEN + 1
                   + NGX_HTTP_DSTACK_VPC_API_KEY_SECRET_LEN;
    ctx->key.data = ngx_pnalloc(r->pool, ctx->key.len);

    hash.len = 64;
    hash.data = ngx_pnalloc(r->pool, hash.len);

    shared.len = ngx_base64_encoded_length(sizeof(shared_raw));
    shared.data = ngx_pnalloc(r->pool, shared.len);

    ttl.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);

    if (ctx->key.data == NULL || hash.data == NULL || shared.data == NULL
        || ttl.data == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(ctx->key.data, "hskey-auth-", sizeof("hskey-auth-") - 1);

    key_id.data = p;
    key_id.len = NGX_HTTP_DSTACK_VPC_API_KEY_ID_LEN;
    p += key_id.len;
    *p++ = '-';

    secret.data = p;
    secret.len = NGX_HTTP_DSTACK_VPC_API_KEY_SECRET_LEN;

    if (ngx_http_dstack_vpc_api_random(key_id.data, key_id.len) != NGX_OK
        || ngx_http_dstack_vpc_api_random(secret.data, secret.len) != NGX_OK
        || RAND_bytes(shared_raw, sizeof(shared_raw)) != 1
        || ngx_http_dstack_vpc_api_sha256_hex(hash.data, &ctx->key)
           != NGX_OK)
    {
        ERR_clear_error();
        ngx_explicit_memzero(shared_raw, sizeof(shared_raw));
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "dstack vpc api: no random bytes for a key");
        return ngx_http_dstack_vpc_api_error(r,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "cannot create a key");
    }

    /* a candidate only: the first registration's value is kept */
    raw.len = sizeof(shared_raw);
    raw.data = shared_raw;

    ngx_encode_base64(&shared, &raw);
    ngx_explicit_memzero(shared_raw, sizeof(shared_raw));

    ttl.len = ngx_sprintf(ttl.data, "%T", alcf->key_ttl) - ttl.data;

    if (alcf->server_url != NULL) {
        if (ngx_http_complex_value(r, alcf->server_url, &url) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        url = alcf->gateway_url;
    }

    ctx->server_url = url;

    argv[0] = (const char *) amcf->prefix.data;
    lens[0] = amcf->prefix.len;
    argv[1] = (const char *) id.data;
    lens[1] = id.len;
    argv[2] = (const char *) name.data;
    lens[2] = name.len;
    argv[3] = (const char *) ctx->app_id.data;
    lens[3] = ctx->app_id.len;
    argv[4] = (const char *) key_id.data;
    lens[4] = key_id.len;
    argv[5] = (const char *) hash.data;
    lens[5] = hash.len;
    argv[6] = (const char *) ttl.data;
    lens[6] = ttl.len;
    argv[7] = alcf->key_reusable ? "1" : "0";
    lens[7] = 1;
    argv[8] = alcf->key_ephemeral ? "1" : "0";
    lens[8] = 1;
    argv[9] = (const char *) shared.data;
    lens[9] = shared.len;
    argv[10] = (const char *) max_keys;
    lens[10] = ngx_sprintf(max_keys, "%ui", alcf->max_keys) - max_keys;
    argv[11] = (const char *) max_records;
    lens[11] = ngx_sprintf(max_records, "%ui", alcf->max_records)
               - max_records;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "dstack vpc api: register instance \"%V\" as \"%V\" "
                  "for app \"%V\", key id \"%V\"",
                  &id, &name, &ctx->app_id, &key_id);

    return ngx_http_dstack_vpc_api_eval(r, amcf->lua_register, 12, argv,
                                        lens, 1);
}


static void
ngx_http_dstack_vpc_api_update_body(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_dstack_vpc_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_api_module);

    rc = ngx_http_dstack_vpc_api_update(r, ctx);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_dstack_vpc_api_update(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx)
{
    size_t                                lens[8];
    u_char                                max[NGX_INT_T_LEN];
    const char                           *argv[8], *field;
    ngx_http_dstack_vpc_api_node_t        node;
    ngx_http_dstack_vpc_api_loc_conf_t   *alcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_vpc_api_module);

    if (ngx_http_dstack_vpc_api_arg(r, "uuid", &node.uuid) != NGX_OK
        || ngx_http_dstack_vpc_api_arg(r, "node_type", &node.node_type)
           != NGX_OK
        || ngx_http_dstack_vpc_api_arg(r, "tailscale_ip", &node.tailscale_ip)
           != NGX_OK
        || ngx_http_dstack_vpc_api_arg(r, "hostname", &node.hostname)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    field = NULL;

    switch (ngx_http_dstack_vpc_api_read_json(r, &node, &field)) {

    case NGX_OK:
        break;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: request body too large");
        return ngx_http_dstack_vpc_api_error(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        "request body too large");

    case NGX_HTTP_BAD_REQUEST:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: invalid JSON body");

        if (field != NULL) {
            return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                                 "invalid JSON body: \"%s\" "
                                                 "must be a string", field);
        }

        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid JSON body");

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (node.uuid.len == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: update without uuid");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "uuid parameter is required");
    }

    if (ngx_http_dstack_vpc_api_lower_id(&node.uuid, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: update with an invalid uuid");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid uuid");
    }

    if (node.node_type.len
        && ngx_http_dstack_vpc_api_node_type(&node.node_type) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: update with an invalid node_type");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid node_type");
    }

    if (node.tailscale_ip.len
        && ngx_dstack_vpc_parse_ipv4(node.tailscale_ip.data,
                                     node.tailscale_ip.len, NULL)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: update with an invalid tailscale_ip");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid tailscale_ip");
    }

    if (node.hostname.len
        && ngx_http_dstack_vpc_api_hostname(&node.hostname) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: update with an invalid hostname");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid hostname");
    }

    argv[0] = (const char *) amcf->prefix.data;
    lens[0] = amcf->prefix.len;
    argv[1] = (const char *) node.uuid.data;
    lens[1] = node.uuid.len;
    argv[2] = (const char *) node.node_type.data;
    lens[2] = node.node_type.len;
    argv[3] = (const char *) node.tailscale_ip.data;
    lens[3] = node.tailscale_ip.len;
    argv[4] = (const char *) node.hostname.data;
    lens[4] = node.hostname.len;
    argv[5] = (const char *) ctx->app_id.data;
    lens[5] = ctx->app_id.len;

    /* 40 hex digits: a dstack instance id, created only by registration */
    argv[6] = (node.uuid.len == NGX_HTTP_DSTACK_VPC_API_APP_ID_LEN
               && ngx_http_dstack_vpc_api_lower_id(&node.uuid, 1) == NGX_OK)
              ? "1" : "0";
    lens[6] = 1;
    argv[7] = (const char *) max;
    lens[7] = ngx_sprintf(max, "%ui", alcf->max_records) - max;

    /* the reference taken by reading the body is the one kept */
    return ngx_http_dstack_vpc_api_eval(r, amcf->lua_update, 8, argv, lens,
                                        0);
}


/*
 * The fields may also come as a JSON object; a query parameter wins over
 * the same field in the body.  Returns NGX_OK, NGX_ERROR, or the status
 * of a client error, with the offending field when one is to blame.
 */

static ngx_int_t
ngx_http_dstack_vpc_api_read_json(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_node_t *node, const char **bad)
{
    u_char                              *buf, *p;
    size_t                               len;
    json_t                              *root, *v;
    ngx_str_t                           *field[4];
    ngx_buf_t                           *b;
    ngx_uint_t                           i;
    ngx_chain_t                         *cl;
    json_error_t                         jerr;
    ngx_http_dstack_vpc_api_loc_conf_t  *alcf;

    static const char  *names[] = {
        "uuid", "node_type", "tailscale_ip", "hostname"
    };

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_vpc_api_module);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            len = alcf->max_body + 1;
            break;
        }

        len += b->last - b->pos;
    }

    if (len > alcf->max_body) {
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    if (len == 0) {
        return NGX_OK;
    }

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    /* the seed ignored bodies: only what looks like JSON is parsed */

    for (p = buf; p < buf + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            break;
        }
    }

    if (p == buf + len || *p != '{') {
        return NGX_OK;
    }

    root = json_loadb((char *) buf, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return NGX_HTTP_BAD_REQUEST;
    }

    field[0] = &node->uuid;
    field[1] = &node->node_type;
    field[2] = &node->tailscale_ip;
    field[3] = &node->hostname;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        v = json_object_get(root, names[i]);

        if (v == NULL || json_is_null(v)) {
            continue;
        }

        if (!json_is_string(v)) {
            json_decref(root);
            *bad = names[i];
            return NGX_HTTP_BAD_REQUEST;
        }

        if (field[i]->len) {
            continue;
        }

        field[i]->len = json_string_length(v);
        field[i]->data = ngx_pnalloc(r->pool, field[i]->len + 1);
        if (field[i]->data == NULL) {
            json_decref(root);
            return NGX_ERROR;
        }

        ngx_memcpy(field[i]->data, json_string_value(v), field[i]->len);
    }

    json_decref(root);

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_vpc_api_discover(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx)
{
    if (ngx_http_dstack_vpc_api_node_type(&ctx->node_type) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc api: discover of an invalid node type");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid node type");
    }

    return ngx_http_dstack_vpc_api_view(r, ctx, 1);
}


/*
 * discover and nodes answer from the worker's copy of the document
 * (ngx_http_dstack_vpc_api_cache.c), else read the one that Redis keeps
 * rendered: a plain GET, and only when it is missing the script that
 * renders and stores it
 */

static ngx_int_t
ngx_http_dstack_vpc_api_view(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx, ngx_uint_t count)
{
    u_char                               *p;
    size_t                                lens[2];
    ngx_int_t                             rc;
    ngx_buf_t                            *b;
    ngx_uint_t                            discover;
    const char                           *argv[2];
    ngx_dstack_redis_cmd_t               *cmd;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);

    discover = (ctx->endpoint == NGX_HTTP_DSTACK_VPC_API_DISCOVER);

    if (!ctx->render) {
        rc = ngx_http_dstack_vpc_api_cache_get(r, discover, &ctx->node_type,
                                               &b, &ctx->cache_gen);
        switch (rc) {

        case NGX_OK:
            return ngx_http_dstack_vpc_api_send(r, NGX_HTTP_OK, b);

        case NGX_DONE:
            return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_NOT_FOUND,
                                                 "No %V nodes found",
                                                 &ctx->node_type);

        case NGX_DECLINED:
            break;

        default:
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->render) {
        argv[0] = (const char *) amcf->prefix.data;
        lens[0] = amcf->prefix.len;
        argv[1] = (const char *) ctx->node_type.data;
        lens[1] = ctx->node_type.len;

        return ngx_http_dstack_vpc_api_eval(r,
                                    discover ? amcf->lua_discover
                                             : amcf->lua_nodes,
                                    discover ? 2 : 1, argv, lens, count);
    }

    p = ngx_pnalloc(r->pool, amcf->prefix.len + sizeof("view:type:") - 1
                             + ctx->node_type.len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "GET";
    lens[0] = 3;
    argv[1] = (const char *) p;

    p = ngx_cpymem(p, amcf->prefix.data, amcf->prefix.len);

    if (discover) {
        p = ngx_cpymem(p, "view:type:", sizeof("view:type:") - 1);
        p = ngx_cpymem(p, ctx->node_type.data, ctx->node_type.len);

    } else {
        p = ngx_cpymem(p, "view:nodes", sizeof("view:nodes") - 1);
    }

    lens[1] = p - (u_char *) argv[1];

    cmd = ngx_dstack_redis_command(amcf->rds, r->pool, 2, argv, lens,
                                   amcf->timeout,
                                   ngx_http_dstack_vpc_api_reply, r);

    if (cmd == NULL) {
        return ngx_http_dstack_vpc_api_unavailable(r,
                                        ngx_dstack_redis_error(amcf->rds));
    }

    return ngx_http_dstack_vpc_api_park(r, count);
}


static ngx_int_t
ngx_http_dstack_vpc_api_eval(ngx_http_request_t *r,
    ngx_dstack_redis_script_t *script, int argc, const char **argv,
    size_t *lens, ngx_uint_t count)
{
    ngx_dstack_redis_cmd_t               *cmd;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);

    cmd = ngx_dstack_redis_eval(amcf->rds, r->pool, script, 0, argc, argv,
                                lens, amcf->timeout,
                                ngx_http_dstack_vpc_api_reply, r);

    if (cmd == NULL) {
        return ngx_http_dstack_vpc_api_unavailable(r,
                                        ngx_dstack_redis_error(amcf->rds));
    }

    return ngx_http_dstack_vpc_api_park(r, count);
}


static void
ngx_http_dstack_vpc_api_reply(void *data, redisReply *reply, const char *err)
{
    ngx_http_request_t *r = data;

    ngx_int_t                       rc;
    ngx_connection_t               *c;
    ngx_http_dstack_vpc_api_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_api_module);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "dstack vpc api: redis replied, type %d",
                   reply ? reply->type : -1);

    r->read_event_handler = ngx_http_block_reading;

    if (ctx->endpoint == NGX_HTTP_DSTACK_VPC_API_HEALTH) {
        rc = ngx_http_dstack_vpc_api_health_reply(r, reply, err);

    } else if (err != NULL) {
        rc = ngx_http_dstack_vpc_api_unavailable(r, err);

    } else if (reply->type == REDIS_REPLY_NIL && !ctx->render
               && (ctx->endpoint == NGX_HTTP_DSTACK_VPC_API_DISCOVER
                   || ctx->endpoint == NGX_HTTP_DSTACK_VPC_API_NODES))
    {
        /* the request keeps its reference for the second command */
        ctx->render = 1;

        rc = ngx_http_dstack_vpc_api_view(r, ctx, 0);

        if (rc == NGX_DONE) {
            return;
        }

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "dstack vpc api: redis error: \"%*s\"",
                      (size_t) ngx_min(reply->len, 200), reply->str);
        rc = ngx_http_dstack_vpc_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "redis error");

    } else {
        if (ctx->endpoint == NGX_HTTP_DSTACK_VPC_API_REGISTER
            || ctx->endpoint == NGX_HTTP_DSTACK_VPC_API_UPDATE)
        {
            /* the worker reads its own writes without waiting for pub/sub */
            ngx_http_dstack_vpc_api_cache_flush(
                ngx_http_get_module_main_conf(r,
                                              ngx_http_dstack_vpc_api_module));
        }

        switch (ctx->endpoint) {

        case NGX_HTTP_DSTACK_VPC_API_REGISTER:
            rc = ngx_http_dstack_vpc_api_register_reply(r, ctx, reply);
            break;

        case NGX_HTTP_DSTACK_VPC_API_UPDATE:
            rc = ngx_http_dstack_vpc_api_update_reply(r, reply);
            break;

        default:
            rc = ngx_http_dstack_vpc_api_document_reply(r, ctx, reply);
            break;
        }
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_dstack_vpc_api_health_reply(ngx_http_request_t *r,
    redisReply *reply, const char *err)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   why;
    ngx_buf_t  *b;

    if (err == NULL && reply->type == REDIS_REPLY_ERROR) {
        err = "redis error";
    }

    why.data = (u_char *) err;
    why.len = err ? ngx_strlen(err) : 0;

    len = sizeof("{\"status\":\"ok\",\"redis\":\"unavailable\",\"error\":}\n")
          + ngx_http_dstack_vpc_api_json_len(&why);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    if (err == NULL) {
        p = ngx_cpymem(p, "{\"status\":\"ok\",\"redis\":\"ok\"}\n",
                       sizeof("{\"status\":\"ok\",\"redis\":\"ok\"}\n") - 1);

    } else {
        p = ngx_cpymem(p, "{\"status\":\"ok\",\"redis\":\"unavailable\","
                          "\"error\":",
                       sizeof("{\"status\":\"ok\",\"redis\":\"unavailable\","
                              "\"error\":") - 1);
        p = ngx_http_dstack_vpc_api_json_put(p, &why);
        *p++ = '}';
        *p++ = '\n';
    }

    b->last = p;

    return ngx_http_dstack_vpc_api_send(r, NGX_HTTP_OK, b);
}


static ngx_int_t
ngx_http_dstack_vpc_api_register_reply(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx, redisReply *reply)
{
    u_char                               *p;
    size_t                                len;
    ngx_str_t                             shared;
    ngx_buf_t                            *b;
    redisReply                           *status;
    ngx_dstack_metrics_t                 *m;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        goto unexpected;
    }

    status = reply->element[0];

    if (status->len == 9 && ngx_strncmp(status->str, "forbidden", 9) == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc api: app \"%V\" may not register an "
                      "instance of another app", &ctx->app_id);
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_FORBIDDEN,
                                "instance is registered by another app");
    }

    if (status->len == 5 && ngx_strncmp(status->str, "limit", 5) == 0) {
        return ngx_http_dstack_vpc_api_limit(r, ctx, reply);
    }

    if (status->len == 5 && ngx_strncmp(status->str, "retry", 5) == 0) {
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "key id collision, retry");
    }

    if (reply->elements != 2
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        goto unexpected;
    }

    shared.data = (u_char *) reply->element[1]->str;
    shared.len = reply->element[1]->len;

    m = ngx_dstack_metrics(amcf->redis.metrics);

    if (m != NULL) {
        ngx_dstack_metrics_inc(&m->cp_keys_issued);
    }

    len = sizeof("{\"pre_auth_key\":,\"shared_key\":,\"server_url\":}\n")
          + ngx_http_dstack_vpc_api_json_len(&ctx->key)
          + ngx_http_dstack_vpc_api_json_len(&shared)
          + ngx_http_dstack_vpc_api_json_len(&ctx->server_url);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(b->last, "{\"pre_auth_key\":",
                   sizeof("{\"pre_auth_key\":") - 1);
    p = ngx_http_dstack_vpc_api_json_put(p, &ctx->key);
    p = ngx_cpymem(p, ",\"shared_key\":", sizeof(",\"shared_key\":") - 1);
    p = ngx_http_dstack_vpc_api_json_put(p, &shared);
    p = ngx_cpymem(p, ",\"server_url\":", sizeof(",\"server_url\":") - 1);

    if (ctx->server_url.len) {
        p = ngx_http_dstack_vpc_api_json_put(p, &ctx->server_url);

    } else {
        p = ngx_cpymem(p, "\"\"", 2);
    }

    *p++ = '}';
    *p++ = '\n';

    b->last = p;

    return ngx_http_dstack_vpc_api_send(r, NGX_HTTP_OK, b);

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "dstack vpc api: unexpected reply to register");
    return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "redis error");
}


/*
 * {"limit", directive, value}: 429, naming the directive and its value,
 * so that an operator sees which bound was reached and where to raise it.
 */

static ngx_int_t
ngx_http_dstack_vpc_api_limit(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx, redisReply *reply)
{
    ngx_str_t  name, value;

    if (reply->elements != 3
        || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[2]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc api: unexpected limit reply");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "redis error");
    }

    name.data = (u_char *) reply->element[1]->str;
    name.len = reply->element[1]->len;
    value.data = (u_char *) reply->element[2]->str;
    value.len = reply->element[2]->len;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "dstack vpc api: app \"%V\" reached \"%V %V\"",
                  &ctx->app_id, &name, &value);

    return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                         "limit reached: %V %V per app",
                                         &name, &value);
}


static ngx_int_t
ngx_http_dstack_vpc_api_update_reply(ngx_http_request_t *r,
    redisReply *reply)
{
    u_char      *p;
    size_t       len;
    ngx_str_t    f[5];
    ngx_buf_t   *b;
    ngx_uint_t   i;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        goto unexpected;
    }

    for (i = 0; i < reply->elements && i < 5; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            goto unexpected;
        }

        f[i].data = (u_char *) reply->element[i]->str;
        f[i].len = reply->element[i]->len;
    }

    if (f[0].len == 9 && ngx_strncmp(f[0].data, "forbidden", 9) == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc api: update of a node of another app");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_FORBIDDEN,
                                        "node is registered by another app");
    }

    if (f[0].len == 5 && ngx_strncmp(f[0].data, "limit", 5) == 0) {
        return ngx_http_dstack_vpc_api_limit(r,
                   ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_api_module),
                   reply);
    }

    if (f[0].len == 8 && ngx_strncmp(f[0].data, "reserved", 8) == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc api: update would create a node named "
                      "by an instance id");
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_FORBIDDEN,
                        "an instance id names a node only after "
                        "/api/register");
    }

    if (reply->elements != 5) {
        goto unexpected;
    }

    len = sizeof("{\"status\":,\"message\":\"Node information updated "
                 "successfully\",\"node\":{\"uuid\":,\"node_type\":,"
                 "\"tailscale_ip\":,\"hostname\":}}\n");

    for (i = 0; i < 5; i++) {
        len += ngx_http_dstack_vpc_api_json_len(&f[i]);
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(b->last, "{\"status\":", sizeof("{\"status\":") - 1);
    p = ngx_http_dstack_vpc_api_json_put(p, &f[0]);
    p = ngx_cpymem(p, ",\"message\":\"Node information updated "
                      "successfully\",\"node\":{\"uuid\":",
                   sizeof(",\"message\":\"Node information updated "
                          "successfully\",\"node\":{\"uuid\":") - 1);
    p = ngx_http_dstack_vpc_api_json_put(p, &f[1]);
    p = ngx_cpymem(p, ",\"node_type\":", sizeof(",\"node_type\":") - 1);
    p = ngx_http_dstack_vpc_api_json_put(p, &f[2]);
    p = ngx_cpymem(p, ",\"tailscale_ip\":", sizeof(",\"tailscale_ip\":") - 1);
    p = ngx_http_dstack_vpc_api_json_put(p, &f[3]);
    p = ngx_cpymem(p, ",\"hostname\":", sizeof(",\"hostname\":") - 1);
    p = ngx_http_dstack_vpc_api_json_put(p, &f[4]);
    p = ngx_cpymem(p, "}}\n", 3);

    b->last = p;

    return ngx_http_dstack_vpc_api_send(r, NGX_HTTP_OK, b);

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "dstack vpc api: unexpected reply to update");
    return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "redis error");
}


/* discover and nodes: Redis keeps the rendered document */

static ngx_int_t
ngx_http_dstack_vpc_api_document_reply(ngx_http_request_t *r,
    ngx_http_dstack_vpc_api_ctx_t *ctx, redisReply *reply)
{
    ngx_str_t   doc;
    ngx_buf_t  *b;

    if (reply->type == REDIS_REPLY_NIL
        && ctx->endpoint == NGX_HTTP_DSTACK_VPC_API_DISCOVER)
    {
        ngx_http_dstack_vpc_api_cache_put(r, 1, &ctx->node_type, NULL,
                                          ctx->cache_gen);

        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_NOT_FOUND,
                                             "No %V nodes found",
                                             &ctx->node_type);
    }

    if (reply->type != REDIS_REPLY_STRING) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc api: unexpected reply type %d",
                      reply->type);
        return ngx_http_dstack_vpc_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "redis error");
    }

    b = ngx_create_temp_buf(r->pool, reply->len + 1);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, reply->str, reply->len);
    *b->last++ = '\n';

    doc.data = b->pos;
    doc.len = b->last - b->pos;

    ngx_http_dstack_vpc_api_cache_put(r,
                            ctx->endpoint == NGX_HTTP_DSTACK_VPC_API_DISCOVER,
                            &ctx->node_type, &doc, ctx->cache_gen);

    return ngx_http_dstack_vpc_api_send(r, NGX_HTTP_OK, b);
}


/* a query parameter, URL-decoded ("+" is a space) */

static ngx_int_t
ngx_http_dstack_vpc_api_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    u_char     *src, *dst, *p;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        || raw.len == 0)
    {
        ngx_str_null(value);
        return NGX_OK;
    }

    value->data = ngx_pnalloc(r->pool, raw.len);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    for (p = value->data, src = raw.data; src < raw.data + raw.len; src++) {
        *p++ = (*src == '+') ? ' ' : *src;
    }

    src = value->data;
    dst = value->data;

    ngx_unescape_uri(&dst, &src, raw.len, 0);

    value->len = dst - value->data;

    return NGX_OK;
}


/* instance ids: hex; node uuids: also "-", "_" and "."; both lowercased */

static ngx_int_t
ngx_http_dstack_vpc_api_lower_id(ngx_str_t *s, ngx_uint_t hex_only)
{
    u_char      c;
    ngx_uint_t  i;

    if (s->len == 0 || s->len > NGX_HTTP_DSTACK_VPC_API_ID_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < s->len; i++) {
        c = ngx_tolower(s->data[i]);

        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
            s->data[i] = c;
            continue;
        }

        if (hex_only) {
            return NGX_ERROR;
        }

        if ((c >= 'g' && c <= 'z') || c == '-' || c == '_' || c == '.') {
            s->data[i] = c;
            continue;
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A node name becomes a DNS label: letters and digits lowercased, ".",
 * "_" and spaces turned into "-", no "-" at either end.  Anything else
 * (quotes, slashes, control bytes, non-ASCII) is refused.
 */

static ngx_int_t
ngx_http_dstack_vpc_api_node_name(ngx_str_t *s)
{
    u_char      c, *p, *start, *end;
    ngx_uint_t  i;

    if (s->len > NGX_HTTP_DSTACK_VPC_API_NAME_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < s->len; i++) {
        c = ngx_tolower(s->data[i]);

        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
            s->data[i] = c;

        } else if (c == '.' || c == '_' || c == ' ') {
            s->data[i] = '-';

        } else {
            return NGX_ERROR;
        }
    }

    start = s->data;
    end = s->data + s->len;

    while (start < end && *start == '-') {
        start++;
    }

    while (end > start && end[-1] == '-') {
        end--;
    }

    if (start == end) {
        return NGX_ERROR;
    }

    for (p = start; p < end; p++) {
        if (*p != '-') {
            s->data = start;
            s->len = end - start;
            return NGX_OK;
        }
    }

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_dstack_vpc_api_node_type(ngx_str_t *s)
{
    u_char      c;
    ngx_uint_t  i;

    if (s->len == 0 || s->len > NGX_HTTP_DSTACK_VPC_API_TYPE_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '-' || c == '_'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* RFC 1123 host name: labels of letters, digits and "-"; lowercased */

static ngx_int_t
ngx_http_dstack_vpc_api_hostname(ngx_str_t *s)
{
    u_char      c;
    ngx_uint_t  i, label;

    if (s->len == 0 || s->len > NGX_HTTP_DSTACK_VPC_API_HOSTNAME_MAX) {
        return NGX_ERROR;
    }

    label = 0;

    for (i = 0; i < s->len; i++) {
        c = ngx_tolower(s->data[i]);

        if (c == '.') {
            if (label == 0 || s->data[i - 1] == '-') {
                return NGX_ERROR;
            }

            label = 0;
            continue;
        }

        if (c == '-') {
            if (label == 0) {
                return NGX_ERROR;
            }

        } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            return NGX_ERROR;
        }

        if (++label > 63) {
            return NGX_ERROR;
        }

        s->data[i] = c;
    }

    if (label == 0 || s->data[s->len - 1] == '-') {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* base62 characters, uniformly distributed */

static ngx_int_t
ngx_http_dstack_vpc_api_random(u_char *dst, size_t len)
{
    u_char   buf[64];
    size_t   n, i;

    n = 0;

    while (n < len) {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            ngx_explicit_memzero(buf, sizeof(buf));
            return NGX_ERROR;
        }

        for (i = 0; i < sizeof(buf) && n < len; i++) {
            /* 248 = 4 * 62: larger bytes would favour the first letters */
            if (buf[i] < 248) {
                dst[n++] = ngx_http_dstack_vpc_api_base62[buf[i] % 62];
            }
        }
    }

    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_vpc_api_sha256_hex(u_char *dst, ngx_str_t *data)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  len;

    if (EVP_Digest(data->data, data->len, md, &len, EVP_sha256(), NULL) != 1
        || len != 32)
    {
        ERR_clear_error();
        return NGX_ERROR;
    }

    ngx_hex_dump(dst, md, len);

    return NGX_OK;
}


/* a quoted JSON string, or null when empty */

static size_t
ngx_http_dstack_vpc_api_json_len(ngx_str_t *s)
{
    if (s->len == 0) {
        return sizeof("null") - 1;
    }

    return 2 + s->len + ngx_escape_json(NULL, s->data, s->len);
}


static u_char *
ngx_http_dstack_vpc_api_json_put(u_char *p, ngx_str_t *s)
{
    if (s->len == 0) {
        return ngx_cpymem(p, "null", sizeof("null") - 1);
    }

    *p++ = '"';
    p = (u_char *) ngx_escape_json(p, s->data, s->len);
    *p++ = '"';

    return p;
}


static ngx_int_t
ngx_http_dstack_vpc_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char     *p, msg[256];
    size_t      len;
    va_list     args;
    ngx_buf_t  *b;

    va_start(args, fmt);
    p = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    len = sizeof("{\"error\":\"\"}\n") - 1 + (p - msg)
          + ngx_escape_json(NULL, msg, p - msg);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, "{\"error\":\"", sizeof("{\"error\":\"") - 1);
    b->last = (u_char *) ngx_escape_json(b->last, msg, p - msg);
    b->last = ngx_cpymem(b->last, "\"}\n", 3);

    return ngx_http_dstack_vpc_api_send(r, status, b);
}


static ngx_int_t
ngx_http_dstack_vpc_api_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b)
{
    ngx_int_t         rc;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    /* keys and live membership: nothing here is for caches */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    if (r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_dstack_vpc_api_init_process(ngx_cycle_t *cycle)
{
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_dstack_vpc_api_module);

    if (amcf == NULL || !amcf->enabled) {
        return NGX_OK;
    }

    amcf->rds = ngx_dstack_redis_create(cycle, &amcf->redis);
    if (amcf->rds == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_dstack_vpc_api_cache_init(cycle, amcf);
}


static void
ngx_http_dstack_vpc_api_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_dstack_vpc_api_module);

    if (amcf == NULL || amcf->rds == NULL) {
        return;
    }

    ngx_http_dstack_vpc_api_cache_done(amcf);

    /* before nginx checks for sockets left open */
    ngx_dstack_redis_destroy(amcf->rds);
    amcf->rds = NULL;
}


static void *
ngx_http_dstack_vpc_api_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_vpc_api_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->redis = { 0 };
     *     amcf->prefix = { 0, NULL };
     *     amcf->lua_* = NULL;
     *     amcf->rds = NULL;
     *     amcf->enabled = 0;
     *     amcf->cache = NULL;
     */

    amcf->timeout = NGX_CONF_UNSET_MSEC;
    amcf->cache_entries = NGX_CONF_UNSET_UINT;
    amcf->cache_size = NGX_CONF_UNSET_SIZE;
    amcf->cache_valid = NGX_CONF_UNSET_MSEC;
    amcf->app_id_index = NGX_CONF_UNSET;

    return amcf;
}


static char *
ngx_http_dstack_vpc_api_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_dstack_vpc_api_main_conf_t *amcf = conf;

    ngx_conf_init_msec_value(amcf->timeout, 1000);
    ngx_conf_init_uint_value(amcf->cache_entries,
                             NGX_HTTP_DSTACK_VPC_API_CACHE_ENTRIES);
    ngx_conf_init_size_value(amcf->cache_size,
                             NGX_HTTP_DSTACK_VPC_API_CACHE_SIZE);
    ngx_conf_init_msec_value(amcf->cache_valid,
                             NGX_HTTP_DSTACK_VPC_API_CACHE_VALID);

    if (amcf->prefix.data == NULL) {
        ngx_str_set(&amcf->prefix, "dstack:vpc:");
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_dstack_vpc_api_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_vpc_api_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_vpc_api_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->enable = 0;
     *     conf->allow_mode = NGX_HTTP_DSTACK_VPC_API_ALLOW_UNSET;
     *     conf->allow = NULL;
     *     conf->server_url = NULL;
     *     conf->gateway_url = { 0, NULL };
     */

    conf->key_ttl = NGX_CONF_UNSET;
    conf->key_reusable = NGX_CONF_UNSET;
    conf->key_ephemeral = NGX_CONF_UNSET;
    conf->max_body = NGX_CONF_UNSET_SIZE;
    conf->max_args = NGX_CONF_UNSET_SIZE;
    conf->max_keys = NGX_CONF_UNSET_UINT;
    conf->max_records = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_dstack_vpc_api_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_dstack_vpc_api_loc_conf_t *prev = parent;
    ngx_http_dstack_vpc_api_loc_conf_t *conf = child;

    if (conf->allow_mode == NGX_HTTP_DSTACK_VPC_API_ALLOW_UNSET) {
        conf->allow_mode = prev->allow_mode;
        conf->allow = prev->allow;
    }

    /* as the seed: no list at all lets nobody in */
    if (conf->allow_mode == NGX_HTTP_DSTACK_VPC_API_ALLOW_UNSET) {
        conf->allow_mode = NGX_HTTP_DSTACK_VPC_API_ALLOW_NONE;
    }

    if (conf->server_url == NULL && conf->gateway_url.data == NULL) {
        conf->server_url = prev->server_url;
        conf->gateway_url = prev->gateway_url;
    }

    ngx_conf_merge_sec_value(conf->key_ttl, prev->key_ttl, 3600);
    ngx_conf_merge_value(conf->key_reusable, prev->key_reusable, 0);
    ngx_conf_merge_value(conf->key_ephemeral, prev->key_ephemeral, 0);
    ngx_conf_merge_size_value(conf->max_body, prev->max_body, 4096);
    ngx_conf_merge_size_value(conf->max_args, prev->max_args, 2048);
    ngx_conf_merge_uint_value(conf->max_keys, prev->max_keys,
                              NGX_HTTP_DSTACK_VPC_API_MAX_PER_APP);
    ngx_conf_merge_uint_value(conf->max_records, prev->max_records,
                              NGX_HTTP_DSTACK_VPC_API_MAX_PER_APP);

    if (conf->enable
        && conf->server_url == NULL && conf->gateway_url.data == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_vpc_api\" needs "
                           "\"dstack_vpc_api_server_url\" or "
                           "\"dstack_vpc_api_server_gateway\"");
        return NGX_CONF_ERROR;
    }

    if (conf->key_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_vpc_api_key_ttl\" must be positive");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_dstack_vpc_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_vpc_api_loc_conf_t *alcf = conf;

    ngx_http_core_loc_conf_t             *clcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_dstack_vpc_api_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_dstack_vpc_api_handler;

    amcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_dstack_vpc_api_module);
    amcf->enabled = 1;

    alcf->enable = 1;

    return NGX_CONF_OK;
}


/*
 * dstack_vpc_api_allow any | <app id>[,<app id>...] ...;
 *
 * Ids may be split by commas or given as separate arguments, so that an
 * entrypoint can pass VPC_ALLOWED_APPS as it is; an empty value, as the
 * seed's empty list, allows nobody.
 */

static char *
ngx_http_dstack_vpc_api_allow(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_vpc_api_loc_conf_t *alcf = conf;

    u_char      *p, *last, *start;
    ngx_str_t   *value, *id, token;
    ngx_uint_t   i, j, any, ids;

    if (alcf->allow_mode != NGX_HTTP_DSTACK_VPC_API_ALLOW_UNSET) {
        return "is duplicate";
    }

    alcf->allow = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
    if (alcf->allow == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    any = 0;
    ids = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        p = value[i].data;
        last = p + value[i].len;

        while (p < last) {

            while (p < last && (*p == ',' || *p == ' ' || *p == '\t')) {
                p++;
            }

            start = p;

            while (p < last && *p != ',' && *p != ' ' && *p != '\t') {
                p++;
            }

            token.data = start;
            token.len = p - start;

            if (token.len == 0) {
                continue;
            }

            if (token.len == 3
                && ngx_strncasecmp(token.data, (u_char *) "any", 3) == 0)
            {
                any = 1;
                continue;
            }

            if (token.len != NGX_HTTP_DSTACK_VPC_API_APP_ID_LEN) {
                goto invalid;
            }

            id = ngx_array_push(alcf->allow);
            if (id == NULL) {
                return NGX_CONF_ERROR;
            }

            id->len = token.len;
            id->data = ngx_pnalloc(cf->pool, token.len);
            if (id->data == NULL) {
                return NGX_CONF_ERROR;
            }

            for (j = 0; j < token.len; j++) {
                id->data[j] = ngx_tolower(token.data[j]);

                if (!((id->data[j] >= '0' && id->data[j] <= '9')
                      || (id->data[j] >= 'a' && id->data[j] <= 'f')))
                {
                    goto invalid;
                }
            }

            ids++;
        }
    }

    if (any && ids) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" takes either \"any\" or app ids, not both",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    alcf->allow_mode = any ? NGX_HTTP_DSTACK_VPC_API_ALLOW_ANY
                           : ids ? NGX_HTTP_DSTACK_VPC_API_ALLOW_LIST
                                 : NGX_HTTP_DSTACK_VPC_API_ALLOW_NONE;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid app id \"%V\" in \"%V\": "
                       "40 hex characters expected", &token, &cmd->name);
    return NGX_CONF_ERROR;
}


/*
 * dstack_vpc_api_server_gateway <server app id> <gateway domain> [port];
 *
 * server_url as the seed built it: https://<app id>-<port>.<domain>.
 */

static char *
ngx_http_dstack_vpc_api_server_gateway(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_vpc_api_loc_conf_t *alcf = conf;

    u_char      *p, c;
    ngx_int_t    port;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (alcf->gateway_url.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len != NGX_HTTP_DSTACK_VPC_API_APP_ID_LEN) {
        goto invalid_id;
    }

    for (i = 0; i < value[1].len; i++) {
        c = ngx_tolower(value[1].data[i]);

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            goto invalid_id;
        }
    }

    if (value[2].len == 0 || value[2].len > 253
        || ngx_strlchr(value[2].data, value[2].data + value[2].len, '/'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid gateway domain \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    port = 443;

    if (cf->args->nelts == 4) {
        port = ngx_atoi(value[3].data, value[3].len);

        if (port < 1 || port > 65535) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid port \"%V\"", &value[3]);
            return NGX_CONF_ERROR;
        }
    }

    alcf->gateway_url.data = ngx_pnalloc(cf->pool, sizeof("https://-65535.")
                                                   + value[1].len
                                                   + value[2].len);
    if (alcf->gateway_url.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_sprintf(alcf->gateway_url.data, "https://%V-%i.%V",
                    &value[1], port, &value[2]);

    alcf->gateway_url.len = p - alcf->gateway_url.data;
    ngx_strlow(alcf->gateway_url.data, alcf->gateway_url.data,
               alcf->gateway_url.len);

    return NGX_CONF_OK;

invalid_id:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid server app id \"%V\": "
                       "40 hex characters expected", &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_dstack_vpc_api_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_vpc_api_main_conf_t *amcf = conf;

    ngx_str_t  *value;

    if (amcf->redis.name.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_dstack_redis_conf_parse(cf, &amcf->redis, &value[1],
                                       cf->args->nelts - 1);
}


static ngx_int_t
ngx_http_dstack_vpc_api_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt                  *h;
    ngx_http_core_main_conf_t            *cmcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_dstack_vpc_api_module);

    if (!amcf->enabled) {
        return NGX_OK;
    }

    amcf->redis.metrics = ngx_dstack_metrics_zone(cf);

    if (amcf->redis.metrics != NULL) {
        cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

        h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_dstack_vpc_api_log_metrics;
    }

    if (amcf->redis.name.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_vpc_api\" needs \"dstack_vpc_redis\" "
                           "in the http block");
        return NGX_ERROR;
    }

    /* from ngx_dstack_auth_module, which must be loaded as well */
    amcf->app_id_index = ngx_http_get_variable_index(cf,
                                        &ngx_http_dstack_vpc_api_app_id_var);
    if (amcf->app_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    amcf->lua_register = ngx_dstack_redis_add_script(cf, &amcf->redis,
                                        &ngx_http_dstack_vpc_api_lua_register);
    amcf->lua_update = ngx_dstack_redis_add_script(cf, &amcf->redis,
                                        &ngx_http_dstack_vpc_api_lua_update);
    amcf->lua_discover = ngx_dstack_redis_add_script(cf, &amcf->redis,
                                        &ngx_http_dstack_vpc_api_lua_discover);
    amcf->lua_nodes = ngx_dstack_redis_add_script(cf, &amcf->redis,
                                        &ngx_http_dstack_vpc_api_lua_nodes);

    if (amcf->lua_register == NULL || amcf->lua_update == NULL
        || amcf->lua_discover == NULL || amcf->lua_nodes == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
