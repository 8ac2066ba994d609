
/*
 * A test-only module that drives ngx_dstack_redis directly, for
 * t/api-redis-adapter.t; built by make through this folder's nginx config
 * into build/test-modules/, not part of the shipped modules.
 *
 *     dstack_redis_test 127.0.0.1:6379;             (http)
 *     location / { dstack_redis_test_handler; }
 *
 *     GET /cmd?t=<ms>&c=SET+key+value   -> the reply, rendered as text
 *     GET /sub?ch=<channel>&n=<events>&t=<ms>
 *         -> "ready,message:<m>,lost,..." once n events arrived, or with
 *            ",timeout" after t ms
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_dstack_redis.h"


typedef struct {
    ngx_dstack_redis_conf_t   redis;
    ngx_dstack_redis_t       *rds;
    ngx_uint_t                enabled;
} ngx_http_dstack_redis_test_main_conf_t;


typedef struct {
    ngx_http_request_t       *request;
    ngx_dstack_redis_sub_t   *sub;
    ngx_event_t               timer;
    u_char                   *events;
    u_char                   *last;
    u_char                   *end;
    ngx_uint_t                want;
    ngx_uint_t                seen;
} ngx_http_dstack_redis_test_ctx_t;


static ngx_int_t ngx_http_dstack_redis_test_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_redis_test_cmd(ngx_http_request_t *r);
static void ngx_http_dstack_redis_test_reply(void *data, redisReply *reply,
    const char *err);
static u_char *ngx_http_dstack_redis_test_render(u_char *p, u_char *end,
    redisReply *reply);
static ngx_int_t ngx_http_dstack_redis_test_sub(ngx_http_request_t *r);
static void ngx_http_dstack_redis_test_event(void *data, ngx_uint_t event,
    ngx_str_t *message);
static void ngx_http_dstack_redis_test_timeout(ngx_event_t *ev);
static void ngx_http_dstack_redis_test_sub_done(
    ngx_http_dstack_redis_test_ctx_t *ctx, const char *last);
static void ngx_http_dstack_redis_test_cleanup(void *data);
static ngx_int_t ngx_http_dstack_redis_test_send(ngx_http_request_t *r,
    ngx_uint_t status, u_char *text, size_t len);

static ngx_int_t ngx_http_dstack_redis_test_init_process(ngx_cycle_t *cycle);
static void ngx_http_dstack_redis_test_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_dstack_redis_test_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_redis_test(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_redis_test_set_handler(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_http_dstack_redis_test_commands[] = {

    { ngx_string("dstack_redis_test"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_redis_test,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_redis_test_handler"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_dstack_redis_test_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_redis_test_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_dstack_redis_test_create_main_conf, /* create main conf */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_redis_test_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_redis_test_module_ctx, /* module context */
    ngx_http_dstack_redis_test_commands,   /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_dstack_redis_test_init_process, /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_dstack_redis_test_exit_process, /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_dstack_redis_test_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (r->uri.len == 4 && ngx_strncmp(r->uri.data, "/cmd", 4) == 0) {
        return ngx_http_dstack_redis_test_cmd(r);
    }

    if (r->uri.len == 4 && ngx_strncmp(r->uri.data, "/sub", 4) == 0) {
        return ngx_http_dstack_redis_test_sub(r);
    }

    return NGX_HTTP_NOT_FOUND;
}


static ngx_int_t
ngx_http_dstack_redis_test_cmd(ngx_http_request_t *r)
{
    int                                      argc;
    u_char                                  *p, *start, *dst, *last;
    size_t                                   lens[16];
    ngx_str_t                                c, t;
    ngx_msec_t                               timeout;
    const char                              *argv[16];
    ngx_dstack_redis_cmd_t                  *cmd;
    ngx_http_dstack_redis_test_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_redis_test_module);

    if (ngx_http_arg(r, (u_char *) "c", 1, &c) != NGX_OK) {
        return NGX_HTTP_BAD_REQUEST;
    }

    timeout = 1000;

    if (ngx_http_arg(r, (u_char *) "t", 1, &t) == NGX_OK) {
        timeout = ngx_atoi(t.data, t.len);
    }

    /* words separated by "+", each URL-decoded in place */

    p = ngx_pnalloc(r->pool, c.len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, c.data, c.len);
    last = p + c.len;
    argc = 0;

    while (p < last && argc < 16) {
        start = p;

        while (p < last && *p != '+') {
            p++;
        }

        dst = start;
        argv[argc] = (const char *) start;
        ngx_unescape_uri(&dst, &start, p - (u_char *) argv[argc], 0);
        lens[argc] = dst - (u_char *) argv[argc];
        argc++;
        p++;
    }

    cmd = ngx_dstack_redis_command(tmcf->rds, r->pool, argc, argv, lens,
                                   timeout, ngx_http_dstack_redis_test_reply,
                                   r);
    if (cmd == NULL) {
        p = ngx_pnalloc(r->pool, 256);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        last = ngx_snprintf(p, 256, "fail:%s\n",
                            ngx_dstack_redis_error(tmcf->rds));

        return ngx_http_dstack_redis_test_send(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                               p, last - p);
    }

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


static void
ngx_http_dstack_redis_test_reply(void *data, redisReply *reply,
    const char *err)
{
    ngx_http_request_t *r = data;

    u_char            *p, *last;
    size_t             size;
    ngx_int_t          rc;
    ngx_uint_t         status;
    ngx_connection_t  *c;

    c = r->connection;
    size = reply && reply->type == REDIS_REPLY_ARRAY ? 64 * 1024 : 1024;

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (err != NULL) {
        last = ngx_snprintf(p, size - 1, "err:%s", err);
        status = NGX_HTTP_SERVICE_UNAVAILABLE;

    } else {
        last = ngx_http_dstack_redis_test_render(p, p + size - 1, reply);
        status = NGX_HTTP_OK;
    }

    *last++ = '\n';

    rc = ngx_http_dstack_redis_test_send(r, status, p, last - p);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static u_char *
ngx_http_dstack_redis_test_render(u_char *p, u_char *end, redisReply *reply)
{
    size_t  i;

    switch (reply->type) {

    case REDIS_REPLY_STRING:
        if (reply->len > 64) {
            return ngx_slprintf(p, end, "s:%uz bytes", reply->len);
        }

        return ngx_slprintf(p, end, "s:%*s", reply->len, reply->str);

    case REDIS_REPLY_STATUS:
        return ngx_slprintf(p, end, "+%*s", reply->len, reply->str);

    case REDIS_REPLY_ERROR:
        return ngx_slprintf(p, end, "-%*s", reply->len, reply->str);

    case REDIS_REPLY_INTEGER:
        return ngx_slprintf(p, end, ":%L", (int64_t) reply->integer);

    case REDIS_REPLY_NIL:
        return ngx_slprintf(p, end, "nil");

    default: /* REDIS_REPLY_ARRAY */
        p = ngx_slprintf(p, end, "[");

        for (i = 0; i < reply->elements; i++) {
            if (i) {
                p = ngx_slprintf(p, end, ",");
            }

            p = ngx_http_dstack_redis_test_render(p, end, reply->element[i]);
        }

        return ngx_slprintf(p, end, "]");
    }
}


static ngx_int_t
ngx_http_dstack_redis_test_sub(ngx_http_request_t *r)
{
    ngx_str_t                                ch, n, t;
    ngx_msec_t                               timeout;
    ngx_pool_cleanup_t                      *cln;
    ngx_http_dstack_redis_test_ctx_t        *ctx;
    ngx_http_dstack_redis_test_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_redis_test_module);

    if (ngx_http_arg(r, (u_char *) "ch", 2, &ch) != NGX_OK) {
        return NGX_HTTP_BAD_REQUEST;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_redis_test_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->want = 1;
    timeout = 2000;

    if (ngx_http_arg(r, (u_char *) "n", 1, &n) == NGX_OK) {
        ctx->want = ngx_atoi(n.data, n.len);
    }

    if (ngx_http_arg(r, (u_char *) "t", 1, &t) == NGX_OK) {
        timeout = ngx_atoi(t.data, t.len);
    }

    ctx->events = ngx_pnalloc(r->pool, 4096);
    if (ctx->events == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->last = ctx->events;
    ctx->end = ctx->events + 4096 - 32;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_dstack_redis_test_cleanup;
    cln->data = ctx;

    ctx->sub = ngx_dstack_redis_subscribe(tmcf->rds, &ch,
                                          ngx_http_dstack_redis_test_event,
                                          ctx);
    if (ctx->sub == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ctx->timer.handler = ngx_http_dstack_redis_test_timeout;
    ctx->timer.data = ctx;
    ctx->timer.log = r->connection->log;
    ngx_add_timer(&ctx->timer, timeout);

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


static void
ngx_http_dstack_redis_test_event(void *data, ngx_uint_t event,
    ngx_str_t *message)
{
    ngx_http_dstack_redis_test_ctx_t *ctx = data;

    if (ctx->last != ctx->events) {
        ctx->last = ngx_slprintf(ctx->last, ctx->end, ",");
    }

    switch (event) {

    case NGX_DSTACK_REDIS_SUB_READY:
        ctx->last = ngx_slprintf(ctx->last, ctx->end, "ready");
        break;

    case NGX_DSTACK_REDIS_SUB_LOST:
        ctx->last = ngx_slprintf(ctx->last, ctx->end, "lost");
        break;

    default:
        ctx->last = ngx_slprintf(ctx->last, ctx->end, "message:%V", message);
        break;
    }

    if (++ctx->seen >= ctx->want) {
        ngx_http_dstack_redis_test_sub_done(ctx, NULL);
    }
}


static void
ngx_http_dstack_redis_test_timeout(ngx_event_t *ev)
{
    ngx_http_dstack_redis_test_sub_done(ev->data, "timeout");
}


static void
ngx_http_dstack_redis_test_sub_done(ngx_http_dstack_redis_test_ctx_t *ctx,
    const char *last)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    if (ctx->sub != NULL) {
        ngx_dstack_redis_unsubscribe(ctx->sub);
        ctx->sub = NULL;
    }

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }

    if (last != NULL) {
        ctx->last = ngx_slprintf(ctx->last, ctx->end + 30, "%s%s",
                                 ctx->last == ctx->events ? "" : ",", last);
    }

    *ctx->last++ = '\n';

    rc = ngx_http_dstack_redis_test_send(r, NGX_HTTP_OK, ctx->events,
                                         ctx->last - ctx->events);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_dstack_redis_test_cleanup(void *data)
{
    ngx_http_dstack_redis_test_ctx_t *ctx = data;

    if (ctx->sub != NULL) {
        ngx_dstack_redis_unsubscribe(ctx->sub);
        ctx->sub = NULL;
    }

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }
}


static ngx_int_t
ngx_http_dstack_redis_test_send(ngx_http_request_t *r, ngx_uint_t status,
    u_char *text, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = text;
    b->last = text + len;
    b->memory = 1;
    b->last_buf = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "text/plain");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_dstack_redis_test_init_process(ngx_cycle_t *cycle)
{
    ngx_http_dstack_redis_test_main_conf_t  *tmcf;

    tmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                          ngx_http_dstack_redis_test_module);

    if (tmcf == NULL || !tmcf->enabled) {
        return NGX_OK;
    }

    tmcf->rds = ngx_dstack_redis_create(cycle, &tmcf->redis);

    return tmcf->rds ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_dstack_redis_test_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_dstack_redis_test_main_conf_t  *tmcf;

    tmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                          ngx_http_dstack_redis_test_module);

    if (tmcf != NULL && tmcf->rds != NULL) {
        ngx_dstack_redis_destroy(tmcf->rds);
        tmcf->rds = NULL;
    }
}


static void *
ngx_http_dstack_redis_test_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool,
                       sizeof(ngx_http_dstack_redis_test_main_conf_t));
}


static char *
ngx_http_dstack_redis_test(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_redis_test_main_conf_t *tmcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;
    tmcf->enabled = 1;

    return ngx_dstack_redis_conf_parse(cf, &tmcf->redis, &value[1],
                                       cf->args->nelts - 1);
}


static char *
ngx_http_dstack_redis_test_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_dstack_redis_test_handler;

    return NGX_CONF_OK;
}
