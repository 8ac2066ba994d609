/*
 * ngx_dstack_auth_module: authenticates inbound callers by the app_id in
 * their RA-TLS client certificate (DESIGN section 5).
 *
 * The identity is read only from a certificate that nginx verified to the
 * configured root; no request header can supply or override it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "dstack_ratls.h"


#define NGX_HTTP_DSTACK_AUTH_ALLOW_UNSET  0
#define NGX_HTTP_DSTACK_AUTH_ALLOW_NONE   1
#define NGX_HTTP_DSTACK_AUTH_ALLOW_ANY    2
#define NGX_HTTP_DSTACK_AUTH_ALLOW_LIST   3


typedef struct {
    ngx_flag_t                 enable;
    ngx_uint_t                 allow_mode;
    ngx_array_t               *allow;          /* of DSTACK_APP_ID_LEN */
    ngx_flag_t                 auth_request;
} ngx_http_dstack_auth_loc_conf_t;


typedef struct {
    ngx_str_t                  app_id;         /* hex */
    ngx_str_t                  usage;
    const char                *error;          /* why there is no app_id */
    u_char                     id[DSTACK_APP_ID_LEN];
    u_char                     hex[DSTACK_APP_ID_HEX_LEN];
    u_char                     usage_buf[DSTACK_USAGE_MAX_LEN + 1];
} ngx_http_dstack_auth_ctx_t;


static ngx_int_t ngx_http_dstack_auth_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_auth_request_handler(ngx_http_request_t *r);
static ngx_http_dstack_auth_ctx_t *ngx_http_dstack_auth_identity(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_auth_from_cert(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx, X509 *cert);
static ngx_int_t ngx_http_dstack_auth_from_headers(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx);
static ngx_table_elt_t *ngx_http_dstack_auth_find_header(
    ngx_http_request_t *r, const char *name, size_t len);
static ngx_uint_t ngx_http_dstack_auth_allowed(
    ngx_http_dstack_auth_loc_conf_t *alcf, u_char *id);
static ngx_int_t ngx_http_dstack_auth_set_header(ngx_http_request_t *r,
    ngx_str_t *app_id);
static ngx_int_t ngx_http_dstack_auth_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *msg);
static int ngx_http_dstack_auth_verify_callback(int ok, X509_STORE_CTX *sctx);
static ngx_int_t ngx_http_dstack_auth_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static ngx_int_t ngx_http_dstack_auth_add_variables(ngx_conf_t *cf);
static void *ngx_http_dstack_auth_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_auth_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_dstack_auth_allow(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_auth_request(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_dstack_auth_init(ngx_conf_t *cf);


static ngx_command_t  ngx_http_dstack_auth_commands[] = {

    { ngx_string("dstack_auth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_auth_loc_conf_t, enable),
      NULL },

    { ngx_string("dstack_auth_allow"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_auth_allow,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_auth_request"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_dstack_auth_request,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_auth_module_ctx = {
    ngx_http_dstack_auth_add_variables,    /* preconfiguration */
    ngx_http_dstack_auth_init,             /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_dstack_auth_create_loc_conf,  /* create location configuration */
    ngx_http_dstack_auth_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_auth_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_auth_module_ctx,      /* module context */
    ngx_http_dstack_auth_commands,         /* module directives */
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


#define NGX_HTTP_DSTACK_AUTH_VAR_APP_ID  0
#define NGX_HTTP_DSTACK_AUTH_VAR_USAGE   1

static ngx_http_variable_t  ngx_http_dstack_auth_vars[] = {

    { ngx_string("dstack_app_id"), NULL, ngx_http_dstack_auth_variable,
      NGX_HTTP_DSTACK_AUTH_VAR_APP_ID, 0, 0 },

    { ngx_string("dstack_cert_usage"), NULL, ngx_http_dstack_auth_variable,
      NGX_HTTP_DSTACK_AUTH_VAR_USAGE, 0, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_dstack_auth_header = ngx_string("X-Dstack-App-Id");


static ngx_int_t
ngx_http_dstack_auth_handler(ngx_http_request_t *r)
{
    ngx_http_core_loc_conf_t         *clcf;
    ngx_http_dstack_auth_ctx_t       *ctx;
    ngx_http_dstack_auth_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_auth_module);

    if (!alcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_dstack_auth_identity(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (ctx->error != NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth: %s", ctx->error);

        if (clcf->satisfy != NGX_HTTP_SATISFY_ALL) {
            return NGX_HTTP_UNAUTHORIZED;
        }

        ngx_http_finalize_request(r,
            ngx_http_dstack_auth_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                            ctx->error));
        return NGX_DONE;
    }

    if (!ngx_http_dstack_auth_allowed(alcf, ctx->id)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack auth: app \"%V\" is not allowed", &ctx->app_id);

        if (clcf->satisfy != NGX_HTTP_SATISFY_ALL) {
            return NGX_HTTP_FORBIDDEN;
        }

        ngx_http_finalize_request(r,
            ngx_http_dstack_auth_send_error(r, NGX_HTTP_FORBIDDEN,
                                            "app not allowed"));
        return NGX_DONE;
    }

    if (ngx_http_dstack_auth_set_header(r, &ctx->app_id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


/*
 * The seed's auth service, inside nginx: answers auth_request subrequests
 * with 200 and X-Dstack-App-Id, 401 without an identity, 403 when the
 * allowlist refuses it.
 */

static ngx_int_t
ngx_http_dstack_auth_request_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_table_elt_t                  *h;
    ngx_http_dstack_auth_ctx_t       *ctx;
    ngx_http_dstack_auth_loc_conf_t  *alcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_auth_module);

    if (r != r->main && r->connection->ssl != NULL) {
        /* a subrequest of a TLS connection: use what nginx verified */
        ctx = ngx_http_dstack_auth_identity(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_auth_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_dstack_auth_from_headers(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->error != NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth request: %s", ctx->error);
        return ngx_http_dstack_auth_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                               ctx->error);
    }

    if (!ngx_http_dstack_auth_allowed(alcf, ctx->id)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack auth request: app \"%V\" is not allowed",
                      &ctx->app_id);
        return ngx_http_dstack_auth_send_error(r, NGX_HTTP_FORBIDDEN,
                                               "app not allowed");
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-Dstack-App-Id");
    h->value = ctx->app_id;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


static ngx_http_dstack_auth_ctx_t *
ngx_http_dstack_auth_identity(ngx_http_request_t *r)
{
    X509                        *cert;
    ngx_connection_t            *c;
    ngx_http_dstack_auth_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_dstack_auth_module);
    if (ctx != NULL) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->main->pool, sizeof(ngx_http_dstack_auth_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    c = r->connection;

    if (c->ssl == NULL) {
        ctx->error = "no TLS client certificate (plain connection)";

    } else if (SSL_get_verify_result(c->ssl->connection) != X509_V_OK) {
        ctx->error = "client certificate not verified";

    } else {
        cert = SSL_get0_peer_certificate(c->ssl->connection);

        if (cert == NULL) {
            ctx->error = "no client certificate";

        } else if (ngx_http_dstack_auth_from_cert(r, ctx, cert) != NGX_OK) {
            return NULL;
        }
    }

    ngx_http_set_ctx(r->main, ctx, ngx_http_dstack_auth_module);

    return ctx;
}


static ngx_int_t
ngx_http_dstack_auth_from_cert(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx, X509 *cert)
{
    dstack_ratls_rc_e  rc;

    rc = dstack_ratls_app_id(cert, ctx->id);

    if (rc != DSTACK_RATLS_OK) {
        ctx->error = (rc == DSTACK_RATLS_MISSING)
                     ? "client certificate has no app_id"
                     : "client certificate has a malformed app_id";

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "dstack auth: app_id: %s", dstack_ratls_strerror(rc));
        return NGX_OK;
    }

    dstack_ratls_hex(ctx->id, DSTACK_APP_ID_LEN, (char *) ctx->hex);
    ctx->app_id.data = ctx->hex;
    ctx->app_id.len = DSTACK_APP_ID_HEX_LEN;

    if (dstack_ratls_usage(cert, (char *) ctx->usage_buf) == DSTACK_RATLS_OK)
    {
        ctx->usage.data = ctx->usage_buf;
        ctx->usage.len = ngx_strlen(ctx->usage_buf);
    }

    return NGX_OK;
}


/*
 * Seed mode: a separate auth endpoint gets the verified certificate from
 * the front server in X-Client-Cert ($ssl_client_escaped_cert) and
 * X-Client-Verify ($ssl_client_verify).  Those headers are believed only
 * from a local peer, the way the seed's service listened on loopback.
 */

static ngx_int_t
ngx_http_dstack_auth_from_headers(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx)
{
    BIO               *bio;
    X509              *cert;
    u_char            *pem, *dst, *src;
    ngx_int_t          rc;
    ngx_table_elt_t   *verify, *escaped;
    struct sockaddr   *sa;

    sa = r->connection->sockaddr;

    if (!(sa->sa_family == AF_UNIX
          || (sa->sa_family == AF_INET
              && (ntohl(((struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24)
                 == 127)
#if (NGX_HAVE_INET6)
          || (sa->sa_family == AF_INET6
              && IN6_IS_ADDR_LOOPBACK(
                     &((struct sockaddr_in6 *) sa)->sin6_addr))
#endif
         ))
    {
        ctx->error = "certificate headers accepted from local peers only";
        return NGX_OK;
    }

    verify = ngx_http_dstack_auth_find_header(r, "x-client-verify",
                                              sizeof("x-client-verify") - 1);
    escaped = ngx_http_dstack_auth_find_header(r, "x-client-cert",
                                               sizeof("x-client-cert") - 1);

    if (verify == NULL || escaped == NULL || escaped->value.len == 0) {
        ctx->error = "no client certificate";
        return NGX_OK;
    }

    if (verify->value.len != sizeof("SUCCESS") - 1
        || ngx_strncmp(verify->value.data, "SUCCESS", verify->value.len) != 0)
    {
        ctx->error = "client certificate not verified";
        return NGX_OK;
    }

    pem = ngx_pnalloc(r->pool, escaped->value.len + 1);
    if (pem == NULL) {
        return NGX_ERROR;
    }

    src = escaped->value.data;
    dst = pem;
    ngx_unescape_uri(&dst, &src, escaped->value.len, 0);

    bio = BIO_new_mem_buf(pem, (int) (dst - pem));
    if (bio == NULL) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (cert == NULL) {
        ERR_clear_error();
        ctx->error = "client certificate header is not a PEM certificate";
        return NGX_OK;
    }

    rc = ngx_http_dstack_auth_from_cert(r, ctx, cert);

    X509_free(cert);

    return rc;
}


static ngx_table_elt_t *
ngx_http_dstack_auth_find_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


static ngx_uint_t
ngx_http_dstack_auth_allowed(ngx_http_dstack_auth_loc_conf_t *alcf, u_char *id)
{
    u_char      *ids;
    ngx_uint_t   i;

    if (alcf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_ANY) {
        return 1;
    }

    if (alcf->allow_mode != NGX_HTTP_DSTACK_AUTH_ALLOW_LIST) {
        return 0;
    }

    ids = alcf->allow->elts;

    for (i = 0; i < alcf->allow->nelts; i++) {
        if (ngx_memcmp(ids + i * DSTACK_APP_ID_LEN, id, DSTACK_APP_ID_LEN)
            == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Replaces every client-supplied X-Dstack-App-Id with the certificate's.
 * The list is rebuilt rather than edited in place: headers_in keeps
 * pointers to its elements, which must stay valid.
 */

static ngx_int_t
ngx_http_dstack_auth_set_header(ngx_http_request_t *r, ngx_str_t *app_id)
{
    ngx_uint_t        i, n, forged;
    ngx_list_t        old;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    forged = 0;
    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            n++;

            if (h[i].key.len == ngx_http_dstack_auth_header.len
                && ngx_strncasecmp(h[i].key.data,
                                   ngx_http_dstack_auth_header.data,
                                   h[i].key.len) == 0)
            {
                forged++;
            }
        }
    }

    if (forged) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth: client sent its own \"%V\" header, "
                      "replaced", &ngx_http_dstack_auth_header);

        old = r->headers_in.headers;

        if (ngx_list_init(&r->headers_in.headers, r->pool, n + 1,
                          sizeof(ngx_table_elt_t))
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (part = &old.part; part; part = part->next) {
            h = part->elts;

            for (i = 0; i < part->nelts; i++) {
                if (h[i].key.len == ngx_http_dstack_auth_header.len
                    && ngx_strncasecmp(h[i].key.data,
                                       ngx_http_dstack_auth_header.data,
                                       h[i].key.len) == 0)
                {
                    continue;
                }

                nh = ngx_list_push(&r->headers_in.headers);
                if (nh == NULL) {
                    return NGX_ERROR;
                }

                *nh = h[i];
            }
        }
    }

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key = ngx_http_dstack_auth_header;
    h->value = *app_id;
    h->lowcase_key = (u_char *) "x-dstack-app-id";
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_auth_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (r == r->main) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    len = sizeof("{\"error\":\"\"}" CRLF) - 1 + ngx_strlen(msg);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* messages are fixed strings of this file, nothing to escape */
    b->last = ngx_sprintf(b->last, "{\"error\":\"%s\"}" CRLF, msg);
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
 * Runs inside the handshake after nginx's own checks: an App CA that
 * names an app may only vouch for that app.  The failure is recorded in
 * the verify result, so it also holds for resumed sessions.
 */

static int
ngx_http_dstack_auth_verify_callback(int ok, X509_STORE_CTX *sctx)
{
    X509              *leaf, *issuer;
    STACK_OF(X509)    *chain;
    dstack_ratls_rc_e  rc;

    if (!ok || X509_STORE_CTX_get_error_depth(sctx) != 0) {
        return 1;
    }

    chain = X509_STORE_CTX_get0_chain(sctx);

    if (chain == NULL || sk_X509_num(chain) < 2) {
        return 1;
    }

    leaf = sk_X509_value(chain, 0);
    issuer = sk_X509_value(chain, 1);

    rc = dstack_ratls_check_issuer(leaf, issuer);

    if (rc != DSTACK_RATLS_OK) {
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
    }

    return 1;
}


static ngx_int_t
ngx_http_dstack_auth_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                   *s;
    ngx_http_dstack_auth_ctx_t  *ctx;

    ctx = ngx_http_dstack_auth_identity(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    s = (data == NGX_HTTP_DSTACK_AUTH_VAR_APP_ID) ? &ctx->app_id
                                                  : &ctx->usage;

    if (ctx->error != NULL || s->len == 0) {
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


static ngx_int_t
ngx_http_dstack_auth_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_dstack_auth_vars; v->name.len; v++) {
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
ngx_http_dstack_auth_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_auth_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_auth_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->allow_mode = NGX_HTTP_DSTACK_AUTH_ALLOW_UNSET;
     *     conf->allow = NULL;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->auth_request = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_dstack_auth_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dstack_auth_loc_conf_t  *prev = parent;
    ngx_http_dstack_auth_loc_conf_t  *conf = child;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->auth_request, prev->auth_request, 0);

    if (conf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_UNSET) {
        conf->allow_mode = prev->allow_mode;
        conf->allow = prev->allow;
    }

    /* nothing configured anywhere: deny every app */
    if (conf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_UNSET) {
        conf->allow_mode = NGX_HTTP_DSTACK_AUTH_ALLOW_NONE;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_dstack_auth_allow(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_auth_loc_conf_t *alcf = conf;

    u_char      *id;
    ngx_str_t   *value;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 3
            && ngx_strncasecmp(value[i].data, (u_char *) "any", 3) == 0)
        {
            if (alcf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_LIST) {
                goto mixed;
            }

            alcf->allow_mode = NGX_HTTP_DSTACK_AUTH_ALLOW_ANY;
            continue;
        }

        if (alcf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_ANY) {
            goto mixed;
        }

        if (alcf->allow == NULL) {
            alcf->allow = ngx_array_create(cf->pool, 4, DSTACK_APP_ID_LEN);
            if (alcf->allow == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        id = ngx_array_push(alcf->allow);
        if (id == NULL) {
            return NGX_CONF_ERROR;
        }

        if (dstack_ratls_parse_app_id((char *) value[i].data, value[i].len,
                                      id)
            != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid app id \"%V\" in \"%V\": "
                               "40 hex characters expected",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        alcf->allow_mode = NGX_HTTP_DSTACK_AUTH_ALLOW_LIST;
    }

    return NGX_CONF_OK;

mixed:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" takes either \"any\" or app ids, not both",
                       &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_dstack_auth_request(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_auth_loc_conf_t *alcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (alcf->auth_request != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    alcf->auth_request = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_dstack_auth_request_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dstack_auth_init(ngx_conf_t *cf)
{
    SSL_CTX                    *ctx;
    ngx_uint_t                  s;
    ngx_http_handler_pt        *h;
    ngx_http_ssl_srv_conf_t    *sscf;
    ngx_http_core_srv_conf_t  **cscfp;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_dstack_auth_handler;

    /* every server that verifies clients also checks App CA consistency */

    cscfp = cmcf->servers.elts;

    for (s = 0; s < cmcf->servers.nelts; s++) {
        sscf = cscfp[s]->ctx->srv_conf[ngx_http_ssl_module.ctx_index];
        ctx = sscf->ssl.ctx;

        if (ctx == NULL || sscf->verify == 0) {
            continue;
        }

        SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx),
                           ngx_http_dstack_auth_verify_callback);
    }

    return NGX_OK;
}
