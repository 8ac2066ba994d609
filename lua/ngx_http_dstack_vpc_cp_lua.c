
/*
 * The Lua scripts of the VPN control plane (docs/control-plane.md), shared
 * by ngx_dstack_vpc_api_module (ngx_http_dstack_vpc_cp_module.c) and the
 * admin commands of wgctl (wgctl/admin.c), so that both keep one data
 * model (docs/api.md, "Control plane").  Plain C: no nginx headers.
 *
 * The scripts are the lua/cp_*.lua files (each one's ARGV and answer are
 * described at its top); scripts/lua2c.sh turns each into a C string
 * literal body at build time ("cp_<name>.lua.h", on the include path),
 * and every script here is lua/cp_common.lua followed by its own file.
 */


#include "ngx_http_dstack_vpc_cp_lua.h"


const char  ngx_http_dstack_vpc_cp_lua_register[] =
#include "cp_common.lua.h"
#include "cp_register.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_poll[] =
#include "cp_common.lua.h"
#include "cp_poll.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_touch[] =
#include "cp_common.lua.h"
#include "cp_touch.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_logout[] =
#include "cp_common.lua.h"
#include "cp_logout.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_sweep[] =
#include "cp_common.lua.h"
#include "cp_sweep.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_admin_nodes[] =
#include "cp_common.lua.h"
#include "cp_admin_nodes.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_admin_apps[] =
#include "cp_common.lua.h"
#include "cp_admin_apps.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_admin_node[] =
#include "cp_common.lua.h"
#include "cp_admin_node.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_admin_key_create[] =
#include "cp_common.lua.h"
#include "cp_admin_key_create.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_admin_keys[] =
#include "cp_common.lua.h"
#include "cp_admin_keys.lua.h"
    ;


const char  ngx_http_dstack_vpc_cp_lua_admin_key_expire[] =
#include "cp_common.lua.h"
#include "cp_admin_key_expire.lua.h"
    ;
