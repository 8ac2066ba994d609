
/*
 * Internal declarations shared by the files of ngx_dstack_vpc_api_module.
 */


#ifndef _NGX_HTTP_DSTACK_VPC_API_H_INCLUDED_
#define _NGX_HTTP_DSTACK_VPC_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_dstack_redis.h"
#include "ngx_dstack_metrics.h"


#define NGX_HTTP_DSTACK_VPC_API_CACHE_ENTRIES  1024
#define NGX_HTTP_DSTACK_VPC_API_CACHE_SIZE     (4 * 1024 * 1024)
#define NGX_HTTP_DSTACK_VPC_API_CACHE_VALID    10000


typedef struct ngx_http_dstack_vpc_api_cache_s
    ngx_http_dstack_vpc_api_cache_t;


typedef struct {
    ngx_dstack_redis_conf_t     redis;
    ngx_str_t                   prefix;
    ngx_msec_t                  timeout;
    ngx_dstack_redis_script_t  *lua_register;
    ngx_dstack_redis_script_t  *lua_update;
    ngx_dstack_redis_script_t  *lua_discover;
    ngx_dstack_redis_script_t  *lua_nodes;
    ngx_dstack_redis_t         *rds;          /* this worker's client */
    ngx_int_t                   app_id_index;
    ngx_uint_t                  enabled;      /* some location serves */
    ngx_uint_t                  cache_entries;  /* 0: no cache */
    size_t                      cache_size;
    ngx_msec_t                  cache_valid;
    ngx_http_dstack_vpc_api_cache_t  *cache;  /* this worker's */
} ngx_http_dstack_vpc_api_main_conf_t;


extern ngx_module_t  ngx_http_dstack_vpc_api_module;

extern ngx_str_t  ngx_http_dstack_vpc_api_lua_register;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_update;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_discover;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_nodes;


/* discover and nodes: ngx_http_dstack_vpc_api_cache.c */
ngx_int_t ngx_http_dstack_vpc_api_cache_init(ngx_cycle_t *cycle,
    ngx_http_dstack_vpc_api_main_conf_t *amcf);
void ngx_http_dstack_vpc_api_cache_done(
    ngx_http_dstack_vpc_api_main_conf_t *amcf);
ngx_int_t ngx_http_dstack_vpc_api_cache_get(ngx_http_request_t *r,
    ngx_uint_t discover, ngx_str_t *type, ngx_buf_t **b, ngx_uint_t *gen);
void ngx_http_dstack_vpc_api_cache_put(ngx_http_request_t *r,
    ngx_uint_t discover, ngx_str_t *type, ngx_str_t *doc, ngx_uint_t gen);
void ngx_http_dstack_vpc_api_cache_flush(
    ngx_http_dstack_vpc_api_main_conf_t *amcf);
char *ngx_http_dstack_vpc_api_cache_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


/* POST /machine/..., the caller identified and allowed */
ngx_int_t ngx_http_dstack_vpc_cp_handler(ngx_http_request_t *r,
    ngx_str_t *app_id);


#endif /* _NGX_HTTP_DSTACK_VPC_API_H_INCLUDED_ */
