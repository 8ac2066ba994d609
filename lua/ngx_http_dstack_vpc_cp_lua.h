
/*
 * The control plane's Lua scripts (ngx_http_dstack_vpc_cp_lua.c), for the
 * module and for wgctl's admin commands.  Plain C: no nginx headers.
 */


#ifndef _NGX_HTTP_DSTACK_VPC_CP_LUA_H_INCLUDED_
#define _NGX_HTTP_DSTACK_VPC_CP_LUA_H_INCLUDED_


/* a node's fields as poll returns them and an "up" message carries them */
#define NGX_HTTP_DSTACK_VPC_CP_F_ID          0
#define NGX_HTTP_DSTACK_VPC_CP_F_KEY         1
#define NGX_HTTP_DSTACK_VPC_CP_F_NAME        2
#define NGX_HTTP_DSTACK_VPC_CP_F_IP          3
#define NGX_HTTP_DSTACK_VPC_CP_F_ENDPOINTS   4
#define NGX_HTTP_DSTACK_VPC_CP_F_ONLINE      5
#define NGX_HTTP_DSTACK_VPC_CP_F_LAST_SEEN   6
#define NGX_HTTP_DSTACK_VPC_CP_F_KEY_EXPIRY  7
#define NGX_HTTP_DSTACK_VPC_CP_F_STABLE_ID   8
#define NGX_HTTP_DSTACK_VPC_CP_F_HOSTNAME    9
#define NGX_HTTP_DSTACK_VPC_CP_F_USER        10
#define NGX_HTTP_DSTACK_VPC_CP_F_APP_ID      11
#define NGX_HTTP_DSTACK_VPC_CP_F_INSTANCE_ID 12
#define NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS   13

#define NGX_HTTP_DSTACK_VPC_CP_ADMIN_FIELDS  14
#define NGX_HTTP_DSTACK_VPC_CP_KEY_FIELDS    12
#define NGX_HTTP_DSTACK_VPC_CP_APP_FIELDS    5


extern const char  ngx_http_dstack_vpc_cp_lua_register[];
extern const char  ngx_http_dstack_vpc_cp_lua_poll[];
extern const char  ngx_http_dstack_vpc_cp_lua_touch[];
extern const char  ngx_http_dstack_vpc_cp_lua_logout[];
extern const char  ngx_http_dstack_vpc_cp_lua_sweep[];

extern const char  ngx_http_dstack_vpc_cp_lua_admin_nodes[];
extern const char  ngx_http_dstack_vpc_cp_lua_admin_apps[];
extern const char  ngx_http_dstack_vpc_cp_lua_admin_node[];
extern const char  ngx_http_dstack_vpc_cp_lua_admin_key_create[];
extern const char  ngx_http_dstack_vpc_cp_lua_admin_keys[];
extern const char  ngx_http_dstack_vpc_cp_lua_admin_key_expire[];


#endif /* _NGX_HTTP_DSTACK_VPC_CP_LUA_H_INCLUDED_ */
