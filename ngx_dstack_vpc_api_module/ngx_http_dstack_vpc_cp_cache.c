
/*
 * Each worker's copy of the map (dstack_vpc_control_map_cache): every
 * node's record and rendered JSON in a tree by node id, read once with
 * the poll script's load mode at a known change number and then kept
 * current from the change notifications this worker subscribes to
 * (ngx_http_dstack_vpc_cp_events.c), so that a full map is one short
 * Redis call for the asking node plus the concatenation of the peers'
 * JSON (ngx_http_dstack_vpc_cp_module.c).  Whatever makes the changes
 * untrusted (a gap, a lost or new subscription, a malformed message, no
 * memory) drops it; the next load rebuilds it, and until then maps are
 * read from Redis as without it.  It holds what Redis' node set holds:
 * at most dstack_vpc_control_max_nodes_per_app nodes for each app.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dstack_vpc_cp.h"


#define NGX_HTTP_DSTACK_VPC_CP_LOAD_RETRY  1000  /* ms */


static ngx_int_t ngx_http_dstack_vpc_cp_cache_set(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_http_dstack_vpc_cp_node_t *rec);
static void ngx_http_dstack_vpc_cp_cache_del(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_http_dstack_vpc_cp_entry_t *e);
static ngx_int_t ngx_http_dstack_vpc_cp_cache_replay(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
static void ngx_http_dstack_vpc_cp_cache_loaded(void *data,
    redisReply *reply, const char *err);


void
ngx_http_dstack_vpc_cp_cache_init(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    ngx_rbtree_init(&cmcf->cache.tree, &cmcf->cache.sentinel,
                    ngx_rbtree_insert_value);
}


void
ngx_http_dstack_vpc_cp_cache_drop(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    ngx_rbtree_node_t               *node;
    ngx_http_dstack_vpc_cp_cache_t  *cache;

    cache = &cmcf->cache;

    while (cache->tree.root != cache->tree.sentinel) {
        node = ngx_rbtree_min(cache->tree.root, cache->tree.sentinel);
        ngx_http_dstack_vpc_cp_cache_del(cmcf,
                                     (ngx_http_dstack_vpc_cp_entry_t *) node);
    }

    cache->valid = 0;
    cache->seq = 0;
    cache->gen++;
}


/* every node of the VPC, read at a known change number */

void
ngx_http_dstack_vpc_cp_cache_load(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    size_t                                lens[6];
    const char                           *argv[6];
    ngx_http_dstack_vpc_cp_cache_t       *cache;
    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    cache = &cmcf->cache;
    amcf = cmcf->amcf;

    if (!cmcf->map_cache || !cmcf->ready || cache->valid
        || cache->loading != NULL || !ngx_dstack_redis_ready(amcf->rds))
    {
        return;
    }

    argv[0] = (const char *) amcf->prefix.data;
    lens[0] = amcf->prefix.len;

    /* no node key: the load */
    argv[1] = "";
    lens[1] = 0;
    argv[2] = "";
    lens[2] = 0;
    argv[3] = "";
    lens[3] = 0;
    argv[4] = "0";
    lens[4] = 1;
    argv[5] = "0";
    lens[5] = 1;

    cache->tried = ngx_current_msec;
    cache->tried_once = 1;
    cache->load_gen = cache->gen;

    /* no pool: exit_process cancels it */
    cache->loading = ngx_dstack_redis_eval(amcf->rds, NULL, cmcf->lua_poll,
                                       0, 6, argv, lens, amcf->timeout,
                                       ngx_http_dstack_vpc_cp_cache_loaded,
                                       cmcf);
}


/* a poll that finds no usable copy asks for a load, at most once a second */

void
ngx_http_dstack_vpc_cp_cache_want(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    if (cmcf->cache.tried_once
        && ngx_current_msec - cmcf->cache.tried
           < NGX_HTTP_DSTACK_VPC_CP_LOAD_RETRY)
    {
        return;
    }

    ngx_http_dstack_vpc_cp_cache_load(cmcf);
}


static void
ngx_http_dstack_vpc_cp_cache_loaded(void *data, redisReply *reply,
    const char *err)
{
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf = data;

    ngx_http_dstack_vpc_cp_cache_t  *cache;

    cache = &cmcf->cache;
    cache->loading = NULL;

    if (err != NULL || cache->gen != cache->load_gen || !cmcf->ready) {
        /* the changes since it was asked for are not all known */
        goto done;
    }

    if (ngx_http_dstack_vpc_cp_cache_build(cmcf, reply) != NGX_OK) {
        ngx_http_dstack_vpc_cp_cache_drop(cmcf);
        goto done;
    }

    ngx_log_error(NGX_LOG_INFO, cmcf->log, 0,
                  "dstack vpc control: map of %ui nodes loaded at "
                  "change %uL", cache->n, cache->seq);

done:

    /* the streams that waited for it read their maps now */
    ngx_http_dstack_vpc_cp_wake(cmcf);
}


/*
 * {"ok", id, seq, fields of every node...} (a load, or a full poll), then
 * the changes after seq that this worker already saw, from its ring.
 */

ngx_int_t
ngx_http_dstack_vpc_cp_cache_build(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    redisReply *reply)
{
    ngx_str_t                        seq;
    ngx_uint_t                       i, j, n;
    ngx_http_dstack_vpc_cp_node_t    rec;
    ngx_http_dstack_vpc_cp_cache_t  *cache;

    cache = &cmcf->cache;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || (reply->elements - 3) % NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }
    }

    seq.data = (u_char *) reply->element[2]->str;
    seq.len = reply->element[2]->len;

    if (reply->element[0]->len != 2
        || ngx_strncmp(reply->element[0]->str, "ok", 2) != 0
        || ngx_http_dstack_vpc_cp_digits(&seq, 18) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_dstack_vpc_cp_cache_drop(cmcf);

    n = (reply->elements - 3) / NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS;

    for (i = 0; i < n; i++) {
        for (j = 0; j < NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS; j++) {
            rec.f[j].data = (u_char *)
                reply->element[3 + i * NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS
                               + j]->str;
            rec.f[j].len =
                reply->element[3 + i * NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS
                               + j]->len;
        }

        if (ngx_http_dstack_vpc_cp_cache_set(cmcf, &rec) == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    cache->seq = ngx_atoof(seq.data, seq.len);

    /* the ring's changes after it, when the worker is past it */

    if (cmcf->last_seq > cache->seq
        && ngx_http_dstack_vpc_cp_cache_replay(cmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    cache->valid = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_vpc_cp_cache_replay(ngx_http_dstack_vpc_cp_main_conf_t *cmcf)
{
    uint64_t                          next;
    ngx_str_t                         msg;
    ngx_uint_t                        i, k;
    ngx_http_dstack_vpc_cp_event_t   *ev;
    ngx_http_dstack_vpc_cp_change_t   ch;

    next = cmcf->cache.seq + 1;

    for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_RING; i++) {
        k = (cmcf->ring_next + i) % NGX_HTTP_DSTACK_VPC_CP_RING;
        ev = &cmcf->ring[k];

        if (ev->seq == 0 || ev->seq < next) {
            continue;
        }

        if (ev->seq != next) {
            /* the ring no longer holds them all */
            return NGX_ERROR;
        }

        msg.data = ev->data;
        msg.len = ev->len;

        if (ngx_http_dstack_vpc_cp_change_parse(cmcf, &msg, &ch) != NGX_OK) {
            return NGX_ERROR;
        }

        ch.seq = ev->seq;
        cmcf->cache.valid = 1;
        ngx_http_dstack_vpc_cp_cache_change(cmcf, &ch);

        if (!cmcf->cache.valid) {
            return NGX_ERROR;
        }

        next++;
    }

    return (next == cmcf->last_seq + 1) ? NGX_OK : NGX_ERROR;
}


/* one change, after the ring and before the streams see it */

void
ngx_http_dstack_vpc_cp_cache_change(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_http_dstack_vpc_cp_change_t *ch)
{
    ngx_int_t                        rc;
    ngx_http_dstack_vpc_cp_node_t    rec;
    ngx_http_dstack_vpc_cp_entry_t  *e;
    ngx_http_dstack_vpc_cp_cache_t  *cache;

    cache = &cmcf->cache;

    if (!cache->valid || ch->seq <= cache->seq) {
        /* none, or in it already */
        return;
    }

    cache->seq = ch->seq;
    rc = NGX_OK;

    switch (ch->kind) {

    case NGX_HTTP_DSTACK_VPC_CP_UP:
        rc = ngx_http_dstack_vpc_cp_cache_set(cmcf, &ch->node);
        break;

    case NGX_HTTP_DSTACK_VPC_CP_RM:
        e = ngx_http_dstack_vpc_cp_cache_find(cmcf, &ch->id);

        if (e != NULL) {
            ngx_http_dstack_vpc_cp_cache_del(cmcf, e);
        }

        break;

    default: /* NGX_HTTP_DSTACK_VPC_CP_ON, NGX_HTTP_DSTACK_VPC_CP_EP */
        e = ngx_http_dstack_vpc_cp_cache_find(cmcf, &ch->id);

        if (e == NULL) {
            /* Redis has no such node either */
            break;
        }

        rec = e->rec;

        if (ch->kind == NGX_HTTP_DSTACK_VPC_CP_ON) {
            rec.f[NGX_HTTP_DSTACK_VPC_CP_F_ONLINE] = ch->arg[0];
            rec.f[NGX_HTTP_DSTACK_VPC_CP_F_LAST_SEEN] = ch->arg[1];

        } else {
            rec.f[NGX_HTTP_DSTACK_VPC_CP_F_ENDPOINTS] = ch->arg[0];
        }

        rc = ngx_http_dstack_vpc_cp_cache_set(cmcf, &rec);
        break;
    }

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cmcf->log, 0,
                      "dstack vpc control: out of memory, map copy dropped");
        ngx_http_dstack_vpc_cp_cache_drop(cmcf);
    }
}


ngx_http_dstack_vpc_cp_entry_t *
ngx_http_dstack_vpc_cp_cache_find(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_str_t *id)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    if (ngx_http_dstack_vpc_cp_digits(id, 18) != NGX_OK) {
        return NULL;
    }

    key = (ngx_rbtree_key_t) ngx_atoof(id->data, id->len);

    node = cmcf->cache.tree.root;
    sentinel = cmcf->cache.tree.sentinel;

    while (node != sentinel) {
        if (key == node->key) {
            return (ngx_http_dstack_vpc_cp_entry_t *) node;
        }

        node = (key < node->key) ? node->left : node->right;
    }

    return NULL;
}


/*
 * A node's record as Redis holds it: copied, checked and rendered in one
 * allocation that replaces the node's old one.  NGX_DECLINED: not a
 * record to keep (no id).
 */

static ngx_int_t
ngx_http_dstack_vpc_cp_cache_set(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_http_dstack_vpc_cp_node_t *rec)
{
    u_char                          *p;
    size_t                           size;
    ngx_uint_t                       i;
    ngx_http_dstack_vpc_cp_node_t    copy;
    ngx_http_dstack_vpc_cp_entry_t  *e, *old;
    ngx_http_dstack_vpc_cp_cache_t  *cache;

    cache = &cmcf->cache;

    old = ngx_http_dstack_vpc_cp_cache_find(cmcf,
                                        &rec->f[NGX_HTTP_DSTACK_VPC_CP_F_ID]);
    if (old == NULL
        && ngx_http_dstack_vpc_cp_digits(&rec->f[NGX_HTTP_DSTACK_VPC_CP_F_ID],
                                         18) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    /* node_valid() may point the host name at the name */
    copy = *rec;
    cache->tmp.last = cache->tmp.start;

    if (ngx_http_dstack_vpc_cp_node_valid(cmcf, &copy) == NGX_OK) {
        if (ngx_http_dstack_vpc_cp_node_json(&cache->tmp, &copy) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    size = sizeof(ngx_http_dstack_vpc_cp_entry_t)
           + (cache->tmp.last - cache->tmp.start);

    for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS; i++) {
        size += copy.f[i].len;
    }

    e = ngx_alloc(size, cmcf->log);
    if (e == NULL) {
        return NGX_ERROR;
    }

    p = (u_char *) e + sizeof(ngx_http_dstack_vpc_cp_entry_t);

    for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS; i++) {
        e->rec.f[i].data = p;
        e->rec.f[i].len = copy.f[i].len;
        p = ngx_cpymem(p, copy.f[i].data, copy.f[i].len);
    }

    e->json.data = p;
    e->json.len = cache->tmp.last - cache->tmp.start;
    ngx_memcpy(p, cache->tmp.start, e->json.len);

    e->valid = (e->json.len != 0);
    e->expiry = 0;

    if (e->valid && e->rec.f[NGX_HTTP_DSTACK_VPC_CP_F_KEY_EXPIRY].len) {
        e->expiry = ngx_atotm(
                          e->rec.f[NGX_HTTP_DSTACK_VPC_CP_F_KEY_EXPIRY].data,
                          e->rec.f[NGX_HTTP_DSTACK_VPC_CP_F_KEY_EXPIRY].len);
    }

    e->node.key = (ngx_rbtree_key_t)
                  ngx_atoof(e->rec.f[NGX_HTTP_DSTACK_VPC_CP_F_ID].data,
                            e->rec.f[NGX_HTTP_DSTACK_VPC_CP_F_ID].len);

    if (old != NULL) {
        ngx_http_dstack_vpc_cp_cache_del(cmcf, old);
    }

    ngx_rbtree_insert(&cache->tree, &e->node);
    cache->n++;
    cache->bytes += e->json.len;

    return NGX_OK;
}


static void
ngx_http_dstack_vpc_cp_cache_del(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_http_dstack_vpc_cp_entry_t *e)
{
    ngx_rbtree_delete(&cmcf->cache.tree, &e->node);
    cmcf->cache.n--;
    cmcf->cache.bytes -= e->json.len;
    ngx_free(e);
}
