
/*
 * The mesh upstream's balancer (ngx_http_dstack_mesh_module.c): one peer,
 * the dstack gateway, with the target named in SNI; keep-alive connections
 * and TLS sessions pooled per target; the peer's chain and app_id checked
 * in the handshake by the verify callback.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dstack_mesh.h"


static ngx_int_t ngx_http_dstack_mesh_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_dstack_mesh_get_peer(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_dstack_mesh_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static void ngx_http_dstack_mesh_failed(ngx_peer_connection_t *pc,
    ngx_http_dstack_mesh_ctx_t *ctx);
static void ngx_http_dstack_mesh_dummy_handler(ngx_event_t *ev);
static void ngx_http_dstack_mesh_close_handler(ngx_event_t *ev);
static void ngx_http_dstack_mesh_close(ngx_connection_t *c);
static ngx_int_t ngx_http_dstack_mesh_set_session(ngx_peer_connection_t *pc,
    void *data);
static ngx_int_t ngx_http_dstack_mesh_unattested_ssl(ngx_peer_connection_t *pc,
    ngx_http_dstack_mesh_ctx_t *ctx);
static void ngx_http_dstack_mesh_save_session(ngx_peer_connection_t *pc,
    void *data);
static int ngx_http_dstack_mesh_verify_callback(int ok,
    X509_STORE_CTX *sctx);
static void ngx_http_dstack_mesh_reject(ngx_http_dstack_mesh_ctx_t *ctx,
    ngx_connection_t *c, const char *fmt, ...);
static ngx_int_t ngx_http_dstack_mesh_init_ssl(ngx_conf_t *cf,
    ngx_http_dstack_mesh_srv_conf_t *mscf);
static void ngx_http_dstack_mesh_cleanup_sessions(void *data);


/*
 * The SSL ex_data slot that carries the request's target into the verify
 * callback; allocated once per process, like nginx's own indexes.
 */
static int  ngx_http_dstack_mesh_ssl_index = -1;


static ngx_int_t
ngx_http_dstack_mesh_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_upstream_t              *u;
    ngx_http_dstack_mesh_ctx_t       *ctx;
    ngx_http_dstack_mesh_srv_conf_t  *mscf;

    mscf = ngx_http_conf_upstream_srv_conf(us, ngx_http_dstack_mesh_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);
    u = r->upstream;

    /* fail closed: only the mesh entry sets a target and our TLS context */

    if (ctx == NULL || ctx->conf != mscf || ctx->naddrs == 0
        || !u->ssl || u->conf->ssl != mscf->ssl)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack mesh upstream \"%V\" used outside a "
                      "\"dstack_mesh_target\" location", &us->host);
        return NGX_ERROR;
    }

    u->peer.data = ctx;
    u->peer.get = ngx_http_dstack_mesh_get_peer;
    u->peer.free = ngx_http_dstack_mesh_free_peer;
    u->peer.set_session = ngx_http_dstack_mesh_set_session;
    u->peer.save_session = ngx_http_dstack_mesh_save_session;
    u->peer.tries = ctx->naddrs;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_dstack_mesh_ctx_t  *ctx = data;

    ngx_addr_t                       *addr;
    ngx_queue_t                      *q, *cache;
    ngx_connection_t                 *c;
    ngx_dstack_metrics_t             *m;
    ngx_http_dstack_mesh_cache_t     *item;
    ngx_http_dstack_mesh_srv_conf_t  *mscf;

    mscf = ctx->conf;
    cache = &mscf->cache;

    for (q = ngx_queue_head(cache);
         q != ngx_queue_sentinel(cache);
         q = ngx_queue_next(q))
    {
        item = ngx_queue_data(q, ngx_http_dstack_mesh_cache_t, queue);

        if (ngx_memcmp(item->key, ctx->key, NGX_HTTP_DSTACK_MESH_KEY_LEN)
            == 0)
        {
            ngx_queue_remove(q);
            ngx_queue_insert_head(&mscf->free, q);

            goto found;
        }
    }

    addr = &ctx->addrs[ctx->next++ % ctx->naddrs];

    pc->sockaddr = addr->sockaddr;
    pc->socklen = addr->socklen;
    pc->name = &addr->name;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "dstack mesh: connecting to \"%V\" via %V",
                   &ctx->host, pc->name);

    m = ngx_http_dstack_mesh_metrics(ctx->request);

    if (m != NULL) {
        ngx_dstack_metrics_inc(&m->mesh_handshakes);
    }

    return NGX_OK;

found:

    c = item->connection;
    ctx->item = item;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "dstack mesh: pooled connection %p for \"%V\"",
                   c, &ctx->host);

    ctx->socklen = item->socklen;
    ngx_memcpy(&ctx->sockaddr, &item->sockaddr, item->socklen);

    ctx->name.data = ctx->name_buf;
    ctx->name.len = item->name_len;
    ngx_memcpy(ctx->name_buf, item->name, item->name_len);

    pc->sockaddr = &ctx->sockaddr.sockaddr;
    pc->socklen = ctx->socklen;
    pc->name = &ctx->name;

    c->idle = 0;
    c->sent = 0;
    c->data = NULL;
    c->log = pc->log;
    c->read->log = pc->log;
    c->write->log = pc->log;
    c->pool->log = pc->log;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    pc->connection = c;
    pc->cached = 1;

    m = ngx_http_dstack_mesh_metrics(ctx->request);

    if (m != NULL) {
        ngx_dstack_metrics_inc(&m->mesh_reused);
    }

    return NGX_DONE;
}


static void
ngx_http_dstack_mesh_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_dstack_mesh_ctx_t  *ctx = data;

    ngx_queue_t                      *q;
    ngx_connection_t                 *c;
    ngx_http_upstream_t              *u;
    ngx_http_dstack_mesh_cache_t     *item;
    ngx_http_dstack_mesh_srv_conf_t  *mscf;

    mscf = ctx->conf;
    u = ctx->request->upstream;
    c = pc->connection;

    /* the pool entry this connection was taken from, if it was */
    item = ctx->item;
    ctx->item = NULL;

    if (ctx->ssl_data && c != NULL && c->ssl != NULL) {
        /* the verify callback's data lives no longer than the request */
        SSL_set_ex_data(c->ssl->connection, ngx_http_dstack_mesh_ssl_index,
                        NULL);
        ctx->ssl_data = 0;
    }

    if (state & NGX_PEER_FAILED) {
        ngx_http_dstack_mesh_failed(pc, ctx);
        return;
    }

    pc->tries = 0;

    if (c == NULL
        || c->read->eof
        || c->read->error
        || c->read->timedout
        || c->write->error
        || c->write->timedout)
    {
        return;
    }

    if (mscf->max_cached == 0
        || c->requests >= mscf->requests
        || !u->keepalive
        || !u->request_body_sent
        || ngx_terminate
        || ngx_exiting)
    {
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return;
    }

    if (item != NULL && item->connection == c) {

        /*
         * back to the entry it came from, still in the free list and
         * unchanged: another request that took the entry since put its
         * own connection there (a different one: this one was ours)
         */

        q = &item->queue;
        ngx_queue_remove(q);
        ngx_queue_insert_head(&mscf->cache, q);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "dstack mesh: pooling connection %p for \"%V\" "
                       "again", c, &ctx->host);

        goto pooled;
    }

    if (ngx_queue_empty(&mscf->free)) {
        q = ngx_queue_last(&mscf->cache);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_dstack_mesh_cache_t, queue);

        ngx_http_dstack_mesh_close(item->connection);

    } else {
        q = ngx_queue_head(&mscf->free);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_dstack_mesh_cache_t, queue);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "dstack mesh: pooling connection %p for \"%V\"",
                   c, &ctx->host);

    ngx_queue_insert_head(&mscf->cache, q);

    item->connection = c;
    ngx_memcpy(item->key, ctx->key, NGX_HTTP_DSTACK_MESH_KEY_LEN);
    item->socklen = pc->socklen;
    ngx_memcpy(&item->sockaddr, pc->sockaddr, pc->socklen);
    item->name_len = ngx_min(pc->name->len, NGX_SOCKADDR_STRLEN);
    ngx_memcpy(item->name, pc->name->data, item->name_len);

pooled:

    pc->connection = NULL;

    c->read->delayed = 0;
    ngx_add_timer(c->read, mscf->timeout);

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->write->handler = ngx_http_dstack_mesh_dummy_handler;
    c->read->handler = ngx_http_dstack_mesh_close_handler;

    c->data = item;
    c->idle = 1;
    c->log = ngx_cycle->log;
    c->read->log = ngx_cycle->log;
    c->write->log = ngx_cycle->log;
    c->pool->log = ngx_cycle->log;

    if (c->read->ready) {
        ngx_http_dstack_mesh_close_handler(c->read);
    }
}


/*
 * Records where the attempt failed, for the JSON error.  Only a failure
 * to reach the gateway is worth another gateway address; the upstream
 * module itself retries once when a pooled connection turns out closed.
 */

static void
ngx_http_dstack_mesh_failed(ngx_peer_connection_t *pc,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    BIO               *rbio;
    ngx_connection_t  *c;

    c = pc->connection;
    ctx->peer = pc->name;

    if (ctx->failure == NGX_HTTP_DSTACK_MESH_FAIL_PEER) {
        pc->tries = 0;
        return;
    }

    if (c == NULL || c->ssl == NULL) {
        ctx->failure = NGX_HTTP_DSTACK_MESH_FAIL_CONNECT;

    } else if (!c->ssl->handshaked) {
        rbio = SSL_get_rbio(c->ssl->connection);

        /*
         * the gateway accepted but closed without a TLS byte: it has no
         * route to the target
         */

        ctx->failure = (rbio == NULL || BIO_number_read(rbio) == 0)
                       ? NGX_HTTP_DSTACK_MESH_FAIL_CLOSED
                       : NGX_HTTP_DSTACK_MESH_FAIL_HANDSHAKE;

    } else {
        ctx->failure = NGX_HTTP_DSTACK_MESH_FAIL_UPSTREAM;
    }

    if (ctx->failure == NGX_HTTP_DSTACK_MESH_FAIL_CONNECT
        || ctx->failure == NGX_HTTP_DSTACK_MESH_FAIL_CLOSED)
    {
        if (pc->tries) {
            pc->tries--;
        }

    } else {
        pc->tries = 0;
    }
}


static void
ngx_http_dstack_mesh_dummy_handler(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "dstack mesh: dummy handler");
}


/* a pooled connection that became readable was closed by the peer */

static void
ngx_http_dstack_mesh_close_handler(ngx_event_t *ev)
{
    int                            n;
    char                           buf[1];
    ngx_connection_t              *c;
    ngx_http_dstack_mesh_cache_t  *item;

    c = ev->data;

    if (c->close || c->read->timedout) {
        goto close;
    }

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
        ev->ready = 0;

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            goto close;
        }

        return;
    }

close:

    item = c->data;

    ngx_http_dstack_mesh_close(c);

    ngx_queue_remove(&item->queue);
    ngx_queue_insert_head(&item->conf->free, &item->queue);
}


static void
ngx_http_dstack_mesh_close(ngx_connection_t *c)
{
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;

        if (ngx_ssl_shutdown(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_dstack_mesh_close;
            return;
        }
    }

    ngx_destroy_pool(c->pool);
    ngx_close_connection(c);
}


/*
 * Called by the upstream module for every new TLS connection (it needs
 * proxy_ssl_session_reuse, which the configuration enforces): the target
 * for the verify callback, SNI, and this target's TLS session if any.
 */

static ngx_int_t
ngx_http_dstack_mesh_set_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_dstack_mesh_ctx_t  *ctx = data;

    SSL                             *ssl;
    ngx_queue_t                     *q;
    ngx_http_dstack_mesh_session_t  *s;

    ssl = pc->connection->ssl->connection;

    if (SSL_set_ex_data(ssl, ngx_http_dstack_mesh_ssl_index, ctx) == 0) {
        ngx_ssl_error(NGX_LOG_ALERT, pc->log, 0, "SSL_set_ex_data() failed");
        return NGX_ERROR;
    }

    ctx->ssl_data = 1;

    if (ctx->unattested
        && ngx_http_dstack_mesh_unattested_ssl(pc, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (SSL_set_tlsext_host_name(ssl, (char *) ctx->host.data) == 0) {
        ngx_ssl_error(NGX_LOG_ERR, pc->log, 0,
                      "SSL_set_tlsext_host_name(\"%s\") failed",
                      ctx->host.data);
        return NGX_ERROR;
    }

    for (q = ngx_queue_head(&ctx->conf->sessions);
         q != ngx_queue_sentinel(&ctx->conf->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_dstack_mesh_session_t, queue);

        if (ngx_memcmp(s->key, ctx->key, NGX_HTTP_DSTACK_MESH_KEY_LEN) == 0) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                           "dstack mesh: resuming session for \"%V\"",
                           &ctx->host);

            return ngx_ssl_set_session(pc->connection, s->session);
        }
    }

    return NGX_OK;
}


/*
 * The gateway's TLS termination: this connection presents no certificate
 * (the gateway is not a mesh peer) and verifies the gateway's chain to the
 * public roots and its name, as a browser would; per connection, so the
 * mesh's own context stays as it is.
 */

static ngx_int_t
ngx_http_dstack_mesh_unattested_ssl(ngx_peer_connection_t *pc,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    SSL  *ssl;

    ssl = pc->connection->ssl->connection;

    SSL_certs_clear(ssl);

    if (SSL_set1_verify_cert_store(ssl, ctx->conf->gateway_store) == 0) {
        ngx_ssl_error(NGX_LOG_ALERT, pc->log, 0,
                      "SSL_set1_verify_cert_store() failed");
        return NGX_ERROR;
    }

    SSL_set_verify_depth(ssl, NGX_HTTP_DSTACK_MESH_GATEWAY_DEPTH);
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);

    if (SSL_set1_host(ssl, (char *) ctx->host.data) == 0) {
        ngx_ssl_error(NGX_LOG_ALERT, pc->log, 0,
                      "SSL_set1_host(\"%V\") failed", &ctx->host);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* sessions are kept per target, never offered to another one */

static void
ngx_http_dstack_mesh_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_dstack_mesh_ctx_t  *ctx = data;

    ngx_queue_t                      *q;
    ngx_ssl_session_t                *session;
    ngx_http_dstack_mesh_session_t   *s;
    ngx_http_dstack_mesh_srv_conf_t  *mscf;

    session = ngx_ssl_get_session(pc->connection);
    if (session == NULL) {
        return;
    }

    mscf = ctx->conf;

    for (q = ngx_queue_head(&mscf->sessions);
         q != ngx_queue_sentinel(&mscf->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_dstack_mesh_session_t, queue);

        if (ngx_memcmp(s->key, ctx->key, NGX_HTTP_DSTACK_MESH_KEY_LEN) == 0) {
            ngx_queue_remove(q);
            goto found;
        }
    }

    if (ngx_queue_empty(&mscf->free_sessions)) {
        q = ngx_queue_last(&mscf->sessions);
        ngx_queue_remove(q);

    } else {
        q = ngx_queue_head(&mscf->free_sessions);
        ngx_queue_remove(q);
    }

    s = ngx_queue_data(q, ngx_http_dstack_mesh_session_t, queue);
    ngx_memcpy(s->key, ctx->key, NGX_HTTP_DSTACK_MESH_KEY_LEN);

found:

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "dstack mesh: saving session for \"%V\"", &ctx->host);

    if (s->session != NULL) {
        ngx_ssl_free_session(s->session);
    }

    s->session = session;

    ngx_queue_insert_head(&mscf->sessions, q);
}


/*
 * Runs inside the handshake: the peer's chain must verify to the KMS root
 * and its leaf must carry the target's app_id, vouched for by its App CA.
 * Returning 0 aborts the handshake before any request byte is written.
 */

static int
ngx_http_dstack_mesh_verify_callback(int ok, X509_STORE_CTX *sctx)
{
    int                          err;
    SSL                         *ssl;
    X509                        *leaf;
    STACK_OF(X509)              *chain;
    ngx_connection_t            *c;
    dstack_ratls_rc_e            rc;
    ngx_http_dstack_mesh_ctx_t  *ctx;
    u_char                       id[DSTACK_APP_ID_LEN];
    u_char                       hex[DSTACK_APP_ID_HEX_LEN];
    char                         why[DSTACK_ATTEST_REASON_LEN + 64];

    ssl = X509_STORE_CTX_get_ex_data(sctx,
                                     SSL_get_ex_data_X509_STORE_CTX_idx());
    c = ngx_ssl_get_connection(ssl);
    ctx = SSL_get_ex_data(ssl, ngx_http_dstack_mesh_ssl_index);

    if (ctx == NULL) {
        /* not a handshake that set_session prepared */
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }

    if (!ok) {
        err = X509_STORE_CTX_get_error(sctx);

        ctx->reject = NGX_DSTACK_METRICS_REJECT_UNTRUSTED;
        ngx_http_dstack_mesh_reject(ctx, c,
                             "certificate of %V not trusted: %s (depth %d)",
                             &ctx->host, X509_verify_cert_error_string(err),
                             X509_STORE_CTX_get_error_depth(sctx));
        return 0;
    }

    if (ctx->unattested) {
        /* the gateway's chain and host name, verified above: all there is */
        return 1;
    }

    if (X509_STORE_CTX_get_error_depth(sctx) != 0) {
        return 1;
    }

    leaf = X509_STORE_CTX_get_current_cert(sctx);

    rc = dstack_ratls_app_id(leaf, id);

    if (rc != DSTACK_RATLS_OK) {
        ctx->reject = NGX_DSTACK_METRICS_REJECT_NO_APP_ID;
        ngx_http_dstack_mesh_reject(ctx, c,
                                    "certificate of %V has no valid app_id "
                                    "(%s)", &ctx->host,
                                    dstack_ratls_strerror(rc));
        goto failed;
    }

    if (ngx_memcmp(id, ctx->key, DSTACK_APP_ID_LEN) != 0) {
        (void) dstack_hex_encode((char *) hex, id, DSTACK_APP_ID_LEN);

        ctx->reject = NGX_DSTACK_METRICS_REJECT_WRONG_APP;
        ngx_http_dstack_mesh_reject(ctx, c,
                                    "%V answered with app_id %*s, "
                                    "not the target %V", &ctx->host,
                                    (size_t) DSTACK_APP_ID_HEX_LEN, hex,
                                    &ctx->app);
        goto failed;
    }

    chain = X509_STORE_CTX_get0_chain(sctx);

    if (chain != NULL && sk_X509_num(chain) >= 2
        && dstack_ratls_check_issuer(leaf, sk_X509_value(chain, 1))
           != DSTACK_RATLS_OK)
    {
        ctx->reject = NGX_DSTACK_METRICS_REJECT_APP_CA;
        ngx_http_dstack_mesh_reject(ctx, c,
                                    "the App CA of %V does not vouch for "
                                    "its app_id", &ctx->host);
        goto failed;
    }

    /* the peer's attestation, from the chain verified above (~2 ms) */

    if (dstack_attest_check_peer(leaf, &ctx->conf->attest_opts,
                                 ctx->conf->attestation,
                                 ctx->conf->tcb_accept, why, sizeof(why))
        != DSTACK_VERDICT_OK)
    {
        ctx->reject = NGX_DSTACK_METRICS_REJECT_ATTESTATION;
        ngx_http_dstack_mesh_reject(ctx, c, "attestation of %V failed: %s",
                                    &ctx->host, why);
        goto failed;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "dstack mesh: peer \"%V\" verified", &ctx->host);

    return 1;

failed:

    X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);

    return 0;
}


static void
ngx_http_dstack_mesh_reject(ngx_http_dstack_mesh_ctx_t *ctx,
    ngx_connection_t *c, const char *fmt, ...)
{
    u_char                *p, *buf;
    va_list                args;
    ngx_dstack_metrics_t  *m;

    buf = ngx_http_dstack_mesh_detail_buf(ctx);

    if (buf != NULL) {
        va_start(args, fmt);
        p = ngx_vslprintf(buf, buf + NGX_HTTP_DSTACK_MESH_DETAIL_LEN, fmt,
                          args);
        va_end(args);

        ctx->detail.data = buf;
        ctx->detail.len = p - buf;
    }

    ctx->failure = NGX_HTTP_DSTACK_MESH_FAIL_PEER;

    m = ngx_http_dstack_mesh_metrics(ctx->request);

    if (m != NULL && ctx->reject < NGX_DSTACK_METRICS_REJECTS) {
        ngx_dstack_metrics_inc(&m->mesh_rejects[ctx->reject]);
    }

    ngx_log_error(NGX_LOG_ERR, c->log, 0, "dstack mesh: peer rejected: %V",
                  &ctx->detail);

    /*
     * queued first, this makes nginx log the failed handshake that follows
     * at info, not crit: the reason is logged above, at error level, as
     * nginx does for upstream certificates that proxy_ssl_verify rejects
     */
    ERR_raise(ERR_LIB_SSL, SSL_R_CALLBACK_FAILED);
}


ngx_int_t
ngx_http_dstack_mesh_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t                        i, n;
    ngx_pool_cleanup_t               *cln;
    ngx_http_dstack_mesh_cache_t     *cached;
    ngx_http_dstack_mesh_session_t   *sessions;
    ngx_http_dstack_mesh_srv_conf_t  *mscf;

    mscf = ngx_http_conf_upstream_srv_conf(us, ngx_http_dstack_mesh_module);

    if (us->peer.init_upstream != ngx_http_dstack_mesh_init_upstream
        || us->servers->nelts != 1)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "upstream \"%V\" with \"dstack_mesh_gateway\" takes "
                      "no \"server\" or balancer directives in %s:%ui",
                      &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    if (mscf->certificate.len == 0
        || mscf->certificate_key.len == 0
        || mscf->trusted_certificate.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "upstream \"%V\" needs \"dstack_mesh_certificate\", "
                      "\"dstack_mesh_certificate_key\" and "
                      "\"dstack_mesh_trusted_certificate\" in %s:%ui",
                      &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    ngx_conf_init_uint_value(mscf->verify_depth, 2);
    ngx_conf_init_uint_value(mscf->max_cached, 32);
    ngx_conf_init_uint_value(mscf->requests, 10000);
    ngx_conf_init_msec_value(mscf->timeout, 60000);

    if (ngx_http_dstack_mesh_init_ssl(cf, mscf) != NGX_OK) {
        return NGX_ERROR;
    }

    us->peer.init = ngx_http_dstack_mesh_init_peer;

    ngx_queue_init(&mscf->cache);
    ngx_queue_init(&mscf->free);
    ngx_queue_init(&mscf->sessions);
    ngx_queue_init(&mscf->free_sessions);

    if (mscf->max_cached) {
        cached = ngx_pcalloc(cf->pool,
                    sizeof(ngx_http_dstack_mesh_cache_t) * mscf->max_cached);
        if (cached == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < mscf->max_cached; i++) {
            cached[i].conf = mscf;
            ngx_queue_insert_head(&mscf->free, &cached[i].queue);
        }
    }

    /* one TLS session per target, for as many targets as pooled */

    n = ngx_max(mscf->max_cached, 1);

    sessions = ngx_pcalloc(cf->pool,
                           sizeof(ngx_http_dstack_mesh_session_t) * n);
    if (sessions == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        ngx_queue_insert_head(&mscf->free_sessions, &sessions[i].queue);
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_dstack_mesh_cleanup_sessions;
    cln->data = mscf;

    return NGX_OK;
}


/*
 * The mesh's own TLS context: the node's certificate, the KMS root as the
 * only trust anchor, the verify callback, no renegotiation (the callback
 * must not run outside a request).
 */

static ngx_int_t
ngx_http_dstack_mesh_init_ssl(ngx_conf_t *cf,
    ngx_http_dstack_mesh_srv_conf_t *mscf)
{
    ngx_pool_cleanup_t  *cln;

    if (ngx_http_dstack_mesh_ssl_index == -1) {
        ngx_http_dstack_mesh_ssl_index = SSL_get_ex_new_index(0, NULL, NULL,
                                                              NULL, NULL);
        if (ngx_http_dstack_mesh_ssl_index == -1) {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_get_ex_new_index() failed");
            return NGX_ERROR;
        }
    }

    mscf->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (mscf->ssl == NULL) {
        return NGX_ERROR;
    }

    mscf->ssl->log = cf->log;

    if (ngx_ssl_create(mscf->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(mscf->ssl);
        return NGX_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = mscf->ssl;

    if (ngx_ssl_certificate(cf, mscf->ssl, &mscf->certificate,
                            &mscf->certificate_key, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_ssl_trusted_certificate(cf, mscf->ssl, &mscf->trusted_certificate,
                                    mscf->verify_depth)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    SSL_CTX_set_verify(mscf->ssl->ctx, SSL_VERIFY_PEER,
                       ngx_http_dstack_mesh_verify_callback);

    SSL_CTX_set_options(mscf->ssl->ctx, SSL_OP_NO_RENEGOTIATION);

    if (ngx_ssl_client_session_cache(cf, mscf->ssl, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_dstack_mesh_cleanup_sessions(void *data)
{
    ngx_http_dstack_mesh_srv_conf_t  *mscf = data;

    ngx_queue_t                     *q;
    ngx_http_dstack_mesh_session_t  *s;

    for (q = ngx_queue_head(&mscf->sessions);
         q != ngx_queue_sentinel(&mscf->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_dstack_mesh_session_t, queue);

        if (s->session != NULL) {
            ngx_ssl_free_session(s->session);
            s->session = NULL;
        }
    }
}
