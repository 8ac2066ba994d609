
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
} ngx_http_dstack_vpc_api_main_conf_t;


extern ngx_module_t  ngx_http_dstack_vpc_api_module;

extern ngx_str_t  ngx_http_dstack_vpc_api_lua_register;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_update;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_discover;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_nodes;


/* POST /machine/..., the caller identified and allowed */
ngx_int_t ngx_http_dstack_vpc_cp_handler(ngx_http_request_t *r,
    ngx_str_t *app_id);


#endif /* _NGX_HTTP_DSTACK_VPC_API_H_INCLUDED_ */
