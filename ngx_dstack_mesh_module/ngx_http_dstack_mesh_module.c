/*
 * ngx_dstack_mesh_module: the node's outbound service mesh (DESIGN
 * section 4).
 *
 * A location with "dstack_mesh_target" and "proxy_pass https://<upstream>"
 * is the mesh entry: its content handler validates and strips the
 * x-dstack-target-* headers and hands the request to the proxy module.
 * The upstream, configured by "dstack_mesh_gateway", is a balancer of its
 * own: it connects to the dstack gateway, names the target in SNI, checks
 * the peer's chain and app_id inside the TLS handshake, so that a wrong
 * peer never sees a request byte, and pools keep-alive connections and
 * TLS sessions per target.
 *
 * Where "dstack_mesh_allow_unattested" permits it, a caller's
 * "x-dstack-target-use-tls: false" takes the seed's other path: the
 * gateway terminates TLS with its public certificate and forwards plain
 * HTTP to the target's port; that certificate and name are checked, no
 * app_id is.  Without a target, /gateway and /health are answered here.
 */



#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dstack_mesh.h"
#include "dstack_header.h"


/* an x-dstack-target-port's longest spelling: "65535" */
#define NGX_HTTP_DSTACK_MESH_PORT_LEN  5


/*
 * The last target a client connection named, and what it came to: a
 * keep-alive client that calls one peer repeatedly is not parsed again.
 * Kept in the connection's pool (found again by its cleanup handler) and
 * used only by main requests of connections that carry one request at a
 * time, whose target points into it.  Such a request's ctx lives here as
 * well, reset for each request: one request at a time uses it, and the
 * request pool keeps its room for what nginx allocates (a request that
 * overflows the pool's first block costs another block and a malloc).
 */
typedef struct {
    ngx_http_dstack_mesh_srv_conf_t  *conf;
    size_t                            app_len;
    size_t                            instance_len;
    size_t                            port_len;
    size_t                            host_size;
    ngx_str_t                         app;
    ngx_str_t                         instance;
    ngx_str_t                         port;
    ngx_str_t                         host;
    u_char                            key[NGX_HTTP_DSTACK_MESH_KEY_LEN];
    u_char                            app_in[DSTACK_APP_ID_HEX_LEN];
    u_char                            instance_in[DSTACK_APP_ID_HEX_LEN];
    u_char                            port_in[NGX_HTTP_DSTACK_MESH_PORT_LEN];
    u_char                            app_hex[DSTACK_APP_ID_HEX_LEN];
    u_char                            instance_hex[DSTACK_APP_ID_HEX_LEN];
    u_char                            port_buf[NGX_INT_T_LEN];
    u_char                           *host_buf;  /* host_size */
    ngx_http_dstack_mesh_ctx_t        ctx;
} ngx_http_dstack_mesh_last_t;


static ngx_int_t ngx_http_dstack_mesh_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_mesh_target(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf, ngx_http_dstack_mesh_ctx_t *ctx,
    ngx_http_dstack_mesh_last_t *last, ngx_uint_t *use_tls_n,
    ngx_str_t *use_tls);
static ngx_http_dstack_mesh_last_t *ngx_http_dstack_mesh_last(
    ngx_http_request_t *r, ngx_http_dstack_mesh_srv_conf_t *conf);
static void ngx_http_dstack_mesh_last_save(ngx_http_dstack_mesh_last_t *last,
    ngx_http_dstack_mesh_ctx_t *ctx, ngx_str_t *app, ngx_str_t *instance,
    ngx_str_t *port);
static void ngx_http_dstack_mesh_last_cleanup(void *data);
static ngx_int_t ngx_http_dstack_mesh_field(ngx_http_request_t *r,
    ngx_http_complex_value_t *cv, ngx_table_elt_t *h, ngx_uint_t dups,
    ngx_str_t *value);
static ngx_int_t ngx_http_dstack_mesh_hex_id(ngx_http_request_t *r,
    ngx_str_t *value, u_char *id, ngx_str_t *hex);
static ngx_int_t ngx_http_dstack_mesh_parse_port(u_char *data, size_t len);
static void ngx_http_dstack_mesh_hexval_init(void);
static ngx_uint_t ngx_http_dstack_mesh_header_kind(ngx_table_elt_t *h);
static ngx_int_t ngx_http_dstack_mesh_unattested(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf, ngx_http_dstack_mesh_ctx_t *ctx,
    ngx_uint_t n, ngx_str_t *value);
static ngx_int_t ngx_http_dstack_mesh_strip_headers(ngx_http_request_t *r,
    ngx_uint_t count, uint64_t stripped);
static ngx_int_t ngx_http_dstack_mesh_agent(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf, ngx_http_dstack_mesh_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_mesh_gateway_info(ngx_http_request_t *r,
    ngx_http_dstack_mesh_srv_conf_t *mscf);
static ngx_int_t ngx_http_dstack_mesh_health(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf,
    ngx_http_dstack_mesh_srv_conf_t *mscf);
static size_t ngx_http_dstack_mesh_vpn_ip(ngx_http_request_t *r,
    ngx_str_t *file, u_char *buf, size_t size);
static ngx_int_t ngx_http_dstack_mesh_resolve(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx);
static void ngx_http_dstack_mesh_resolve_handler(ngx_resolver_ctx_t *rctx);
static void ngx_http_dstack_mesh_resolve_cleanup(void *data);
static ngx_int_t ngx_http_dstack_mesh_proxy(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_mesh_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *fmt, ...);
static ngx_buf_t *ngx_http_dstack_mesh_error_buf(ngx_http_request_t *r,
    const char *code, ngx_str_t *detail);
static ngx_int_t ngx_http_dstack_mesh_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_buf_t *b);
static ngx_int_t ngx_http_dstack_mesh_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_mesh_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_uint_t ngx_http_dstack_mesh_explain(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx, ngx_uint_t status, const char **code,
    ngx_str_t *detail);
static ngx_int_t ngx_http_dstack_mesh_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_dstack_mesh_set_code(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx, const char *code);
static ngx_int_t ngx_http_dstack_mesh_log_metrics(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_mesh_peer_host_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_uint_t ngx_http_dstack_mesh_local_host(ngx_str_t *host);
static ngx_int_t ngx_http_dstack_mesh_upgrade_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_dstack_mesh_add_variables(ngx_conf_t *cf);
static void *ngx_http_dstack_mesh_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_dstack_mesh_create_srv_conf(ngx_conf_t *cf);
static void *ngx_http_dstack_mesh_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_mesh_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_dstack_mesh_target_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_dstack_mesh_gateway(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_mesh_attestation(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_dstack_mesh_init_gateway_store(ngx_conf_t *cf,
    ngx_http_dstack_mesh_srv_conf_t *mscf);
static void ngx_http_dstack_mesh_cleanup_store(void *data);
static ngx_int_t ngx_http_dstack_mesh_init(ngx_conf_t *cf);


static ngx_command_t  ngx_http_dstack_mesh_commands[] = {

    { ngx_string("dstack_mesh_target"),
      NGX_HTTP_LOC_CONF|NGX_CONF_ANY,
      ngx_http_dstack_mesh_target_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_mesh_agent"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, agent),
      NULL },

    { ngx_string("dstack_mesh_allow_unattested"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, allow_unattested),
      NULL },

    { ngx_string("dstack_mesh_attested_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, attested_header),
      NULL },

    { ngx_string("dstack_mesh_vpn_ip_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, vpn_ip_file),
      NULL },

    { ngx_string("dstack_mesh_gateway"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE12,
      ngx_http_dstack_mesh_gateway,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_mesh_certificate"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_srv_conf_t, certificate),
      NULL },

    { ngx_string("dstack_mesh_certificate_key"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_srv_conf_t, certificate_key),
      NULL },

    { ngx_string("dstack_mesh_trusted_certificate"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_srv_conf_t, trusted_certificate),
      NULL },

    { ngx_string("dstack_mesh_verify_depth"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_srv_conf_t, verify_depth),
      NULL },

    { ngx_string("dstack_mesh_gateway_trusted_certificate"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_srv_conf_t, gateway_trusted_certificate),
      NULL },

    { ngx_string("dstack_mesh_attestation"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_mesh_attestation,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_mesh_keepalive"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_srv_conf_t, max_cached),
      NULL },

    { ngx_string("dstack_mesh_keepalive_requests"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_srv_conf_t, requests),
      NULL },

    { ngx_string("dstack_mesh_keepalive_timeout"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_srv_conf_t, timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_mesh_module_ctx = {
    ngx_http_dstack_mesh_add_variables,    /* preconfiguration */
    ngx_http_dstack_mesh_init,             /* postconfiguration */

    ngx_http_dstack_mesh_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_http_dstack_mesh_create_srv_conf,  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_dstack_mesh_create_loc_conf,  /* create location configuration */
    ngx_http_dstack_mesh_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_mesh_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_mesh_module_ctx,      /* module context */
    ngx_http_dstack_mesh_commands,         /* module directives */
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


static ngx_http_variable_t  ngx_http_dstack_mesh_vars[] = {

    { ngx_string("dstack_mesh_host"), NULL, ngx_http_dstack_mesh_variable,
      offsetof(ngx_http_dstack_mesh_ctx_t, host), 0, 0 },

    { ngx_string("dstack_mesh_target_app"), NULL,
      ngx_http_dstack_mesh_variable,
      offsetof(ngx_http_dstack_mesh_ctx_t, app), 0, 0 },

    { ngx_string("dstack_mesh_target_instance"), NULL,
      ngx_http_dstack_mesh_variable,
      offsetof(ngx_http_dstack_mesh_ctx_t, instance), 0, 0 },

    { ngx_string("dstack_mesh_target_port"), NULL,
      ngx_http_dstack_mesh_variable,
      offsetof(ngx_http_dstack_mesh_ctx_t, port), 0, 0 },

    { ngx_string("dstack_mesh_attested"), NULL,
      ngx_http_dstack_mesh_variable,
      offsetof(ngx_http_dstack_mesh_ctx_t, attested), 0, 0 },

    { ngx_string("dstack_mesh_error"), NULL,
      ngx_http_dstack_mesh_variable,
      offsetof(ngx_http_dstack_mesh_ctx_t, code), 0, 0 },
    /* changeable: a configuration that still maps it itself keeps working */
    { ngx_string("dstack_mesh_peer_host"), NULL,
      ngx_http_dstack_mesh_peer_host_variable, 0,
      NGX_HTTP_VAR_CHANGEABLE, 0 },

    { ngx_string("dstack_mesh_upgrade"), NULL,
      ngx_http_dstack_mesh_upgrade_variable, 0, 0, 0 },

    /* changeable: a configuration that still maps it itself keeps working */
    { ngx_string("dstack_mesh_connection"), NULL,
      ngx_http_dstack_mesh_upgrade_variable, 1,
      NGX_HTTP_VAR_CHANGEABLE, 0 },

      ngx_http_null_variable
};


/*
 * a hex digit's value, with NGX_HTTP_DSTACK_MESH_HEX_UPPER for "A" to
 * "F"; 0xff for anything else
 */
static u_char  ngx_http_dstack_mesh_hexval[256];

#define NGX_HTTP_DSTACK_MESH_HEX_UPPER  0x10

static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_int_t
ngx_http_dstack_mesh_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_str_t                         use_tls;
    ngx_uint_t                        n;
    ngx_http_dstack_mesh_ctx_t       *ctx;
    ngx_http_dstack_mesh_last_t      *last;
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    last = ngx_http_dstack_mesh_last(r, mlcf->mesh);

    if (last != NULL) {
        /* the key is set whole by ngx_http_dstack_mesh_target() */
        ctx = &last->ctx;
        ngx_memzero(ctx, offsetof(ngx_http_dstack_mesh_ctx_t, key));

    } else {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_mesh_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->conf = mlcf->mesh;
    ctx->request = r;

    ngx_http_set_ctx(r, ctx, ngx_http_dstack_mesh_module);

    rc = ngx_http_dstack_mesh_target(r, mlcf, ctx, last, &n, &use_tls);

    if (rc == NGX_DECLINED) {
        return ngx_http_dstack_mesh_agent(r, mlcf, ctx);
    }

    if (rc == NGX_OK && n) {
        rc = ngx_http_dstack_mesh_unattested(r, mlcf, ctx, n, &use_tls);
    }

    if (rc == NGX_HTTP_BAD_REQUEST) {
        return ngx_http_dstack_mesh_send_error(r, NGX_HTTP_BAD_REQUEST,
                                               "BAD_TARGET", "%V",
                                               &ctx->detail);
    }

    if (rc == NGX_HTTP_FORBIDDEN) {
        return ngx_http_dstack_mesh_send_error(r, NGX_HTTP_FORBIDDEN,
                                               "USE_TLS_REFUSED", "%V",
                                               &ctx->detail);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if (!ctx->unattested) {
        ngx_str_set(&ctx->attested, "1");
    }

    if (ctx->conf->addrs == NULL) {
        return ngx_http_dstack_mesh_resolve(r, ctx);
    }

    ctx->addrs = ctx->conf->addrs;
    ctx->naddrs = ctx->conf->naddrs;

    return mlcf->proxy_handler(r);
}


/*
 * Reads the target from the configuration or the x-dstack-target-*
 * headers, and removes those headers and any x-dstack-app-id from the
 * request; also how many x-dstack-target-use-tls headers came, and the
 * last one's value.  NGX_DECLINED: there is no target app;
 * NGX_HTTP_BAD_REQUEST: a malformed target, described in ctx->detail.
 */

static ngx_int_t
ngx_http_dstack_mesh_target(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf, ngx_http_dstack_mesh_ctx_t *ctx,
    ngx_http_dstack_mesh_last_t *last, ngx_uint_t *use_tls_n,
    ngx_str_t *use_tls)
{
    u_char                       *p, *key;
    uint64_t                      stripped;
    ngx_int_t                     port;
    ngx_str_t                     app, instance, port_text, port_in, *id;
    ngx_uint_t                    i, n, kind, strip;
    ngx_list_part_t              *part;
    ngx_table_elt_t              *h, *fields[NGX_HTTP_DSTACK_MESH_USE_TLS + 1];
    ngx_uint_t                    dups[NGX_HTTP_DSTACK_MESH_USE_TLS + 1];

    ngx_memzero(fields, sizeof(fields));
    ngx_memzero(dups, sizeof(dups));
    strip = 0;
    n = 0;
    stripped = 0;  /* the first 64 headers' verdicts, not asked twice */

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++, n++) {
            if (!dstack_header_maybe(h[i].key.data, h[i].key.len)) {
                continue;
            }

            kind = ngx_http_dstack_mesh_header_kind(&h[i]);

            if (kind == NGX_HTTP_DSTACK_MESH_KEEP) {
                continue;
            }

            if (kind == NGX_HTTP_DSTACK_MESH_UNCLEAR) {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "dstack mesh: refused header name \"%V\"",
                              &h[i].key);
                ngx_str_set(&ctx->detail,
                            "a header name resembles x-dstack-*");
                return NGX_HTTP_BAD_REQUEST;
            }

            strip++;

            if (n < 64) {
                stripped |= (uint64_t) 1 << n;
            }

            if (kind != NGX_HTTP_DSTACK_MESH_STRIP) {
                dups[kind] += (fields[kind] != NULL);
                fields[kind] = &h[i];
            }
        }
    }

    if (strip && ngx_http_dstack_mesh_strip_headers(r, strip, stripped)
                 != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h = fields[NGX_HTTP_DSTACK_MESH_USE_TLS];

    if (h != NULL) {
        *use_tls_n = 1 + dups[NGX_HTTP_DSTACK_MESH_USE_TLS];
        *use_tls = h->value;

    } else {
        *use_tls_n = 0;
        ngx_str_null(use_tls);
    }

    if (ngx_http_dstack_mesh_field(r, mlcf->app,
                                   fields[NGX_HTTP_DSTACK_MESH_APP],
                                   dups[NGX_HTTP_DSTACK_MESH_APP], &app)
        != NGX_OK
        || ngx_http_dstack_mesh_field(r, mlcf->instance,
                                      fields[NGX_HTTP_DSTACK_MESH_INSTANCE],
                                      dups[NGX_HTTP_DSTACK_MESH_INSTANCE],
                                      &instance)
           != NGX_OK
        || ngx_http_dstack_mesh_field(r, mlcf->port,
                                      fields[NGX_HTTP_DSTACK_MESH_PORT],
                                      dups[NGX_HTTP_DSTACK_MESH_PORT],
                                      &port_text)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (app.data == NULL || instance.data == NULL || port_text.data == NULL) {
        ngx_str_set(&ctx->detail, "more than one header for a target field");
        return NGX_HTTP_BAD_REQUEST;
    }

    if (app.len == 0) {
        if (instance.len || port_text.len) {
            ngx_str_set(&ctx->detail, "x-dstack-target-app is missing");
            return NGX_HTTP_BAD_REQUEST;
        }

        return NGX_DECLINED;
    }

    if (last != NULL
        && last->app_len == app.len
        && last->instance_len == instance.len
        && last->port_len == port_text.len
        && ngx_memcmp(last->app_in, app.data, app.len) == 0
        && (instance.len == 0
            || ngx_memcmp(last->instance_in, instance.data, instance.len)
               == 0)
        && (port_text.len == 0
            || ngx_memcmp(last->port_in, port_text.data, port_text.len)
               == 0))
    {
        ngx_memcpy(ctx->key, last->key, NGX_HTTP_DSTACK_MESH_KEY_LEN);
        ctx->app = last->app;
        ctx->instance = last->instance;
        ctx->port = last->port;
        ctx->host = last->host;

        return NGX_OK;
    }

    key = ctx->key;
    ngx_memzero(key, NGX_HTTP_DSTACK_MESH_KEY_LEN);
    port_in = port_text;

    if (ngx_http_dstack_mesh_hex_id(r, &app, key, &ctx->app) != NGX_OK) {
        ngx_str_set(&ctx->detail,
                    "x-dstack-target-app must be 40 hex characters");
        return NGX_HTTP_BAD_REQUEST;
    }

    id = &ctx->app;

    if (instance.len) {
        if (ngx_http_dstack_mesh_hex_id(r, &instance, key + DSTACK_APP_ID_LEN,
                                        &ctx->instance)
            != NGX_OK)
        {
            ngx_str_set(&ctx->detail,
                        "x-dstack-target-instance must be 40 hex characters");
            return NGX_HTTP_BAD_REQUEST;
        }

        key[2 * DSTACK_APP_ID_LEN + 2] = 1;
        id = &ctx->instance;
    }

    if (port_text.len == 0) {
        ngx_str_set(&port_text, "443");
        port = 443;

    } else {
        port = ngx_http_dstack_mesh_parse_port(port_text.data, port_text.len);
    }

    if (port == NGX_ERROR) {
        ngx_str_set(&ctx->detail,
                    "x-dstack-target-port must be a number from 1 to 65535");
        return NGX_HTTP_BAD_REQUEST;
    }

    key[2 * DSTACK_APP_ID_LEN] = (u_char) (port >> 8);
    key[2 * DSTACK_APP_ID_LEN + 1] = (u_char) (port & 0xff);

    if (port_text.data[0] != '0') {
        ctx->port = port_text;

    } else {
        /* leading zeros: the host must name the port one way only */

        ctx->port.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (ctx->port.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->port.len = ngx_sprintf(ctx->port.data, "%i", port)
                        - ctx->port.data;
    }

    /* <instance or app>-<port>s.<base domain>, the "s" for TLS passthrough */

    p = ngx_pnalloc(r->pool, DSTACK_APP_ID_HEX_LEN + 1 + ctx->port.len + 2
                             + ctx->conf->domain.len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->host.data = p;

    p = ngx_cpymem(p, id->data, id->len);
    *p++ = '-';
    p = ngx_cpymem(p, ctx->port.data, ctx->port.len);
    *p++ = 's';
    *p++ = '.';
    p = ngx_cpymem(p, ctx->conf->domain.data, ctx->conf->domain.len);
    *p = '\0';

    ctx->host.len = p - ctx->host.data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "dstack mesh target: \"%V\"", &ctx->host);

    if (last != NULL) {
        ngx_http_dstack_mesh_last_save(last, ctx, &app, &instance,
                                       &port_in);
    }

    return NGX_OK;
}


/*
 * The connection's last target, NULL where it cannot be used: a
 * subrequest or an HTTP/2 stream shares the connection with requests
 * that run at the same time.  A new one starts empty.
 */

static ngx_http_dstack_mesh_last_t *
ngx_http_dstack_mesh_last(ngx_http_request_t *r,
    ngx_http_dstack_mesh_srv_conf_t *conf)
{
    size_t                        size;
    ngx_connection_t             *c;
    ngx_pool_cleanup_t           *cln;
    ngx_http_dstack_mesh_last_t  *last;

#if (NGX_HTTP_V2)
    if (r->stream != NULL) {
        return NULL;
    }
#endif

    if (r != r->main) {
        return NULL;
    }

    c = r->connection;

    for (cln = c->pool->cleanup; cln != NULL; cln = cln->next) {
        if (cln->handler == ngx_http_dstack_mesh_last_cleanup) {
            last = cln->data;

            if (last->conf == conf) {
                return last;
            }

            /* another upstream{}: its domain may be longer */
            size = DSTACK_APP_ID_HEX_LEN + 1 + NGX_HTTP_DSTACK_MESH_PORT_LEN
                   + 2 + conf->domain.len + 1;

            if (size > last->host_size) {
                last->host_buf = ngx_pnalloc(c->pool, size);
                if (last->host_buf == NULL) {
                    last->host_size = 0;
                    return NULL;
                }

                last->host_size = size;
            }

            last->conf = conf;
            last->app_len = 0;

            return last;
        }
    }

    size = DSTACK_APP_ID_HEX_LEN + 1 + NGX_HTTP_DSTACK_MESH_PORT_LEN + 2
           + conf->domain.len + 1;

    cln = ngx_pool_cleanup_add(c->pool, sizeof(ngx_http_dstack_mesh_last_t));
    if (cln == NULL) {
        return NULL;
    }

    last = cln->data;
    last->conf = conf;
    last->app_len = 0;

    last->host_buf = ngx_pnalloc(c->pool, size);
    last->host_size = (last->host_buf != NULL) ? size : 0;

    cln->handler = ngx_http_dstack_mesh_last_cleanup;

    return last;
}


/* a valid target goes into the connection's last, the ctx points there */

static void
ngx_http_dstack_mesh_last_save(ngx_http_dstack_mesh_last_t *last,
    ngx_http_dstack_mesh_ctx_t *ctx, ngx_str_t *app, ngx_str_t *instance,
    ngx_str_t *port)
{
    if (app->len != DSTACK_APP_ID_HEX_LEN
        || instance->len > DSTACK_APP_ID_HEX_LEN
        || port->len > NGX_HTTP_DSTACK_MESH_PORT_LEN
        || ctx->port.len > NGX_INT_T_LEN
        || ctx->host.len + 1 > last->host_size)
    {
        last->app_len = 0;
        return;
    }

    ngx_memcpy(last->key, ctx->key, NGX_HTTP_DSTACK_MESH_KEY_LEN);

    last->app.data = ngx_cpymem(last->app_hex, ctx->app.data, ctx->app.len)
                     - ctx->app.len;
    last->app.len = ctx->app.len;

    last->instance.data = ngx_cpymem(last->instance_hex, ctx->instance.data,
                                     ctx->instance.len)
                          - ctx->instance.len;
    last->instance.len = ctx->instance.len;

    last->port.data = ngx_cpymem(last->port_buf, ctx->port.data,
                                 ctx->port.len)
                      - ctx->port.len;
    last->port.len = ctx->port.len;

    /* with its terminating null, for SNI */
    ngx_memcpy(last->host_buf, ctx->host.data, ctx->host.len + 1);
    last->host.data = last->host_buf;
    last->host.len = ctx->host.len;

    ngx_memcpy(last->app_in, app->data, app->len);
    ngx_memcpy(last->instance_in, instance->data, instance->len);
    ngx_memcpy(last->port_in, port->data, port->len);

    last->app_len = app->len;
    last->instance_len = instance->len;
    last->port_len = port->len;
}


/* marks the connection's last target in its pool; nothing to release */

static void
ngx_http_dstack_mesh_last_cleanup(void *data)
{
}


/*
 * A target field from the configuration if set there, else from its
 * header; value->data is NULL when the header came more than once.
 */

static ngx_int_t
ngx_http_dstack_mesh_field(ngx_http_request_t *r, ngx_http_complex_value_t *cv,
    ngx_table_elt_t *h, ngx_uint_t dups, ngx_str_t *value)
{
    if (cv != NULL) {
        return ngx_http_complex_value(r, cv, value);
    }

    if (dups) {
        ngx_str_null(value);
        return NGX_OK;
    }

    if (h == NULL) {
        ngx_str_set(value, "");
        return NGX_OK;
    }

    *value = h->value;

    return NGX_OK;
}


/*
 * As dstack_hex_decode() and dstack_hex_encode() (ratls/dstack_hex.h),
 * in one pass on every request; the lowercase hex is the value itself
 * unless it has capitals.
 */

static ngx_int_t
ngx_http_dstack_mesh_hex_id(ngx_http_request_t *r, ngx_str_t *value,
    u_char *id, ngx_str_t *hex)
{
    u_char      hi, lo, seen, *p;
    ngx_uint_t  i;

    if (value->len != DSTACK_APP_ID_HEX_LEN) {
        return NGX_ERROR;
    }

    p = value->data;
    seen = 0;

    for (i = 0; i < DSTACK_APP_ID_LEN; i++) {
        hi = ngx_http_dstack_mesh_hexval[p[2 * i]];
        lo = ngx_http_dstack_mesh_hexval[p[2 * i + 1]];

        seen |= hi | lo;
        id[i] = (u_char) ((hi & 0x0f) << 4 | (lo & 0x0f));
    }

    if (seen & ~(NGX_HTTP_DSTACK_MESH_HEX_UPPER | 0x0f)) {
        return NGX_ERROR;
    }

    if (!(seen & NGX_HTTP_DSTACK_MESH_HEX_UPPER)) {
        *hex = *value;
        return NGX_OK;
    }

    hex->data = ngx_pnalloc(r->pool, DSTACK_APP_ID_HEX_LEN);
    if (hex->data == NULL) {
        return NGX_ERROR;
    }

    ngx_strlow(hex->data, p, DSTACK_APP_ID_HEX_LEN);
    hex->len = DSTACK_APP_ID_HEX_LEN;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_parse_port(u_char *data, size_t len)
{
    ngx_int_t  port;

    /* digits only: ngx_atoi() would take neither sign nor space either */

    if (len == 0 || len > 5) {
        return NGX_ERROR;
    }

    port = ngx_atoi(data, len);

    if (port < 1 || port > 65535) {
        return NGX_ERROR;
    }

    return port;
}


/* the values of hex digits */

static void
ngx_http_dstack_mesh_hexval_init(void)
{
    u_char      c;
    ngx_uint_t  i;

    for (i = 0; i < 256; i++) {
        c = (u_char) i;

        ngx_http_dstack_mesh_hexval[i] =
            (c >= '0' && c <= '9') ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? (c - 'A' + 10)
                                       | NGX_HTTP_DSTACK_MESH_HEX_UPPER
            : 0xff;
    }
}


/*
 * By the name as backends read it (dstack_header.h): underscores_in_headers
 * lets x_dstack_target_app through, and CGI-style backends and nginx's
 * $http_* variables read it as x-dstack-target-app.  Only the exact
 * lowercase spelling of x-dstack-target-use-tls chooses the path; any
 * other x-dstack-target-* is not forwarded either.
 */

static ngx_uint_t
ngx_http_dstack_mesh_header_kind(ngx_table_elt_t *h)
{
    u_char  *name, folded[DSTACK_HEADER_FOLD_LEN];
    size_t   len;

    len = h->key.len;

    /*
     * as nginx spelt it in lower case: a canonical name, which is what a
     * client sends, is known here (its characters fold as they are)
     */

    if (h->lowcase_key != NULL
        && len > sizeof(NGX_HTTP_DSTACK_MESH_PREFIX) - 1
        && ngx_memcmp(h->lowcase_key, NGX_HTTP_DSTACK_MESH_PREFIX,
                      sizeof(NGX_HTTP_DSTACK_MESH_PREFIX) - 1)
           == 0)
    {
        name = h->lowcase_key + sizeof(NGX_HTTP_DSTACK_MESH_PREFIX) - 1;

        switch (len - (sizeof(NGX_HTTP_DSTACK_MESH_PREFIX) - 1)) {

        case 3:
            if (ngx_memcmp(name, "app", 3) == 0) {
                return NGX_HTTP_DSTACK_MESH_APP;
            }
            break;

        case 4:
            if (ngx_memcmp(name, "port", 4) == 0) {
                return NGX_HTTP_DSTACK_MESH_PORT;
            }
            break;

        case 7:
            if (ngx_memcmp(name, "use-tls", 7) == 0) {
                return NGX_HTTP_DSTACK_MESH_USE_TLS;
            }
            break;

        case 8:
            if (ngx_memcmp(name, "instance", 8) == 0) {
                return NGX_HTTP_DSTACK_MESH_INSTANCE;
            }
            break;
        }
    }

    switch (dstack_header_fold(h->key.data, len, folded)) {

    case DSTACK_HEADER_UNCLEAR:
        return NGX_HTTP_DSTACK_MESH_UNCLEAR;

    case DSTACK_HEADER_OTHER:
        return NGX_HTTP_DSTACK_MESH_KEEP;
    }

    name = folded;

    if (len == sizeof("x-dstack-app-id") - 1
        && ngx_memcmp(name, "x-dstack-app-id", len) == 0)
    {
        return NGX_HTTP_DSTACK_MESH_STRIP;
    }

    if (len < sizeof(NGX_HTTP_DSTACK_MESH_PREFIX) - 1
        || ngx_memcmp(name, NGX_HTTP_DSTACK_MESH_PREFIX,
                      sizeof(NGX_HTTP_DSTACK_MESH_PREFIX) - 1)
           != 0)
    {
        return NGX_HTTP_DSTACK_MESH_KEEP;
    }

    name += sizeof(NGX_HTTP_DSTACK_MESH_PREFIX) - 1;
    len -= sizeof(NGX_HTTP_DSTACK_MESH_PREFIX) - 1;

    if (len == 3 && ngx_memcmp(name, "app", 3) == 0) {
        return NGX_HTTP_DSTACK_MESH_APP;
    }

    if (len == 8 && ngx_memcmp(name, "instance", 8) == 0) {
        return NGX_HTTP_DSTACK_MESH_INSTANCE;
    }

    if (len == 4 && ngx_memcmp(name, "port", 4) == 0) {
        return NGX_HTTP_DSTACK_MESH_PORT;
    }

    return NGX_HTTP_DSTACK_MESH_STRIP;
}


/*
 * The seed's parsing of x-dstack-target-use-tls: "true" and "1" keep the
 * attested path, any other value asks for the gateway's TLS termination
 * instead.  That path proves nothing about the target, so a header alone
 * must not choose it: the location has to allow it.  On it, the target
 * host loses its "s" (<id>-<port>.<domain>: the gateway terminates TLS)
 * and pooled connections and sessions are keyed apart.
 */

static ngx_int_t
ngx_http_dstack_mesh_unattested(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf, ngx_http_dstack_mesh_ctx_t *ctx,
    ngx_uint_t n, ngx_str_t *value)
{
    u_char  *s;
    size_t   off;

    if (n > 1) {
        ngx_str_set(&ctx->detail,
                    "more than one x-dstack-target-use-tls header");
        return NGX_HTTP_BAD_REQUEST;
    }

    if ((value->len == 4 && ngx_strncmp(value->data, "true", 4) == 0)
        || (value->len == 1 && value->data[0] == '1'))
    {
        return NGX_OK;
    }

    if (!mlcf->allow_unattested) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack mesh: unattested call to \"%V\" refused: "
                      "x-dstack-target-use-tls is not \"true\" and "
                      "\"dstack_mesh_allow_unattested\" is off", &ctx->host);

        ngx_str_set(&ctx->detail,
                    "x-dstack-target-use-tls other than true or 1 asks for "
                    "an unattested call through the gateway's TLS; this "
                    "location does not allow it "
                    "(dstack_mesh_allow_unattested off)");
        return NGX_HTTP_FORBIDDEN;
    }

    off = DSTACK_APP_ID_HEX_LEN + 1 + ctx->port.len;

    if (ctx->host.len <= off || ctx->host.data[off] != 's') {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a copy: the target's host may be the connection's (its last) */

    s = ngx_pnalloc(r->pool, ctx->host.len);
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the terminating null too */
    ngx_memcpy(s, ctx->host.data, off);
    ngx_memcpy(s + off, ctx->host.data + off + 1, ctx->host.len - off);

    ctx->host.data = s;
    ctx->host.len--;

    ctx->unattested = 1;
    ctx->key[NGX_HTTP_DSTACK_MESH_KEY_GATEWAY] = 1;
    ngx_str_set(&ctx->attested, "0");

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "dstack mesh: unattested target \"%V\"", &ctx->host);

    return NGX_OK;
}


/*
 * Rebuilds the request's header list without the routing headers and any
 * x-dstack-app-id.  Rebuilt rather than edited in place: headers_in keeps
 * pointers to the elements, which must stay valid.  Only when the
 * "count" headers to go all come last (clients add their own headers
 * after the usual ones) are they cut off the end, where nothing moves.
 */

static ngx_int_t
ngx_http_dstack_mesh_strip_headers(ngx_http_request_t *r, ngx_uint_t count,
    uint64_t stripped)
{
    ngx_uint_t        i, n;
    ngx_list_t        headers;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        n += part->nelts;
    }

    /*
     * the last "count" headers, by their verdicts; a subrequest's list is
     * a copy of its parent's that shares the parts: only the main
     * request's own list is cut
     */

    part = r->headers_in.headers.last;

    if (r == r->main && n <= 64 && count <= part->nelts
        && stripped == (((uint64_t) -1) >> (64 - count)) << (n - count))
    {
        part->nelts -= count;
        return NGX_OK;
    }

    if (ngx_list_init(&headers, r->pool, n + 1, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++, n++) {

            if ((n < 64) ? (stripped & ((uint64_t) 1 << n)) != 0
                         : ngx_http_dstack_mesh_header_kind(&h[i])
                           != NGX_HTTP_DSTACK_MESH_KEEP)
            {
                continue;
            }

            nh = ngx_list_push(&headers);
            if (nh == NULL) {
                return NGX_ERROR;
            }

            *nh = h[i];
        }
    }

    r->headers_in.headers = headers;

    return NGX_OK;
}


/*
 * No target app: the local guest agent, as the seed did it.  The last
 * path segment goes to PascalCase (/get_tls_key -> /GetTlsKey) and the
 * request continues in the "dstack_mesh_agent" named location;
 * /gateway is answered here.
 */

static ngx_int_t
ngx_http_dstack_mesh_agent(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf, ngx_http_dstack_mesh_ctx_t *ctx)
{
    u_char      *p, *dst, *last, *segment;
    ngx_str_t    uri;
    ngx_uint_t   upper;

    last = r->uri.data + r->uri.len;

    for (segment = last; segment > r->uri.data; segment--) {
        if (segment[-1] == '/') {
            break;
        }
    }

    /* a copy: r->uri may share its bytes with $request_uri */

    uri.data = ngx_pnalloc(r->pool, r->uri.len);
    if (uri.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    dst = ngx_cpymem(uri.data, r->uri.data, segment - r->uri.data);
    upper = 1;

    for (p = segment; p < last; p++) {
        if (*p == '_') {
            upper = 1;
            continue;
        }

        *dst++ = upper ? ngx_toupper(*p) : *p;
        upper = 0;
    }

    uri.len = dst - uri.data;

    if (uri.len == sizeof("/Gateway") - 1
        && ngx_strncmp(uri.data, "/Gateway", uri.len) == 0)
    {
        return ngx_http_dstack_mesh_gateway_info(r, ctx->conf);
    }

    if (uri.len == sizeof("/Health") - 1
        && ngx_strncmp(uri.data, "/Health", uri.len) == 0)
    {
        return ngx_http_dstack_mesh_health(r, mlcf, ctx->conf);
    }

    if (mlcf->agent.len == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack mesh: no x-dstack-target-app header");

        return ngx_http_dstack_mesh_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "BAD_TARGET", "x-dstack-target-app is missing");
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "dstack mesh: guest agent \"%V\" via \"%V\"",
                   &uri, &mlcf->agent);

    r->uri = uri;
    r->valid_unparsed_uri = 0;

    return ngx_http_named_location(r, &mlcf->agent);
}


static ngx_int_t
ngx_http_dstack_mesh_gateway_info(ngx_http_request_t *r,
    ngx_http_dstack_mesh_srv_conf_t *mscf)
{
    ngx_int_t   rc;
    ngx_buf_t  *b;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_dstack_mesh_send_error(r, NGX_HTTP_NOT_ALLOWED,
                   "METHOD_NOT_ALLOWED", "/gateway takes GET");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, sizeof("{\"gateway_domain\":\"\"}" CRLF)
                                     - 1 + mscf->gateway.len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the domain's characters were checked at configuration time */
    b->last = ngx_sprintf(b->last, "{\"gateway_domain\":\"%V\"}" CRLF,
                          &mscf->gateway);

    return ngx_http_dstack_mesh_send(r, NGX_HTTP_OK, b);
}


/*
 * The seed's health check (its image fetched http://127.0.0.1:80/health),
 * answered here with what makes this node ready: the mesh certificate in
 * its validity period, the gateway, and the VPN address once a node has
 * one.  Always 200, as the seed: "ready" says the rest.
 */

static ngx_int_t
ngx_http_dstack_mesh_health(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf,
    ngx_http_dstack_mesh_srv_conf_t *mscf)
{
    X509        *cert;
    size_t       len, ip_len;
    ngx_int_t    rc;
    ngx_buf_t   *b;
    const char  *state;
    u_char       ip[NGX_HTTP_DSTACK_MESH_VPN_IP_LEN];

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_dstack_mesh_send_error(r, NGX_HTTP_NOT_ALLOWED,
                   "METHOD_NOT_ALLOWED", "/health takes GET");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    cert = SSL_CTX_get0_certificate(mscf->ssl->ctx);

    if (cert == NULL) {
        state = "missing";

    } else if (X509_cmp_time(X509_get0_notAfter(cert), NULL) <= 0) {
        state = "expired";

    } else if (X509_cmp_time(X509_get0_notBefore(cert), NULL) >= 0) {
        state = "not yet valid";

    } else {
        state = "valid";
    }

    ip_len = 0;

    if (mlcf->vpn_ip_file.len) {
        ip_len = ngx_http_dstack_mesh_vpn_ip(r, &mlcf->vpn_ip_file, ip,
                                             sizeof(ip));
    }

    len = sizeof("{\"status\":\"ok\",\"ready\":false,"
                 "\"mesh_certificate\":\"not yet valid\","
                 "\"gateway_domain\":\"\",\"vpn_ip\":null}" CRLF)
          + mscf->gateway.len + ip_len;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the domain was checked at configuration time, the address here */

    b->last = ngx_sprintf(b->last,
                          "{\"status\":\"ok\",\"ready\":%s,"
                          "\"mesh_certificate\":\"%s\","
                          "\"gateway_domain\":\"%V\",\"vpn_ip\":",
                          state[0] == 'v' ? "true" : "false", state,
                          &mscf->gateway);

    if (ip_len) {
        b->last = ngx_sprintf(b->last, "\"%*s\"}" CRLF, ip_len, ip);

    } else {
        b->last = ngx_cpymem(b->last, "null}" CRLF, sizeof("null}" CRLF) - 1);
    }

    return ngx_http_dstack_mesh_send(r, NGX_HTTP_OK, b);
}


/*
 * The node's VPN address, as the node agent publishes it (one address,
 * maybe a newline): a small file on tmpfs, read whole.  0 when it is
 * absent or not an address.
 */

static size_t
ngx_http_dstack_mesh_vpn_ip(ngx_http_request_t *r, ngx_str_t *file,
    u_char *buf, size_t size)
{
    ssize_t    n;
    ngx_fd_t   fd;
    ngx_err_t  err;
#if (NGX_HAVE_INET6)
    u_char     addr6[16];
#endif

    fd = ngx_open_file(file->data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        err = ngx_errno;

        if (err != NGX_ENOENT) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, err,
                          ngx_open_file_n " \"%V\" failed", file);
        }

        return 0;
    }

    n = ngx_read_fd(fd, buf, size);
    err = ngx_errno;

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", file);
    }

    if (n == -1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, err,
                      ngx_read_fd_n " \"%V\" failed", file);
        return 0;
    }

    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'
                     || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    {
        n--;
    }

    if (n > 0 && (size_t) n < size
        && (ngx_inet_addr(buf, n) != INADDR_NONE
#if (NGX_HAVE_INET6)
            || ngx_inet6_addr(buf, n, addr6) == NGX_OK
#endif
           ))
    {
        return n;
    }

    if (n > 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack mesh: \"%V\" holds no IP address", file);
    }

    return 0;
}


/*
 * Without a fixed gateway address, the target's own host name is resolved
 * (the gateway serves a wildcard domain); nginx's resolver caches it.
 */

static ngx_int_t
ngx_http_dstack_mesh_resolve(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    ngx_resolver_ctx_t        *rctx;
    ngx_pool_cleanup_t        *cln;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    rctx = ngx_resolve_start(clcf->resolver, NULL);
    if (rctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rctx == NGX_NO_RESOLVER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack mesh: no resolver defined to resolve \"%V\"",
                      &ctx->host);

        return ngx_http_dstack_mesh_send_error(r, NGX_HTTP_BAD_GATEWAY,
                   "RESOLVE_FAILED", "no resolver for %V", &ctx->host);
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_resolve_name_done(rctx);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_dstack_mesh_resolve_cleanup;
    cln->data = ctx;

    rctx->name = ctx->host;
    rctx->handler = ngx_http_dstack_mesh_resolve_handler;
    rctx->data = r;
    rctx->timeout = clcf->resolver_timeout;

    ctx->resolver = rctx;

    if (ngx_resolve_name(rctx) != NGX_OK) {
        ctx->resolver = NULL;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->resolver != NULL) {
        /* waiting for the answer */
        r->main->count++;
        return NGX_DONE;
    }

    /* answered from the resolver's cache */

    return ngx_http_dstack_mesh_proxy(r, ctx);
}


static void
ngx_http_dstack_mesh_resolve_handler(ngx_resolver_ctx_t *rctx)
{
    u_char                      *p;
    size_t                       len;
    ngx_int_t                    rc;
    ngx_uint_t                   i, async;
    ngx_addr_t                  *addr;
    ngx_connection_t            *c;
    struct sockaddr             *sa;
    ngx_http_request_t          *r;
    ngx_http_dstack_mesh_ctx_t  *ctx;

    r = rctx->data;
    c = r->connection;
    async = rctx->async;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    if (rctx->state) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "dstack mesh: \"%V\" could not be resolved (%i: %s)",
                      &rctx->name, rctx->state,
                      ngx_resolver_strerror(rctx->state));

        p = ngx_http_dstack_mesh_detail_buf(ctx);

        if (p != NULL) {
            ctx->detail.data = p;
            ctx->detail.len = ngx_snprintf(p, NGX_HTTP_DSTACK_MESH_DETAIL_LEN,
                                           "%s",
                                           ngx_resolver_strerror(rctx->state))
                              - p;
        }

    } else {
        ctx->addrs = ngx_pcalloc(r->pool, rctx->naddrs * sizeof(ngx_addr_t));
        if (ctx->addrs == NULL) {
            goto done;
        }

        for (i = 0; i < rctx->naddrs; i++) {
            addr = &ctx->addrs[i];

            sa = ngx_palloc(r->pool, rctx->addrs[i].socklen);
            addr->name.data = ngx_pnalloc(r->pool, NGX_SOCKADDR_STRLEN);

            if (sa == NULL || addr->name.data == NULL) {
                goto done;
            }

            ngx_memcpy(sa, rctx->addrs[i].sockaddr, rctx->addrs[i].socklen);
            ngx_inet_set_port(sa, (in_port_t) ngx_atoi(ctx->conf->port.data,
                                                       ctx->conf->port.len));

            len = ngx_sock_ntop(sa, rctx->addrs[i].socklen, addr->name.data,
                                NGX_SOCKADDR_STRLEN, 1);

            addr->sockaddr = sa;
            addr->socklen = rctx->addrs[i].socklen;
            addr->name.len = len;
        }

        ctx->naddrs = rctx->naddrs;
    }

done:

    ngx_resolve_name_done(rctx);
    ctx->resolver = NULL;

    if (!async) {
        return;
    }

    ngx_http_set_log_request(c->log, r);

    rc = ngx_http_dstack_mesh_proxy(r, ctx);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_dstack_mesh_resolve_cleanup(void *data)
{
    ngx_http_dstack_mesh_ctx_t  *ctx = data;

    if (ctx->resolver != NULL) {
        ngx_resolve_name_done(ctx->resolver);
        ctx->resolver = NULL;
    }
}


static ngx_int_t
ngx_http_dstack_mesh_proxy(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    if (ctx->naddrs == 0) {
        if (ctx->detail.len == 0) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_dstack_mesh_send_error(r, NGX_HTTP_BAD_GATEWAY,
                   "RESOLVE_FAILED", "%V could not be resolved (%V)",
                   &ctx->host, &ctx->detail);
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    return mlcf->proxy_handler(r);
}


static ngx_int_t
ngx_http_dstack_mesh_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *fmt, ...)
{
    u_char     *p;
    va_list     args;
    ngx_int_t   rc;
    ngx_str_t   detail;
    ngx_buf_t  *b;
    u_char      buf[NGX_HTTP_DSTACK_MESH_DETAIL_LEN];

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    detail.data = buf;
    detail.len = p - buf;

    if (status == NGX_HTTP_BAD_REQUEST) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack mesh: %V", &detail);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    b = ngx_http_dstack_mesh_error_buf(r, code, &detail);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_dstack_mesh_set_code(r, NULL, code);

    return ngx_http_dstack_mesh_send(r, status, b);
}


/* {"error":"<CODE>: detail"} */

static ngx_buf_t *
ngx_http_dstack_mesh_error_buf(ngx_http_request_t *r, const char *code,
    ngx_str_t *detail)
{
    size_t      len;
    ngx_buf_t  *b;

    len = sizeof("{\"error\":\": \"}" CRLF) - 1 + ngx_strlen(code)
          + detail->len + ngx_escape_json(NULL, detail->data, detail->len);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    b->last = ngx_sprintf(b->last, "{\"error\":\"%s: ", code);
    b->last = (u_char *) ngx_escape_json(b->last, detail->data, detail->len);
    b->last = ngx_cpymem(b->last, "\"}" CRLF, sizeof("\"}" CRLF) - 1);

    return b;
}


static ngx_int_t
ngx_http_dstack_mesh_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * nginx's own error pages of a mesh location (a failed upstream attempt,
 * a body too large, ...) become JSON, with 525/526 for TLS failures.
 */

static ngx_int_t
ngx_http_dstack_mesh_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                         detail;
    ngx_uint_t                        status;
    const char                       *code;
    ngx_table_elt_t                  *h;
    ngx_http_dstack_mesh_ctx_t       *ctx;
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    /*
     * dstack_mesh_attested_header: what add_header X-Dstack-Mesh-Attested
     * $dstack_mesh_attested always would add, without a script
     */

    if (mlcf->attested_header && r == r->main) {
        ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

        if (ctx != NULL && ctx->attested.len) {
            h = ngx_list_push(&r->headers_out.headers);
            if (h == NULL) {
                return NGX_ERROR;
            }

            h->hash = 1;
            ngx_str_set(&h->key, "X-Dstack-Mesh-Attested");
            h->value = ctx->attested;
        }
    }

    if (!mlcf->json_errors
        || r->err_status < NGX_HTTP_BAD_REQUEST
        || r->headers_out.status != r->err_status)
    {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    if (ctx == NULL) {
        /* the guest agent's named location */

        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_mesh_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ctx->request = r;

        ngx_http_set_ctx(r, ctx, ngx_http_dstack_mesh_module);

    } else if (ctx->replaced) {
        return ngx_http_next_header_filter(r);
    }

    status = ngx_http_dstack_mesh_explain(r, ctx, r->err_status, &code,
                                          &detail);

    ctx->error = ngx_http_dstack_mesh_error_buf(r, code, &detail);
    if (ctx->error == NULL) {
        return NGX_ERROR;
    }

    ngx_http_dstack_mesh_set_code(r, ctx, code);

    ctx->replaced = 1;

    r->err_status = status;
    r->headers_out.status = status;

    if (status == NGX_HTTP_DSTACK_MESH_TLS_FAILED) {
        ngx_str_set(&r->headers_out.status_line, "525 SSL Handshake Failed");

    } else if (status == NGX_HTTP_DSTACK_MESH_PEER_REJECTED) {
        ngx_str_set(&r->headers_out.status_line,
                    "526 Invalid SSL Certificate");
    }

    r->headers_out.content_length_n = ctx->error->last - ctx->error->pos;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_dstack_mesh_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                   *b;
    ngx_uint_t                   last;
    ngx_chain_t                 *cl, out;
    ngx_http_dstack_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    if (ctx == NULL || !ctx->replaced) {
        return ngx_http_next_body_filter(r, in);
    }

    /* nginx's HTML page is dropped, the JSON goes out in its place */

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;

        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            last = 1;
        }
    }

    if (!last || ctx->error == NULL) {
        return ngx_http_next_body_filter(r, NULL);
    }

    b = ctx->error;
    ctx->error = NULL;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}


static ngx_uint_t
ngx_http_dstack_mesh_explain(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx, ngx_uint_t status, const char **code,
    ngx_str_t *detail)
{
    u_char                           *p, *last;
    ngx_str_t                        *peer, *host;
    const char                       *what;
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    static ngx_str_t  unknown = ngx_string("(none)");

    /* no room (allocation failed): an empty detail */

    p = ngx_http_dstack_mesh_detail_buf(ctx);
    last = (p != NULL) ? p + NGX_HTTP_DSTACK_MESH_DETAIL_LEN : NULL;

    peer = ctx->peer ? ctx->peer : &unknown;
    host = &ctx->host;

    if (status == NGX_HTTP_BAD_GATEWAY) {

        switch (ctx->failure) {

        case NGX_HTTP_DSTACK_MESH_FAIL_PEER:
            *code = "PEER_REJECTED";
            *detail = ctx->detail;
            return NGX_HTTP_DSTACK_MESH_PEER_REJECTED;

        case NGX_HTTP_DSTACK_MESH_FAIL_HANDSHAKE:
            *code = "TLS_HANDSHAKE_FAILED";
            p = ngx_slprintf(p, last, "TLS handshake with %V failed", host);
            status = NGX_HTTP_DSTACK_MESH_TLS_FAILED;
            goto done;

        case NGX_HTTP_DSTACK_MESH_FAIL_CONNECT:
            *code = "CONNECT_FAILED";
            p = ngx_slprintf(p, last, "cannot connect to the gateway at %V",
                             peer);
            goto done;

        case NGX_HTTP_DSTACK_MESH_FAIL_CLOSED:
            *code = "CONNECT_FAILED";
            p = ngx_slprintf(p, last, "the gateway at %V closed the "
                             "connection (no route to %V?)", peer, host);
            goto done;

        case NGX_HTTP_DSTACK_MESH_FAIL_UPSTREAM:
            *code = "UPSTREAM_ERROR";
            p = ngx_slprintf(p, last, "no valid response from %V", host);
            goto done;
        }

    } else if (status == NGX_HTTP_GATEWAY_TIME_OUT && host->len) {
        *code = "TIMEOUT";

        switch (ctx->failure) {

        case NGX_HTTP_DSTACK_MESH_FAIL_CONNECT:
            p = ngx_slprintf(p, last, "connecting to the gateway at %V "
                             "timed out", peer);
            break;

        case NGX_HTTP_DSTACK_MESH_FAIL_HANDSHAKE:
        case NGX_HTTP_DSTACK_MESH_FAIL_CLOSED:
            p = ngx_slprintf(p, last, "TLS handshake with %V timed out",
                             host);
            break;

        default:
            p = ngx_slprintf(p, last, "%V did not answer in time", host);
        }

        goto done;
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);
    what = mlcf->mesh ? "the upstream" : "the guest agent";

    switch (status) {

    case NGX_HTTP_BAD_GATEWAY:
        *code = mlcf->mesh ? "BAD_GATEWAY" : "AGENT_UNAVAILABLE";
        p = ngx_slprintf(p, last, "%s failed", what);
        break;

    case NGX_HTTP_GATEWAY_TIME_OUT:
        *code = "TIMEOUT";
        p = ngx_slprintf(p, last, "%s did not answer in time", what);
        break;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        *code = "REQUEST_TOO_LARGE";
        p = ngx_slprintf(p, last, "request body too large");
        break;

    case NGX_HTTP_REQUEST_TIME_OUT:
        *code = "REQUEST_TIMEOUT";
        p = ngx_slprintf(p, last, "the request was not read in time");
        break;

    default:
        *code = (status < NGX_HTTP_INTERNAL_SERVER_ERROR) ? "BAD_REQUEST"
                                                          : "INTERNAL_ERROR";
        p = ngx_slprintf(p, last, "HTTP status %ui", status);
    }

done:

    detail->data = ctx->detail_buf;
    detail->len = p - ctx->detail_buf;

    return status;
}


/* room for an error's detail, only where there is an error */

u_char *
ngx_http_dstack_mesh_detail_buf(ngx_http_dstack_mesh_ctx_t *ctx)
{
    if (ctx->detail_buf == NULL) {
        ctx->detail_buf = ngx_pnalloc(ctx->request->pool,
                                      NGX_HTTP_DSTACK_MESH_DETAIL_LEN);
    }

    return ctx->detail_buf;
}


static void
ngx_http_dstack_mesh_set_code(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx, const char *code)
{
    if (ctx == NULL) {
        ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

        if (ctx == NULL) {
            return;
        }
    }

    ctx->code.data = (u_char *) code;
    ctx->code.len = ngx_strlen(code);
}


ngx_dstack_metrics_t *
ngx_http_dstack_mesh_metrics(ngx_http_request_t *r)
{
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_mesh_module);

    return ngx_dstack_metrics(mmcf->metrics);
}


/*
 * Once per request of a mesh or guest-agent location: the request by
 * target app, status class and error code, and the peers' time to answer.
 */

static ngx_int_t
ngx_http_dstack_mesh_log_metrics(ngx_http_request_t *r)
{
    ngx_msec_t                        ms;
    ngx_uint_t                        app, code, status, i, seen;
    ngx_dstack_metrics_t             *m;
    ngx_http_upstream_state_t        *state;
    ngx_http_dstack_mesh_ctx_t       *ctx;
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    static const char  *codes[] = { NGX_DSTACK_METRICS_MESH_CODE_NAMES };

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);
    m = ngx_http_dstack_mesh_metrics(r);

    if (!mlcf->json_errors || m == NULL || r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    app = NGX_DSTACK_METRICS_APP_NONE;
    code = 0;

    if (ctx != NULL) {
        app = ngx_dstack_metrics_app(m, &ctx->app);

        if (ctx->code.len) {
            for (code = 1; code < NGX_DSTACK_METRICS_MESH_CODES - 1; code++) {
                if (ngx_strcmp(codes[code], ctx->code.data) == 0) {
                    break;
                }
            }
        }
    }

    status = r->err_status ? r->err_status : r->headers_out.status;

    ngx_dstack_metrics_inc(
        &m->mesh_requests[app][ngx_dstack_metrics_class(status)][code]);

    if (r->upstream_states == NULL || ctx == NULL || ctx->app.len == 0) {
        return NGX_OK;
    }

    ms = 0;
    seen = 0;
    state = r->upstream_states->elts;

    for (i = 0; i < r->upstream_states->nelts; i++) {
        if (state[i].peer != NULL
            && state[i].header_time != (ngx_msec_t) -1)
        {
            ms += state[i].header_time;
            seen = 1;
        }
    }

    if (seen) {
        ngx_dstack_metrics_observe(&m->mesh_upstream, ms * 1000);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                   *s;
    ngx_http_dstack_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    if (ctx == NULL) {
        /* asked before the content phase set the target: ask again later */
        v->not_found = 1;
        v->no_cacheable = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((char *) ctx + data);

    if (s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * $dstack_mesh_peer_host, the Host a peer sees: the caller's own, as the
 * seed's proxy forwarded it (so "Host: vpc-server" reaches the VPC API on
 * a server CVM), or the target's gateway name ($dstack_mesh_host) when
 * the caller sent none or only named this listener (localhost, 127.0.0.1
 * or [::1], with any port).  A call through the gateway's TLS
 * ($dstack_mesh_attested 0) always names the target.  What the shipped
 * configuration once computed with a regex map, without the regex.
 */

static ngx_int_t
ngx_http_dstack_mesh_peer_host_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                    host, *s;
    ngx_http_dstack_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    if (r->headers_in.host) {
        host = r->headers_in.host->value;

    } else {
        ngx_str_null(&host);
    }

    s = &host;

    if (ctx != NULL && ctx->attested.len == 1) {
        if (ctx->attested.data[0] == '0'
            || (ctx->attested.data[0] == '1'
                && (host.len == 0
                    || ngx_http_dstack_mesh_local_host(&host))))
        {
            s = &ctx->host;
        }
    }

    /* asked before the content phase set the target: ask again later */
    v->no_cacheable = (ctx == NULL);

    if (s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * $dstack_mesh_upgrade, the caller's Upgrade header (the first, as
 * $http_upgrade), and $dstack_mesh_connection, "upgrade" with it: what
 * the shipped configuration once computed with $http_upgrade and a map,
 * from the header nginx already found.  Nothing without the header or
 * with an empty one, so that proxy_set_header leaves them out.
 */

static ngx_int_t
ngx_http_dstack_mesh_upgrade_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_table_elt_t  *h;

    h = r->headers_in.upgrade;

    if (h == NULL || h->value.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data) {
        v->len = sizeof("upgrade") - 1;
        v->data = (u_char *) "upgrade";

    } else {
        v->len = h->value.len;
        v->data = h->value.data;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* localhost, 127.0.0.1 or [::1], optionally with ":<digits>" */

static ngx_uint_t
ngx_http_dstack_mesh_local_host(ngx_str_t *host)
{
    size_t  i, n;

    /*
     * the names start with different characters; compared with constant
     * lengths, which the compiler does inline
     */

    switch (host->data[0]) {

    case 'l':
        n = sizeof("localhost") - 1;

        if (host->len < n || ngx_memcmp(host->data, "localhost", n) != 0) {
            return 0;
        }

        break;

    case '1':
        n = sizeof("127.0.0.1") - 1;

        if (host->len < n || ngx_memcmp(host->data, "127.0.0.1", n) != 0) {
            return 0;
        }

        break;

    case '[':
        n = sizeof("[::1]") - 1;

        if (host->len < n || ngx_memcmp(host->data, "[::1]", n) != 0) {
            return 0;
        }

        break;

    default:
        return 0;
    }

    if (host->len == n) {
        return 1;
    }

    if (host->data[n] != ':' || host->len == n + 1) {
        return 0;
    }

    for (i = n + 1; i < host->len; i++) {
        if (host->data[i] < '0' || host->data[i] > '9') {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_dstack_mesh_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_dstack_mesh_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_http_dstack_mesh_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&mmcf->agents, cf->pool, 1,
                       sizeof(ngx_http_dstack_mesh_agent_ref_t))
        != NGX_OK)
    {
        return NULL;
    }

    return mmcf;
}


static void *
ngx_http_dstack_mesh_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_mesh_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_srv_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->domain = { 0, NULL };
     *     conf->addrs = NULL;
     *     conf->certificate = { 0, NULL };
     *     conf->certificate_key = { 0, NULL };
     *     conf->trusted_certificate = { 0, NULL };
     *     conf->ssl = NULL;
     */

    conf->verify_depth = NGX_CONF_UNSET_UINT;
    conf->max_cached = NGX_CONF_UNSET_UINT;
    conf->requests = NGX_CONF_UNSET_UINT;
    conf->timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static void *
ngx_http_dstack_mesh_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_mesh_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->target = 0;
     *     conf->app = NULL;
     *     conf->instance = NULL;
     *     conf->port = NULL;
     *     conf->json_errors = 0;
     *     conf->proxy_handler = NULL;
     *     conf->mesh = NULL;
     *     conf->agent = { 0, NULL };
     *     conf->vpn_ip_file = { 0, NULL };
     */

    conf->allow_unattested = NGX_CONF_UNSET;
    conf->attested_header = NGX_CONF_UNSET;

    return conf;
}


/*
 * Runs after the proxy module's merge of the same location: wraps its
 * content handler and puts the mesh's TLS context in place of its own.
 */

static char *
ngx_http_dstack_mesh_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dstack_mesh_loc_conf_t  *prev = parent;
    ngx_http_dstack_mesh_loc_conf_t  *conf = child;

    const char                        *err;
    ngx_http_upstream_conf_t          *ucf;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_upstream_srv_conf_t      *uscf;
    ngx_http_dstack_mesh_srv_conf_t   *mscf;
    ngx_http_dstack_mesh_agent_ref_t  *ref;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    ngx_conf_merge_str_value(conf->agent, prev->agent, "");
    ngx_conf_merge_value(conf->allow_unattested, prev->allow_unattested, 0);
    ngx_conf_merge_value(conf->attested_header, prev->attested_header, 0);
    ngx_conf_merge_str_value(conf->vpn_ip_file, prev->vpn_ip_file, "");

    if (!conf->target) {
        return NGX_CONF_OK;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /* the proxy module's location configuration starts with this */
    ucf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_proxy_module);

    uscf = ucf->upstream;
    mscf = NULL;

    if (uscf != NULL && uscf->srv_conf != NULL) {
        mscf = ngx_http_conf_upstream_srv_conf(uscf,
                                               ngx_http_dstack_mesh_module);
    }

    if (clcf->handler == NULL || uscf == NULL) {
        err = "needs \"proxy_pass https://<upstream>\" in the same location";

    } else if (mscf == NULL || mscf->ssl == NULL) {
        err = "needs an upstream with \"dstack_mesh_gateway\" in proxy_pass";

    } else if (ucf->ssl == NULL) {
        err = "needs \"proxy_pass https://...\", not http";

    } else if (!ucf->ssl_session_reuse) {
        err = "needs \"proxy_ssl_session_reuse on\": the mesh's TLS hooks "
              "run through it";

    } else if (ucf->ssl_verify) {
        err = "verifies peers itself: \"proxy_ssl_verify\" must be off";

    } else if (ucf->ssl_certificate != NULL) {
        err = "takes its certificate from \"dstack_mesh_certificate\", "
              "not \"proxy_ssl_certificate\"";

    } else if (mscf->addrs == NULL && clcf->resolver->connections.nelts == 0)
    {
        err = "needs a \"resolver\" or a gateway \"address=\"";

    } else {
        err = NULL;
    }

    if (err != NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"dstack_mesh_target\" %s in %s:%ui",
                      err, conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    if (conf->allow_unattested && mscf->gateway_store == NULL
        && ngx_http_dstack_mesh_init_gateway_store(cf, mscf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ucf->ssl = mscf->ssl;

    conf->mesh = mscf;
    conf->json_errors = 1;
    conf->proxy_handler = clcf->handler;
    clcf->handler = ngx_http_dstack_mesh_handler;

    if (conf->agent.len) {
        mmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_dstack_mesh_module);

        ref = ngx_array_push(&mmcf->agents);
        if (ref == NULL) {
            return NGX_CONF_ERROR;
        }

        ref->cscf = ngx_http_conf_get_module_srv_conf(cf,
                                                      ngx_http_core_module);
        ref->name = &conf->agent;
        ref->file = conf->file;
        ref->line = conf->line;
    }

    return NGX_CONF_OK;
}


/* dstack_mesh_target [app=<hex>] [instance=<hex>] [port=<n>] */

static char *
ngx_http_dstack_mesh_target_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_mesh_loc_conf_t *mlcf = conf;

    size_t                             n;
    ngx_str_t                         *value, v;
    ngx_uint_t                         i;
    ngx_http_complex_value_t         **cvp;
    ngx_http_compile_complex_value_t   ccv;
    u_char                             id[DSTACK_APP_ID_LEN];

    if (mlcf->target) {
        return "is duplicate";
    }

    mlcf->target = 1;
    mlcf->file = cf->conf_file->file.name.data;
    mlcf->line = cf->conf_file->line;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "app=", 4) == 0) {
            cvp = &mlcf->app;
            n = 4;

        } else if (ngx_strncmp(value[i].data, "instance=", 9) == 0) {
            cvp = &mlcf->instance;
            n = 9;

        } else if (ngx_strncmp(value[i].data, "port=", 5) == 0) {
            cvp = &mlcf->port;
            n = 5;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (*cvp != NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        v.data = value[i].data + n;
        v.len = value[i].len - n;

        *cvp = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (*cvp == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &v;
        ccv.complex_value = *cvp;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        /* fixed values are checked now, variables per request */

        if ((*cvp)->lengths != NULL) {
            continue;
        }

        if (cvp == &mlcf->port
            ? ngx_http_dstack_mesh_parse_port(v.data, v.len) == NGX_ERROR
            : dstack_hex_decode(id, DSTACK_APP_ID_LEN, (char *) v.data, v.len)
              != DSTACK_APP_ID_LEN)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value in \"%V\": %s", &value[i],
                               cvp == &mlcf->port
                               ? "a port from 1 to 65535 expected"
                               : "40 hex characters expected");
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* dstack_mesh_gateway <base domain>[:<port>] [address=<host>[:<port>]] */

static char *
ngx_http_dstack_mesh_gateway(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_mesh_srv_conf_t *mscf = conf;

    u_char                        *p, *last;
    ngx_int_t                      port;
    ngx_str_t                     *value, domain;
    ngx_url_t                      u;
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf;

    if (mscf->domain.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    domain = value[1];
    last = domain.data + domain.len;
    port = 443;

    p = ngx_strlchr(domain.data, last, ':');

    if (p != NULL) {
        domain.len = p - domain.data;
        port = ngx_http_dstack_mesh_parse_port(p + 1, last - p - 1);
    }

    if (domain.len == 0 || domain.len > 253 || port == NGX_ERROR) {
        goto invalid;
    }

    for (p = domain.data; p < domain.data + domain.len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
        {
            goto invalid;
        }
    }

    mscf->domain = domain;

    mscf->gateway.data = ngx_pnalloc(cf->pool, domain.len + 1 + NGX_INT_T_LEN);
    if (mscf->gateway.data == NULL) {
        return NGX_CONF_ERROR;
    }

    mscf->gateway.len = ngx_sprintf(mscf->gateway.data, "%V:%i", &domain, port)
                        - mscf->gateway.data;

    mscf->port.data = mscf->gateway.data + domain.len + 1;
    mscf->port.len = mscf->gateway.len - domain.len - 1;

    if (cf->args->nelts == 3) {

        if (ngx_strncmp(value[2].data, "address=", 8) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url.data = value[2].data + 8;
        u.url.len = value[2].len - 8;
        u.default_port = (in_port_t) port;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
            if (u.err) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%s in gateway address \"%V\"",
                                   u.err, &u.url);
            }

            return NGX_CONF_ERROR;
        }

        mscf->addrs = u.addrs;
        mscf->naddrs = u.naddrs;
    }

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (uscf->peer.init_upstream != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" cannot be combined with another "
                           "balancer in the same upstream", &cmd->name);
        return NGX_CONF_ERROR;
    }

    uscf->peer.init_upstream = ngx_http_dstack_mesh_init_upstream;

    /* the upstream block needs one server: the gateway stands for it */

    us = ngx_array_push(uscf->servers);
    if (us == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(us, sizeof(ngx_http_upstream_server_t));

    us->name = mscf->gateway;
    us->addrs = mscf->addrs;
    us->naddrs = mscf->naddrs;
    us->weight = 1;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid gateway domain \"%V\": "
                       "<base domain>[:<port>] expected", &value[1]);
    return NGX_CONF_ERROR;
}


/*
 * dstack_mesh_attestation off | bind | full [root=file] [collateral=file]
 *     [tcb=Level,...] [time=RFC3339]: what a peer server's attestation
 * must prove before any request byte goes to it (docs/attestation.md).
 */

static char *
ngx_http_dstack_mesh_attestation(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_mesh_srv_conf_t *mscf = conf;

    int                  level;
    u_char              *p, *last, *end;
    ngx_str_t           *value, name;
    ngx_uint_t           i;
    const char          *err, *root, *collateral, *now;
    ngx_pool_cleanup_t  *cln;

    if (mscf->tcb_accept) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        mscf->attestation = DSTACK_POLICY_OFF;

    } else if (ngx_strcmp(value[1].data, "bind") == 0) {
        mscf->attestation = DSTACK_POLICY_BIND;

    } else if (ngx_strcmp(value[1].data, "full") == 0) {
        mscf->attestation = DSTACK_POLICY_FULL;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" "
                           "(off, bind or full)", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    mscf->tcb_accept = DSTACK_TCB_ACCEPT_DEFAULT;
    root = NULL;
    collateral = NULL;
    now = NULL;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "root=", 5) == 0) {
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;

            if (name.len == 0
                || ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK)
            {
                goto invalid;
            }

            root = (char *) name.data;
            continue;
        }

        if (ngx_strncmp(value[i].data, "collateral=", 11) == 0) {
            name.data = value[i].data + 11;
            name.len = value[i].len - 11;

            if (name.len == 0
                || ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK)
            {
                goto invalid;
            }

            collateral = (char *) name.data;
            continue;
        }

        if (ngx_strncmp(value[i].data, "time=", 5) == 0) {
            now = (char *) value[i].data + 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tcb=", 4) == 0) {
            mscf->tcb_accept = 0;
            last = value[i].data + value[i].len;

            for (p = value[i].data + 4; p < last; p = end + 1) {
                end = ngx_strlchr(p, last, ',');
                end = (end != NULL) ? end : last;

                level = dstack_tcb_status_parse((char *) p, end - p);

                if (level < 0) {
                    goto invalid;
                }

                mscf->tcb_accept |= DSTACK_TCB_ACCEPT(level);
            }

            if (mscf->tcb_accept == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (mscf->attestation == DSTACK_POLICY_FULL && root == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V full\" needs \"root=\" (the Intel SGX "
                           "root CA)", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (dstack_attest_opts_load(&mscf->attest_opts, root, collateral, now,
                                &err)
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": %s", &cmd->name,
                           err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        dstack_attest_opts_free(&mscf->attest_opts);
        return NGX_CONF_ERROR;
    }

    cln->handler = dstack_attest_opts_cleanup;
    cln->data = &mscf->attest_opts;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * The public roots the gateway's certificate must chain to, loaded once
 * per mesh upstream and only when a location allows unattested calls.
 */

static ngx_int_t
ngx_http_dstack_mesh_init_gateway_store(ngx_conf_t *cf,
    ngx_http_dstack_mesh_srv_conf_t *mscf)
{
    X509_STORE          *store;
    ngx_pool_cleanup_t  *cln;

    if (mscf->gateway_trusted_certificate.len == 0) {
        ngx_str_set(&mscf->gateway_trusted_certificate,
                    NGX_HTTP_DSTACK_MESH_SYSTEM_CA);
    }

    if (ngx_conf_full_name(cf->cycle, &mscf->gateway_trusted_certificate, 1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    store = X509_STORE_new();
    if (store == NULL) {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0, "X509_STORE_new() failed");
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        X509_STORE_free(store);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_dstack_mesh_cleanup_store;
    cln->data = store;

    if (X509_STORE_load_locations(store,
                        (char *) mscf->gateway_trusted_certificate.data, NULL)
        == 0
        || sk_X509_OBJECT_num(X509_STORE_get0_objects(store)) == 0)
    {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"dstack_mesh_allow_unattested\" needs the gateway's "
                      "trusted certificates: none loaded from \"%V\" "
                      "(dstack_mesh_gateway_trusted_certificate)",
                      &mscf->gateway_trusted_certificate);
        return NGX_ERROR;
    }

    mscf->gateway_store = store;

    return NGX_OK;
}


static void
ngx_http_dstack_mesh_cleanup_store(void *data)
{
    X509_STORE_free(data);
}


static ngx_int_t
ngx_http_dstack_mesh_init(ngx_conf_t *cf)
{
    ngx_uint_t                         i;
    ngx_http_handler_pt               *h;
    ngx_http_core_loc_conf_t         **clcfp;
    ngx_http_core_main_conf_t         *cmcf;
    ngx_http_dstack_mesh_agent_ref_t  *ref;
    ngx_http_dstack_mesh_loc_conf_t   *mlcf;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    dstack_header_init();
    ngx_http_dstack_mesh_hexval_init();

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_mesh_module);

    /* the guest agent's named locations answer errors in JSON too */

    ref = mmcf->agents.elts;

    for (i = 0; i < mmcf->agents.nelts; i++) {

        clcfp = ref[i].cscf->named_locations;

        while (clcfp != NULL && *clcfp != NULL) {
            if ((*clcfp)->name.len == ref[i].name->len
                && ngx_strncmp((*clcfp)->name.data, ref[i].name->data,
                               ref[i].name->len)
                   == 0)
            {
                break;
            }

            clcfp++;
        }

        if (clcfp == NULL || *clcfp == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"dstack_mesh_agent\" names no location "
                          "\"%V\" of its server in %s:%ui",
                          ref[i].name, ref[i].file, ref[i].line);
            return NGX_ERROR;
        }

        mlcf = (*clcfp)->loc_conf[ngx_http_dstack_mesh_module.ctx_index];
        mlcf->json_errors = 1;
    }

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_dstack_mesh_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_dstack_mesh_body_filter;

    mmcf->metrics = ngx_dstack_metrics_zone(cf);

    if (mmcf->metrics != NULL) {
        cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

        h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_dstack_mesh_log_metrics;
    }

    return NGX_OK;
}
