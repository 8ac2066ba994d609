
/*
 * ngx_http_dstack_vpc_cp_module: the VPN control plane (POST /machine/...,
 * docs/control-plane.md), routed here by ngx_http_dstack_vpc_api_module
 * once the caller is identified ($dstack_app_id) and allowed.  It shares
 * that module's Redis client and key prefix; its Lua scripts are in
 * ngx_http_dstack_vpc_cp_lua.c, shared with wgctl's admin commands.  The
 * pub/sub fan-out and the expiry sweep are in ngx_http_dstack_vpc_cp_events.c,
 * node checks, node JSON and output buffers in ngx_http_dstack_vpc_cp_node.c.
 *
 * A map stream is a long-lived request: the full map first, then every
 * change as a delta.  Changes reach the workers through one Redis pub/sub
 * subscription per worker; each message is a whole change (no read
 * needed) and carries a sequence number, so that a stream whose full map
 * was read while messages were in flight applies exactly the later ones
 * (a short per-worker ring keeps the latest messages for that).
 */



#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>
#include <openssl/err.h>

#include <jansson.h>

#include "ngx_http_dstack_vpc_cp.h"


static void ngx_http_dstack_vpc_cp_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_vpc_cp_parse(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, const char **bad);
static ngx_int_t ngx_http_dstack_vpc_cp_parse_strings(ngx_http_request_t *r,
    json_t *root, ngx_http_dstack_vpc_cp_req_t *req, const char **bad);
static ngx_int_t ngx_http_dstack_vpc_cp_parse_endpoints(ngx_http_request_t *r,
    json_t *v, ngx_http_dstack_vpc_cp_req_t *req);
static ngx_int_t ngx_http_dstack_vpc_cp_copy(ngx_http_request_t *r,
    json_t *v, size_t max, ngx_str_t *dst);
static ngx_int_t ngx_http_dstack_vpc_cp_register(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx);
static void ngx_http_dstack_vpc_cp_register_reply(void *data,
    redisReply *reply, const char *err);
static ngx_int_t ngx_http_dstack_vpc_cp_registered(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_dstack_vpc_cp_logout(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx);
static void ngx_http_dstack_vpc_cp_logout_reply(void *data,
    redisReply *reply, const char *err);
static void ngx_http_dstack_vpc_cp_poll_reply(void *data, redisReply *reply,
    const char *err);
static ngx_int_t ngx_http_dstack_vpc_cp_full_map(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_dstack_vpc_cp_render_cached(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, ngx_http_dstack_vpc_cp_out_t *out);
static ngx_int_t ngx_http_dstack_vpc_cp_render_tail(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, ngx_http_dstack_vpc_cp_out_t *out);
static ngx_int_t ngx_http_dstack_vpc_cp_render_map(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, redisReply *reply,
    ngx_http_dstack_vpc_cp_out_t *out);
static ngx_int_t ngx_http_dstack_vpc_cp_stream_limits(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx);
static ngx_uint_t ngx_http_dstack_vpc_cp_same_stream(
    ngx_http_dstack_vpc_cp_ctx_t *a, ngx_http_dstack_vpc_cp_ctx_t *b,
    ngx_uint_t key);
static ngx_int_t ngx_http_dstack_vpc_cp_limit(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, const char *name, ngx_uint_t value);
static ngx_int_t ngx_http_dstack_vpc_cp_stream_start(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_vpc_cp_stream_live(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, ngx_http_dstack_vpc_cp_out_t *map);
static void ngx_http_dstack_vpc_cp_stream_writer(ngx_http_request_t *r);
static void ngx_http_dstack_vpc_cp_stream_timer(ngx_event_t *ev);
static void ngx_http_dstack_vpc_cp_touch_reply(void *data,
    redisReply *reply, const char *err);
static void ngx_http_dstack_vpc_cp_stream_cleanup(void *data);
static void ngx_http_dstack_vpc_cp_count_stream(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf, ngx_atomic_int_t delta);
static void ngx_http_dstack_vpc_cp_stream_close(ngx_event_t *ev);
static ngx_int_t ngx_http_dstack_vpc_cp_reply_json(ngx_http_request_t *r,
    ngx_uint_t status, u_char *data, size_t len);
static ngx_int_t ngx_http_dstack_vpc_cp_park(ngx_http_request_t *r,
    ngx_dstack_redis_cmd_t *cmd, ngx_dstack_redis_t *rds);
static ngx_int_t ngx_http_dstack_vpc_cp_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *fmt, ...);
static ngx_int_t ngx_http_dstack_vpc_cp_status(redisReply *reply,
    const char *status);
static ngx_int_t ngx_http_dstack_vpc_cp_init_process(ngx_cycle_t *cycle);
static void ngx_http_dstack_vpc_cp_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_dstack_vpc_cp_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_vpc_cp_init_main_conf(ngx_conf_t *cf,
    void *conf);
static char *ngx_http_dstack_vpc_cp_prefix(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_dstack_vpc_cp_init(ngx_conf_t *cf);



static ngx_conf_enum_t  ngx_http_dstack_vpc_cp_wg_path[] = {
    { ngx_string("auto"), NGX_HTTP_DSTACK_VPC_CP_WG_AUTO },
    { ngx_string("direct"), NGX_HTTP_DSTACK_VPC_CP_WG_DIRECT },
    { ngx_string("relay"), NGX_HTTP_DSTACK_VPC_CP_WG_RELAY },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_dstack_vpc_cp_commands[] = {

    /* VPC-wide: in any context, they set the http block's values */

    { ngx_string("dstack_vpc_control_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, keepalive),
      NULL },

    { ngx_string("dstack_vpc_control_inactivity_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, inactivity),
      NULL },

    { ngx_string("dstack_vpc_control_sweep_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, sweep_interval),
      NULL },

    { ngx_string("dstack_vpc_control_coalesce"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, coalesce),
      NULL },

    { ngx_string("dstack_vpc_control_stream_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, stream_buffer),
      NULL },

    { ngx_string("dstack_vpc_control_max_nodes_per_app"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, max_nodes),
      NULL },

    { ngx_string("dstack_vpc_control_max_streams_per_node"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, max_streams_node),
      NULL },

    { ngx_string("dstack_vpc_control_max_streams_per_app"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, max_streams_app),
      NULL },
    { ngx_string("dstack_vpc_control_wg_path"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, wg_path),
      &ngx_http_dstack_vpc_cp_wg_path },

    { ngx_string("dstack_vpc_control_map_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_vpc_cp_main_conf_t, map_cache),
      NULL },

    { ngx_string("dstack_vpc_control_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_vpc_cp_prefix,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_vpc_cp_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_dstack_vpc_cp_init,           /* postconfiguration */

    ngx_http_dstack_vpc_cp_create_main_conf, /* create main configuration */
    ngx_http_dstack_vpc_cp_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_vpc_cp_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_vpc_cp_module_ctx,    /* module context */
    ngx_http_dstack_vpc_cp_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_dstack_vpc_cp_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_dstack_vpc_cp_exit_process,   /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* 18 bytes of JSON after their length */
static u_char  ngx_http_dstack_vpc_cp_keepalive_frame[] =
    "\x12\x00\x00\x00{\"KeepAlive\":true}";


ngx_int_t
ngx_http_dstack_vpc_cp_handler(ngx_http_request_t *r, ngx_str_t *app_id)
{
    ngx_int_t                      rc;
    ngx_uint_t                     endpoint;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

#define ngx_http_dstack_vpc_cp_is(s)                                          \
    (r->uri.len == sizeof(s) - 1                                              \
     && ngx_strncmp(r->uri.data, s, sizeof(s) - 1) == 0)

    if (ngx_http_dstack_vpc_cp_is("/machine/register")) {
        endpoint = NGX_HTTP_DSTACK_VPC_CP_REGISTER;

    } else if (ngx_http_dstack_vpc_cp_is("/machine/map")) {
        endpoint = NGX_HTTP_DSTACK_VPC_CP_MAP;

    } else if (ngx_http_dstack_vpc_cp_is("/machine/logout")) {
        endpoint = NGX_HTTP_DSTACK_VPC_CP_LOGOUT;

    } else {
        endpoint = 0;
    }

#undef ngx_http_dstack_vpc_cp_is

    if (endpoint == 0) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_NOT_FOUND,
                                            "not found");
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_vpc_cp_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->cmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_cp_module);
    ctx->endpoint = endpoint;
    ctx->app_id = *app_id;

    ngx_http_set_ctx(r, ctx, ngx_http_dstack_vpc_cp_module);

    if (r->headers_in.content_length_n > NGX_HTTP_DSTACK_VPC_CP_BODY_MAX) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc control: body of %O bytes refused",
                      r->headers_in.content_length_n);

        return ngx_http_dstack_vpc_cp_error(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        "request body too large");
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_dstack_vpc_cp_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the body handler: it owns the reference that reading the body took */

static void
ngx_http_dstack_vpc_cp_body(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    const char                    *bad;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);

    bad = NULL;
    rc = ngx_http_dstack_vpc_cp_parse(r, ctx, &bad);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        rc = ngx_http_dstack_vpc_cp_error(r, rc, "request body too large");
        goto done;
    }

    if (rc == NGX_HTTP_BAD_REQUEST) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc control: invalid %s in \"%V\"", bad,
                      &r->uri);
        rc = ngx_http_dstack_vpc_cp_error(r, rc, "invalid %s", bad);
        goto done;
    }

    if (rc != NGX_OK) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    switch (ctx->endpoint) {

    case NGX_HTTP_DSTACK_VPC_CP_REGISTER:
        rc = ngx_http_dstack_vpc_cp_register(r, ctx);
        break;

    case NGX_HTTP_DSTACK_VPC_CP_LOGOUT:
        rc = ngx_http_dstack_vpc_cp_logout(r, ctx);
        break;

    default: /* NGX_HTTP_DSTACK_VPC_CP_MAP */
        rc = ctx->req.stream ? ngx_http_dstack_vpc_cp_stream_start(r, ctx)
                             : ngx_http_dstack_vpc_cp_poll(r, ctx);
        break;
    }

done:

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/*
 * Returns NGX_OK, NGX_HTTP_BAD_REQUEST with *bad naming the field,
 * NGX_HTTP_REQUEST_ENTITY_TOO_LARGE or NGX_ERROR.
 */

static ngx_int_t
ngx_http_dstack_vpc_cp_parse(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, const char **bad)
{
    u_char                        *buf, *p;
    size_t                         len;
    json_t                        *root, *v;
    ngx_int_t                      rc;
    ngx_chain_t                   *cl;
    json_error_t                   jerr;
    ngx_http_dstack_vpc_cp_req_t  *req;

    req = &ctx->req;
    len = 0;

    if (r->request_body != NULL) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            if (cl->buf->in_file) {
                return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
            }

            len += cl->buf->last - cl->buf->pos;
        }
    }

    if (len > NGX_HTTP_DSTACK_VPC_CP_BODY_MAX) {
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    *bad = "JSON body";

    if (len == 0) {
        return NGX_HTTP_BAD_REQUEST;
    }

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    if (ngx_http_dstack_vpc_cp_json_depth(buf, len)
        > NGX_HTTP_DSTACK_VPC_CP_JSON_DEPTH)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    root = json_loadb((char *) buf, len, JSON_REJECT_DUPLICATES, &jerr);

    if (ctx->endpoint == NGX_HTTP_DSTACK_VPC_CP_REGISTER) {
        /* the auth key: only the copy in req->auth_key stays, zeroed later */
        ngx_explicit_memzero(buf, len);

        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            ngx_explicit_memzero(cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return NGX_HTTP_BAD_REQUEST;
    }

    rc = ngx_http_dstack_vpc_cp_parse_strings(r, root, req, bad);

    if (rc != NGX_OK) {
        json_decref(root);
        return rc;
    }

    v = json_object_get(root, "Ephemeral");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            *bad = "Ephemeral";
            json_decref(root);
            return NGX_HTTP_BAD_REQUEST;
        }

        req->ephemeral = json_is_true(v);
    }

    v = json_object_get(root, "Stream");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            *bad = "Stream";
            json_decref(root);
            return NGX_HTTP_BAD_REQUEST;
        }

        req->stream = json_is_true(v);
    }

    v = json_object_get(root, "Endpoints");

    if (v != NULL && !json_is_null(v)) {
        rc = ngx_http_dstack_vpc_cp_parse_endpoints(r, v, req);

        if (rc != NGX_OK) {
            *bad = "Endpoints";
            json_decref(root);
            return rc;
        }
    }

    json_decref(root);

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_vpc_cp_parse_strings(ngx_http_request_t *r, json_t *root,
    ngx_http_dstack_vpc_cp_req_t *req, const char **bad)
{
    u_char      c;
    size_t      i;
    json_t     *v;
    ngx_str_t   s;

    /* NodeKey: "nodekey:<64 hex>", lowercased */

    *bad = "NodeKey";

    v = json_object_get(root, "NodeKey");

    if (ngx_http_dstack_vpc_cp_copy(r, v, 8 + NGX_HTTP_DSTACK_VPC_CP_KEY_LEN,
                                    &s)
        != NGX_OK
        || s.len != 8 + NGX_HTTP_DSTACK_VPC_CP_KEY_LEN
        || ngx_strncmp(s.data, "nodekey:", 8) != 0)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    req->key.data = s.data + 8;
    req->key.len = NGX_HTTP_DSTACK_VPC_CP_KEY_LEN;

    ngx_strlow(req->key.data, req->key.data, req->key.len);

    if (ngx_http_dstack_vpc_cp_hex(&req->key, NGX_HTTP_DSTACK_VPC_CP_KEY_LEN)
        != NGX_OK)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    for (i = 0; i < req->key.len; i++) {
        if (req->key.data[i] != '0') {
            break;
        }
    }

    if (i == req->key.len) {
        /* the all-zero key: nobody's */
        return NGX_HTTP_BAD_REQUEST;
    }

    /* Auth.AuthKey: checked by the register script */

    *bad = "Auth";

    v = json_object_get(root, "Auth");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_object(v)) {
            return NGX_HTTP_BAD_REQUEST;
        }

        *bad = "AuthKey";

        if (ngx_http_dstack_vpc_cp_copy(r, json_object_get(v, "AuthKey"),
                                        NGX_HTTP_DSTACK_VPC_CP_AUTH_KEY_MAX,
                                        &req->auth_key)
            != NGX_OK)
        {
            return NGX_HTTP_BAD_REQUEST;
        }
    }

    /* Hostinfo.Hostname: sanitized into a DNS label, never refused */

    *bad = "Hostinfo";

    v = json_object_get(root, "Hostinfo");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_object(v)) {
            return NGX_HTTP_BAD_REQUEST;
        }

        *bad = "Hostname";

        if (ngx_http_dstack_vpc_cp_copy(r, json_object_get(v, "Hostname"),
                                        NGX_HTTP_DSTACK_VPC_CP_HOSTNAME_MAX,
                                        &req->label)
            != NGX_OK)
        {
            return NGX_HTTP_BAD_REQUEST;
        }

        ngx_http_dstack_vpc_cp_sanitize(&req->label);
    }

    *bad = "InstanceID";

    if (ngx_http_dstack_vpc_cp_copy(r, json_object_get(root, "InstanceID"),
                                    NGX_HTTP_DSTACK_VPC_CP_ID_MAX,
                                    &req->instance_id)
        != NGX_OK)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    ngx_strlow(req->instance_id.data, req->instance_id.data,
               req->instance_id.len);

    if (req->instance_id.len
        && ngx_http_dstack_vpc_cp_hex(&req->instance_id,
                                      NGX_HTTP_DSTACK_VPC_CP_ID_MAX)
           != NGX_OK)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    *bad = "NodeType";

    if (ngx_http_dstack_vpc_cp_copy(r, json_object_get(root, "NodeType"),
                                    NGX_HTTP_DSTACK_VPC_CP_TYPE_MAX,
                                    &req->node_type)
        != NGX_OK)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    for (i = 0; i < req->node_type.len; i++) {
        c = req->node_type.data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '-' || c == '_'))
        {
            return NGX_HTTP_BAD_REQUEST;
        }
    }

    /* Expiry: RFC 3339 in UTC; the zero time means none */

    *bad = "Expiry";

    if (ngx_http_dstack_vpc_cp_copy(r, json_object_get(root, "Expiry"),
                                    64, &s)
        != NGX_OK)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    if (s.len
        && !(s.len == sizeof(NGX_HTTP_DSTACK_VPC_CP_ZERO_TIME) - 1
             && ngx_strncmp(s.data, NGX_HTTP_DSTACK_VPC_CP_ZERO_TIME,
                            s.len) == 0))
    {
        req->expiry = ngx_dstack_vpc_parse_time(s.data, s.len);

        if (req->expiry == NGX_ERROR || req->expiry <= ngx_time()) {
            return NGX_HTTP_BAD_REQUEST;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_vpc_cp_parse_endpoints(ngx_http_request_t *r, json_t *v,
    ngx_http_dstack_vpc_cp_req_t *req)
{
    u_char      *p;
    size_t       i, n, len;
    json_t      *e;
    const char  *s;

    if (!json_is_array(v)
        || json_array_size(v) > NGX_HTTP_DSTACK_VPC_CP_ENDPOINTS_MAX)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    n = json_array_size(v);

    p = ngx_pnalloc(r->pool,
                    n * (NGX_HTTP_DSTACK_VPC_CP_ENDPOINT_MAX + 1) + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    req->endpoints.data = p;
    req->has_endpoints = 1;

    for (i = 0; i < n; i++) {
        e = json_array_get(v, i);
        s = json_string_value(e);

        if (s == NULL) {
            return NGX_HTTP_BAD_REQUEST;
        }

        len = json_string_length(e);

        if (ngx_http_dstack_vpc_cp_endpoint_valid((u_char *) s, len)
            != NGX_OK)
        {
            return NGX_HTTP_BAD_REQUEST;
        }

        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, s, len);
    }

    req->endpoints.len = p - req->endpoints.data;

    return NGX_OK;
}


/* an optional string (absent or null: empty), at most max bytes */

static ngx_int_t
ngx_http_dstack_vpc_cp_copy(ngx_http_request_t *r, json_t *v, size_t max,
    ngx_str_t *dst)
{
    size_t  len;

    ngx_str_null(dst);

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    len = json_string_length(v);

    if (len > max || ngx_strlen(json_string_value(v)) != len) {
        return NGX_ERROR;
    }

    dst->data = ngx_pnalloc(r->pool, len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, json_string_value(v), len + 1);
    dst->len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_vpc_cp_register(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx)
{
    u_char                               *p, md[EVP_MAX_MD_SIZE];
    u_char                                hash[64], expiry[NGX_TIME_T_LEN];
    size_t                                lens[14];
    ngx_str_t                             key_id, *ak;
    ngx_uint_t                            i;
    const char                           *argv[14];
    unsigned int                          mdlen;
    ngx_dstack_redis_cmd_t               *cmd;
    ngx_http_dstack_vpc_cp_req_t         *req;
    ngx_http_dstack_vpc_cp_main_conf_t   *cmcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    cmcf = ctx->cmcf;
    amcf = cmcf->amcf;
    req = &ctx->req;
    ak = &req->auth_key;

    /*
     * hskey-auth-<id>-<secret> as GET /api/register mints it; Redis only
     * sees the id and the SHA-256 of the whole key.  Any other text is an
     * unknown key, which a node already registered by this app does not
     * need.
     */

    ngx_str_null(&key_id);
    mdlen = 0;

    if (ak->len == sizeof("hskey-auth-") - 1 + NGX_HTTP_DSTACK_VPC_CP_KEY_ID_LEN
                   + 1 + NGX_HTTP_DSTACK_VPC_CP_KEY_SECRET_LEN
        && ngx_strncmp(ak->data, "hskey-auth-", sizeof("hskey-auth-") - 1)
           == 0
        && ak->data[sizeof("hskey-auth-") - 1
                    + NGX_HTTP_DSTACK_VPC_CP_KEY_ID_LEN] == '-')
    {
        key_id.data = ak->data + sizeof("hskey-auth-") - 1;
        key_id.len = NGX_HTTP_DSTACK_VPC_CP_KEY_ID_LEN;

        for (i = 0; i < key_id.len; i++) {
            p = &key_id.data[i];

            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')
                  || (*p >= 'A' && *p <= 'Z')))
            {
                ngx_str_null(&key_id);
                break;
            }
        }

        if (key_id.len
            && (EVP_Digest(ak->data, ak->len, md, &mdlen, EVP_sha256(), NULL)
                != 1
                || mdlen != 32))
        {
            ERR_clear_error();
            ngx_explicit_memzero(ak->data, ak->len);
            return ngx_http_dstack_vpc_cp_error(r,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "cannot hash the auth key");
        }
    }

    ngx_hex_dump(hash, md, key_id.len ? 32 : 0);

    p = ngx_sprintf(expiry, "%T", req->expiry);

    argv[0] = (const char *) amcf->prefix.data;
    lens[0] = amcf->prefix.len;
    argv[1] = (const char *) req->key.data;
    lens[1] = req->key.len;
    argv[2] = (const char *) ctx->app_id.data;
    lens[2] = ctx->app_id.len;
    argv[3] = (const char *) req->instance_id.data;
    lens[3] = req->instance_id.len;
    argv[4] = (const char *) req->label.data;
    lens[4] = req->label.len;
    argv[5] = (const char *) req->node_type.data;
    lens[5] = req->node_type.len;
    argv[6] = req->ephemeral ? "1" : "0";
    lens[6] = 1;
    argv[7] = (const char *) expiry;
    lens[7] = p - expiry;
    argv[8] = (const char *) key_id.data;
    lens[8] = key_id.len;
    argv[9] = (const char *) hash;
    lens[9] = key_id.len ? 64 : 0;
    argv[10] = (const char *) cmcf->pool.data;
    lens[10] = cmcf->pool.len;
    argv[11] = (const char *) cmcf->base_text.data;
    lens[11] = cmcf->base_text.len;
    argv[12] = (const char *) cmcf->size_text.data;
    lens[12] = cmcf->size_text.len;
    argv[13] = (const char *) cmcf->max_nodes_text.data;
    lens[13] = cmcf->max_nodes_text.len;

    for (i = 0; i < 14; i++) {
        if (argv[i] == NULL) {
            argv[i] = "";
        }
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "dstack vpc control: register node key \"%*s...\" "
                  "for app \"%V\", instance \"%V\", auth key id \"%V\"",
                  (size_t) 16, req->key.data, &ctx->app_id,
                  &req->instance_id, &key_id);

    cmd = ngx_dstack_redis_eval(amcf->rds, r->pool, cmcf->lua_register, 0,
                                14, argv, lens, amcf->timeout,
                                ngx_http_dstack_vpc_cp_register_reply, r);

    /* the only copy of the key besides the body buffers */
    ngx_explicit_memzero(ak->data, ak->len);

    return ngx_http_dstack_vpc_cp_park(r, cmd, amcf->rds);
}


static void
ngx_http_dstack_vpc_cp_register_reply(void *data, redisReply *reply,
    const char *err)
{
    ngx_http_request_t *r = data;

    ngx_int_t                      rc;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);

    r->read_event_handler = ngx_http_block_reading;

    if (err != NULL) {
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis unavailable: %s", err);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc control: redis error: \"%*s\"",
                      (size_t) ngx_min(reply->len, 200), reply->str);
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis error");

    } else {
        rc = ngx_http_dstack_vpc_cp_registered(r, ctx, reply);
    }

    ngx_http_dstack_vpc_cp_finalize(r, rc);
}


static ngx_int_t
ngx_http_dstack_vpc_cp_registered(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, redisReply *reply)
{
    u_char                *p;
    size_t                 len;
    uint32_t               addr;
    ngx_str_t              f[6];
    ngx_uint_t             i, status;
    ngx_dstack_metrics_t  *m;

    static struct {
        const char  *name;
        ngx_uint_t   status;
    } refusals[] = {
        { "unknown", NGX_HTTP_UNAUTHORIZED },
        { "expired", NGX_HTTP_UNAUTHORIZED },
        { "revoked", NGX_HTTP_UNAUTHORIZED },
        { "used", NGX_HTTP_UNAUTHORIZED },
        { "forbidden", NGX_HTTP_FORBIDDEN },
        { "conflict", NGX_HTTP_CONFLICT },
        { "exhausted", NGX_HTTP_SERVICE_UNAVAILABLE },
        { "limit", NGX_HTTP_TOO_MANY_REQUESTS },
        { NULL, 0 }
    };

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
        || reply->elements > 6)
    {
        goto unexpected;
    }

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            goto unexpected;
        }

        f[i].data = (u_char *) reply->element[i]->str;
        f[i].len = reply->element[i]->len;
    }

    if (!(f[0].len == 2 && ngx_strncmp(f[0].data, "ok", 2) == 0)) {

        if (reply->elements != 2) {
            goto unexpected;
        }

        status = NGX_HTTP_SERVICE_UNAVAILABLE;

        for (i = 0; refusals[i].name; i++) {
            if (f[0].len == ngx_strlen(refusals[i].name)
                && ngx_strncmp(f[0].data, refusals[i].name, f[0].len) == 0)
            {
                status = refusals[i].status;
                break;
            }
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc control: register refused for app "
                      "\"%V\": %V", &ctx->app_id, &f[1]);

        return ngx_http_dstack_vpc_cp_error(r, status, "%V", &f[1]);
    }

    /* "ok", id, name, ip, user id, status */

    if (reply->elements != 6
        || ngx_http_dstack_vpc_cp_digits(&f[1], 18) != NGX_OK
        || ngx_http_dstack_vpc_cp_label(&f[2]) != NGX_OK
        || ngx_dstack_vpc_parse_ipv4(f[3].data, f[3].len, &addr) != NGX_OK
        || ngx_http_dstack_vpc_cp_digits(&f[4], 18) != NGX_OK)
    {
        goto unexpected;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "dstack vpc control: node %V \"%V\" %V, address %V",
                  &f[1], &f[2], &f[5], &f[3]);

    m = ngx_dstack_metrics(ctx->cmcf->amcf->redis.metrics);

    if (m != NULL) {
        ngx_dstack_metrics_inc(&m->cp_keys_used);
    }

    len = sizeof("{\"MachineAuthorized\":true,\"NodeID\":,\"Name\":\"."
                 NGX_HTTP_DSTACK_VPC_CP_DOMAIN "\",\"Addresses\":"
                 "[\"/32\"],\"User\":{\"ID\":,\"LoginName\":\"\","
                 "\"DisplayName\":\"\"},\"Login\":{\"ID\":,"
                 "\"LoginName\":\"\"},\"Error\":\"\"}\n")
          + f[1].len + f[2].len + f[3].len + 2 * f[4].len
          + 3 * ctx->app_id.len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* app ids are hex: nothing to escape */
    len = ngx_sprintf(p, "{\"MachineAuthorized\":true,\"NodeID\":%V,"
                         "\"Name\":\"%V." NGX_HTTP_DSTACK_VPC_CP_DOMAIN
                         "\",\"Addresses\":[\"%V/32\"],"
                         "\"User\":{\"ID\":%V,\"LoginName\":\"%V\","
                         "\"DisplayName\":\"%V\"},"
                         "\"Login\":{\"ID\":%V,\"LoginName\":\"%V\"},"
                         "\"Error\":\"\"}\n",
                      &f[1], &f[2], &f[3], &f[4], &ctx->app_id,
                      &ctx->app_id, &f[4], &ctx->app_id)
          - p;

    return ngx_http_dstack_vpc_cp_reply_json(r, NGX_HTTP_OK, p, len);

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "dstack vpc control: unexpected reply to register");

    return ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "redis error");
}


static ngx_int_t
ngx_http_dstack_vpc_cp_logout(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx)
{
    size_t                                lens[3];
    const char                           *argv[3];
    ngx_dstack_redis_cmd_t               *cmd;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    amcf = ctx->cmcf->amcf;

    argv[0] = (const char *) amcf->prefix.data;
    lens[0] = amcf->prefix.len;
    argv[1] = (const char *) ctx->req.key.data;
    lens[1] = ctx->req.key.len;
    argv[2] = (const char *) ctx->app_id.data;
    lens[2] = ctx->app_id.len;

    cmd = ngx_dstack_redis_eval(amcf->rds, r->pool, ctx->cmcf->lua_logout, 0,
                                3, argv, lens, amcf->timeout,
                                ngx_http_dstack_vpc_cp_logout_reply, r);

    return ngx_http_dstack_vpc_cp_park(r, cmd, amcf->rds);
}


static void
ngx_http_dstack_vpc_cp_logout_reply(void *data, redisReply *reply,
    const char *err)
{
    ngx_http_request_t *r = data;

    ngx_int_t                      rc;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);

    r->read_event_handler = ngx_http_block_reading;

    if (err != NULL) {
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis unavailable: %s", err);

    } else if (ngx_http_dstack_vpc_cp_status(reply, "ok") == NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc control: node key \"%*s...\" of app "
                      "\"%V\" logged out", (size_t) 16, ctx->req.key.data,
                      &ctx->app_id);
        rc = ngx_http_dstack_vpc_cp_reply_json(r, NGX_HTTP_OK,
                                               (u_char *) "{}\n", 3);

    } else if (ngx_http_dstack_vpc_cp_status(reply, "unknown") == NGX_OK) {
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_UNAUTHORIZED,
                                          "node key not registered");

    } else if (ngx_http_dstack_vpc_cp_status(reply, "forbidden") == NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc control: app \"%V\" may not log out a "
                      "node of another app", &ctx->app_id);
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_FORBIDDEN,
                                      "node key is registered by another app");

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc control: unexpected reply to logout");
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis error");
    }

    ngx_http_dstack_vpc_cp_finalize(r, rc);
}


ngx_int_t
ngx_http_dstack_vpc_cp_poll(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx)
{
    size_t                                lens[6];
    const char                           *argv[6];
    ngx_dstack_redis_cmd_t               *cmd;
    ngx_http_dstack_vpc_cp_req_t         *req;
    ngx_http_dstack_vpc_cp_main_conf_t   *cmcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    cmcf = ctx->cmcf;
    amcf = cmcf->amcf;
    req = &ctx->req;

    /* with this worker's copy of the map, Redis reads only this node */

    ctx->cached = (cmcf->map_cache && cmcf->ready && cmcf->cache.valid
                   && !ctx->full);

    if (cmcf->map_cache && cmcf->ready && !cmcf->cache.valid) {
        ngx_http_dstack_vpc_cp_cache_want(cmcf);
    }

    argv[0] = (const char *) amcf->prefix.data;
    lens[0] = amcf->prefix.len;
    argv[1] = (const char *) req->key.data;
    lens[1] = req->key.len;
    argv[2] = (const char *) ctx->app_id.data;
    lens[2] = ctx->app_id.len;
    argv[3] = req->endpoints.len ? (const char *) req->endpoints.data : "";
    lens[3] = req->endpoints.len;
    argv[4] = req->has_endpoints ? "1" : "0";
    lens[4] = 1;
    argv[5] = ctx->cached ? "1" : "0";
    lens[5] = 1;

    cmd = ngx_dstack_redis_eval(amcf->rds, r->pool, ctx->cmcf->lua_poll, 0,
                                6, argv, lens, amcf->timeout,
                                ngx_http_dstack_vpc_cp_poll_reply, r);

    return ngx_http_dstack_vpc_cp_park(r, cmd, amcf->rds);
}


static void
ngx_http_dstack_vpc_cp_poll_reply(void *data, redisReply *reply,
    const char *err)
{
    ngx_http_request_t *r = data;

    ngx_int_t                      rc;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);

    if (ctx->state == NGX_HTTP_DSTACK_VPC_CP_DONE) {
        /* a stream that ended while its map was read */
        return;
    }

    r->read_event_handler = ngx_http_block_reading;

    if (err != NULL) {
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis unavailable: %s", err);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc control: redis error: \"%*s\"",
                      (size_t) ngx_min(reply->len, 200), reply->str);
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis error");

    } else if (ngx_http_dstack_vpc_cp_status(reply, "ok") == NGX_OK) {
        rc = ngx_http_dstack_vpc_cp_full_map(r, ctx, reply);

        if (rc == NGX_DONE) {
            /* a live stream */
            ngx_http_run_posted_requests(r->connection);
            return;
        }

    } else if (ngx_http_dstack_vpc_cp_status(reply, "unknown") == NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc control: map for an unknown node key "
                      "\"%*s...\"", (size_t) 16, ctx->req.key.data);
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_UNAUTHORIZED,
                                          "node key not registered");

    } else if (ngx_http_dstack_vpc_cp_status(reply, "forbidden") == NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc control: app \"%V\" may not map a node "
                      "of another app", &ctx->app_id);
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_FORBIDDEN,
                                      "node key is registered by another app");

    } else if (ngx_http_dstack_vpc_cp_status(reply, "expired") == NGX_OK) {
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_FORBIDDEN,
                                          "node key expired");

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack vpc control: unexpected reply to map");
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis error");
    }

    ngx_http_dstack_vpc_cp_finalize(r, rc);
}


/*
 * {"ok", id, seq, fields of every node...}: a plain answer, or the first
 * frame of a stream (NGX_DONE: the stream is live).
 */

static ngx_int_t
ngx_http_dstack_vpc_cp_full_map(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, redisReply *reply)
{
    u_char                        *p;
    ngx_int_t                      rc;
    ngx_str_t                      id, seq;
    ngx_uint_t                     i;
    ngx_http_dstack_vpc_cp_out_t   out;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || (reply->elements - 3) % NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS)
    {
        goto unexpected;
    }

    for (i = 1; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            goto unexpected;
        }
    }

    id.data = (u_char *) reply->element[1]->str;
    id.len = reply->element[1]->len;
    seq.data = (u_char *) reply->element[2]->str;
    seq.len = reply->element[2]->len;

    if (ngx_http_dstack_vpc_cp_digits(&id, 18) != NGX_OK
        || ngx_http_dstack_vpc_cp_digits(&seq, 18) != NGX_OK)
    {
        goto unexpected;
    }

    ctx->id.data = ngx_pnalloc(r->pool, id.len);
    if (ctx->id.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->id.len = id.len;
    ngx_memcpy(ctx->id.data, id.data, id.len);
    ctx->seq = ngx_atoof(seq.data, seq.len);

    ngx_memzero(&out, sizeof(ngx_http_dstack_vpc_cp_out_t));

    if (ctx->cached) {
        if (reply->elements != 3) {
            goto unexpected;
        }

        /*
         * The copy must hold every change up to the poll's own (its
         * "on" and "ep" included) and the node as it asks: else the map
         * is read from Redis after all.
         */

        rc = NGX_DECLINED;

        if (ctx->cmcf->cache.valid && ctx->cmcf->cache.seq >= ctx->seq) {
            ctx->seq = ctx->cmcf->cache.seq;
            rc = ngx_http_dstack_vpc_cp_render_cached(r, ctx, &out);
        }

        if (rc == NGX_ERROR) {
            ngx_http_dstack_vpc_cp_out_free(&out);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            ngx_http_dstack_vpc_cp_out_free(&out);
            ctx->full = 1;
            return ngx_http_dstack_vpc_cp_poll(r, ctx);
        }

    } else {
        if (ctx->req.stream
            && ngx_http_dstack_vpc_cp_frame_start(&out) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        rc = ngx_http_dstack_vpc_cp_render_map(r, ctx, reply, &out);
    }

    if (rc != NGX_OK) {
        ngx_http_dstack_vpc_cp_out_free(&out);

        if (rc == NGX_DECLINED) {
            goto unexpected;
        }

        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->req.stream) {
        ngx_http_dstack_vpc_cp_frame_end(&out);

        if ((size_t) (out.last - out.start)
            > NGX_HTTP_DSTACK_VPC_CP_FRAME_MAX + 4)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "dstack vpc control: full map of %uz bytes is "
                          "above the frame limit", out.last - out.start);
            ngx_http_dstack_vpc_cp_out_free(&out);
            return ngx_http_dstack_vpc_cp_error(r,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "map too large");
        }

        rc = ngx_http_dstack_vpc_cp_stream_live(r, ctx, &out);
        ngx_http_dstack_vpc_cp_out_free(&out);
        return rc;
    }

    p = ngx_pnalloc(r->pool, out.last - out.start);
    if (p == NULL) {
        ngx_http_dstack_vpc_cp_out_free(&out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, out.start, out.last - out.start);
    i = out.last - out.start;
    ngx_http_dstack_vpc_cp_out_free(&out);

    return ngx_http_dstack_vpc_cp_reply_json(r, NGX_HTTP_OK, p, i);

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "dstack vpc control: unexpected reply to map");

    return ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "redis error");
}


/* NGX_DECLINED: this node is not in the map or not valid */

static ngx_int_t
ngx_http_dstack_vpc_cp_render_map(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, redisReply *reply,
    ngx_http_dstack_vpc_cp_out_t *out)
{
    ngx_uint_t                     i, j, n, self, peers;
    ngx_http_dstack_vpc_cp_node_t  node;

    n = (reply->elements - 3) / NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS;
    self = 0;

    if (ngx_http_dstack_vpc_cp_out_reserve(out, sizeof("{\"Node\":")) != NGX_OK)
    {
        return NGX_ERROR;
    }

    out->last = ngx_cpymem(out->last, "{\"Node\":", sizeof("{\"Node\":") - 1);

    /* this node first, then the others */

    for (i = 0; i < n; i++) {
        for (j = 0; j < NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS; j++) {
            node.f[j].data = (u_char *)
                reply->element[3 + i * NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS
                               + j]->str;
            node.f[j].len =
                reply->element[3 + i * NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS
                               + j]->len;
        }

        if (node.f[NGX_HTTP_DSTACK_VPC_CP_F_ID].len != ctx->id.len
            || ngx_strncmp(node.f[NGX_HTTP_DSTACK_VPC_CP_F_ID].data,
                           ctx->id.data, ctx->id.len) != 0)
        {
            continue;
        }

        if (ngx_http_dstack_vpc_cp_node_valid(ctx->cmcf, &node) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "dstack vpc control: node %V has an invalid "
                          "record", &ctx->id);
            return NGX_DECLINED;
        }

        if (ngx_http_dstack_vpc_cp_node_json(out, &node) != NGX_OK) {
            return NGX_ERROR;
        }

        self = 1;
        break;
    }

    if (!self) {
        return NGX_DECLINED;
    }

    if (ngx_http_dstack_vpc_cp_out_reserve(out, sizeof(",\"Peers\":["))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    out->last = ngx_cpymem(out->last, ",\"Peers\":[",
                           sizeof(",\"Peers\":[") - 1);
    peers = 0;

    for (i = 0; i < n; i++) {
        for (j = 0; j < NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS; j++) {
            node.f[j].data = (u_char *)
                reply->element[3 + i * NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS
                               + j]->str;
            node.f[j].len =
                reply->element[3 + i * NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS
                               + j]->len;
        }

        if (node.f[NGX_HTTP_DSTACK_VPC_CP_F_ID].len == ctx->id.len
            && ngx_strncmp(node.f[NGX_HTTP_DSTACK_VPC_CP_F_ID].data,
                           ctx->id.data, ctx->id.len) == 0)
        {
            continue;
        }

        if (ngx_http_dstack_vpc_cp_node_expired(&node)) {
            continue;
        }

        if (ngx_http_dstack_vpc_cp_node_valid(ctx->cmcf, &node) != NGX_OK) {
            /* never in anybody's map: it could not be applied safely */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "dstack vpc control: skipped node \"%V\" with "
                          "an invalid record",
                          &node.f[NGX_HTTP_DSTACK_VPC_CP_F_ID]);
            continue;
        }

        if (peers++) {
            *out->last++ = ',';
        }

        if (ngx_http_dstack_vpc_cp_node_json(out, &node) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_dstack_vpc_cp_render_tail(r, ctx, out);
}


/*
 * The map from this worker's copy: this node's JSON, then every other
 * valid node's whose key has not expired, in the order of their ids as
 * Redis' node set has them; one buffer of the right size.  NGX_DECLINED:
 * the copy has not this node, or not with the key it asks with.
 */

static ngx_int_t
ngx_http_dstack_vpc_cp_render_cached(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, ngx_http_dstack_vpc_cp_out_t *out)
{
    time_t                           now;
    ngx_uint_t                       peers;
    ngx_rbtree_node_t               *node, *root, *sentinel;
    ngx_http_dstack_vpc_cp_entry_t  *self, *e;
    ngx_http_dstack_vpc_cp_cache_t  *cache;

    cache = &ctx->cmcf->cache;

    self = ngx_http_dstack_vpc_cp_cache_find(ctx->cmcf, &ctx->id);

    if (self == NULL || !self->valid
        || self->rec.f[NGX_HTTP_DSTACK_VPC_CP_F_KEY].len != ctx->req.key.len
        || ngx_strncmp(self->rec.f[NGX_HTTP_DSTACK_VPC_CP_F_KEY].data,
                       ctx->req.key.data, ctx->req.key.len) != 0)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_dstack_vpc_cp_out_reserve(out, 4 + 32 + cache->bytes
                                                + cache->n + 320)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->req.stream) {
        out->last += 4;
    }

    out->last = ngx_cpymem(out->last, "{\"Node\":", sizeof("{\"Node\":") - 1);
    out->last = ngx_cpymem(out->last, self->json.data, self->json.len);
    out->last = ngx_cpymem(out->last, ",\"Peers\":[",
                           sizeof(",\"Peers\":[") - 1);

    now = ngx_time();
    peers = 0;
    root = cache->tree.root;
    sentinel = cache->tree.sentinel;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node != NULL;
             node = ngx_rbtree_next(&cache->tree, node))
        {
            e = (ngx_http_dstack_vpc_cp_entry_t *) node;

            if (e == self || !e->valid
                || (e->expiry > 0 && e->expiry <= now))
            {
                continue;
            }

            if (peers++) {
                *out->last++ = ',';
            }

            out->last = ngx_cpymem(out->last, e->json.data, e->json.len);
        }
    }

    return ngx_http_dstack_vpc_cp_render_tail(r, ctx, out);
}


/* what follows the peers */

static ngx_int_t
ngx_http_dstack_vpc_cp_render_tail(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, ngx_http_dstack_vpc_cp_out_t *out)
{
    u_char      now[NGX_TIME_T_LEN];
    ngx_str_t   t, *path;

    t.data = now;
    t.len = ngx_sprintf(now, "%T", ngx_time()) - now;

    if (ngx_http_dstack_vpc_cp_out_reserve(out, 320) != NGX_OK) {
        return NGX_ERROR;
    }

    out->last = ngx_cpymem(out->last,
                    "],\"DNSConfig\":{\"Domains\":[\""
                    NGX_HTTP_DSTACK_VPC_CP_DOMAIN "\"],\"Routes\":{}},"
                    "\"Domain\":\"" NGX_HTTP_DSTACK_VPC_CP_DOMAIN "\","
                    "\"CollectServices\":false,\"WGPath\":\"",
                    sizeof("],\"DNSConfig\":{\"Domains\":[\""
                           NGX_HTTP_DSTACK_VPC_CP_DOMAIN "\"],\"Routes\":{}},"
                           "\"Domain\":\"" NGX_HTTP_DSTACK_VPC_CP_DOMAIN "\","
                           "\"CollectServices\":false,\"WGPath\":\"")
                    - 1);

    /* the enum's entries are in the order of their values */
    path = &ngx_http_dstack_vpc_cp_wg_path[ctx->cmcf->wg_path].name;
    out->last = ngx_cpymem(out->last, path->data, path->len);
    out->last = ngx_cpymem(out->last, "\",\"ControlTime\":\"",
                           sizeof("\",\"ControlTime\":\"") - 1);
    out->last = ngx_http_dstack_vpc_cp_time(out->last, &t);

    if (ctx->req.stream) {
        out->last = ngx_cpymem(out->last, "\"}", 2);

    } else {
        out->last = ngx_cpymem(out->last, "\"}\n", 3);
    }

    return NGX_OK;
}


/*
 * The streams this worker holds for the node key and for the app.  Past
 * the node key's limit its oldest streams end: a node that reconnects
 * before its old connection is noticed dead must not be locked out, and
 * only the app that owns the key is counted, so no other app can end
 * them.  Past the app's limit the new stream is refused.  NGX_DECLINED:
 * the stream may start; otherwise the request got a 429 naming the
 * directive.  Linear in the worker's streams, once per new stream.
 */

static ngx_int_t
ngx_http_dstack_vpc_cp_stream_limits(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx)
{
    ngx_uint_t                           node, app;
    ngx_queue_t                         *q, *next;
    ngx_http_dstack_vpc_cp_ctx_t        *s;
    ngx_http_dstack_vpc_cp_main_conf_t  *cmcf;

    cmcf = ctx->cmcf;
    node = 0;
    app = 0;

    for (q = ngx_queue_head(&cmcf->streams);
         q != ngx_queue_sentinel(&cmcf->streams);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_dstack_vpc_cp_ctx_t, queue);

        if (!ngx_http_dstack_vpc_cp_same_stream(s, ctx, 0)) {
            continue;
        }

        app++;
        node += ngx_http_dstack_vpc_cp_same_stream(s, ctx, 1);
    }

    if (cmcf->max_streams_node == 0) {
        return ngx_http_dstack_vpc_cp_limit(r, ctx,
                                    "dstack_vpc_control_max_streams_per_node",
                                    0);
    }

    /* oldest first: the queue is in the order the streams started */

    for (q = ngx_queue_head(&cmcf->streams);
         node >= cmcf->max_streams_node
         && q != ngx_queue_sentinel(&cmcf->streams);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_http_dstack_vpc_cp_ctx_t, queue);

        if (!ngx_http_dstack_vpc_cp_same_stream(s, ctx, 1)) {
            continue;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc control: a new stream of node key "
                      "\"%*s...\" ends its oldest (limit %ui)",
                      (size_t) 16, ctx->req.key.data,
                      cmcf->max_streams_node);

        ngx_http_dstack_vpc_cp_stream_end(s->request, NGX_OK);
        node--;
        app--;
    }

    if (app >= cmcf->max_streams_app) {
        return ngx_http_dstack_vpc_cp_limit(r, ctx,
                                    "dstack_vpc_control_max_streams_per_app",
                                    cmcf->max_streams_app);
    }

    return NGX_DECLINED;
}


/* the same app, and with key: also the same node key */

static ngx_uint_t
ngx_http_dstack_vpc_cp_same_stream(ngx_http_dstack_vpc_cp_ctx_t *a,
    ngx_http_dstack_vpc_cp_ctx_t *b, ngx_uint_t key)
{
    if (a->app_id.len != b->app_id.len
        || ngx_memcmp(a->app_id.data, b->app_id.data, a->app_id.len) != 0)
    {
        return 0;
    }

    return !key
           || (a->req.key.len == b->req.key.len
               && ngx_memcmp(a->req.key.data, b->req.key.data,
                             a->req.key.len)
                  == 0);
}


static ngx_int_t
ngx_http_dstack_vpc_cp_limit(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, const char *name, ngx_uint_t value)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "dstack vpc control: app \"%V\" reached \"%s %ui\"",
                  &ctx->app_id, name, value);

    return ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                        "limit reached: %s %ui per worker",
                                        name, value);
}


static ngx_int_t
ngx_http_dstack_vpc_cp_stream_start(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx)
{
    ngx_int_t                             rc;
    ngx_pool_cleanup_t                   *cln;
    ngx_http_dstack_vpc_cp_main_conf_t   *cmcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    cmcf = ctx->cmcf;
    amcf = cmcf->amcf;

    rc = ngx_http_dstack_vpc_cp_stream_limits(r, ctx);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_dstack_vpc_cp_stream_cleanup;
    cln->data = ctx;

    ngx_queue_insert_tail(&cmcf->streams, &ctx->queue);
    ctx->linked = 1;
    cmcf->nstreams++;
    ngx_http_dstack_vpc_cp_count_stream(cmcf, 1);

    ctx->timer.handler = ngx_http_dstack_vpc_cp_stream_timer;
    ctx->timer.data = r;
    ctx->timer.log = r->connection->log;

    if (!cmcf->ready) {

        if (!ngx_dstack_redis_ready(amcf->rds)) {
            return ngx_http_dstack_vpc_cp_error(r,
                                        NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "redis unavailable: %s",
                                        ngx_dstack_redis_error(amcf->rds));
        }

        /* until the subscription is back: a map read now could miss */
        ctx->state = NGX_HTTP_DSTACK_VPC_CP_WAITING;
        ngx_add_timer(&ctx->timer, NGX_HTTP_DSTACK_VPC_CP_WAIT_READY);

        r->read_event_handler = ngx_http_test_reading;
        r->write_event_handler = ngx_http_request_empty_handler;

        return NGX_DONE;
    }

    if (cmcf->cache.loading != NULL) {
        /* until the map copy is read (ngx_http_dstack_vpc_cp_wake()) */
        ctx->state = NGX_HTTP_DSTACK_VPC_CP_WAITING;
        ngx_add_timer(&ctx->timer, NGX_HTTP_DSTACK_VPC_CP_WAIT_READY);

        r->read_event_handler = ngx_http_test_reading;
        r->write_event_handler = ngx_http_request_empty_handler;

        return NGX_DONE;
    }

    ctx->state = NGX_HTTP_DSTACK_VPC_CP_POLLING;

    return ngx_http_dstack_vpc_cp_poll(r, ctx);
}


static ngx_int_t
ngx_http_dstack_vpc_cp_stream_live(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, ngx_http_dstack_vpc_cp_out_t *map)
{
    ngx_int_t                            rc;
    ngx_str_t                            msg;
    ngx_uint_t                           i, k;
    ngx_table_elt_t                     *h;
    ngx_http_dstack_vpc_cp_event_t      *ev, *oldest;
    ngx_http_dstack_vpc_cp_main_conf_t  *cmcf;

    cmcf = ctx->cmcf;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type, "application/octet-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    ctx->state = NGX_HTTP_DSTACK_VPC_CP_LIVE;

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_dstack_vpc_cp_stream_writer;

#if (NGX_HTTP_V2)
    if (r->stream == NULL)
#endif
    {
        /* a graceful shutdown closes it (ngx_close_idle_connections) */
        r->connection->idle = 1;
    }

#if (NGX_HTTP_SSL)
    /*
     * An idle stream keeps its connection's TLS write buffer for hours:
     * one of our small frame buffers in size (ssl_buffer_size is 16k by
     * default) keeps ~1000 streams per worker in 16 MB; the full map
     * goes out in 4k records instead of 16k, a fraction of a percent more.
     */

    if (r->connection->ssl && r->connection->ssl->buf == NULL
#if (NGX_HTTP_V2)
        && r->stream == NULL
#endif
        )
    {
        r->connection->ssl->buffer_size =
                           ngx_min(r->connection->ssl->buffer_size,
                                   NGX_HTTP_DSTACK_VPC_CP_BUF_SIZE);
    }
#endif

    if (ngx_http_dstack_vpc_cp_send(r, ctx, map->start,
                                    map->last - map->start)
        != NGX_OK)
    {
        ngx_http_dstack_vpc_cp_stream_end(r, NGX_ERROR);
        return NGX_DONE;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "dstack vpc control: map stream of node %V opened, "
                  "%uz bytes", &ctx->id, (size_t) (map->last - map->start));

    /* the changes this worker saw while the map was read */

    if (cmcf->last_seq > ctx->seq) {
        oldest = NULL;

        for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_RING; i++) {
            k = (cmcf->ring_next + i) % NGX_HTTP_DSTACK_VPC_CP_RING;

            if (cmcf->ring[k].seq != 0) {
                oldest = &cmcf->ring[k];
                break;
            }
        }

        if (oldest == NULL || oldest->seq > ctx->seq + 1) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "dstack vpc control: too many changes while "
                          "the map of node %V was read", &ctx->id);
            ngx_http_dstack_vpc_cp_stream_end(r, NGX_OK);
            return NGX_DONE;
        }

        for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_RING; i++) {
            k = (cmcf->ring_next + i) % NGX_HTTP_DSTACK_VPC_CP_RING;
            ev = &cmcf->ring[k];

            if (ev->seq <= ctx->seq) {
                continue;
            }

            msg.data = ev->data;
            msg.len = ev->len;

            ngx_http_dstack_vpc_cp_apply(r, ctx, ev->seq, &msg);

            if (ctx->state != NGX_HTTP_DSTACK_VPC_CP_LIVE) {
                return NGX_DONE;
            }
        }
    }

    if (ngx_exiting) {
        ngx_http_dstack_vpc_cp_stream_end(r, NGX_OK);
        return NGX_DONE;
    }

    ngx_add_timer(&ctx->timer, cmcf->keepalive);

    return NGX_DONE;
}


/*
 * Queues one frame (or, without data, pushes what is queued) with a flush.
 * Frames live in buffers of their own, reused when small and freed when
 * large, so that a stream of any length holds only what is unsent.
 * NGX_ERROR: the connection failed, or the reader is too far behind.
 */

ngx_int_t
ngx_http_dstack_vpc_cp_send(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, u_char *data, size_t len)
{
    size_t                     size;
    ngx_int_t                  rc;
    ngx_buf_t                 *b;
    ngx_uint_t                 small;
    ngx_chain_t               *cl, **ll, *out;
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_core_loc_conf_t  *clcf;

    c = r->connection;
    out = NULL;

    if (data != NULL) {
        cl = NULL;

        /* a free buffer large enough, or else an empty one */

        for (ll = &ctx->free; *ll; ll = &(*ll)->next) {
            b = (*ll)->buf;

            if (b->start != NULL && (size_t) (b->end - b->start) >= len) {
                cl = *ll;
                *ll = cl->next;
                break;
            }
        }

        if (cl == NULL) {
            for (ll = &ctx->free; *ll; ll = &(*ll)->next) {
                if ((*ll)->buf->start == NULL) {
                    cl = *ll;
                    *ll = cl->next;
                    break;
                }
            }
        }

        if (cl == NULL) {
            cl = ngx_alloc_chain_link(r->pool);
            if (cl == NULL) {
                return NGX_ERROR;
            }

            cl->buf = ngx_calloc_buf(r->pool);
            if (cl->buf == NULL) {
                return NGX_ERROR;
            }
        }

        b = cl->buf;

        if (b->start == NULL) {
            /* above the pool's small size: ngx_pfree() can release it */
            size = ngx_max(len, NGX_HTTP_DSTACK_VPC_CP_BUF_SIZE);

            b->start = ngx_palloc(r->pool, size);
            if (b->start == NULL) {
                return NGX_ERROR;
            }

            b->end = b->start + size;
        }

        b->pos = b->start;
        b->last = ngx_cpymem(b->start, data, len);
        b->temporary = 1;
        b->flush = 1;
        b->tag = (ngx_buf_tag_t) &ngx_http_dstack_vpc_cp_module;

        cl->next = NULL;
        out = cl;
    }

    rc = ngx_http_output_filter(r, out);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_dstack_vpc_cp_module);

    ctx->pending = 0;

    for (cl = ctx->busy; cl; cl = cl->next) {
        ctx->pending += ngx_buf_size(cl->buf);
    }

    /*
     * While frames wait, keep a few small buffers for the next ones; an
     * idle stream gives back everything (a frame then costs one
     * allocation, far less than its encryption).
     */

    small = 0;

    for (cl = ctx->free; cl; cl = cl->next) {
        b = cl->buf;

        if (b->start == NULL) {
            continue;
        }

        if (ctx->busy != NULL
            && b->end - b->start == NGX_HTTP_DSTACK_VPC_CP_BUF_SIZE
            && small++ < 4)
        {
            continue;
        }

        ngx_pfree(r->pool, b->start);
        b->start = NULL;
        b->pos = NULL;
        b->last = NULL;
        b->end = NULL;
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (ctx->pending > ctx->cmcf->stream_buffer) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "dstack vpc control: map stream of node %V closed: "
                      "%uz bytes not read", &ctx->id, ctx->pending);
        return NGX_ERROR;
    }

    wev = c->write;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (c->buffered || r->buffered) {
        /* new frames do not reset it: only progress does (the writer) */
        if (!wev->timer_set && !wev->delayed) {
            ngx_add_timer(wev, clcf->send_timeout);
        }

        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    return NGX_OK;
}


static void
ngx_http_dstack_vpc_cp_stream_writer(ngx_http_request_t *r)
{
    ngx_connection_t              *c;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);

    if (ctx->state != NGX_HTTP_DSTACK_VPC_CP_LIVE) {
        return;
    }

    if (c->write->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "dstack vpc control: map stream of node %V timed out",
                      &ctx->id);
        c->timedout = 1;
        ngx_http_dstack_vpc_cp_stream_end(r, NGX_ERROR);
        return;
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (ngx_http_dstack_vpc_cp_send(r, ctx, NULL, 0) != NGX_OK) {
        ngx_http_dstack_vpc_cp_stream_end(r, NGX_ERROR);
    }
}


/* the wait for the subscription, then the keepalive of a live stream */

static void
ngx_http_dstack_vpc_cp_stream_timer(ngx_event_t *ev)
{
    ngx_http_request_t *r = ev->data;

    size_t                                lens[3];
    ngx_int_t                             rc;
    const char                           *argv[3];
    ngx_connection_t                     *c;
    ngx_http_dstack_vpc_cp_ctx_t         *ctx;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);
    amcf = ctx->cmcf->amcf;

    if (ctx->state == NGX_HTTP_DSTACK_VPC_CP_WAITING) {
        ctx->state = NGX_HTTP_DSTACK_VPC_CP_DONE;
        rc = ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis unavailable: %s",
                                          "no change notifications");
        ngx_http_dstack_vpc_cp_finalize(r, rc);
        return;
    }

    if (ctx->state != NGX_HTTP_DSTACK_VPC_CP_LIVE) {
        return;
    }

    if (ngx_exiting) {
        ngx_http_dstack_vpc_cp_stream_end(r, NGX_OK);
        return;
    }

    if (ngx_http_dstack_vpc_cp_send(r, ctx,
                                 ngx_http_dstack_vpc_cp_keepalive_frame,
                                 sizeof(ngx_http_dstack_vpc_cp_keepalive_frame)
                                 - 1)
        != NGX_OK)
    {
        ngx_http_dstack_vpc_cp_stream_end(r, NGX_ERROR);
        return;
    }

    /* the stream is the node's liveness: refresh its last-seen */

    if (ctx->touch == NULL) {
        argv[0] = (const char *) amcf->prefix.data;
        lens[0] = amcf->prefix.len;
        argv[1] = (const char *) ctx->id.data;
        lens[1] = ctx->id.len;
        argv[2] = (const char *) ctx->req.key.data;
        lens[2] = ctx->req.key.len;

        /* no pool: the stream's cleanup cancels it */
        ctx->touch = ngx_dstack_redis_eval(amcf->rds, NULL,
                                           ctx->cmcf->lua_touch, 0, 3, argv,
                                           lens, amcf->timeout,
                                           ngx_http_dstack_vpc_cp_touch_reply,
                                           r);
    }

    ngx_add_timer(ev, ctx->cmcf->keepalive);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_dstack_vpc_cp_touch_reply(void *data, redisReply *reply,
    const char *err)
{
    ngx_http_request_t *r = data;

    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);
    ctx->touch = NULL;

    if (err != NULL || ctx->state != NGX_HTTP_DSTACK_VPC_CP_LIVE) {
        return;
    }

    if (ngx_http_dstack_vpc_cp_status(reply, "gone") == NGX_OK
        || ngx_http_dstack_vpc_cp_status(reply, "expired") == NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack vpc control: node %V is gone or expired, "
                      "map stream ended", &ctx->id);
        ngx_http_dstack_vpc_cp_stream_end(r, NGX_OK);
    }
}


/*
 * Ends a stream from the event loop, never from inside a caller that
 * may still use the request: NGX_OK ends the response properly,
 * NGX_ERROR closes the connection.
 */

void
ngx_http_dstack_vpc_cp_stream_end(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);

    if (ctx->close.posted || ctx->state == NGX_HTTP_DSTACK_VPC_CP_DONE) {
        return;
    }

    if (ctx->state != NGX_HTTP_DSTACK_VPC_CP_LIVE) {
        /* nothing sent yet: the request ends with an error answer */
        rc = NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ctx->state = NGX_HTTP_DSTACK_VPC_CP_DONE;
    ctx->close_rc = rc;

    if (ctx->linked) {
        ngx_queue_remove(&ctx->queue);
        ctx->linked = 0;
        ctx->cmcf->nstreams--;
        ngx_http_dstack_vpc_cp_count_stream(ctx->cmcf, -1);
    }

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }

    ctx->close.handler = ngx_http_dstack_vpc_cp_stream_close;
    ctx->close.data = r;
    ctx->close.log = r->connection->log;

    ngx_post_event(&ctx->close, &ngx_posted_events);
}


static void
ngx_http_dstack_vpc_cp_stream_close(ngx_event_t *ev)
{
    ngx_http_request_t *r = ev->data;

    ngx_int_t                      rc;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);
    rc = ctx->close_rc;

    if (rc == NGX_OK) {
        rc = ngx_http_send_special(r, NGX_HTTP_LAST);

    } else if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        rc = ngx_http_dstack_vpc_cp_error(r, rc, "redis unavailable: %s",
                                          "change notifications lost");
    }

    ngx_http_dstack_vpc_cp_finalize(r, rc);
}


/* the open streams of all workers, for the metrics */

static void
ngx_http_dstack_vpc_cp_count_stream(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_atomic_int_t delta)
{
    ngx_dstack_metrics_t  *m;

    m = ngx_dstack_metrics(cmcf->amcf->redis.metrics);

    if (m != NULL) {
        (void) ngx_atomic_fetch_add(&m->cp_streams, delta);
    }
}


static void
ngx_http_dstack_vpc_cp_stream_cleanup(void *data)
{
    ngx_http_dstack_vpc_cp_ctx_t *ctx = data;

    if (ctx->linked) {
        ngx_queue_remove(&ctx->queue);
        ctx->linked = 0;
        ctx->cmcf->nstreams--;
        ngx_http_dstack_vpc_cp_count_stream(ctx->cmcf, -1);
    }

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }

    if (ctx->close.posted) {
        ngx_delete_posted_event(&ctx->close);
    }

    if (ctx->touch != NULL) {
        ngx_dstack_redis_cancel(ctx->touch);
        ctx->touch = NULL;
    }

    ctx->state = NGX_HTTP_DSTACK_VPC_CP_DONE;
}


/* --- replies ------------------------------------------------------------- */

static ngx_int_t
ngx_http_dstack_vpc_cp_reply_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* {"Error": ...}, with "MachineAuthorized": false for register */

/* a request waiting on Redis: parked until the reply callback resumes it */

static ngx_int_t
ngx_http_dstack_vpc_cp_park(ngx_http_request_t *r, ngx_dstack_redis_cmd_t *cmd,
    ngx_dstack_redis_t *rds)
{
    if (cmd == NULL) {
        return ngx_http_dstack_vpc_cp_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                            "redis unavailable: %s",
                                            ngx_dstack_redis_error(rds));
    }

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    return NGX_DONE;
}


static ngx_int_t
ngx_http_dstack_vpc_cp_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char                        *p, *b, msg[256];
    size_t                         len;
    va_list                        args;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_vpc_cp_module);

    va_start(args, fmt);
    p = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    len = sizeof("{\"MachineAuthorized\":false,\"Error\":\"\"}\n") - 1
          + (p - msg) + ngx_escape_json(NULL, msg, p - msg);

    b = ngx_pnalloc(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx != NULL && ctx->endpoint == NGX_HTTP_DSTACK_VPC_CP_REGISTER) {
        len = sizeof("{\"MachineAuthorized\":false,\"Error\":\"") - 1;
        ngx_memcpy(b, "{\"MachineAuthorized\":false,\"Error\":\"", len);

    } else {
        len = sizeof("{\"Error\":\"") - 1;
        ngx_memcpy(b, "{\"Error\":\"", len);
    }

    len = (u_char *) ngx_escape_json(b + len, msg, p - msg) - b;
    b[len++] = '"';
    b[len++] = '}';
    b[len++] = '\n';

    return ngx_http_dstack_vpc_cp_reply_json(r, status, b, len);
}


void
ngx_http_dstack_vpc_cp_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/* a status reply: "x", or an array that starts with "x" */

static ngx_int_t
ngx_http_dstack_vpc_cp_status(redisReply *reply, const char *status)
{
    size_t  len;

    len = ngx_strlen(status);

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        reply = reply->element[0];
    }

    if ((reply->type == REDIS_REPLY_STRING
         || reply->type == REDIS_REPLY_STATUS)
        && reply->len == len
        && ngx_strncmp(reply->str, status, len) == 0)
    {
        return NGX_OK;
    }

    return NGX_ERROR;
}


/* --- configuration ------------------------------------------------------- */

static ngx_int_t
ngx_http_dstack_vpc_cp_init_process(ngx_cycle_t *cycle)
{
    ngx_http_dstack_vpc_cp_main_conf_t   *cmcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_dstack_vpc_cp_module);

    if (cmcf == NULL || cmcf->amcf == NULL) {
        return NGX_OK;
    }

    amcf = cmcf->amcf;

    if (!amcf->enabled || amcf->rds == NULL) {
        return NGX_OK;
    }

    cmcf->log = cycle->log;

    cmcf->ring = ngx_calloc(NGX_HTTP_DSTACK_VPC_CP_RING
                            * sizeof(ngx_http_dstack_vpc_cp_event_t),
                            cycle->log);
    if (cmcf->ring == NULL) {
        return NGX_ERROR;
    }

    cmcf->held = ngx_alloc(NGX_HTTP_DSTACK_VPC_CP_HELD_MAX
                           * sizeof(ngx_http_dstack_vpc_cp_change_t),
                           cycle->log);
    if (cmcf->held == NULL) {
        return NGX_ERROR;
    }

    cmcf->flush.handler = ngx_http_dstack_vpc_cp_flush_handler;
    cmcf->flush.data = cmcf;
    cmcf->flush.log = cycle->log;
    cmcf->flush.cancelable = 1;

    ngx_http_dstack_vpc_cp_cache_init(cmcf);

    cmcf->caller_len = ngx_sprintf(cmcf->caller, "%P", ngx_pid)
                       - cmcf->caller;

    /* subscribe from the event loop, then sweep; never holds shutdown */
    cmcf->timer.handler = ngx_http_dstack_vpc_cp_sweep;
    cmcf->timer.data = cmcf;
    cmcf->timer.log = cycle->log;
    cmcf->timer.cancelable = 1;

    ngx_add_timer(&cmcf->timer, 1);

    return NGX_OK;
}


static void
ngx_http_dstack_vpc_cp_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                           i;
    ngx_http_dstack_vpc_cp_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_dstack_vpc_cp_module);

    if (cmcf == NULL || cmcf->ring == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_RING; i++) {
        ngx_free(cmcf->ring[i].data);
    }

    ngx_free(cmcf->ring);
    cmcf->ring = NULL;

    ngx_free(cmcf->held);
    cmcf->held = NULL;

    ngx_http_dstack_vpc_cp_out_free(&cmcf->scratch);

    ngx_http_dstack_vpc_cp_cache_drop(cmcf);
    ngx_http_dstack_vpc_cp_out_free(&cmcf->cache.tmp);
}


static void *
ngx_http_dstack_vpc_cp_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_vpc_cp_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_vpc_cp_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     cmcf->base = 0;
     *     cmcf->size = 0;
     *     cmcf->pool = { 0, NULL };
     *     cmcf->lua_* = NULL;
     *     cmcf->amcf = NULL;
     *     cmcf->sub = NULL;
     *     cmcf->ring = NULL;
     *     cmcf->held = NULL;
     *     cmcf->nheld = 0;
     *     cmcf->flushed = 0;
     *     cmcf->ready = 0;
     */

    cmcf->keepalive = NGX_CONF_UNSET_MSEC;
    cmcf->inactivity = NGX_CONF_UNSET;
    cmcf->sweep_interval = NGX_CONF_UNSET_MSEC;
    cmcf->coalesce = NGX_CONF_UNSET_MSEC;
    cmcf->map_cache = NGX_CONF_UNSET;
    cmcf->stream_buffer = NGX_CONF_UNSET_SIZE;
    cmcf->max_nodes = NGX_CONF_UNSET_UINT;
    cmcf->max_streams_node = NGX_CONF_UNSET_UINT;
    cmcf->max_streams_app = NGX_CONF_UNSET_UINT;
    cmcf->wg_path = NGX_CONF_UNSET_UINT;

    ngx_queue_init(&cmcf->streams);

    return cmcf;
}


static char *
ngx_http_dstack_vpc_cp_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf = conf;

    u_char  *p;

    ngx_conf_init_msec_value(cmcf->keepalive, 30000);
    ngx_conf_init_value(cmcf->inactivity, 180);
    ngx_conf_init_msec_value(cmcf->coalesce, 10);
    ngx_conf_init_value(cmcf->map_cache, 1);
    ngx_conf_init_size_value(cmcf->stream_buffer, 8 * 1024 * 1024);
    ngx_conf_init_uint_value(cmcf->wg_path, NGX_HTTP_DSTACK_VPC_CP_WG_AUTO);

    /* far above a real VPC: DESIGN's scale is 10000 nodes in all */
    ngx_conf_init_uint_value(cmcf->max_nodes, 10000);
    ngx_conf_init_uint_value(cmcf->max_streams_node, 8);
    ngx_conf_init_uint_value(cmcf->max_streams_app, 10000);

    cmcf->max_nodes_text.data = ngx_pnalloc(cf->pool, NGX_INT_T_LEN);
    if (cmcf->max_nodes_text.data == NULL) {
        return NGX_CONF_ERROR;
    }

    cmcf->max_nodes_text.len = ngx_sprintf(cmcf->max_nodes_text.data, "%ui",
                                           cmcf->max_nodes)
                               - cmcf->max_nodes_text.data;

    if (cmcf->sweep_interval == NGX_CONF_UNSET_MSEC) {
        cmcf->sweep_interval = ngx_max(ngx_min(cmcf->inactivity * 250, 30000),
                                       1000);
    }

    if (cmcf->keepalive == 0 || cmcf->inactivity <= 0
        || cmcf->sweep_interval < 100)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_vpc_control_keepalive\" and "
                           "\"dstack_vpc_control_inactivity_timeout\" must "
                           "be positive, \"dstack_vpc_control_sweep_interval\" "
                           "at least 100ms");
        return NGX_CONF_ERROR;
    }

    /* a change waits at most one window: below the keepalive */
    if (cmcf->coalesce > 10000 || cmcf->coalesce >= cmcf->keepalive) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_vpc_control_coalesce\" must be at most "
                           "10s and below \"dstack_vpc_control_keepalive\"");
        return NGX_CONF_ERROR;
    }

    /* a stream refreshes its node's last-seen with every keepalive */
    if ((time_t) (cmcf->keepalive / 1000) * 2 > cmcf->inactivity) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_vpc_control_keepalive\" must be at most "
                           "half of \"dstack_vpc_control_inactivity_timeout\"");
        return NGX_CONF_ERROR;
    }

    if (cmcf->pool.data == NULL) {
        ngx_str_set(&cmcf->pool, "100.128.0.0/10");
        cmcf->base = 0x64800000;
        cmcf->size = 1 << 22;
    }

    p = ngx_pnalloc(cf->pool, 4 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    cmcf->base_text.data = p;
    p = ngx_sprintf(p, "%uD", cmcf->base);
    cmcf->base_text.len = p - cmcf->base_text.data;

    cmcf->size_text.data = p;
    p = ngx_sprintf(p, "%uD", cmcf->size);
    cmcf->size_text.len = p - cmcf->size_text.data;

    cmcf->inactivity_text.data = p;
    p = ngx_sprintf(p, "%T", cmcf->inactivity);
    cmcf->inactivity_text.len = p - cmcf->inactivity_text.data;

    cmcf->interval_text.data = p;
    p = ngx_sprintf(p, "%M", cmcf->sweep_interval);
    cmcf->interval_text.len = p - cmcf->interval_text.data;

    return NGX_CONF_OK;
}


/* dstack_vpc_control_prefix 100.128.0.0/10; */

static char *
ngx_http_dstack_vpc_cp_prefix(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf = conf;

    uint32_t     mask;
    ngx_int_t    rc;
    ngx_str_t   *value;
    ngx_cidr_t   cidr;

    if (cmcf->pool.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strlchr(value[1].data, value[1].data + value[1].len, '/')
        == NULL)
    {
        goto invalid;
    }

    rc = ngx_ptocidr(&value[1], &cidr);

    if (rc == NGX_ERROR || cidr.family != AF_INET) {
        goto invalid;
    }

    mask = ntohl(cidr.u.in.mask);

    /* /8 to /30 */

    if (mask < 0xff000000 || mask > 0xfffffffc) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "prefix length of \"%V\" must be 8 to 30",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (rc == NGX_DONE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" has host bits set", &value[1]);
        return NGX_CONF_ERROR;
    }

    cmcf->pool = value[1];
    cmcf->base = ntohl(cidr.u.in.addr);
    cmcf->size = ~mask + 1;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid prefix \"%V\": \"a.b.c.d/n\" expected",
                       &value[1]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_dstack_vpc_cp_init(ngx_conf_t *cf)
{
    ngx_str_t                             s;
    ngx_uint_t                            i;
    ngx_dstack_redis_script_t           **script[5];
    ngx_http_dstack_vpc_cp_main_conf_t   *cmcf;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    static const char  *sources[5] = {
        ngx_http_dstack_vpc_cp_lua_register,
        ngx_http_dstack_vpc_cp_lua_poll,
        ngx_http_dstack_vpc_cp_lua_touch,
        ngx_http_dstack_vpc_cp_lua_logout,
        ngx_http_dstack_vpc_cp_lua_sweep
    };

    cmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_dstack_vpc_cp_module);
    amcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_dstack_vpc_api_module);

    if (!amcf->enabled || amcf->redis.name.data == NULL) {
        /* ngx_http_dstack_vpc_api_init() says what is missing */
        return NGX_OK;
    }

    cmcf->amcf = amcf;

    cmcf->channel.len = amcf->prefix.len + sizeof("vpn:events") - 1;
    cmcf->channel.data = ngx_pnalloc(cf->pool, cmcf->channel.len);
    if (cmcf->channel.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(cmcf->channel.data, "%Vvpn:events", &amcf->prefix);

    script[0] = &cmcf->lua_register;
    script[1] = &cmcf->lua_poll;
    script[2] = &cmcf->lua_touch;
    script[3] = &cmcf->lua_logout;
    script[4] = &cmcf->lua_sweep;

    for (i = 0; i < 5; i++) {
        s.data = (u_char *) sources[i];
        s.len = ngx_strlen(sources[i]);

        *script[i] = ngx_dstack_redis_add_script(cf, &amcf->redis, &s);
        if (*script[i] == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
