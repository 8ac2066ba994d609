
/*
 * A Redis client on nginx's event loop: hiredis's protocol code driven by
 * an nginx connection, nginx events and nginx timers.
 *
 * One worker holds one ngx_dstack_redis_t with two links: one for
 * commands, opened at start and kept open, and one for pub/sub, opened on
 * the first subscription.  A failed link is reopened with a growing
 * backoff; while it waits, commands fail at once instead of queueing.
 *
 * Commands:
 *
 *     cmd = ngx_dstack_redis_command(rds, r->pool, argc, argv, lens,
 *                                    timeout, handler, data);
 *
 * The handler runs exactly once, later, from the event loop, with either
 * a reply (which may be an error reply) or an error text; never from
 * inside ngx_dstack_redis_command().  NULL means the command was not sent
 * (ngx_dstack_redis_error() says why) and the handler will not run.
 * With a pool, destroying the pool first (a client that went away)
 * cancels the command: its reply is read and dropped.
 *
 * Subscriptions:
 *
 *     sub = ngx_dstack_redis_subscribe(rds, &channel, handler, data);
 *
 * The handler gets NGX_DSTACK_REDIS_SUB_READY when the subscription is
 * (re)established, NGX_DSTACK_REDIS_SUB_MESSAGE for each message, and
 * NGX_DSTACK_REDIS_SUB_LOST when the link fails: messages may have been
 * missed between LOST and the next READY, so a subscriber re-reads the
 * state it follows on READY.
 */


#ifndef _NGX_DSTACK_REDIS_H_INCLUDED_
#define _NGX_DSTACK_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


#define NGX_DSTACK_REDIS_MAX_ARGS     32

#define NGX_DSTACK_REDIS_SUB_READY    0
#define NGX_DSTACK_REDIS_SUB_MESSAGE  1
#define NGX_DSTACK_REDIS_SUB_LOST     2


typedef struct ngx_dstack_redis_s      ngx_dstack_redis_t;
typedef struct ngx_dstack_redis_cmd_s  ngx_dstack_redis_cmd_t;
typedef struct ngx_dstack_redis_sub_s  ngx_dstack_redis_sub_t;

/* exactly one of reply and err is set */
typedef void (*ngx_dstack_redis_reply_pt)(void *data, redisReply *reply,
    const char *err);

/* message is set for NGX_DSTACK_REDIS_SUB_MESSAGE only */
typedef void (*ngx_dstack_redis_message_pt)(void *data, ngx_uint_t event,
    ngx_str_t *message);


typedef struct {
    ngx_str_t                  source;
    u_char                     sha1[40];
} ngx_dstack_redis_script_t;


typedef struct {
    ngx_str_t                  name;          /* as configured, for logs */
    ngx_str_t                  host;          /* numeric, null-terminated */
    ngx_str_t                  path;          /* unix socket, null-terminated */
    ngx_str_t                  password;      /* null-terminated */
    ngx_int_t                  port;
    ngx_int_t                  db;
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 backoff_max;
    ngx_array_t                scripts;       /* ngx_dstack_redis_script_t * */
    ngx_shm_zone_t            *metrics;       /* NULL: not counted */
} ngx_dstack_redis_conf_t;


char *ngx_dstack_redis_conf_parse(ngx_conf_t *cf,
    ngx_dstack_redis_conf_t *rcf, ngx_str_t *args, ngx_uint_t nargs);
ngx_dstack_redis_script_t *ngx_dstack_redis_add_script(ngx_conf_t *cf,
    ngx_dstack_redis_conf_t *rcf, ngx_str_t *source);

ngx_dstack_redis_t *ngx_dstack_redis_create(ngx_cycle_t *cycle,
    ngx_dstack_redis_conf_t *rcf);
void ngx_dstack_redis_destroy(ngx_dstack_redis_t *rds);

ngx_dstack_redis_cmd_t *ngx_dstack_redis_command(ngx_dstack_redis_t *rds,
    ngx_pool_t *pool, int argc, const char **argv, const size_t *argvlen,
    ngx_msec_t timeout, ngx_dstack_redis_reply_pt handler, void *data);
ngx_dstack_redis_cmd_t *ngx_dstack_redis_eval(ngx_dstack_redis_t *rds,
    ngx_pool_t *pool, ngx_dstack_redis_script_t *script, int nkeys,
    int argc, const char **argv, const size_t *argvlen, ngx_msec_t timeout,
    ngx_dstack_redis_reply_pt handler, void *data);
void ngx_dstack_redis_cancel(ngx_dstack_redis_cmd_t *cmd);
const char *ngx_dstack_redis_error(ngx_dstack_redis_t *rds);
ngx_uint_t ngx_dstack_redis_ready(ngx_dstack_redis_t *rds);

ngx_dstack_redis_sub_t *ngx_dstack_redis_subscribe(ngx_dstack_redis_t *rds,
    ngx_str_t *channel, ngx_dstack_redis_message_pt handler, void *data);
void ngx_dstack_redis_unsubscribe(ngx_dstack_redis_sub_t *sub);


#endif /* _NGX_DSTACK_REDIS_H_INCLUDED_ */
