# lua/: the Redis scripts, one .lua file each, embedded at build time as C
# strings by scripts/lua2c.sh: the control plane's cp_*.lua
# (lua/ngx_http_dstack_vpc_cp_lua.c) into ngx_dstack_vpc_api_module and
# wgctl, the REST API's api_*.lua (ngx_http_dstack_vpc_api_lua.c in
# ngx_dstack_vpc_api_module/) into the module only.  Both builds read the
# generated headers from $(LUA_GEN); the module's config writes them there
# at configure time too (DSTACK_LUA_GEN), so that a plain nginx build works.

LUA_SCRIPTS     := $(wildcard lua/*.lua)
LUA_GEN         := $(BUILD)/lua
LUA_GEN_HDRS    := $(LUA_SCRIPTS:lua/%.lua=$(LUA_GEN)/%.lua.h)

$(LUA_GEN)/%.lua.h: lua/%.lua scripts/lua2c.sh
	@mkdir -p $(@D)
	@./scripts/lua2c.sh $< $@

# luacheck (Debian lua-check); .luacheckrc declares Redis's globals
LINT_TARGETS += lint-lua

.PHONY: lint-lua

lint-lua:
	luacheck --no-color -q lua/
