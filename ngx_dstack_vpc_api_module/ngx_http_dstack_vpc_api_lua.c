
/*
 * The Lua scripts of ngx_dstack_vpc_api_module.  Each runs atomically in
 * Redis; ARGV[1] is always the key prefix.  The data model they keep is
 * described in docs/api.md ("Redis data model").
 *
 * The scripts are the lua/api_*.lua files (each one's ARGV and answer are
 * described at its top); scripts/lua2c.sh turns each into a C string
 * literal body at build time ("api_<name>.lua.h", on the include path:
 * ngx_dstack_vpc_api_module/config.module, lua/build.mk).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_dstack_vpc_api.h"


static const char  ngx_http_dstack_vpc_api_lua_register_text[] =
#include "api_register.lua.h"
    ;

ngx_str_t  ngx_http_dstack_vpc_api_lua_register = {
    sizeof(ngx_http_dstack_vpc_api_lua_register_text) - 1,
    (u_char *) ngx_http_dstack_vpc_api_lua_register_text
};


static const char  ngx_http_dstack_vpc_api_lua_update_text[] =
#include "api_update.lua.h"
    ;

ngx_str_t  ngx_http_dstack_vpc_api_lua_update = {
    sizeof(ngx_http_dstack_vpc_api_lua_update_text) - 1,
    (u_char *) ngx_http_dstack_vpc_api_lua_update_text
};


static const char  ngx_http_dstack_vpc_api_lua_discover_text[] =
#include "api_discover.lua.h"
    ;

ngx_str_t  ngx_http_dstack_vpc_api_lua_discover = {
    sizeof(ngx_http_dstack_vpc_api_lua_discover_text) - 1,
    (u_char *) ngx_http_dstack_vpc_api_lua_discover_text
};


static const char  ngx_http_dstack_vpc_api_lua_nodes_text[] =
#include "api_nodes.lua.h"
    ;

ngx_str_t  ngx_http_dstack_vpc_api_lua_nodes = {
    sizeof(ngx_http_dstack_vpc_api_lua_nodes_text) - 1,
    (u_char *) ngx_http_dstack_vpc_api_lua_nodes_text
};
