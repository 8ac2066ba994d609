
/*
 * The worker's copy of the documents that GET /api/discover/<type> and
 * GET /api/nodes answer (docs/api.md, "Discover cache"), so that a hit
 * costs no Redis round trip.
 *
 * Every script that changes what these documents show deletes Redis's
 * rendered copy and publishes "node <id>" on "<prefix>events" in the
 * same atomic run; the worker subscribes to that channel and, on any
 * message, drops every copy it holds.  A copy is trusted only while the
 * subscription is up (from its READY to its LOST; both drop everything,
 * as messages may have been missed in between) and the command link is
 * ready; otherwise requests go to Redis as without the cache.
 *
 * A reply from Redis is kept only if nothing was dropped between the
 * request's command and its reply (the generation did not move): a
 * document read before a change whose message came first is never kept.
 *
 * Per worker, not in shared memory: no lock on the hot path, a hit is
 * sent from the worker's own memory without a copy (a reference held
 * by the request's pool), and each worker's copy follows its own
 * subscription.  Bounded by entries and bytes (LRU), and by age
 * (valid=), which also limits what a change made behind the channel's
 * back (a FLUSHALL, a silently dead link) can leave stale.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dstack_vpc_api.h"


typedef struct ngx_http_dstack_vpc_api_cache_entry_s
    ngx_http_dstack_vpc_api_cache_entry_t;


struct ngx_http_dstack_vpc_api_cache_entry_s {
    ngx_str_node_t                    sn;       /* key: the node type */
    ngx_queue_t                       queue;    /* LRU, most recent first */
    ngx_http_dstack_vpc_api_cache_t  *cache;
    ngx_uint_t                        refs;     /* responses being sent */
    ngx_msec_t                        expires;
    size_t                            size;
    ngx_str_t                         doc;      /* NULL: none of the type */

    unsigned                          linked:1;
    unsigned                          nodes:1;
};


struct ngx_http_dstack_vpc_api_cache_s {
    ngx_rbtree_t                      rbtree;
    ngx_rbtree_node_t                 sentinel;
    ngx_queue_t                       lru;
    ngx_http_dstack_vpc_api_cache_entry_t  *nodes;

    ngx_uint_t                        entries;
    size_t                            size;
    ngx_uint_t                        generation;

    ngx_http_dstack_vpc_api_main_conf_t  *amcf;
    ngx_dstack_redis_sub_t           *sub;
    ngx_str_t                         channel;
    ngx_log_t                        *log;

    unsigned                          subscribed:1;
};


static void ngx_http_dstack_vpc_api_cache_message(void *data,
    ngx_uint_t event, ngx_str_t *message);
static ngx_http_dstack_vpc_api_cache_entry_t *
    ngx_http_dstack_vpc_api_cache_find(ngx_http_dstack_vpc_api_cache_t *cache,
    ngx_uint_t discover, ngx_str_t *type, uint32_t hash);
static void ngx_http_dstack_vpc_api_cache_unlink(
    ngx_http_dstack_vpc_api_cache_entry_t *e);
static void ngx_http_dstack_vpc_api_cache_release(void *data);


ngx_int_t
ngx_http_dstack_vpc_api_cache_init(ngx_cycle_t *cycle,
    ngx_http_dstack_vpc_api_main_conf_t *amcf)
{
    ngx_http_dstack_vpc_api_cache_t  *cache;

    if (amcf->cache_entries == 0) {
        return NGX_OK;
    }

    cache = ngx_calloc(sizeof(ngx_http_dstack_vpc_api_cache_t)
                       + amcf->prefix.len + sizeof("events") - 1,
                       cycle->log);
    if (cache == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&cache->rbtree, &cache->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&cache->lru);

    cache->generation = 1;
    cache->amcf = amcf;
    cache->log = cycle->log;

    cache->channel.data = (u_char *) (cache + 1);
    cache->channel.len = ngx_sprintf(cache->channel.data, "%Vevents",
                                     &amcf->prefix)
                         - cache->channel.data;

    cache->sub = ngx_dstack_redis_subscribe(amcf->rds, &cache->channel,
                                        ngx_http_dstack_vpc_api_cache_message,
                                        cache);
    if (cache->sub == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "dstack vpc api: cannot subscribe to \"%V\"",
                      &cache->channel);
        ngx_free(cache);
        return NGX_ERROR;
    }

    amcf->cache = cache;

    return NGX_OK;
}


/* at exit: no response is being sent any more */

void
ngx_http_dstack_vpc_api_cache_done(ngx_http_dstack_vpc_api_main_conf_t *amcf)
{
    ngx_http_dstack_vpc_api_cache_t  *cache;

    cache = amcf->cache;

    if (cache == NULL) {
        return;
    }

    ngx_http_dstack_vpc_api_cache_flush(amcf);

    /* the subscription itself goes with the Redis client */

    amcf->cache = NULL;
    ngx_free(cache);
}


/*
 * Returns NGX_OK with *b set to the document (a hit), NGX_DONE when the
 * type has no node (a hit: 404), or NGX_DECLINED (ask Redis) with *gen
 * set to what ngx_http_dstack_vpc_api_cache_put() needs: 0 when the
 * answer must not be kept.
 */

ngx_int_t
ngx_http_dstack_vpc_api_cache_get(ngx_http_request_t *r,
    ngx_uint_t discover, ngx_str_t *type, ngx_buf_t **b, ngx_uint_t *gen)
{
    ngx_buf_t                              *buf;
    ngx_pool_cleanup_t                     *cln;
    ngx_http_dstack_vpc_api_cache_t        *cache;
    ngx_http_dstack_vpc_api_main_conf_t    *amcf;
    ngx_http_dstack_vpc_api_cache_entry_t  *e;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);
    cache = amcf->cache;

    *gen = 0;

    if (cache == NULL
        || !cache->subscribed
        || !ngx_dstack_redis_ready(amcf->rds))
    {
        return NGX_DECLINED;
    }

    *gen = cache->generation;

    e = ngx_http_dstack_vpc_api_cache_find(cache, discover, type,
                                           discover ? ngx_crc32_short(
                                                          type->data,
                                                          type->len)
                                                    : 0);
    if (e == NULL) {
        return NGX_DECLINED;
    }

    if ((ngx_msec_int_t) (e->expires - ngx_current_msec) <= 0) {
        ngx_http_dstack_vpc_api_cache_unlink(e);
        return NGX_DECLINED;
    }

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&cache->lru, &e->queue);

    if (e->doc.data == NULL) {
        return NGX_DONE;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    buf = ngx_calloc_buf(r->pool);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_dstack_vpc_api_cache_release;
    cln->data = e;
    e->refs++;

    buf->pos = e->doc.data;
    buf->last = e->doc.data + e->doc.len;
    buf->memory = 1;

    *b = buf;

    return NGX_OK;
}


/*
 * Keeps Redis's answer, read by a command sent at generation gen:
 * doc is the document with its final newline, or NULL for none.
 */

void
ngx_http_dstack_vpc_api_cache_put(ngx_http_request_t *r,
    ngx_uint_t discover, ngx_str_t *type, ngx_str_t *doc, ngx_uint_t gen)
{
    size_t                                  size;
    uint32_t                                hash;
    ngx_queue_t                            *q;
    ngx_http_dstack_vpc_api_cache_t        *cache;
    ngx_http_dstack_vpc_api_main_conf_t    *amcf;
    ngx_http_dstack_vpc_api_cache_entry_t  *e;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_vpc_api_module);
    cache = amcf->cache;

    if (cache == NULL || gen == 0 || gen != cache->generation
        || !cache->subscribed)
    {
        return;
    }

    size = sizeof(ngx_http_dstack_vpc_api_cache_entry_t)
           + (discover ? type->len : 0) + (doc ? doc->len : 0);

    if (size > amcf->cache_size) {
        return;
    }

    hash = discover ? ngx_crc32_short(type->data, type->len) : 0;

    e = ngx_http_dstack_vpc_api_cache_find(cache, discover, type, hash);
    if (e != NULL) {
        ngx_http_dstack_vpc_api_cache_unlink(e);
    }

    while (cache->entries >= amcf->cache_entries
           || cache->size + size > amcf->cache_size)
    {
        q = ngx_queue_last(&cache->lru);
        e = ngx_queue_data(q, ngx_http_dstack_vpc_api_cache_entry_t, queue);
        ngx_http_dstack_vpc_api_cache_unlink(e);
    }

    e = ngx_alloc(size, r->connection->log);
    if (e == NULL) {
        return;
    }

    ngx_memzero(e, sizeof(ngx_http_dstack_vpc_api_cache_entry_t));

    e->cache = cache;
    e->size = size;
    e->expires = ngx_current_msec + amcf->cache_valid;
    e->linked = 1;
    e->nodes = !discover;

    if (discover) {
        e->sn.str.data = (u_char *) (e + 1);
        e->sn.str.len = type->len;
        ngx_memcpy(e->sn.str.data, type->data, type->len);
        e->sn.node.key = hash;
        ngx_rbtree_insert(&cache->rbtree, &e->sn.node);

    } else {
        cache->nodes = e;
    }

    if (doc != NULL) {
        e->doc.data = (u_char *) (e + 1) + (discover ? type->len : 0);
        e->doc.len = doc->len;
        ngx_memcpy(e->doc.data, doc->data, doc->len);
    }

    ngx_queue_insert_head(&cache->lru, &e->queue);

    cache->entries++;
    cache->size += size;
}


/* everything goes; replies to commands sent before are not kept */

void
ngx_http_dstack_vpc_api_cache_flush(ngx_http_dstack_vpc_api_main_conf_t *amcf)
{
    ngx_queue_t                            *q;
    ngx_http_dstack_vpc_api_cache_t        *cache;
    ngx_http_dstack_vpc_api_cache_entry_t  *e;

    cache = amcf->cache;

    if (cache == NULL) {
        return;
    }

    cache->generation++;

    while (!ngx_queue_empty(&cache->lru)) {
        q = ngx_queue_head(&cache->lru);
        e = ngx_queue_data(q, ngx_http_dstack_vpc_api_cache_entry_t, queue);
        ngx_http_dstack_vpc_api_cache_unlink(e);
    }
}


static void
ngx_http_dstack_vpc_api_cache_message(void *data, ngx_uint_t event,
    ngx_str_t *message)
{
    ngx_http_dstack_vpc_api_cache_t *cache = data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, cache->log, 0,
                   "dstack vpc api: cache event %ui", event);

    /* any of them: READY and LOST because messages may have been missed */

    ngx_http_dstack_vpc_api_cache_flush(cache->amcf);

    switch (event) {

    case NGX_DSTACK_REDIS_SUB_READY:
        cache->subscribed = 1;
        break;

    case NGX_DSTACK_REDIS_SUB_LOST:
        cache->subscribed = 0;
        break;

    default: /* NGX_DSTACK_REDIS_SUB_MESSAGE */
        break;
    }
}


static ngx_http_dstack_vpc_api_cache_entry_t *
ngx_http_dstack_vpc_api_cache_find(ngx_http_dstack_vpc_api_cache_t *cache,
    ngx_uint_t discover, ngx_str_t *type, uint32_t hash)
{
    ngx_str_node_t  *sn;

    if (!discover) {
        return cache->nodes;
    }

    sn = ngx_str_rbtree_lookup(&cache->rbtree, type, hash);

    if (sn == NULL) {
        return NULL;
    }

    return (ngx_http_dstack_vpc_api_cache_entry_t *)
               ((u_char *) sn
                - offsetof(ngx_http_dstack_vpc_api_cache_entry_t, sn));
}


static void
ngx_http_dstack_vpc_api_cache_unlink(ngx_http_dstack_vpc_api_cache_entry_t *e)
{
    ngx_http_dstack_vpc_api_cache_t  *cache;

    cache = e->cache;

    ngx_queue_remove(&e->queue);

    if (e->nodes) {
        cache->nodes = NULL;

    } else {
        ngx_rbtree_delete(&cache->rbtree, &e->sn.node);
    }

    cache->entries--;
    cache->size -= e->size;

    e->linked = 0;

    if (e->refs == 0) {
        ngx_free(e);
    }
}


static void
ngx_http_dstack_vpc_api_cache_release(void *data)
{
    ngx_http_dstack_vpc_api_cache_entry_t *e = data;

    if (--e->refs == 0 && !e->linked) {
        ngx_free(e);
    }
}


/*
 * dstack_vpc_api_cache off | on | [entries=<n>] [size=<size>]
 *                                 [valid=<time>];
 */

char *
ngx_http_dstack_vpc_api_cache_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_vpc_api_main_conf_t *amcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_uint_t   i;

    if (amcf->cache_entries != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        amcf->cache_entries = 0;
        return NGX_CONF_OK;
    }

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "on") == 0) {
        amcf->cache_entries = NGX_HTTP_DSTACK_VPC_API_CACHE_ENTRIES;
        return NGX_CONF_OK;
    }

    amcf->cache_entries = NGX_HTTP_DSTACK_VPC_API_CACHE_ENTRIES;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "entries=", 8) == 0) {
            n = ngx_atoi(value[i].data + 8, value[i].len - 8);
            if (n <= 0) {
                goto invalid;
            }

            amcf->cache_entries = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "size=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            amcf->cache_size = ngx_parse_size(&s);
            if (amcf->cache_size == (size_t) NGX_ERROR
                || amcf->cache_size == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "valid=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            amcf->cache_valid = ngx_parse_time(&s, 0);
            if (amcf->cache_valid == (ngx_msec_t) NGX_ERROR
                || amcf->cache_valid == 0)
            {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}
