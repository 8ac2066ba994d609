
/*
 * Internal declarations shared by the files of ngx_dstack_vpc_api_module.
 */


#ifndef _NGX_HTTP_DSTACK_VPC_API_H_INCLUDED_
#define _NGX_HTTP_DSTACK_VPC_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


extern ngx_str_t  ngx_http_dstack_vpc_api_lua_register;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_update;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_discover;
extern ngx_str_t  ngx_http_dstack_vpc_api_lua_nodes;


#endif /* _NGX_HTTP_DSTACK_VPC_API_H_INCLUDED_ */
