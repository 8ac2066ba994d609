-- luacheck for lua/ (`make lint`): the control plane's Redis scripts.
-- Redis runs Lua 5.1 with globals of its own.
std = "lua51"
read_globals = { "redis", "KEYS", "ARGV", "cjson", "cmsgpack", "bit",
                 "struct" }
max_line_length = 80

-- lua/cp_common.lua is the head of every other lua/cp_*.lua (build time,
-- lua/ngx_http_dstack_vpc_cp_lua.c): its locals are theirs, and not every
-- script uses every helper.
files["lua/cp_common.lua"] = { ignore = { "211" } }
files["lua/cp_*.lua"] = {
    read_globals = { "p", "K", "NF", "clock", "node_fields", "publish",
                     "publish_node", "ip2n", "n2ip", "rest_changed",
                     "remove" },
}
