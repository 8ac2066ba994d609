# lua/: the control plane's Redis scripts, one .lua file each, embedded at
# build time as C strings (scripts/lua2c.sh, lua/ngx_http_dstack_vpc_cp_lua.c)
# into ngx_dstack_vpc_api_module and wgctl.  Both builds read the generated
# headers from $(LUA_GEN); the module's config writes them there at
# configure time too (DSTACK_LUA_GEN), so that a plain nginx build works.

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
