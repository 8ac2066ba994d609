
/*
 * What the control plane's files share: ngx_http_dstack_vpc_cp_module.c
 * (requests, streams, configuration), ngx_http_dstack_vpc_cp_events.c
 * (pub/sub fan-out, change framing, the expiry sweep),
 * ngx_http_dstack_vpc_cp_cache.c (each worker's copy of the map) and
 * ngx_http_dstack_vpc_cp_node.c (node checks, JSON rendering, output
 * buffers).
 */


#ifndef _NGX_HTTP_DSTACK_VPC_CP_H_INCLUDED_
#define _NGX_HTTP_DSTACK_VPC_CP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_dstack_redis.h"
#include "ngx_dstack_vpc_check.h"
#include "ngx_http_dstack_vpc_api.h"
#include "ngx_http_dstack_vpc_cp_lua.h"


#define NGX_HTTP_DSTACK_VPC_CP_REGISTER       1
#define NGX_HTTP_DSTACK_VPC_CP_MAP            2
#define NGX_HTTP_DSTACK_VPC_CP_LOGOUT         3

/* a stream's life */
#define NGX_HTTP_DSTACK_VPC_CP_WAITING        1   /* for the subscription */
#define NGX_HTTP_DSTACK_VPC_CP_POLLING        2   /* for the full map */
#define NGX_HTTP_DSTACK_VPC_CP_LIVE           3
#define NGX_HTTP_DSTACK_VPC_CP_DONE           4

#define NGX_HTTP_DSTACK_VPC_CP_BODY_MAX       16384
#define NGX_HTTP_DSTACK_VPC_CP_JSON_DEPTH     8
#define NGX_HTTP_DSTACK_VPC_CP_KEY_LEN        64
#define NGX_HTTP_DSTACK_VPC_CP_AUTH_KEY_MAX   512
#define NGX_HTTP_DSTACK_VPC_CP_KEY_ID_LEN     12
#define NGX_HTTP_DSTACK_VPC_CP_KEY_SECRET_LEN 64
#define NGX_HTTP_DSTACK_VPC_CP_LABEL_MAX      63
#define NGX_HTTP_DSTACK_VPC_CP_HOSTNAME_MAX   255
#define NGX_HTTP_DSTACK_VPC_CP_ID_MAX         128
#define NGX_HTTP_DSTACK_VPC_CP_APP_ID_LEN     40
#define NGX_HTTP_DSTACK_VPC_CP_TYPE_MAX       32
#define NGX_HTTP_DSTACK_VPC_CP_ENDPOINTS_MAX  16
#define NGX_HTTP_DSTACK_VPC_CP_ENDPOINT_MAX   47   /* [v6%scope]:port */
#define NGX_HTTP_DSTACK_VPC_CP_FRAME_MAX      (8 << 20)  /* wgctl's too */
#define NGX_HTTP_DSTACK_VPC_CP_BUF_SIZE       4096
#define NGX_HTTP_DSTACK_VPC_CP_RING           256
#define NGX_HTTP_DSTACK_VPC_CP_HELD_MAX       (NGX_HTTP_DSTACK_VPC_CP_RING / 2)
#define NGX_HTTP_DSTACK_VPC_CP_SWEEP_BATCH    "1000"
#define NGX_HTTP_DSTACK_VPC_CP_WAIT_READY     5000  /* ms */
#define NGX_HTTP_DSTACK_VPC_CP_DOMAIN         "dstack.internal"

#define NGX_HTTP_DSTACK_VPC_CP_ZERO_TIME      "0001-01-01T00:00:00Z"

/* dstack_vpc_control_wg_path: the nodes' WireGuard packet path */
#define NGX_HTTP_DSTACK_VPC_CP_WG_AUTO        0
#define NGX_HTTP_DSTACK_VPC_CP_WG_DIRECT      1
#define NGX_HTTP_DSTACK_VPC_CP_WG_RELAY       2



/* the latest pub/sub messages of this worker */
typedef struct {
    uint64_t                    seq;
    size_t                      len;
    size_t                      size;
    u_char                     *data;
} ngx_http_dstack_vpc_cp_event_t;


/* a growing buffer for a frame or a response */
typedef struct {
    u_char                     *start;
    u_char                     *last;
    u_char                     *end;
} ngx_http_dstack_vpc_cp_out_t;


/* a node as poll answers it, or as an "up" message carries it */
typedef struct {
    ngx_str_t                   f[NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS];
} ngx_http_dstack_vpc_cp_node_t;


/* a node in this worker's copy of the map (ngx_http_dstack_vpc_cp_cache.c) */
typedef struct {
    ngx_rbtree_node_t           node;         /* key: the node's id */
    ngx_http_dstack_vpc_cp_node_t  rec;       /* into the same allocation */
    ngx_str_t                   json;
    time_t                      expiry;       /* 0: none */
    unsigned                    valid:1;
} ngx_http_dstack_vpc_cp_entry_t;


typedef struct {
    ngx_rbtree_t                tree;
    ngx_rbtree_node_t           sentinel;
    uint64_t                    seq;          /* the last change in it */
    ngx_uint_t                  n;
    size_t                      bytes;        /* the valid entries' JSON */
    ngx_uint_t                  gen;          /* +1 each time it is dropped */
    ngx_uint_t                  load_gen;
    ngx_dstack_redis_cmd_t     *loading;
    ngx_msec_t                  tried;        /* the last load's start */
    ngx_http_dstack_vpc_cp_out_t  tmp;

    unsigned                    valid:1;
    unsigned                    tried_once:1;
} ngx_http_dstack_vpc_cp_cache_t;


typedef struct {
    ngx_msec_t                  keepalive;
    time_t                      inactivity;
    ngx_msec_t                  sweep_interval;
    ngx_msec_t                  coalesce;
    size_t                      stream_buffer;
    ngx_uint_t                  wg_path;
    uint32_t                    base;         /* the prefix, host order */
    uint32_t                    size;         /* addresses in it */
    ngx_str_t                   pool;         /* the prefix as written */
    ngx_str_t                   base_text;
    ngx_str_t                   size_text;
    ngx_str_t                   inactivity_text;
    ngx_str_t                   interval_text;
    ngx_str_t                   channel;

    /* per-app limits (docs/control-plane.md, "Limits") */
    ngx_uint_t                  max_nodes;          /* in Redis */
    ngx_uint_t                  max_streams_node;   /* in this worker */
    ngx_uint_t                  max_streams_app;    /* in this worker */
    ngx_str_t                   max_nodes_text;
    ngx_flag_t                  map_cache;

    ngx_dstack_redis_script_t  *lua_register;
    ngx_dstack_redis_script_t  *lua_poll;
    ngx_dstack_redis_script_t  *lua_touch;
    ngx_dstack_redis_script_t  *lua_logout;
    ngx_dstack_redis_script_t  *lua_sweep;

    ngx_http_dstack_vpc_api_main_conf_t  *amcf;

    /* this worker's */
    ngx_log_t                  *log;
    ngx_dstack_redis_sub_t     *sub;
    ngx_dstack_redis_cmd_t     *sweeping;
    ngx_queue_t                 streams;
    ngx_uint_t                  nstreams;
    ngx_event_t                 timer;        /* subscribe, then sweep */
    uint64_t                    last_seq;     /* 0: none since READY */
    ngx_http_dstack_vpc_cp_event_t  *ring;
    ngx_uint_t                  ring_next;
    ngx_http_dstack_vpc_cp_out_t     scratch;

    /* changes held for the next frame (dstack_vpc_control_coalesce) */
    struct ngx_http_dstack_vpc_cp_change_s  *held;
    ngx_uint_t                  nheld;
    ngx_event_t                 flush;
    ngx_msec_t                  flushed;      /* the last frame's time */
    uint64_t                    held_since;   /* us, for the metric */

    /* dstack_vpc_control_map_cache */
    ngx_http_dstack_vpc_cp_cache_t  cache;

    u_char                      caller[NGX_INT_T_LEN];
    size_t                      caller_len;

    unsigned                    ready:1;      /* subscription active */
} ngx_http_dstack_vpc_cp_main_conf_t;


/* what a request asked, checked and copied out of its JSON */
typedef struct {
    ngx_str_t                   key;          /* 64 lowercase hex */
    ngx_str_t                   auth_key;
    ngx_str_t                   label;        /* sanitized host name */
    ngx_str_t                   instance_id;
    ngx_str_t                   node_type;
    ngx_str_t                   endpoints;    /* comma-separated */
    time_t                      expiry;       /* 0: none */

    unsigned                    ephemeral:1;
    unsigned                    has_endpoints:1;
    unsigned                    stream:1;
} ngx_http_dstack_vpc_cp_req_t;


typedef struct {
    ngx_queue_t                 queue;        /* in cmcf->streams */
    ngx_http_request_t         *request;
    ngx_http_dstack_vpc_cp_main_conf_t  *cmcf;
    ngx_uint_t                  endpoint;
    ngx_uint_t                  state;
    ngx_str_t                   app_id;
    ngx_http_dstack_vpc_cp_req_t  req;

    ngx_str_t                   id;           /* this node's, decimal */
    uint64_t                    seq;          /* in the map up to here */

    ngx_chain_t                *free;
    ngx_chain_t                *busy;
    size_t                      pending;      /* bytes not yet sent */
    ngx_event_t                 timer;        /* keepalive, or the wait */
    ngx_event_t                 close;        /* posted by stream_end() */
    ngx_int_t                   close_rc;
    ngx_dstack_redis_cmd_t     *touch;

    unsigned                    linked:1;
    unsigned                    cached:1;     /* poll without the nodes */
    unsigned                    full:1;       /* poll with them */
} ngx_http_dstack_vpc_cp_ctx_t;


#define NGX_HTTP_DSTACK_VPC_CP_UP             1
#define NGX_HTTP_DSTACK_VPC_CP_RM             2
#define NGX_HTTP_DSTACK_VPC_CP_ON             3
#define NGX_HTTP_DSTACK_VPC_CP_EP             4

/* one pub/sub message */
typedef struct ngx_http_dstack_vpc_cp_change_s {
    uint64_t                    seq;
    ngx_uint_t                  kind;
    ngx_str_t                   id;
    ngx_str_t                   arg[2];       /* on: online, last seen;
                                                 ep: endpoints */
    ngx_http_dstack_vpc_cp_node_t  node;      /* up */
    unsigned                    valid:1;      /* up: node passed checks */
    unsigned                    expired:1;    /* up: its key expired */
} ngx_http_dstack_vpc_cp_change_t;


ngx_int_t ngx_http_dstack_vpc_cp_poll(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx);
ngx_int_t ngx_http_dstack_vpc_cp_send(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, u_char *data, size_t len);
void ngx_http_dstack_vpc_cp_stream_end(ngx_http_request_t *r,
    ngx_int_t rc);
void ngx_http_dstack_vpc_cp_apply(ngx_http_request_t *r,
    ngx_http_dstack_vpc_cp_ctx_t *ctx, uint64_t seq, ngx_str_t *message);
void ngx_http_dstack_vpc_cp_flush(ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
void ngx_http_dstack_vpc_cp_flush_handler(ngx_event_t *ev);
void ngx_http_dstack_vpc_cp_sweep(ngx_event_t *ev);
void ngx_http_dstack_vpc_cp_wake(ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
ngx_int_t ngx_http_dstack_vpc_cp_change_parse(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf, ngx_str_t *message,
    ngx_http_dstack_vpc_cp_change_t *ch);
void ngx_http_dstack_vpc_cp_cache_init(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
void ngx_http_dstack_vpc_cp_cache_drop(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
void ngx_http_dstack_vpc_cp_cache_load(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
void ngx_http_dstack_vpc_cp_cache_want(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf);
ngx_int_t ngx_http_dstack_vpc_cp_cache_build(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf, redisReply *reply);
void ngx_http_dstack_vpc_cp_cache_change(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_http_dstack_vpc_cp_change_t *ch);
ngx_http_dstack_vpc_cp_entry_t *ngx_http_dstack_vpc_cp_cache_find(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf, ngx_str_t *id);
ngx_int_t ngx_http_dstack_vpc_cp_node_valid(
    ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_http_dstack_vpc_cp_node_t *node);
ngx_uint_t ngx_http_dstack_vpc_cp_node_expired(
    ngx_http_dstack_vpc_cp_node_t *node);
ngx_int_t ngx_http_dstack_vpc_cp_node_json(
    ngx_http_dstack_vpc_cp_out_t *out, ngx_http_dstack_vpc_cp_node_t *node);
ngx_int_t ngx_http_dstack_vpc_cp_endpoint_valid(u_char *p,
    size_t len);
void ngx_http_dstack_vpc_cp_sanitize(ngx_str_t *s);
ngx_int_t ngx_http_dstack_vpc_cp_label(ngx_str_t *s);
ngx_int_t ngx_http_dstack_vpc_cp_digits(ngx_str_t *s, size_t max);
ngx_int_t ngx_http_dstack_vpc_cp_hex(ngx_str_t *s, size_t max);
ngx_uint_t ngx_http_dstack_vpc_cp_json_depth(u_char *p, size_t len);
u_char *ngx_http_dstack_vpc_cp_time(u_char *p, ngx_str_t *unix_time);
ngx_int_t ngx_http_dstack_vpc_cp_out_reserve(
    ngx_http_dstack_vpc_cp_out_t *out, size_t len);
void ngx_http_dstack_vpc_cp_out_free(
    ngx_http_dstack_vpc_cp_out_t *out);
ngx_int_t ngx_http_dstack_vpc_cp_frame_start(
    ngx_http_dstack_vpc_cp_out_t *out);
void ngx_http_dstack_vpc_cp_frame_end(
    ngx_http_dstack_vpc_cp_out_t *out);
void ngx_http_dstack_vpc_cp_finalize(ngx_http_request_t *r,
    ngx_int_t rc);


extern ngx_module_t  ngx_http_dstack_vpc_cp_module;


#endif /* _NGX_HTTP_DSTACK_VPC_CP_H_INCLUDED_ */
