
/*
 * The control plane's changes (ngx_http_dstack_vpc_cp_module.c): one Redis
 * pub/sub subscription per worker, a short ring of its latest messages,
 * the fan-out to this worker's map streams with each batch of changes
 * parsed and framed once, and the expiry sweep.
 *
 * Coalescing (dstack_vpc_control_coalesce): a change that comes after a
 * quiet window goes out at once; changes that come sooner are held for
 * one window and then go out together, in one frame per stream, so that a
 * burst of N changes costs each stream two frames instead of N.  A batch
 * keeps only the last word on each node: a node changed or removed later
 * in the batch loses its earlier entries.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_dstack_vpc_cp.h"


static void ngx_http_dstack_vpc_cp_message(void *data, ngx_uint_t event,
    ngx_str_t *message);
static void ngx_http_dstack_vpc_cp_ready(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
static void ngx_http_dstack_vpc_cp_lost(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf, const char *why);
static ngx_int_t ngx_http_dstack_vpc_cp_remember(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf, uint64_t seq,
    ngx_str_t *message);
static void ngx_http_dstack_vpc_cp_hold(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf, uint64_t seq,
    ngx_http_dstack_vpc_cp_event_t *ev);
static void ngx_http_dstack_vpc_cp_drop_held(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
static ngx_uint_t ngx_http_dstack_vpc_cp_is(ngx_http_dstack_vpc_cp_change_t *ch,
    ngx_str_t *id);
static ngx_int_t ngx_http_dstack_vpc_cp_batch_frame(
    ngx_http_dstack_vpc_cp_change_t *ch, ngx_uint_t n, ngx_str_t *self,
    ngx_http_dstack_vpc_cp_out_t *out);
static ngx_int_t ngx_http_dstack_vpc_cp_batch_list(
    ngx_http_dstack_vpc_cp_change_t *ch, ngx_uint_t n, ngx_str_t *self,
    ngx_uint_t list, ngx_http_dstack_vpc_cp_out_t *out);
static ngx_int_t ngx_http_dstack_vpc_cp_patch(
    ngx_http_dstack_vpc_cp_change_t *ch, ngx_http_dstack_vpc_cp_out_t *out);
static void ngx_http_dstack_vpc_cp_deliver(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, ngx_http_dstack_vpc_cp_change_t *ch,
    ngx_uint_t n, ngx_http_dstack_vpc_cp_out_t *peers);
static void ngx_http_dstack_vpc_cp_sweep_reply(void *data,
    redisReply *reply, const char *err);


/* --- pub/sub: one subscription per worker, fanned out to its streams --- */

static void
ngx_http_dstack_vpc_cp_message(void *data, ngx_uint_t event,
    ngx_str_t *message)
{
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf = data;

    u_char     *p, *last;
    uint64_t    seq;
    ngx_str_t   msg;

    switch (event) {

    case NGX_DSTACK_REDIS_SUB_READY:
        ngx_http_dstack_vpc_cp_ready(cmcf);
        return;

    case NGX_DSTACK_REDIS_SUB_LOST:
        ngx_http_dstack_vpc_cp_lost(cmcf, "change notifications lost");
        cmcf->ready = 0;
        return;

    default: /* NGX_DSTACK_REDIS_SUB_MESSAGE */
        break;
    }

    p = message->data;
    last = p + message->len;
    seq = 0;

    while (p < last && *p >= '0' && *p <= '9' && seq < NGX_MAX_UINT32_VALUE)
    {
        seq = seq * 10 + (*p++ - '0');
    }

    if (seq == 0 || p == last || *p != ' ') {
        ngx_log_error(NGX_LOG_ERR, cmcf->log, 0,
                      "dstack vpc control: ignored a malformed message");
        return;
    }

    msg.data = p + 1;
    msg.len = last - msg.data;

    if (cmcf->last_seq != 0 && seq != cmcf->last_seq + 1) {
        /*
         * A gap, or Redis lost its data (or someone else publishes):
         * every stream reads a new map, and the next message starts the
         * sequence again.
         */
        ngx_log_error(NGX_LOG_WARN, cmcf->log, 0,
                      "dstack vpc control: change %uL after %uL, "
                      "map streams restart", seq, cmcf->last_seq);
        ngx_http_dstack_vpc_cp_lost(cmcf, "change sequence broken");
        return;
    }

    cmcf->last_seq = seq;

    if (ngx_http_dstack_vpc_cp_remember(cmcf, seq, &msg) != NGX_OK) {
        ngx_http_dstack_vpc_cp_lost(cmcf, "out of memory");
        return;
    }

    /* the copy in the ring: held changes point into it */

    ngx_http_dstack_vpc_cp_hold(cmcf, seq,
                           &cmcf->ring[(cmcf->ring_next
                                        + NGX_HTTP_DSTACK_VPC_CP_RING - 1)
                                       % NGX_HTTP_DSTACK_VPC_CP_RING]);
}


static void
ngx_http_dstack_vpc_cp_ready(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    ngx_uint_t  i;

    ngx_log_error(NGX_LOG_INFO, cmcf->log, 0,
                  "dstack vpc control: change notifications on \"%V\"",
                  &cmcf->channel);

    cmcf->ready = 1;
    cmcf->last_seq = 0;

    ngx_http_dstack_vpc_cp_drop_held(cmcf);

    for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_RING; i++) {
        cmcf->ring[i].seq = 0;
    }

    /* the map copy is read anew; the waiting streams wait for it */

    ngx_http_dstack_vpc_cp_cache_drop(cmcf);
    ngx_http_dstack_vpc_cp_cache_load(cmcf);

    if (cmcf->cache.loading == NULL) {
        ngx_http_dstack_vpc_cp_wake(cmcf);
    }
}


/* the streams that waited for the subscription (and the map copy) */

void
ngx_http_dstack_vpc_cp_wake(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    ngx_int_t                      rc;
    ngx_queue_t                   *q, *next;
    ngx_http_request_t            *r;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    if (!cmcf->ready) {
        return;
    }

    for (q = ngx_queue_head(&cmcf->streams);
         q != ngx_queue_sentinel(&cmcf->streams);
         q = next)
    {
        next = ngx_queue_next(q);
        ctx = ngx_queue_data(q, ngx_http_dstack_vpc_cp_ctx_t, queue);
        r = ctx->request;

        if (ctx->state != NGX_HTTP_DSTACK_VPC_CP_WAITING) {
            continue;
        }

        if (ctx->timer.timer_set) {
            ngx_del_timer(&ctx->timer);
        }

        ctx->state = NGX_HTTP_DSTACK_VPC_CP_POLLING;

        rc = ngx_http_dstack_vpc_cp_poll(r, ctx);

        if (rc != NGX_DONE) {
            ctx->state = NGX_HTTP_DSTACK_VPC_CP_DONE;
            ngx_http_dstack_vpc_cp_finalize(r, rc);
        }
    }
}


/* streams that may have missed a change end; their agents reconnect */

static void
ngx_http_dstack_vpc_cp_lost(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    const char *why)
{
    ngx_uint_t                     i, n;
    ngx_queue_t                   *q, *next;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    n = 0;

    for (q = ngx_queue_head(&cmcf->streams);
         q != ngx_queue_sentinel(&cmcf->streams);
         q = next)
    {
        next = ngx_queue_next(q);
        ctx = ngx_queue_data(q, ngx_http_dstack_vpc_cp_ctx_t, queue);

        if (ctx->state == NGX_HTTP_DSTACK_VPC_CP_LIVE
            || ctx->state == NGX_HTTP_DSTACK_VPC_CP_POLLING)
        {
            ngx_http_dstack_vpc_cp_stream_end(ctx->request, NGX_OK);
            n++;
        }
    }

    if (n) {
        ngx_log_error(NGX_LOG_WARN, cmcf->log, 0,
                      "dstack vpc control: %s, %ui map streams ended",
                      why, n);
    }

    cmcf->last_seq = 0;

    ngx_http_dstack_vpc_cp_drop_held(cmcf);

    for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_RING; i++) {
        cmcf->ring[i].seq = 0;
    }

    /* read again by the next poll that needs it */
    ngx_http_dstack_vpc_cp_cache_drop(cmcf);
}


static ngx_int_t
ngx_http_dstack_vpc_cp_remember(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    uint64_t seq, ngx_str_t *message)
{
    size_t                           size;
    ngx_http_dstack_vpc_cp_event_t  *ev;

    ev = &cmcf->ring[cmcf->ring_next];

    if (ev->size < message->len) {
        size = ngx_max(message->len, 256);

        ngx_free(ev->data);
        ev->size = 0;
        ev->seq = 0;

        ev->data = ngx_alloc(size, cmcf->log);
        if (ev->data == NULL) {
            return NGX_ERROR;
        }

        ev->size = size;
    }

    ngx_memcpy(ev->data, message->data, message->len);
    ev->len = message->len;
    ev->seq = seq;

    cmcf->ring_next = (cmcf->ring_next + 1) % NGX_HTTP_DSTACK_VPC_CP_RING;

    return NGX_OK;
}


/* a change joins the held batch, which goes out now or at the window's end */

static void
ngx_http_dstack_vpc_cp_hold(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    uint64_t seq, ngx_http_dstack_vpc_cp_event_t *ev)
{
    ngx_str_t                         msg;
    ngx_http_dstack_vpc_cp_change_t  *ch;

    msg.data = ev->data;
    msg.len = ev->len;

    ch = &cmcf->held[cmcf->nheld];

    if (ngx_http_dstack_vpc_cp_change_parse(cmcf, &msg, ch) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, cmcf->log, 0,
                      "dstack vpc control: ignored a malformed message "
                      "\"%*s\"", ngx_min(msg.len, 64), msg.data);

        /* what it changed is unknown: the map copy is read again */
        ngx_http_dstack_vpc_cp_cache_drop(cmcf);
        return;
    }

    ch->seq = seq;

    ngx_http_dstack_vpc_cp_cache_change(cmcf, ch);

    if (cmcf->nheld++ == 0) {
        cmcf->held_since = ngx_dstack_metrics_now_us();
    }

    if (cmcf->coalesce == 0
        || cmcf->nheld == NGX_HTTP_DSTACK_VPC_CP_HELD_MAX
        || ngx_current_msec - cmcf->flushed >= cmcf->coalesce)
    {
        ngx_http_dstack_vpc_cp_flush(cmcf);
        return;
    }

    if (!cmcf->flush.timer_set) {
        ngx_add_timer(&cmcf->flush, cmcf->coalesce);
    }
}


void
ngx_http_dstack_vpc_cp_flush_handler(ngx_event_t *ev)
{
    ngx_http_dstack_vpc_cp_flush(ev->data);
}


/* the held changes to every live stream of this worker */

void
ngx_http_dstack_vpc_cp_flush(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    uint64_t                       last;
    ngx_uint_t                     n;
    ngx_queue_t                   *q, *next;
    ngx_dstack_metrics_t          *m;
    ngx_http_dstack_vpc_cp_ctx_t  *ctx;

    if (cmcf->flush.timer_set) {
        ngx_del_timer(&cmcf->flush);
    }

    n = cmcf->nheld;

    if (n == 0) {
        return;
    }

    cmcf->flushed = ngx_current_msec;
    last = cmcf->held[n - 1].seq;
    m = ngx_dstack_metrics(cmcf->amcf->redis.metrics);

    /* the peers' frame, built once for every stream of this worker */

    cmcf->scratch.last = cmcf->scratch.start;

    if (ngx_http_dstack_vpc_cp_batch_frame(cmcf->held, n, NULL,
                                           &cmcf->scratch)
        != NGX_OK)
    {
        ngx_http_dstack_vpc_cp_lost(cmcf, "out of memory");
        return;
    }

    for (q = ngx_queue_head(&cmcf->streams);
         q != ngx_queue_sentinel(&cmcf->streams);
         q = next)
    {
        next = ngx_queue_next(q);
        ctx = ngx_queue_data(q, ngx_http_dstack_vpc_cp_ctx_t, queue);

        if (ctx->state != NGX_HTTP_DSTACK_VPC_CP_LIVE || ctx->seq >= last) {
            continue;
        }

        ngx_http_dstack_vpc_cp_deliver(ctx->request, ctx, cmcf->held, n,
                                       &cmcf->scratch);

        if (m != NULL) {
            ngx_dstack_metrics_inc(&m->cp_frames);
            ngx_dstack_metrics_observe(&m->cp_propagation,
                                       ngx_dstack_metrics_now_us()
                                       - cmcf->held_since);
        }
    }

    cmcf->nheld = 0;
}


static void
ngx_http_dstack_vpc_cp_drop_held(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    cmcf->nheld = 0;

    if (cmcf->flush.timer_set) {
        ngx_del_timer(&cmcf->flush);
    }
}


/* one remembered change to one stream */

void
ngx_http_dstack_vpc_cp_apply(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, uint64_t seq, ngx_str_t *message)
{
    ngx_http_dstack_vpc_cp_change_t  ch;

    if (ngx_http_dstack_vpc_cp_change_parse(ctx->cmcf, message, &ch)
        != NGX_OK)
    {
        ctx->seq = seq;
        return;
    }

    ch.seq = seq;

    ngx_http_dstack_vpc_cp_deliver(r, ctx, &ch, 1, NULL);
}


/*
 * The changes of a batch that this stream has not seen: the peers' frame
 * when they are all new to it and none is about its own node, else a
 * frame of its own.
 */

static void
ngx_http_dstack_vpc_cp_deliver(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, ngx_http_dstack_vpc_cp_change_t *ch,
    ngx_uint_t n, ngx_http_dstack_vpc_cp_out_t *peers)
{
    ngx_int_t                     rc;
    ngx_uint_t                    i, from, self;
    ngx_http_dstack_vpc_cp_out_t  out, *frame;

    for (from = 0; from < n && ch[from].seq <= ctx->seq; from++) {
        /* void */
    }

    ctx->seq = ch[n - 1].seq;

    if (from == n) {
        return;
    }

    ch += from;
    n -= from;
    self = 0;

    for (i = 0; i < n; i++) {
        if (!ngx_http_dstack_vpc_cp_is(&ch[i], &ctx->id)) {
            continue;
        }

        /* about this node itself */

        self = 1;

        if (ch[i].kind == NGX_HTTP_DSTACK_VPC_CP_RM) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "dstack vpc control: node %V removed, map "
                          "stream ended", &ctx->id);
            ngx_http_dstack_vpc_cp_stream_end(r, NGX_OK);
            return;
        }

        if (ch[i].kind != NGX_HTTP_DSTACK_VPC_CP_UP) {
            /* its own endpoints and liveness: nothing to tell it */
            continue;
        }

        if (ch[i].expired) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "dstack vpc control: the key of node %V "
                          "expired, map stream ended", &ctx->id);
            ngx_http_dstack_vpc_cp_stream_end(r, NGX_OK);
            return;
        }

        if (!ch[i].valid
            || ch[i].node.f[NGX_HTTP_DSTACK_VPC_CP_F_KEY].len
               != ctx->req.key.len
            || ngx_strncmp(ch[i].node.f[NGX_HTTP_DSTACK_VPC_CP_F_KEY].data,
                           ctx->req.key.data, ctx->req.key.len)
               != 0)
        {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "dstack vpc control: node %V has a new key, "
                          "map stream ended", &ctx->id);
            ngx_http_dstack_vpc_cp_stream_end(r, NGX_OK);
            return;
        }
    }

    ngx_memzero(&out, sizeof(ngx_http_dstack_vpc_cp_out_t));
    frame = peers;

    if (peers == NULL || from || self) {
        if (ngx_http_dstack_vpc_cp_batch_frame(ch, n, &ctx->id, &out)
            != NGX_OK)
        {
            ngx_http_dstack_vpc_cp_out_free(&out);
            ngx_http_dstack_vpc_cp_stream_end(r, NGX_ERROR);
            return;
        }

        if (out.start == NULL) {
            /* only its own endpoints or liveness */
            return;
        }

        frame = &out;
    }

    rc = ngx_http_dstack_vpc_cp_send(r, ctx, frame->start,
                                     frame->last - frame->start);

    ngx_http_dstack_vpc_cp_out_free(&out);

    if (rc != NGX_OK) {
        ngx_http_dstack_vpc_cp_stream_end(r, NGX_ERROR);
    }
}


/*
 * "<kind> <args>" after the sequence number (ngx_http_dstack_vpc_cp_lua.c);
 * the strings point into the message.  An "up" whose node fails the
 * checks is kept (valid = 0): peers are told to drop the node instead.
 */

ngx_int_t
ngx_http_dstack_vpc_cp_change_parse(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_str_t *message, ngx_http_dstack_vpc_cp_change_t *ch)
{
    u_char      *p, *last, *start;
    ngx_str_t    f[NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS + 1];
    ngx_uint_t   n, i;

    ngx_memzero(ch, sizeof(ngx_http_dstack_vpc_cp_change_t));

    p = message->data;
    last = p + message->len;
    n = 0;

    while (p < last && n < NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS + 1) {
        start = p;

        while (p < last && *p != ' ') {
            p++;
        }

        f[n].data = start;
        f[n].len = p - start;

        if (f[n].len == 1 && *start == '-') {
            f[n].len = 0;
        }

        n++;

        if (p < last) {
            p++;
        }
    }

    if (p != last || n < 2) {
        return NGX_ERROR;
    }

    ch->id = f[1];

    if (ngx_http_dstack_vpc_cp_digits(&ch->id, 18) != NGX_OK) {
        return NGX_ERROR;
    }

    if (f[0].len != 2) {
        return NGX_ERROR;
    }

    if (ngx_strncmp(f[0].data, "up", 2) == 0) {
        if (n != NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS + 1) {
            return NGX_ERROR;
        }

        ch->kind = NGX_HTTP_DSTACK_VPC_CP_UP;

        for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS; i++) {
            ch->node.f[i] = f[i + 1];
        }

        ch->valid = (ngx_http_dstack_vpc_cp_node_valid(cmcf, &ch->node)
                     == NGX_OK);
        ch->expired = ngx_http_dstack_vpc_cp_node_expired(&ch->node);

        if (!ch->valid) {
            ngx_log_error(NGX_LOG_ERR, cmcf->log, 0,
                          "dstack vpc control: node %V has an invalid "
                          "record, dropped from the maps", &ch->id);
        }

        return NGX_OK;
    }

    if (ngx_strncmp(f[0].data, "rm", 2) == 0 && n == 2) {
        ch->kind = NGX_HTTP_DSTACK_VPC_CP_RM;
        return NGX_OK;
    }

    if (ngx_strncmp(f[0].data, "on", 2) == 0 && n == 4
        && f[2].len == 1 && (f[2].data[0] == '0' || f[2].data[0] == '1')
        && ngx_http_dstack_vpc_cp_digits(&f[3], 18) == NGX_OK)
    {
        ch->kind = NGX_HTTP_DSTACK_VPC_CP_ON;
        ch->arg[0] = f[2];
        ch->arg[1] = f[3];
        return NGX_OK;
    }

    if (ngx_strncmp(f[0].data, "ep", 2) == 0 && (n == 2 || n == 3)) {
        ch->kind = NGX_HTTP_DSTACK_VPC_CP_EP;

        if (n == 3) {
            ch->arg[0] = f[2];
        }

        /* each endpoint is checked as the frame is written */
        return NGX_OK;
    }

    return NGX_ERROR;
}


static ngx_uint_t
ngx_http_dstack_vpc_cp_is(ngx_http_dstack_vpc_cp_change_t *ch, ngx_str_t *id)
{
    return ch->id.len == id->len
           && ngx_strncmp(ch->id.data, id->data, id->len) == 0;
}


#define NGX_HTTP_DSTACK_VPC_CP_LIST_NODE      0
#define NGX_HTTP_DSTACK_VPC_CP_LIST_CHANGED   1
#define NGX_HTTP_DSTACK_VPC_CP_LIST_REMOVED   2
#define NGX_HTTP_DSTACK_VPC_CP_LIST_PATCH     3


/*
 * One delta frame (4-byte length + JSON) for n changes: for peers
 * (self == NULL), or for the node "self", which gets its own record as
 * "Node" and none of its own entries.  The agent applies Node, then
 * PeersChanged, PeersRemoved and PeersChangedPatch (wgctl/peermap.c); a
 * node's entry that a later "up" or "rm" of the batch overrides is left
 * out.  Nothing to tell: out stays empty (start NULL).
 */

static ngx_int_t
ngx_http_dstack_vpc_cp_batch_frame(ngx_http_dstack_vpc_cp_change_t *ch,
    ngx_uint_t n, ngx_str_t *self, ngx_http_dstack_vpc_cp_out_t *out)
{
    ngx_int_t   rc;
    ngx_uint_t  list, any;

    if (ngx_http_dstack_vpc_cp_frame_start(out) != NGX_OK
        || ngx_http_dstack_vpc_cp_out_reserve(out, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    *out->last++ = '{';
    any = 0;

    for (list = (self == NULL) ? NGX_HTTP_DSTACK_VPC_CP_LIST_CHANGED
                               : NGX_HTTP_DSTACK_VPC_CP_LIST_NODE;
         list <= NGX_HTTP_DSTACK_VPC_CP_LIST_PATCH;
         list++)
    {
        rc = ngx_http_dstack_vpc_cp_batch_list(ch, n, self, list, out);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            any = 1;
        }
    }

    if (!any) {
        ngx_http_dstack_vpc_cp_out_free(out);
        return NGX_OK;
    }

    if (ngx_http_dstack_vpc_cp_out_reserve(out, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    *out->last++ = '}';

    ngx_http_dstack_vpc_cp_frame_end(out);

    return NGX_OK;
}


/* one list of a batch frame; NGX_DECLINED: it has no entry */

static ngx_int_t
ngx_http_dstack_vpc_cp_batch_list(ngx_http_dstack_vpc_cp_change_t *ch,
    ngx_uint_t n, ngx_str_t *self, ngx_uint_t list,
    ngx_http_dstack_vpc_cp_out_t *out)
{
    ngx_uint_t   i, j, k, entries, changed;
    ngx_str_t   *name;

    static ngx_str_t  names[] = {
        ngx_string("\"Node\":"),
        ngx_string("\"PeersChanged\":["),
        ngx_string("\"PeersRemoved\":["),
        ngx_string("\"PeersChangedPatch\":[")
    };

    entries = 0;
    name = &names[list];

    for (i = 0; i < n; i++) {

        if (self != NULL
            && ngx_http_dstack_vpc_cp_is(&ch[i], self)
               != (list == NGX_HTTP_DSTACK_VPC_CP_LIST_NODE))
        {
            continue;
        }

        /* the node's last word in this batch is a later up or rm */

        for (j = i + 1; j < n; j++) {
            if ((ch[j].kind == NGX_HTTP_DSTACK_VPC_CP_UP
                 || ch[j].kind == NGX_HTTP_DSTACK_VPC_CP_RM)
                && ngx_http_dstack_vpc_cp_is(&ch[j], &ch[i].id))
            {
                break;
            }
        }

        if (j < n) {
            continue;
        }

        changed = (ch[i].kind == NGX_HTTP_DSTACK_VPC_CP_UP && ch[i].valid
                   && !ch[i].expired);

        switch (list) {

        case NGX_HTTP_DSTACK_VPC_CP_LIST_NODE:
        case NGX_HTTP_DSTACK_VPC_CP_LIST_CHANGED:
            k = changed;
            break;

        case NGX_HTTP_DSTACK_VPC_CP_LIST_REMOVED:
            k = (ch[i].kind == NGX_HTTP_DSTACK_VPC_CP_RM
                 || (ch[i].kind == NGX_HTTP_DSTACK_VPC_CP_UP && !changed));
            break;

        default: /* NGX_HTTP_DSTACK_VPC_CP_LIST_PATCH */
            k = (ch[i].kind == NGX_HTTP_DSTACK_VPC_CP_ON
                 || ch[i].kind == NGX_HTTP_DSTACK_VPC_CP_EP);
            break;
        }

        if (!k) {
            continue;
        }

        if (ngx_http_dstack_vpc_cp_out_reserve(out, name->len + 2
                                                    + NGX_INT64_LEN)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (entries++ == 0) {
            if (out->last[-1] != '{') {
                *out->last++ = ',';
            }

            out->last = ngx_cpymem(out->last, name->data, name->len);

        } else {
            *out->last++ = ',';
        }

        switch (list) {

        case NGX_HTTP_DSTACK_VPC_CP_LIST_NODE:
        case NGX_HTTP_DSTACK_VPC_CP_LIST_CHANGED:
            if (ngx_http_dstack_vpc_cp_node_json(out, &ch[i].node) != NGX_OK)
            {
                return NGX_ERROR;
            }

            break;

        case NGX_HTTP_DSTACK_VPC_CP_LIST_REMOVED:
            out->last = ngx_cpymem(out->last, ch[i].id.data, ch[i].id.len);
            break;

        default: /* NGX_HTTP_DSTACK_VPC_CP_LIST_PATCH */
            if (ngx_http_dstack_vpc_cp_patch(&ch[i], out) != NGX_OK) {
                return NGX_ERROR;
            }

            break;
        }
    }

    if (entries == 0) {
        return NGX_DECLINED;
    }

    if (list != NGX_HTTP_DSTACK_VPC_CP_LIST_NODE) {
        if (ngx_http_dstack_vpc_cp_out_reserve(out, 1) != NGX_OK) {
            return NGX_ERROR;
        }

        *out->last++ = ']';
    }

    return NGX_OK;
}


/* a PeersChangedPatch entry: liveness or endpoints */

static ngx_int_t
ngx_http_dstack_vpc_cp_patch(ngx_http_dstack_vpc_cp_change_t *ch,
    ngx_http_dstack_vpc_cp_out_t *out)
{
    u_char      *p, *e, *last, *start;
    size_t       len;
    ngx_uint_t   n;

    len = 128 + 2 * ch->arg[0].len + ch->arg[1].len + ch->id.len
          + 4 * NGX_HTTP_DSTACK_VPC_CP_ENDPOINTS_MAX;

    if (ngx_http_dstack_vpc_cp_out_reserve(out, len) != NGX_OK) {
        return NGX_ERROR;
    }

    p = out->last;

    if (ch->kind == NGX_HTTP_DSTACK_VPC_CP_ON) {
        p = ngx_sprintf(p, "{\"NodeID\":%V,\"Online\":%s,\"LastSeen\":\"",
                        &ch->id, ch->arg[0].data[0] == '1' ? "true"
                                                           : "false");
        p = ngx_http_dstack_vpc_cp_time(p, &ch->arg[1]);
        p = ngx_cpymem(p, "\"}", 2);

        out->last = p;

        return NGX_OK;
    }

    /* NGX_HTTP_DSTACK_VPC_CP_EP */

    p = ngx_sprintf(p, "{\"NodeID\":%V,\"Endpoints\":[", &ch->id);

    start = ch->arg[0].data;
    last = start + ch->arg[0].len;
    n = 0;

    while (start < last && n < NGX_HTTP_DSTACK_VPC_CP_ENDPOINTS_MAX) {
        e = ngx_strlchr(start, last, ',');
        if (e == NULL) {
            e = last;
        }

        if (ngx_http_dstack_vpc_cp_endpoint_valid(start, e - start) == NGX_OK)
        {
            if (n++) {
                *p++ = ',';
            }

            *p++ = '"';
            p = ngx_cpymem(p, start, e - start);
            *p++ = '"';
        }

        start = e + 1;
    }

    out->last = ngx_cpymem(p, "]}", 2);

    return NGX_OK;
}


/*
 * The expiry sweep: every worker asks at least twice per interval, and
 * the script runs it once per interval slot of Redis' clock, whichever
 * worker or replica asks first.  The first run also subscribes.
 */

void
ngx_http_dstack_vpc_cp_sweep(ngx_event_t *ev)
{
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf = ev->data;

    size_t                                lens[5];
    const char                           *argv[5];
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    amcf = cmcf->amcf;

    if (cmcf->sub == NULL) {
        cmcf->sub = ngx_dstack_redis_subscribe(amcf->rds, &cmcf->channel,
                                               ngx_http_dstack_vpc_cp_message,
                                               cmcf);
        if (cmcf->sub == NULL) {
            ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                          "dstack vpc control: cannot subscribe to \"%V\"",
                          &cmcf->channel);
        }

    } else if (cmcf->sweeping == NULL && ngx_dstack_redis_ready(amcf->rds)) {
        argv[0] = (const char *) amcf->prefix.data;
        lens[0] = amcf->prefix.len;
        argv[1] = (const char *) cmcf->inactivity_text.data;
        lens[1] = cmcf->inactivity_text.len;
        argv[2] = (const char *) cmcf->interval_text.data;
        lens[2] = cmcf->interval_text.len;
        argv[3] = NGX_HTTP_DSTACK_VPC_CP_SWEEP_BATCH;
        lens[3] = sizeof(NGX_HTTP_DSTACK_VPC_CP_SWEEP_BATCH) - 1;
        argv[4] = (const char *) cmcf->caller;
        lens[4] = cmcf->caller_len;

        cmcf->sweeping = ngx_dstack_redis_eval(amcf->rds, NULL,
                                        cmcf->lua_sweep, 0, 5, argv, lens,
                                        amcf->timeout,
                                        ngx_http_dstack_vpc_cp_sweep_reply,
                                        cmcf);
    }

    /*
     * At most half an interval apart, so that every slot gets asked;
     * at random, so that workers and replicas take turns.
     */
    ngx_add_timer(ev, cmcf->sweep_interval / 4
                      + (ngx_random() % (cmcf->sweep_interval / 4 + 1)));
}


static void
ngx_http_dstack_vpc_cp_sweep_reply(void *data, redisReply *reply,
    const char *err)
{
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf = data;

    ngx_uint_t             i;
    ngx_dstack_metrics_t  *m;

    cmcf->sweeping = NULL;

    if (err != NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, cmcf->log, 0,
                      "dstack vpc control: sweep: redis error: \"%*s\"",
                      (size_t) ngx_min(reply->len, 200), reply->str);
        return;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 4
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[1]->type == REDIS_REPLY_INTEGER
        && reply->element[2]->type == REDIS_REPLY_INTEGER
        && reply->element[3]->type == REDIS_REPLY_INTEGER
        && reply->element[0]->integer == 1
        && (reply->element[1]->integer || reply->element[2]->integer
            || reply->element[3]->integer))
    {
        ngx_log_error(NGX_LOG_INFO, cmcf->log, 0,
                      "dstack vpc control: sweep: %L nodes offline, "
                      "%L ephemeral nodes removed, %L keys expired",
                      (int64_t) reply->element[1]->integer,
                      (int64_t) reply->element[2]->integer,
                      (int64_t) reply->element[3]->integer);

        m = ngx_dstack_metrics(cmcf->amcf->redis.metrics);

        for (i = 0; m != NULL && i < 3; i++) {
            if (reply->element[i + 1]->integer > 0) {
                (void) ngx_atomic_fetch_add(&m->cp_sweep[i],
                           (ngx_atomic_int_t) reply->element[i + 1]->integer);
            }
        }
    }
}
