
/*
 * A hiredis async adapter on nginx's event loop (see ngx_dstack_redis.h).
 *
 * hiredis 0.14 writes and reads the socket itself and asks for events
 * through the ev.add/del hooks.  nginx watches the socket edge-triggered,
 * so the adapter keeps reading until the socket is drained (hiredis reads
 * at most 16 KiB per call) and writes until the output buffer is empty or
 * the socket is full.  hiredis 0.14 has no timeouts of its own: every
 * command carries an nginx timer, and a command that times out resets the
 * link, since later replies on the same connection queue behind it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_sha1.h>

#include "ngx_dstack_redis.h"
#include "ngx_dstack_metrics.h"


#define NGX_DSTACK_REDIS_IDLE          0
#define NGX_DSTACK_REDIS_CONNECTING    1
#define NGX_DSTACK_REDIS_READY         2
#define NGX_DSTACK_REDIS_BACKOFF       3

#define NGX_DSTACK_REDIS_BACKOFF_MIN   100
#define NGX_DSTACK_REDIS_READ_ROUNDS   32
#define NGX_DSTACK_REDIS_WRITE_ROUNDS  16


typedef struct {
    ngx_dstack_redis_t          *rds;
    redisAsyncContext           *ac;
    ngx_connection_t            *conn;
    ngx_event_t                  timer;      /* connect timeout or backoff */
    ngx_msec_t                   backoff;
    ngx_uint_t                   state;
    ngx_uint_t                   failures;
    const char                  *name;

    unsigned                     subscriber:1;
    unsigned                     handling:1;
    unsigned                     writing:1;
    unsigned                     conn_gone:1;

    char                         err[192];
} ngx_dstack_redis_link_t;


typedef struct {
    ngx_queue_t                  queue;
    ngx_queue_t                  subs;
    ngx_dstack_redis_t          *rds;
    ngx_str_t                    name;

    unsigned                     active:1;
    unsigned                     notifying:1;
} ngx_dstack_redis_channel_t;


struct ngx_dstack_redis_s {
    ngx_dstack_redis_conf_t     *conf;
    ngx_log_t                   *log;
    ngx_dstack_redis_link_t      cmd;
    ngx_dstack_redis_link_t      sub;
    ngx_queue_t                  inflight;
    ngx_queue_t                  channels;
    const char                  *error;

    unsigned                     exiting:1;
};


struct ngx_dstack_redis_cmd_s {
    ngx_queue_t                  queue;
    ngx_event_t                  timer;
    ngx_dstack_redis_t          *rds;
    ngx_dstack_redis_reply_pt    handler;
    void                        *data;
    ngx_pool_cleanup_t          *cln;
    ngx_msec_t                   timeout;
    uint64_t                     sent;       /* microseconds */

    unsigned                     script:1;
};


struct ngx_dstack_redis_sub_s {
    ngx_queue_t                  queue;
    ngx_event_t                  ready;
    ngx_dstack_redis_channel_t  *channel;
    ngx_dstack_redis_message_pt  handler;
    void                        *data;
};


static void ngx_dstack_redis_link_init(ngx_dstack_redis_t *rds,
    ngx_dstack_redis_link_t *link, const char *name, ngx_uint_t subscriber);
static void ngx_dstack_redis_link_connect(ngx_dstack_redis_link_t *link);
static ngx_int_t ngx_dstack_redis_link_handshake(
    ngx_dstack_redis_link_t *link);
static ngx_int_t ngx_dstack_redis_send_subscribe(
    ngx_dstack_redis_link_t *link, ngx_dstack_redis_channel_t *ch);
static void ngx_dstack_redis_link_fail(ngx_dstack_redis_link_t *link,
    const char *reason);
static void ngx_dstack_redis_link_lost(ngx_dstack_redis_link_t *link,
    const redisAsyncContext *ac, const char *what);
static void ngx_dstack_redis_link_retry(ngx_dstack_redis_link_t *link);
static void ngx_dstack_redis_link_timer(ngx_event_t *ev);
static void ngx_dstack_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_dstack_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_dstack_redis_handshake_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_dstack_redis_handshake_done(redisAsyncContext *ac,
    void *r, void *privdata);

static void ngx_dstack_redis_read_handler(ngx_event_t *rev);
static void ngx_dstack_redis_write_handler(ngx_event_t *wev);
static void ngx_dstack_redis_ev_noop(void *data);
static void ngx_dstack_redis_ev_add_write(void *data);
static void ngx_dstack_redis_ev_cleanup(void *data);

static void ngx_dstack_redis_cmd_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_dstack_redis_cmd_timeout(ngx_event_t *ev);
static void ngx_dstack_redis_cmd_pool_cleanup(void *data);

static void ngx_dstack_redis_sub_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_dstack_redis_sub_notify(ngx_dstack_redis_channel_t *ch,
    ngx_uint_t event, ngx_str_t *message);
static void ngx_dstack_redis_sub_ready(ngx_event_t *ev);
static void ngx_dstack_redis_sub_free(ngx_dstack_redis_sub_t *sub);


/* configuration */

char *
ngx_dstack_redis_conf_parse(ngx_conf_t *cf, ngx_dstack_redis_conf_t *rcf,
    ngx_str_t *args, ngx_uint_t nargs)
{
    u_char      *p, *last, *colon;
    ngx_str_t    addr, host, port, s;
    ngx_uint_t   i;

    addr = args[0];
    rcf->name = addr;

    if (addr.len > 5 && ngx_strncmp(addr.data, "unix:", 5) == 0) {
        rcf->path.len = addr.len - 5;
        rcf->path.data = ngx_pnalloc(cf->pool, rcf->path.len + 1);
        if (rcf->path.data == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(rcf->path.data, addr.data + 5, rcf->path.len) = '\0';

    } else {
        last = addr.data + addr.len;

        if (addr.len && addr.data[0] == '[') {
            p = ngx_strlchr(addr.data, last, ']');
            if (p == NULL) {
                goto invalid;
            }

            host.data = addr.data + 1;
            host.len = p - host.data;
            colon = (p + 1 < last && p[1] == ':') ? p + 1 : NULL;

            if (colon == NULL && p + 1 != last) {
                goto invalid;
            }

        } else {
            colon = ngx_strlchr(addr.data, last, ':');
            host.data = addr.data;
            host.len = (colon ? colon : last) - addr.data;
        }

        if (colon != NULL) {
            port.data = colon + 1;
            port.len = last - port.data;
            rcf->port = ngx_atoi(port.data, port.len);

            if (rcf->port < 1 || rcf->port > 65535) {
                goto invalid;
            }

        } else {
            rcf->port = 6379;
        }

        if (host.len == 0) {
            goto invalid;
        }

        /*
         * hiredis resolves names with a blocking getaddrinfo(); only
         * numeric addresses keep the worker from blocking
         */

        if (ngx_inet_addr(host.data, host.len) == INADDR_NONE) {
#if (NGX_HAVE_INET6)
            u_char  buf[16];

            if (ngx_inet6_addr(host.data, host.len, buf) != NGX_OK) {
                goto numeric;
            }
#else
            goto numeric;
#endif
        }

        rcf->host.len = host.len;
        rcf->host.data = ngx_pnalloc(cf->pool, host.len + 1);
        if (rcf->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(rcf->host.data, host.data, host.len) = '\0';
    }

    for (i = 1; i < nargs; i++) {

        if (args[i].len > 9
            && ngx_strncmp(args[i].data, "password=", 9) == 0)
        {
            s.len = args[i].len - 9;
            s.data = ngx_pnalloc(cf->pool, s.len + 1);
            if (s.data == NULL) {
                return NGX_CONF_ERROR;
            }

            *ngx_cpymem(s.data, args[i].data + 9, s.len) = '\0';
            rcf->password = s;
            continue;
        }

        if (args[i].len > 3 && ngx_strncmp(args[i].data, "db=", 3) == 0) {
            rcf->db = ngx_atoi(args[i].data + 3, args[i].len - 3);

            if (rcf->db == NGX_ERROR || rcf->db > 1000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid redis database \"%V\"", &args[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (args[i].len > 16
            && ngx_strncmp(args[i].data, "connect_timeout=", 16) == 0)
        {
            s.data = args[i].data + 16;
            s.len = args[i].len - 16;
            rcf->connect_timeout = ngx_parse_time(&s, 0);

            if (rcf->connect_timeout == (ngx_msec_t) NGX_ERROR
                || rcf->connect_timeout == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid redis connect timeout \"%V\"",
                                   &args[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (args[i].len > 12
            && ngx_strncmp(args[i].data, "max_backoff=", 12) == 0)
        {
            s.data = args[i].data + 12;
            s.len = args[i].len - 12;
            rcf->backoff_max = ngx_parse_time(&s, 0);

            if (rcf->backoff_max == (ngx_msec_t) NGX_ERROR
                || rcf->backoff_max < NGX_DSTACK_REDIS_BACKOFF_MIN)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid redis backoff \"%V\"", &args[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        /* the value may be a password: do not echo it */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis parameter #%ui", i + 1);
        return NGX_CONF_ERROR;
    }

    if (rcf->connect_timeout == 0) {
        rcf->connect_timeout = 1000;
    }

    if (rcf->backoff_max == 0) {
        rcf->backoff_max = 2000;
    }

    return NGX_CONF_OK;

numeric:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "redis address \"%V\" must be a numeric IP address "
                       "or \"unix:\" path", &addr);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis address \"%V\"", &addr);
    return NGX_CONF_ERROR;
}


ngx_dstack_redis_script_t *
ngx_dstack_redis_add_script(ngx_conf_t *cf, ngx_dstack_redis_conf_t *rcf,
    ngx_str_t *source)
{
    u_char                      digest[20];
    ngx_sha1_t                  sha1;
    ngx_dstack_redis_script_t  *script, **sp;

    if (rcf->scripts.elts == NULL) {
        if (ngx_array_init(&rcf->scripts, cf->pool, 8,
                           sizeof(ngx_dstack_redis_script_t *))
            != NGX_OK)
        {
            return NULL;
        }
    }

    script = ngx_pcalloc(cf->pool, sizeof(ngx_dstack_redis_script_t));
    if (script == NULL) {
        return NULL;
    }

    sp = ngx_array_push(&rcf->scripts);
    if (sp == NULL) {
        return NULL;
    }

    *sp = script;
    script->source = *source;

    /* Redis names a script by the SHA1 of its text */
    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, source->data, source->len);
    ngx_sha1_final(digest, &sha1);

    ngx_hex_dump(script->sha1, digest, sizeof(digest));

    return script;
}


/* the per-worker client */

ngx_dstack_redis_t *
ngx_dstack_redis_create(ngx_cycle_t *cycle, ngx_dstack_redis_conf_t *rcf)
{
    ngx_dstack_redis_t  *rds;

    rds = ngx_pcalloc(cycle->pool, sizeof(ngx_dstack_redis_t));
    if (rds == NULL) {
        return NULL;
    }

    rds->conf = rcf;
    rds->log = cycle->log;
    rds->error = "redis is not connected";

    ngx_queue_init(&rds->inflight);
    ngx_queue_init(&rds->channels);

    ngx_dstack_redis_link_init(rds, &rds->cmd, "command", 0);
    ngx_dstack_redis_link_init(rds, &rds->sub, "pub/sub", 1);

    /* connect from the event loop, not from init_process */
    ngx_add_timer(&rds->cmd.timer, 1);

    return rds;
}


void
ngx_dstack_redis_destroy(ngx_dstack_redis_t *rds)
{
    ngx_uint_t                   i;
    ngx_queue_t                 *q;
    redisAsyncContext           *ac;
    ngx_dstack_redis_cmd_t      *cmd;
    ngx_dstack_redis_sub_t      *sub;
    ngx_dstack_redis_link_t     *links[2];
    ngx_dstack_redis_channel_t  *ch;

    rds->exiting = 1;

    for (q = ngx_queue_head(&rds->inflight);
         q != ngx_queue_sentinel(&rds->inflight);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_dstack_redis_cmd_t, queue);
        ngx_dstack_redis_cancel(cmd);
    }

    links[0] = &rds->cmd;
    links[1] = &rds->sub;

    for (i = 0; i < 2; i++) {
        if (links[i]->timer.timer_set) {
            ngx_del_timer(&links[i]->timer);
        }

        ac = links[i]->ac;
        links[i]->ac = NULL;
        links[i]->state = NGX_DSTACK_REDIS_IDLE;

        if (ac != NULL) {
            /* replies still due come back as NULL and free their commands */
            redisAsyncFree(ac);
        }
    }

    while (!ngx_queue_empty(&rds->channels)) {
        q = ngx_queue_head(&rds->channels);
        ch = ngx_queue_data(q, ngx_dstack_redis_channel_t, queue);

        while (!ngx_queue_empty(&ch->subs)) {
            sub = ngx_queue_data(ngx_queue_head(&ch->subs),
                                 ngx_dstack_redis_sub_t, queue);
            ngx_dstack_redis_sub_free(sub);
        }

        ngx_queue_remove(q);
        ngx_free(ch);
    }
}


const char *
ngx_dstack_redis_error(ngx_dstack_redis_t *rds)
{
    return rds->error;
}


ngx_uint_t
ngx_dstack_redis_ready(ngx_dstack_redis_t *rds)
{
    return rds->cmd.state == NGX_DSTACK_REDIS_READY;
}


/* links */

static void
ngx_dstack_redis_link_init(ngx_dstack_redis_t *rds,
    ngx_dstack_redis_link_t *link, const char *name, ngx_uint_t subscriber)
{
    link->rds = rds;
    link->name = name;
    link->subscriber = subscriber;
    link->state = NGX_DSTACK_REDIS_IDLE;
    link->backoff = NGX_DSTACK_REDIS_BACKOFF_MIN;

    ngx_cpystrn((u_char *) link->err, (u_char *) "redis is not connected",
                sizeof(link->err));

    link->timer.handler = ngx_dstack_redis_link_timer;
    link->timer.data = link;
    link->timer.log = rds->log;
    link->timer.cancelable = 1;
}


static void
ngx_dstack_redis_link_connect(ngx_dstack_redis_link_t *link)
{
    ngx_event_t              *rev, *wev;
    ngx_connection_t         *c;
    redisAsyncContext        *ac;
    ngx_dstack_redis_t       *rds;
    ngx_dstack_redis_conf_t  *rcf;

    rds = link->rds;
    rcf = rds->conf;

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    if (rcf->path.len) {
        ac = redisAsyncConnectUnix((char *) rcf->path.data);

    } else {
        ac = redisAsyncConnect((char *) rcf->host.data, (int) rcf->port);
    }

    if (ac == NULL) {
        ngx_dstack_redis_link_fail(link, "connect failed: out of memory");
        return;
    }

    if (ac->err) {
        ngx_snprintf((u_char *) link->err, sizeof(link->err) - 1,
                     "connect failed: %s%Z", ac->errstr);
        redisAsyncFree(ac);
        ngx_dstack_redis_link_fail(link, NULL);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rds->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_dstack_redis_link_fail(link, "no free worker connection");
        return;
    }

    rev = c->read;
    wev = c->write;

    c->data = link;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->start_time = ngx_current_msec;

    rev->handler = ngx_dstack_redis_read_handler;
    wev->handler = ngx_dstack_redis_write_handler;
    rev->log = rds->log;
    wev->log = rds->log;

    if (ngx_add_conn) {
        if (ngx_add_conn(c) == NGX_ERROR) {
            goto failed;
        }

    } else {
        if (ngx_add_event(rev, NGX_READ_EVENT, NGX_CLEAR_EVENT) != NGX_OK
            || ngx_add_event(wev, NGX_WRITE_EVENT, NGX_CLEAR_EVENT) != NGX_OK)
        {
            goto failed;
        }
    }

    link->ac = ac;
    link->conn = c;
    link->conn_gone = 0;

    ac->data = link;
    ac->ev.data = link;
    ac->ev.addRead = ngx_dstack_redis_ev_noop;
    ac->ev.delRead = ngx_dstack_redis_ev_noop;
    ac->ev.addWrite = ngx_dstack_redis_ev_add_write;
    ac->ev.delWrite = ngx_dstack_redis_ev_noop;
    ac->ev.cleanup = ngx_dstack_redis_ev_cleanup;

    (void) redisAsyncSetConnectCallback(ac, ngx_dstack_redis_on_connect);
    (void) redisAsyncSetDisconnectCallback(ac,
                                           ngx_dstack_redis_on_disconnect);
    if (rcf->path.len == 0 && redisEnableKeepAlive(&ac->c) != REDIS_OK) {
        ngx_dstack_redis_link_fail(link, "cannot enable TCP keepalive");
        return;
    }

    link->state = NGX_DSTACK_REDIS_CONNECTING;
    ngx_add_timer(&link->timer, rcf->connect_timeout);

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, rds->log, 0,
                   "redis %s link: connecting to %V, fd:%d",
                   link->name, &rcf->name, c->fd);

    if (ngx_dstack_redis_link_handshake(link) != NGX_OK) {
        ngx_dstack_redis_link_fail(link, "cannot queue the handshake");
    }

    return;

failed:

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
    redisAsyncFree(ac);
    ngx_dstack_redis_link_fail(link, "cannot watch the socket");
}


/*
 * The handshake is pipelined in front of whatever the worker queues
 * meanwhile: AUTH, SELECT, the scripts, then a PING that marks the link
 * ready.  A subscriber link then subscribes to every known channel.
 */

static ngx_int_t
ngx_dstack_redis_link_handshake(ngx_dstack_redis_link_t *link)
{
    u_char                       db[NGX_INT_T_LEN];
    size_t                       lens[3];
    ngx_uint_t                   i;
    const char                  *argv[3];
    ngx_queue_t                 *q;
    redisAsyncContext           *ac;
    ngx_dstack_redis_conf_t     *rcf;
    ngx_dstack_redis_script_t  **scripts;
    ngx_dstack_redis_channel_t  *ch;

    ac = link->ac;
    rcf = link->rds->conf;

    if (rcf->password.len) {
        argv[0] = "AUTH";
        lens[0] = 4;
        argv[1] = (const char *) rcf->password.data;
        lens[1] = rcf->password.len;

        if (redisAsyncCommandArgv(ac, ngx_dstack_redis_handshake_reply, link,
                                  2, argv, lens)
            != REDIS_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!link->subscriber) {

        if (rcf->db) {
            argv[0] = "SELECT";
            lens[0] = 6;
            argv[1] = (const char *) db;
            lens[1] = ngx_sprintf(db, "%i", rcf->db) - db;

            if (redisAsyncCommandArgv(ac, ngx_dstack_redis_handshake_reply,
                                      link, 2, argv, lens)
                != REDIS_OK)
            {
                return NGX_ERROR;
            }
        }

        scripts = rcf->scripts.elts;

        for (i = 0; i < rcf->scripts.nelts; i++) {
            argv[0] = "SCRIPT";
            lens[0] = 6;
            argv[1] = "LOAD";
            lens[1] = 4;
            argv[2] = (const char *) scripts[i]->source.data;
            lens[2] = scripts[i]->source.len;

            if (redisAsyncCommandArgv(ac, ngx_dstack_redis_handshake_reply,
                                      link, 3, argv, lens)
                != REDIS_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    argv[0] = "PING";
    lens[0] = 4;

    if (redisAsyncCommandArgv(ac, ngx_dstack_redis_handshake_done, link,
                              1, argv, lens)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    if (link->subscriber) {
        for (q = ngx_queue_head(&link->rds->channels);
             q != ngx_queue_sentinel(&link->rds->channels);
             q = ngx_queue_next(q))
        {
            ch = ngx_queue_data(q, ngx_dstack_redis_channel_t, queue);

            if (ngx_dstack_redis_send_subscribe(link, ch) != NGX_OK) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_dstack_redis_send_subscribe(ngx_dstack_redis_link_t *link,
    ngx_dstack_redis_channel_t *ch)
{
    size_t       lens[2];
    const char  *argv[2];

    argv[0] = "SUBSCRIBE";
    lens[0] = 9;
    argv[1] = (const char *) ch->name.data;
    lens[1] = ch->name.len;

    if (redisAsyncCommandArgv(link->ac, ngx_dstack_redis_sub_reply, ch,
                              2, argv, lens)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_dstack_redis_handshake_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_dstack_redis_link_t *link = privdata;

    u_char       buf[160];
    redisReply  *reply;

    reply = r;

    if (reply == NULL) {
        ngx_dstack_redis_link_lost(link, ac, "connection lost");
        return;
    }

    if (link->ac != ac || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    /* AUTH, SELECT or SCRIPT LOAD refused; Redis' text holds no secret */
    ngx_snprintf(buf, sizeof(buf) - 1, "handshake refused: %*s%Z",
                 (size_t) ngx_min(reply->len, 120), reply->str);

    ngx_dstack_redis_link_fail(link, (char *) buf);
}


static void
ngx_dstack_redis_handshake_done(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_dstack_redis_link_t *link = privdata;

    u_char       buf[160];
    redisReply  *reply;

    reply = r;

    if (reply == NULL) {
        ngx_dstack_redis_link_lost(link, ac, "connection lost");
        return;
    }

    if (link->ac != ac || link->state != NGX_DSTACK_REDIS_CONNECTING) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_snprintf(buf, sizeof(buf) - 1, "handshake refused: %*s%Z",
                     (size_t) ngx_min(reply->len, 120), reply->str);
        ngx_dstack_redis_link_fail(link, (char *) buf);
        return;
    }

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    if (link->failures) {
        ngx_log_error(NGX_LOG_NOTICE, link->rds->log, 0,
                      "redis %s link to \"%V\" is back after %ui failures",
                      link->name, &link->rds->conf->name, link->failures);
    }

    link->state = NGX_DSTACK_REDIS_READY;
    link->backoff = NGX_DSTACK_REDIS_BACKOFF_MIN;
    link->failures = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, link->rds->log, 0,
                   "redis %s link: ready", link->name);
}


static void
ngx_dstack_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_dstack_redis_link_t  *link;

    link = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context itself once this returns */
        ngx_dstack_redis_link_lost(link, ac, "connect failed");
    }
}


static void
ngx_dstack_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_dstack_redis_link_t  *link;

    link = ac->data;

    ngx_dstack_redis_link_lost(link, ac, "connection lost");
}


/*
 * The adapter gives up on a context: pending commands are answered with
 * the reason, and a new connection is tried after the backoff.
 */

static void
ngx_dstack_redis_link_fail(ngx_dstack_redis_link_t *link, const char *reason)
{
    redisAsyncContext  *ac;

    if (reason != NULL) {
        ngx_cpystrn((u_char *) link->err, (u_char *) reason,
                    sizeof(link->err));
    }

    ac = link->ac;
    link->ac = NULL;

    ngx_dstack_redis_link_retry(link);

    if (ac != NULL) {
        /* inside a hiredis callback this is deferred until it returns */
        redisAsyncFree(ac);
    }
}


/* hiredis gives up on a context: record why, once */

static void
ngx_dstack_redis_link_lost(ngx_dstack_redis_link_t *link,
    const redisAsyncContext *ac, const char *what)
{
    if (link->ac != ac) {
        return;
    }

    ngx_snprintf((u_char *) link->err, sizeof(link->err) - 1, "%s: %s%Z",
                 what, ac->errstr ? ac->errstr : "closed");

    link->ac = NULL;

    ngx_dstack_redis_link_retry(link);
}


static void
ngx_dstack_redis_link_retry(ngx_dstack_redis_link_t *link)
{
    ngx_uint_t             level;
    ngx_dstack_redis_t    *rds;
    ngx_dstack_metrics_t  *m;

    rds = link->rds;

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    if (rds->exiting) {
        link->state = NGX_DSTACK_REDIS_IDLE;
        return;
    }

    link->failures++;

    m = ngx_dstack_metrics(rds->conf->metrics);

    if (m != NULL) {
        ngx_dstack_metrics_inc(&m->redis_reconnects);
    }

    level = (link->failures == 1) ? NGX_LOG_ERR : NGX_LOG_INFO;

    ngx_log_error(level, rds->log, 0,
                  "redis %s link to \"%V\": %s, retrying in %Mms",
                  link->name, &rds->conf->name, link->err, link->backoff);

    link->state = NGX_DSTACK_REDIS_BACKOFF;
    ngx_add_timer(&link->timer, link->backoff);

    link->backoff = ngx_min(link->backoff * 2, rds->conf->backoff_max);
}


static void
ngx_dstack_redis_link_timer(ngx_event_t *ev)
{
    ngx_dstack_redis_link_t  *link;

    link = ev->data;

    if (link->rds->exiting) {
        return;
    }

    switch (link->state) {

    case NGX_DSTACK_REDIS_CONNECTING:
        ngx_dstack_redis_link_fail(link, "connect or handshake timed out");
        break;

    case NGX_DSTACK_REDIS_IDLE:
    case NGX_DSTACK_REDIS_BACKOFF:
        ngx_dstack_redis_link_connect(link);
        break;

    default:
        break;
    }
}


/* socket events */

static void
ngx_dstack_redis_read_handler(ngx_event_t *rev)
{
    char                      buf;
    ssize_t                   n;
    ngx_uint_t                i;
    ngx_connection_t         *c;
    ngx_dstack_redis_link_t  *link;

    c = rev->data;
    link = c->data;

    link->handling = 1;

    /*
     * hiredis reads 16 KiB per call and the event is edge-triggered:
     * read until the socket says EAGAIN, yielding now and then
     */

    for (i = 0; link->ac != NULL; i++) {

        redisAsyncHandleRead(link->ac);

        if (link->conn_gone || link->ac == NULL) {
            break;
        }

        n = recv(c->fd, &buf, 1, MSG_PEEK);

        if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
            break;
        }

        if (i == NGX_DSTACK_REDIS_READ_ROUNDS) {
            ngx_post_event(rev, &ngx_posted_events);
            break;
        }
    }

    link->handling = 0;

    if (link->conn_gone) {
        link->conn_gone = 0;
        ngx_free_connection(c);
    }
}


static void
ngx_dstack_redis_write_handler(ngx_event_t *wev)
{
    size_t                    before, after;
    ngx_uint_t                i;
    ngx_connection_t         *c;
    redisAsyncContext        *ac;
    ngx_dstack_redis_link_t  *link;

    c = wev->data;
    link = c->data;

    link->handling = 1;

    for (i = 0; link->ac != NULL; i++) {

        ac = link->ac;
        before = sdslen(ac->c.obuf);

        link->writing = 1;
        redisAsyncHandleWrite(ac);
        link->writing = 0;

        if (link->conn_gone || link->ac != ac) {
            break;
        }

        after = sdslen(ac->c.obuf);

        if (after == 0) {
            break;
        }

        if (after == before) {
            /* EAGAIN: wait for the next edge */
            wev->ready = 0;
            break;
        }

        if (i == NGX_DSTACK_REDIS_WRITE_ROUNDS) {
            ngx_post_event(wev, &ngx_posted_events);
            break;
        }
    }

    link->handling = 0;

    if (link->conn_gone) {
        link->conn_gone = 0;
        ngx_free_connection(c);
    }
}


static void
ngx_dstack_redis_ev_noop(void *data)
{
    /* the socket stays in the event set, edge-triggered, for its life */
}


/*
 * hiredis has queued output.  When the socket is known to be writable,
 * write from the posted events queue, so that the commands of one event
 * loop iteration leave in one write; otherwise the next edge does it.
 */

static void
ngx_dstack_redis_ev_add_write(void *data)
{
    ngx_dstack_redis_link_t *link = data;

    ngx_event_t  *wev;

    if (link->conn == NULL || link->writing) {
        return;
    }

    wev = link->conn->write;

    if (wev->ready && !wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


/* called by hiredis right before it closes the socket */

static void
ngx_dstack_redis_ev_cleanup(void *data)
{
    ngx_dstack_redis_link_t *link = data;

    ngx_connection_t  *c;

    c = link->conn;

    if (c == NULL) {
        return;
    }

    link->conn = NULL;

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (ngx_del_conn) {
        ngx_del_conn(c, NGX_CLOSE_EVENT);

    } else {
        if (c->read->active) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }

    c->read->closed = 1;
    c->write->closed = 1;
    c->fd = (ngx_socket_t) -1;

    if (link->handling) {
        /* the event handler on the stack frees it when hiredis returns */
        link->conn_gone = 1;
        return;
    }

    ngx_free_connection(c);
}


/* commands */

ngx_dstack_redis_cmd_t *
ngx_dstack_redis_command(ngx_dstack_redis_t *rds, ngx_pool_t *pool,
    int argc, const char **argv, const size_t *argvlen, ngx_msec_t timeout,
    ngx_dstack_redis_reply_pt handler, void *data)
{
    ngx_pool_cleanup_t       *cln;
    ngx_dstack_redis_cmd_t   *cmd;
    ngx_dstack_redis_link_t  *link;

    link = &rds->cmd;

    if (rds->exiting) {
        rds->error = "worker is shutting down";
        return NULL;
    }

    if (link->state == NGX_DSTACK_REDIS_IDLE) {
        ngx_dstack_redis_link_connect(link);
    }

    if (link->ac == NULL) {
        /* waiting out the backoff: fail now rather than queue */
        rds->error = link->err;
        return NULL;
    }

    cmd = ngx_calloc(sizeof(ngx_dstack_redis_cmd_t), rds->log);
    if (cmd == NULL) {
        rds->error = "out of memory";
        return NULL;
    }

    cln = NULL;

    if (pool != NULL) {
        cln = ngx_pool_cleanup_add(pool, 0);
        if (cln == NULL) {
            ngx_free(cmd);
            rds->error = "out of memory";
            return NULL;
        }
    }

    if (redisAsyncCommandArgv(link->ac, ngx_dstack_redis_cmd_reply, cmd,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_free(cmd);
        rds->error = "redis connection is closing";
        return NULL;
    }

    cmd->rds = rds;
    cmd->handler = handler;
    cmd->data = data;
    cmd->timeout = timeout;
    cmd->sent = ngx_dstack_metrics_now_us();

    if (cln != NULL) {
        cln->handler = ngx_dstack_redis_cmd_pool_cleanup;
        cln->data = cmd;
        cmd->cln = cln;
    }

    cmd->timer.handler = ngx_dstack_redis_cmd_timeout;
    cmd->timer.data = cmd;
    cmd->timer.log = rds->log;
    ngx_add_timer(&cmd->timer, timeout);

    ngx_queue_insert_tail(&rds->inflight, &cmd->queue);

    return cmd;
}


ngx_dstack_redis_cmd_t *
ngx_dstack_redis_eval(ngx_dstack_redis_t *rds, ngx_pool_t *pool,
    ngx_dstack_redis_script_t *script, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_msec_t timeout,
    ngx_dstack_redis_reply_pt handler, void *data)
{
    int                      i;
    u_char                   n[NGX_INT_T_LEN];
    size_t                   lens[NGX_DSTACK_REDIS_MAX_ARGS];
    const char              *args[NGX_DSTACK_REDIS_MAX_ARGS];
    ngx_dstack_redis_cmd_t  *cmd;

    if (argc + 3 > NGX_DSTACK_REDIS_MAX_ARGS) {
        rds->error = "too many arguments";
        return NULL;
    }

    args[0] = "EVALSHA";
    lens[0] = 7;
    args[1] = (const char *) script->sha1;
    lens[1] = sizeof(script->sha1);
    args[2] = (const char *) n;
    lens[2] = ngx_sprintf(n, "%d", nkeys) - n;

    for (i = 0; i < argc; i++) {
        args[i + 3] = argv[i];
        lens[i + 3] = argvlen[i];
    }

    cmd = ngx_dstack_redis_command(rds, pool, argc + 3, args, lens, timeout,
                                   handler, data);

    if (cmd != NULL) {
        cmd->script = 1;
    }

    return cmd;
}


void
ngx_dstack_redis_cancel(ngx_dstack_redis_cmd_t *cmd)
{
    /*
     * The timer stays: should the reply never come, the timeout still
     * resets the link.
     */

    cmd->handler = NULL;

    if (cmd->cln != NULL) {
        cmd->cln->handler = NULL;
        cmd->cln = NULL;
    }
}


static void
ngx_dstack_redis_cmd_pool_cleanup(void *data)
{
    ngx_dstack_redis_cmd_t *cmd = data;

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, cmd->rds->log, 0,
                   "redis: command owner gone, reply will be dropped");

    cmd->cln = NULL;
    cmd->handler = NULL;
}


static void
ngx_dstack_redis_cmd_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_dstack_redis_cmd_t *cmd = privdata;

    void                       *data;
    ngx_uint_t                  script;
    redisReply                 *reply;
    ngx_dstack_metrics_t       *m;
    ngx_dstack_redis_link_t    *link;
    ngx_dstack_redis_reply_pt   handler;

    reply = r;
    link = ac->data;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    ngx_queue_remove(&cmd->queue);

    if (cmd->cln != NULL) {
        cmd->cln->handler = NULL;
    }

    handler = cmd->handler;
    data = cmd->data;
    script = cmd->script;

    m = ngx_dstack_metrics(cmd->rds->conf->metrics);

    if (m != NULL && reply != NULL) {
        ngx_dstack_metrics_observe(&m->redis_rtt,
                                   ngx_dstack_metrics_now_us() - cmd->sent);
    }

    ngx_free(cmd);

    if (reply == NULL) {
        ngx_dstack_redis_link_lost(link, ac, "connection lost");

        if (handler != NULL) {
            handler(data, NULL, link->err);
        }

        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && link->ac == ac) {

        if (script
            && reply->len >= 8
            && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
        {
            /* someone ran SCRIPT FLUSH: reconnect, which loads them again */
            ngx_dstack_redis_link_fail(link, "scripts missing from Redis");

        } else if (reply->len >= 8
                   && ngx_strncmp(reply->str, "READONLY", 8) == 0)
        {
            /*
             * a replica now: after a failover, a proxy in front of Redis
             * (HAProxy, a Sentinel-aware one) sends a new connection to
             * the new primary
             */
            ngx_dstack_redis_link_fail(link, "Redis is a read-only replica");
        }
    }

    if (handler != NULL) {
        handler(data, reply, NULL);
    }
}


static void
ngx_dstack_redis_cmd_timeout(ngx_event_t *ev)
{
    ngx_dstack_redis_cmd_t *cmd = ev->data;

    void                       *data;
    u_char                      buf[64];
    ngx_dstack_redis_t         *rds;
    ngx_dstack_redis_link_t    *link;
    ngx_dstack_redis_reply_pt   handler;

    rds = cmd->rds;
    link = &rds->cmd;

    handler = cmd->handler;
    data = cmd->data;

    ngx_dstack_redis_cancel(cmd);

    ngx_snprintf(buf, sizeof(buf) - 1, "no reply within %Mms%Z",
                 cmd->timeout);

    /* frees cmd: hiredis answers every pending command with NULL */
    if (link->ac != NULL) {
        ngx_dstack_redis_link_fail(link, (char *) buf);
    }

    if (handler != NULL) {
        handler(data, NULL, (char *) buf);
    }
}


/* pub/sub */

ngx_dstack_redis_sub_t *
ngx_dstack_redis_subscribe(ngx_dstack_redis_t *rds, ngx_str_t *channel,
    ngx_dstack_redis_message_pt handler, void *data)
{
    ngx_uint_t                   fresh;
    ngx_queue_t                 *q;
    ngx_dstack_redis_sub_t      *sub;
    ngx_dstack_redis_link_t     *link;
    ngx_dstack_redis_channel_t  *ch;

    if (rds->exiting) {
        return NULL;
    }

    link = &rds->sub;
    ch = NULL;
    fresh = 0;

    for (q = ngx_queue_head(&rds->channels);
         q != ngx_queue_sentinel(&rds->channels);
         q = ngx_queue_next(q))
    {
        ch = ngx_queue_data(q, ngx_dstack_redis_channel_t, queue);

        if (ch->name.len == channel->len
            && ngx_strncmp(ch->name.data, channel->data, channel->len) == 0)
        {
            break;
        }

        ch = NULL;
    }

    if (ch == NULL) {
        ch = ngx_calloc(sizeof(ngx_dstack_redis_channel_t) + channel->len + 1,
                        rds->log);
        if (ch == NULL) {
            return NULL;
        }

        ch->rds = rds;
        ch->name.len = channel->len;
        ch->name.data = (u_char *) (ch + 1);
        ngx_memcpy(ch->name.data, channel->data, channel->len);

        ngx_queue_init(&ch->subs);
        ngx_queue_insert_tail(&rds->channels, &ch->queue);
        fresh = 1;
    }

    sub = ngx_calloc(sizeof(ngx_dstack_redis_sub_t), rds->log);
    if (sub == NULL) {
        return NULL;
    }

    sub->channel = ch;
    sub->handler = handler;
    sub->data = data;
    sub->ready.handler = ngx_dstack_redis_sub_ready;
    sub->ready.data = sub;
    sub->ready.log = rds->log;

    ngx_queue_insert_tail(&ch->subs, &sub->queue);

    /*
     * Channels stay subscribed for the worker's life: hiredis 0.14 keeps
     * its own books on pending (un)subscriptions, and a few idle
     * channels cost Redis nothing.
     */

    if (fresh && link->ac != NULL) {
        if (ngx_dstack_redis_send_subscribe(link, ch) != NGX_OK) {
            ngx_dstack_redis_link_fail(link, "cannot queue SUBSCRIBE");
        }
    }

    if (link->state == NGX_DSTACK_REDIS_IDLE) {
        ngx_dstack_redis_link_connect(link);
    }

    if (ch->active) {
        /* tell the newcomer from the event loop, as for everyone else */
        ngx_post_event(&sub->ready, &ngx_posted_events);
    }

    return sub;
}


void
ngx_dstack_redis_unsubscribe(ngx_dstack_redis_sub_t *sub)
{
    if (sub->ready.posted) {
        ngx_delete_posted_event(&sub->ready);
    }

    if (sub->channel->notifying) {
        /* removed by ngx_dstack_redis_sub_notify() when it is done */
        sub->handler = NULL;
        return;
    }

    ngx_dstack_redis_sub_free(sub);
}


static void
ngx_dstack_redis_sub_free(ngx_dstack_redis_sub_t *sub)
{
    if (sub->ready.posted) {
        ngx_delete_posted_event(&sub->ready);
    }

    ngx_queue_remove(&sub->queue);
    ngx_free(sub);
}


static void
ngx_dstack_redis_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_dstack_redis_channel_t *ch = privdata;

    ngx_str_t                 msg;
    redisReply               *reply, *kind;
    ngx_dstack_redis_link_t  *link;

    reply = r;
    link = &ch->rds->sub;

    if (reply == NULL) {
        ngx_dstack_redis_link_lost(link, ac, "connection lost");
        ch->active = 0;
        ngx_dstack_redis_sub_notify(ch, NGX_DSTACK_REDIS_SUB_LOST, NULL);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
        return;
    }

    kind = reply->element[0];

    if (kind->type != REDIS_REPLY_STRING) {
        return;
    }

    if (kind->len == 9 && ngx_strncmp(kind->str, "subscribe", 9) == 0) {
        ch->active = 1;
        ngx_dstack_redis_sub_notify(ch, NGX_DSTACK_REDIS_SUB_READY, NULL);
        return;
    }

    if (kind->len == 7
        && ngx_strncmp(kind->str, "message", 7) == 0
        && reply->element[2]->type == REDIS_REPLY_STRING)
    {
        msg.data = (u_char *) reply->element[2]->str;
        msg.len = reply->element[2]->len;
        ngx_dstack_redis_sub_notify(ch, NGX_DSTACK_REDIS_SUB_MESSAGE, &msg);
    }
}


static void
ngx_dstack_redis_sub_notify(ngx_dstack_redis_channel_t *ch,
    ngx_uint_t event, ngx_str_t *message)
{
    ngx_queue_t             *q, *next;
    ngx_dstack_redis_sub_t  *sub;

    if (ch->rds->exiting) {
        return;
    }

    ch->notifying = 1;

    for (q = ngx_queue_head(&ch->subs);
         q != ngx_queue_sentinel(&ch->subs);
         q = ngx_queue_next(q))
    {
        sub = ngx_queue_data(q, ngx_dstack_redis_sub_t, queue);

        if (sub->handler != NULL) {
            sub->handler(sub->data, event, message);
        }
    }

    ch->notifying = 0;

    for (q = ngx_queue_head(&ch->subs);
         q != ngx_queue_sentinel(&ch->subs);
         q = next)
    {
        next = ngx_queue_next(q);
        sub = ngx_queue_data(q, ngx_dstack_redis_sub_t, queue);

        if (sub->handler == NULL) {
            ngx_dstack_redis_sub_free(sub);
        }
    }
}


static void
ngx_dstack_redis_sub_ready(ngx_event_t *ev)
{
    ngx_dstack_redis_sub_t *sub = ev->data;

    if (sub->handler != NULL && sub->channel->active) {
        sub->handler(sub->data, NGX_DSTACK_REDIS_SUB_READY, NULL);
    }
}
