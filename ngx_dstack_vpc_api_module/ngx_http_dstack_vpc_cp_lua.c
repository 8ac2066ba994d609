
/*
 * The Lua scripts of the VPN control plane (docs/control-plane.md), shared
 * by ngx_dstack_vpc_api_module (ngx_http_dstack_vpc_cp_module.c) and the
 * admin commands of wgctl (wgctl/admin.c), so that both keep one data
 * model (docs/api.md, "Control plane").  Plain C: no nginx headers.
 *
 * Every script starts with the common part: ARGV[1] is the key prefix,
 * "K" the prefix of the control plane's keys, and remove() takes a node
 * out everywhere (its key, instance, name and address, the REST record's
 * tailscale_ip) and publishes "rm <id>".
 *
 * Messages on "<prefix>vpn:events", one change each, self-contained so
 * that a delta costs what changed and no read.  Each starts with its
 * sequence number (INCR <prefix>vpn:evseq), so that a map stream can
 * tell the changes that its full map already holds from later ones:
 *     <seq> up <id> <key> <name> <ip> <endpoints> <online> <last_seen>
 *              <key_expiry> <stable_id> <hostname> <user> <app_id>
 *              <instance_id>  ("-": empty)
 *     <seq> rm <id>
 *     <seq> on <id> <0|1> <last_seen>
 *     <seq> ep <id> <endpoints, comma-separated, or "-">
 */


#include "ngx_http_dstack_vpc_cp_lua.h"


#define NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON                                     \
    "local p = ARGV[1]\n"                                                     \
    "local K = p .. 'vpn:'\n"                                                 \
    "local NF = {'id', 'key', 'name', 'ip', 'endpoints', 'online',\n"         \
    "  'last_seen', 'key_expiry', 'stable_id', 'hostname', 'user',\n"         \
    "  'app_id', 'instance_id'}\n"                                            \
    "local function clock()\n"                                                \
    "  return tonumber(redis.call('TIME')[1])\n"                              \
    "end\n"                                                                   \
    "local function node_fields(id)\n"                                        \
    "  local f = redis.call('HMGET', K .. 'node:' .. id, unpack(NF))\n"       \
    "  if not f[1] then\n"                                                    \
    "    return nil\n"                                                        \
    "  end\n"                                                                 \
    "  for i = 1, #NF do\n"                                                   \
    "    f[i] = f[i] or ''\n"                                                 \
    "  end\n"                                                                 \
    "  return f\n"                                                            \
    "end\n"                                                                   \
    "local function publish(m)\n"                                             \
    "  local s = redis.call('INCR', K .. 'evseq')\n"                          \
    "  redis.call('PUBLISH', K .. 'events', s .. ' ' .. m)\n"                 \
    "end\n"                                                                   \
    "local function publish_node(id)\n"                                       \
    "  local f = node_fields(id)\n"                                           \
    "  if f then\n"                                                           \
    "    for i = 1, #NF do\n"                                                 \
    "      if f[i] == '' then\n"                                              \
    "        f[i] = '-'\n"                                                    \
    "      end\n"                                                             \
    "    end\n"                                                               \
    "    publish('up ' .. table.concat(f, ' '))\n"                            \
    "  end\n"                                                                 \
    "end\n"                                                                   \
    "local function ip2n(ip)\n"                                               \
    "  local a, b, c, d = string.match(ip or '',\n"                           \
    "    '^(%d+)%.(%d+)%.(%d+)%.(%d+)$')\n"                                   \
    "  if not a then\n"                                                       \
    "    return nil\n"                                                        \
    "  end\n"                                                                 \
    "  return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256\n" \
    "    + tonumber(d)\n"                                                     \
    "end\n"                                                                   \
    "local function n2ip(n)\n"                                                \
    "  return string.format('%d.%d.%d.%d', math.floor(n / 16777216) % 256,\n" \
    "    math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)\n"  \
    "end\n"                                                                   \
    "local function rest_changed(inst, t1, t2)\n"                             \
    "  redis.call('DEL', p .. 'view:nodes')\n"                                \
    "  if t1 ~= '' then\n"                                                    \
    "    redis.call('DEL', p .. 'view:type:' .. t1)\n"                        \
    "  end\n"                                                                 \
    "  if t2 ~= '' and t2 ~= t1 then\n"                                       \
    "    redis.call('DEL', p .. 'view:type:' .. t2)\n"                        \
    "  end\n"                                                                 \
    "  redis.call('PUBLISH', p .. 'events', 'node ' .. inst)\n"               \
    "end\n"                                                                   \
    "local function remove(id)\n"                                             \
    "  local nk = K .. 'node:' .. id\n"                                       \
    "  local f = redis.call('HMGET', nk, 'key', 'instance_id', 'name',\n"     \
    "    'ip')\n"                                                             \
    "  redis.call('ZREM', K .. 'nodes', id)\n"                                \
    "  redis.call('ZREM', K .. 'seen', id)\n"                                 \
    "  redis.call('ZREM', K .. 'expiries', id)\n"                             \
    "  if not f[1] then\n"                                                    \
    "    return false\n"                                                      \
    "  end\n"                                                                 \
    "  if redis.call('GET', K .. 'key:' .. f[1]) == id then\n"                \
    "    redis.call('DEL', K .. 'key:' .. f[1])\n"                            \
    "  end\n"                                                                 \
    "  local inst, ip = f[2] or '', f[4] or ''\n"                             \
    "  if inst ~= ''\n"                                                       \
    "    and redis.call('GET', K .. 'instance:' .. inst) == id\n"             \
    "  then\n"                                                                \
    "    redis.call('DEL', K .. 'instance:' .. inst)\n"                       \
    "  end\n"                                                                 \
    "  if f[3] and redis.call('HGET', K .. 'names', f[3]) == id then\n"       \
    "    redis.call('HDEL', K .. 'names', f[3])\n"                            \
    "  end\n"                                                                 \
    "  if ip ~= '' and redis.call('HGET', K .. 'ips', ip) == id then\n"       \
    "    redis.call('HDEL', K .. 'ips', ip)\n"                                \
    "    local n = ip2n(ip)\n"                                                \
    "    if n then\n"                                                         \
    "      redis.call('ZADD', K .. 'ipfree', n, ip)\n"                        \
    "    end\n"                                                               \
    "  end\n"                                                                 \
    "  redis.call('DEL', nk)\n"                                               \
    "  if inst ~= '' and ip ~= '' then\n"                                     \
    "    local rk = p .. 'node:' .. inst\n"                                   \
    "    local r = redis.call('HMGET', rk, 'tailscale_ip', 'node_type')\n"    \
    "    if r[1] == ip then\n"                                                \
    "      redis.call('HSET', rk, 'tailscale_ip', '',\n"                      \
    "        'updated_at', clock())\n"                                        \
    "      rest_changed(inst, r[2] or '', '')\n"                              \
    "    end\n"                                                               \
    "  end\n"                                                                 \
    "  publish('rm ' .. id)\n"                                                \
    "  return true\n"                                                         \
    "end\n"


/*
 * register: ARGV = prefix, node key (hex), app id, instance id,
 * label, node type, ephemeral (1/0), key expiry (Unix s, 0: none),
 * auth key id, auth key hash, pool (text), pool base, pool size.
 * Returns {"ok", id, name, ip, user id, "created"|"updated"|"existing"}
 * or {refusal, message}.
 */

const char  ngx_http_dstack_vpc_cp_lua_register[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local hex, app, inst, label = ARGV[2], ARGV[3], ARGV[4], ARGV[5]\n"
    "local ntype, pool = ARGV[6], ARGV[11]\n"
    "local base, size = tonumber(ARGV[12]), tonumber(ARGV[13])\n"
    "local now = clock()\n"
    "local function label_of(s)\n"
    "  s = string.gsub(string.lower(s or ''), '[^a-z0-9]+', '-')\n"
    "  s = string.sub(string.gsub(s, '^%-+', ''), 1, 63)\n"
    "  s = string.gsub(s, '%-+$', '')\n"
    "  return s\n"
    "end\n"
    "local function answer(id, status)\n"
    "  local f = redis.call('HMGET', K .. 'node:' .. id, 'name', 'ip',\n"
    "    'user')\n"
    "  return {'ok', id, f[1] or '', f[2] or '', f[3] or '', status}\n"
    "end\n"
    "local function same(a, b)\n"
    "  if #a ~= #b then\n"
    "    return false\n"
    "  end\n"
    "  local d = 0\n"
    "  for i = 1, #a do\n"
    "    d = bit.bor(d, bit.bxor(string.byte(a, i), string.byte(b, i)))\n"
    "  end\n"
    "  return d == 0\n"
    "end\n"
    "local function pick_name(want, id, seeds)\n"
    "  local names = K .. 'names'\n"
    "  local cur = redis.call('HGET', names, want)\n"
    "  if not cur or cur == id then\n"
    "    return want\n"
    "  end\n"
    "  for _, s in ipairs(seeds) do\n"
    "    local c = string.gsub(string.sub(want, 1, 62 - #s), '%-+$', '')\n"
    "      .. '-' .. s\n"
    "    cur = redis.call('HGET', names, c)\n"
    "    if not cur or cur == id then\n"
    "      return c\n"
    "    end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "local function alloc(id)\n"
    "  local lo, hi = base + 1, base + size - 2\n"
    "  while true do\n"
    "    local f = redis.call('ZRANGEBYSCORE', K .. 'ipfree', lo, hi,\n"
    "      'LIMIT', 0, 1)\n"
    "    if not f[1] then\n"
    "      break\n"
    "    end\n"
    "    redis.call('ZREM', K .. 'ipfree', f[1])\n"
    "    if redis.call('HSETNX', K .. 'ips', f[1], id) == 1 then\n"
    "      return f[1]\n"
    "    end\n"
    "  end\n"
    "  for i = 1, 1000 do\n"
    "    local off = redis.call('HINCRBY', K .. 'ipnext', pool, 1)\n"
    "    if off > size - 2 then\n"
    "      redis.call('HSET', K .. 'ipnext', pool, size - 2)\n"
    "      return nil\n"
    "    end\n"
    "    local ip = n2ip(base + off)\n"
    "    if redis.call('HSETNX', K .. 'ips', ip, id) == 1 then\n"
    "      return ip\n"
    "    end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "local id = redis.call('GET', K .. 'key:' .. hex)\n"
    "if id then\n"
    "  local f = redis.call('HMGET', K .. 'node:' .. id, 'app_id',\n"
    "    'key_expiry')\n"
    "  if not f[1] then\n"
    "    redis.call('DEL', K .. 'key:' .. hex)\n"
    "    id = nil\n"
    "  elseif f[1] ~= app then\n"
    "    return {'forbidden', 'node key is registered by another app'}\n"
    "  else\n"
    "    local exp = tonumber(f[2] or '0') or 0\n"
    "    if exp == 0 or exp > now then\n"
    "      return answer(id, 'existing')\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if ARGV[9] == '' then\n"
    "  return {'unknown', 'unknown auth key'}\n"
    "end\n"
    "local kk = p .. 'preauthkey:' .. ARGV[9]\n"
    "local k = redis.call('HMGET', kk, 'hash', 'expiration', 'reusable',\n"
    "  'ephemeral', 'used', 'app_id', 'instance_id', 'node_name',\n"
    "  'revoked')\n"
    "if not k[1] or not same(k[1], ARGV[10]) then\n"
    "  return {'unknown', 'unknown auth key'}\n"
    "end\n"
    "if k[9] == '1' then\n"
    "  return {'revoked', 'auth key revoked'}\n"
    "end\n"
    "if (tonumber(k[2]) or 0) <= now then\n"
    "  return {'expired', 'auth key expired'}\n"
    "end\n"
    "if k[6] and k[6] ~= '' and k[6] ~= app then\n"
    "  return {'forbidden', 'auth key belongs to another app'}\n"
    "end\n"
    "if k[5] == '1' and k[3] ~= '1' then\n"
    "  return {'used', 'auth key already used'}\n"
    "end\n"
    "if inst == '' then\n"
    "  inst = k[7] or ''\n"
    "end\n"
    "if label == '' then\n"
    "  label = label_of(k[8])\n"
    "end\n"
    "if label == '' then\n"
    "  label = 'node'\n"
    "end\n"
    "local eph = (ARGV[7] == '1' or k[4] == '1') and '1' or '0'\n"
    "if inst ~= '' then\n"
    "  local owner = redis.call('HGET', p .. 'node:' .. inst, 'app_id')\n"
    "  if owner and owner ~= app then\n"
    "    return {'forbidden', 'instance is registered by another app'}\n"
    "  end\n"
    "  local iid = redis.call('GET', K .. 'instance:' .. inst)\n"
    "  if iid and iid ~= id then\n"
    "    local o = redis.call('HGET', K .. 'node:' .. iid, 'app_id')\n"
    "    if o and o ~= app then\n"
    "      return {'forbidden', 'instance is registered by another app'}\n"
    "    end\n"
    "    if o then\n"
    "      if id then\n"
    "        remove(id)\n"
    "      end\n"
    "      id = iid\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local status, old = 'updated', {}\n"
    "local nk\n"
    "if id then\n"
    "  nk = K .. 'node:' .. id\n"
    "  old = redis.call('HMGET', nk, 'key', 'instance_id', 'name', 'ip',\n"
    "    'node_type', 'created_at')\n"
    "else\n"
    "  id = tostring(redis.call('INCR', K .. 'seq'))\n"
    "  nk = K .. 'node:' .. id\n"
    "  status = 'created'\n"
    "end\n"
    "local seed = inst ~= '' and inst or hex\n"
    "local name = pick_name(label, id, {string.sub(seed, 1, 6),\n"
    "  string.sub(seed, 1, 12), 'n' .. id})\n"
    "if not name then\n"
    "  return {'conflict', 'no free name for ' .. label}\n"
    "end\n"
    "local ip = old[4] or ''\n"
    "local n = ip2n(ip)\n"
    "if ip == '' or not n or n <= base or n >= base + size - 1\n"
    "  or redis.call('HGET', K .. 'ips', ip) ~= id\n"
    "then\n"
    "  local fresh = alloc(id)\n"
    "  if not fresh then\n"
    "    return {'exhausted', 'no free address in ' .. pool}\n"
    "  end\n"
    "  if ip ~= '' and redis.call('HGET', K .. 'ips', ip) == id then\n"
    "    redis.call('HDEL', K .. 'ips', ip)\n"
    "    if n then\n"
    "      redis.call('ZADD', K .. 'ipfree', n, ip)\n"
    "    end\n"
    "  end\n"
    "  ip = fresh\n"
    "end\n"
    "if old[1] and old[1] ~= hex\n"
    "  and redis.call('GET', K .. 'key:' .. old[1]) == id\n"
    "then\n"
    "  redis.call('DEL', K .. 'key:' .. old[1])\n"
    "end\n"
    "if old[2] and old[2] ~= '' and old[2] ~= inst\n"
    "  and redis.call('GET', K .. 'instance:' .. old[2]) == id\n"
    "then\n"
    "  redis.call('DEL', K .. 'instance:' .. old[2])\n"
    "end\n"
    "if old[3] and old[3] ~= name\n"
    "  and redis.call('HGET', K .. 'names', old[3]) == id\n"
    "then\n"
    "  redis.call('HDEL', K .. 'names', old[3])\n"
    "end\n"
    "redis.call('HSET', K .. 'names', name, id)\n"
    "local uid = redis.call('HGET', K .. 'users', app)\n"
    "if not uid then\n"
    "  uid = tostring(redis.call('INCR', K .. 'userseq'))\n"
    "  redis.call('HSET', K .. 'users', app, uid)\n"
    "end\n"
    "local t = ntype ~= '' and ntype or (old[5] or '')\n"
    "redis.call('HSET', nk, 'id', id, 'key', hex, 'app_id', app,\n"
    "  'instance_id', inst, 'stable_id', inst ~= '' and inst or id,\n"
    "  'name', name, 'hostname', label, 'ip', ip, 'node_type', t,\n"
    "  'ephemeral', eph, 'key_expiry', ARGV[8], 'user', uid,\n"
    "  'auth_key', ARGV[9], 'registered_at', now, 'last_seen', now)\n"
    "if not old[6] then\n"
    "  redis.call('HSET', nk, 'created_at', now, 'online', '0',\n"
    "    'endpoints', '')\n"
    "end\n"
    "redis.call('SET', K .. 'key:' .. hex, id)\n"
    "if inst ~= '' then\n"
    "  redis.call('SET', K .. 'instance:' .. inst, id)\n"
    "end\n"
    "redis.call('ZADD', K .. 'nodes', id, id)\n"
    "redis.call('ZADD', K .. 'seen', now, id)\n"
    "if tonumber(ARGV[8]) > 0 then\n"
    "  redis.call('ZADD', K .. 'expiries', ARGV[8], id)\n"
    "else\n"
    "  redis.call('ZREM', K .. 'expiries', id)\n"
    "end\n"
    "redis.call('HSET', kk, 'used', '1')\n"
    "redis.call('HINCRBY', kk, 'uses', 1)\n"
    "if inst ~= '' then\n"
    "  local rk = p .. 'node:' .. inst\n"
    "  local r = redis.call('HMGET', rk, 'node_type', 'hostname',\n"
    "    'created_at')\n"
    "  if not r[3] then\n"
    "    redis.call('HSET', rk, 'uuid', inst, 'name', name, 'app_id', app,\n"
    "      'created_at', now)\n"
    "    redis.call('ZADD', p .. 'nodes', 0, inst)\n"
    "  end\n"
    "  local ot, h = r[1] or '', r[2] or ''\n"
    "  local rt = t ~= '' and t or ot\n"
    "  if h == '' then\n"
    "    h = name .. '.dstack.internal'\n"
    "  end\n"
    "  redis.call('HSET', rk, 'tailscale_ip', ip, 'node_type', rt,\n"
    "    'hostname', h, 'updated_at', now)\n"
    "  if ot ~= '' and ot ~= rt then\n"
    "    redis.call('ZREM', p .. 'type:' .. ot, inst)\n"
    "  end\n"
    "  if rt ~= '' then\n"
    "    redis.call('ZADD', p .. 'type:' .. rt, 0, inst)\n"
    "  end\n"
    "  rest_changed(inst, ot, rt)\n"
    "end\n"
    "publish_node(id)\n"
    "return answer(id, status)\n";


/*
 * poll: ARGV = prefix, node key, app id, endpoints (comma-separated),
 * 1 when the request carried Endpoints.  Refreshes the node's last-seen
 * and returns {"ok", id, seq, <fields of every node, NODE_FIELDS each>}
 * (seq: the last event the map includes), or {"unknown"},
 * {"forbidden"}, {"expired"}.
 */

const char  ngx_http_dstack_vpc_cp_lua_poll[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local hex, app = ARGV[2], ARGV[3]\n"
    "local now = clock()\n"
    "local id = redis.call('GET', K .. 'key:' .. hex)\n"
    "if not id then\n"
    "  return {'unknown'}\n"
    "end\n"
    "local nk = K .. 'node:' .. id\n"
    "local f = redis.call('HMGET', nk, 'app_id', 'key_expiry', 'online',\n"
    "  'endpoints')\n"
    "if not f[1] then\n"
    "  return {'unknown'}\n"
    "end\n"
    "if f[1] ~= app then\n"
    "  return {'forbidden'}\n"
    "end\n"
    "local exp = tonumber(f[2] or '0') or 0\n"
    "if exp > 0 and exp <= now then\n"
    "  return {'expired'}\n"
    "end\n"
    "redis.call('HSET', nk, 'last_seen', now)\n"
    "redis.call('ZADD', K .. 'seen', now, id)\n"
    "if ARGV[5] == '1' and ARGV[4] ~= (f[4] or '') then\n"
    "  redis.call('HSET', nk, 'endpoints', ARGV[4])\n"
    "  publish('ep ' .. id .. ' ' .. (ARGV[4] ~= '' and ARGV[4] or '-'))\n"
    "end\n"
    "if f[3] ~= '1' then\n"
    "  redis.call('HSET', nk, 'online', '1')\n"
    "  publish('on ' .. id .. ' 1 ' .. now)\n"
    "end\n"
    "local out = {'ok', id, redis.call('GET', K .. 'evseq') or '0'}\n"
    "for _, x in ipairs(redis.call('ZRANGE', K .. 'nodes', 0, -1)) do\n"
    "  local n = node_fields(x)\n"
    "  if n then\n"
    "    for i = 1, #NF do\n"
    "      out[#out + 1] = n[i]\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";


/*
 * touch: ARGV = prefix, id, node key.  A stream is alive: refreshes
 * last-seen.  Returns "ok", "gone" (removed, or another key now) or
 * "expired".
 */

const char  ngx_http_dstack_vpc_cp_lua_touch[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local id = ARGV[2]\n"
    "local nk = K .. 'node:' .. id\n"
    "local f = redis.call('HMGET', nk, 'key', 'key_expiry', 'online')\n"
    "if f[1] ~= ARGV[3] then\n"
    "  return 'gone'\n"
    "end\n"
    "local now = clock()\n"
    "local exp = tonumber(f[2] or '0') or 0\n"
    "if exp > 0 and exp <= now then\n"
    "  return 'expired'\n"
    "end\n"
    "redis.call('HSET', nk, 'last_seen', now)\n"
    "redis.call('ZADD', K .. 'seen', now, id)\n"
    "if f[3] ~= '1' then\n"
    "  redis.call('HSET', nk, 'online', '1')\n"
    "  publish('on ' .. id .. ' 1 ' .. now)\n"
    "end\n"
    "return 'ok'\n";


/*
 * logout: ARGV = prefix, node key, app id.  Returns "ok", "unknown" or
 * "forbidden".
 */

const char  ngx_http_dstack_vpc_cp_lua_logout[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local id = redis.call('GET', K .. 'key:' .. ARGV[2])\n"
    "if not id then\n"
    "  return 'unknown'\n"
    "end\n"
    "local app = redis.call('HGET', K .. 'node:' .. id, 'app_id')\n"
    "if not app then\n"
    "  redis.call('DEL', K .. 'key:' .. ARGV[2])\n"
    "  return 'unknown'\n"
    "end\n"
    "if app ~= ARGV[3] then\n"
    "  return 'forbidden'\n"
    "end\n"
    "remove(id)\n"
    "return 'ok'\n";


/*
 * sweep: ARGV = prefix, inactivity timeout (s), interval (ms), batch,
 * caller (for the log).  Runs once per interval slot of Redis' clock,
 * whoever calls it: nodes silent for the timeout go offline (ephemeral
 * ones are removed), nodes whose key expired leave the maps ("rm"; their
 * record stays until they register again).  The last runs are kept in
 * "<prefix>vpn:sweep:log" as "<slot> <caller>".  Returns {ran, offline,
 * removed, expired}.
 */

const char  ngx_http_dstack_vpc_cp_lua_sweep[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1])\n"
    "local ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local slot = math.floor(ms / tonumber(ARGV[3]))\n"
    "local sk = K .. 'sweep'\n"
    "local last = tonumber(redis.call('HGET', sk, 'slot') or '-1') or -1\n"
    "if slot <= last then\n"
    "  return {0, 0, 0}\n"
    "end\n"
    "redis.call('HSET', sk, 'slot', slot, 'at', now)\n"
    "redis.call('HINCRBY', sk, 'runs', 1)\n"
    "redis.call('LPUSH', sk .. ':log', slot .. ' ' .. (ARGV[5] or ''))\n"
    "redis.call('LTRIM', sk .. ':log', 0, 99)\n"
    "local ids = redis.call('ZRANGEBYSCORE', K .. 'seen', '-inf',\n"
    "  now - tonumber(ARGV[2]), 'LIMIT', 0, tonumber(ARGV[4]))\n"
    "local off, gone = 0, 0\n"
    "for _, id in ipairs(ids) do\n"
    "  local nk = K .. 'node:' .. id\n"
    "  local f = redis.call('HMGET', nk, 'ephemeral', 'online',\n"
    "    'last_seen')\n"
    "  if f[1] == '1' then\n"
    "    remove(id)\n"
    "    gone = gone + 1\n"
    "  else\n"
    "    redis.call('ZREM', K .. 'seen', id)\n"
    "    if f[2] == '1' then\n"
    "      redis.call('HSET', nk, 'online', '0')\n"
    "      publish('on ' .. id .. ' 0 ' .. (f[3] or now))\n"
    "      off = off + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local exp = redis.call('ZRANGEBYSCORE', K .. 'expiries', '-inf', now,\n"
    "  'LIMIT', 0, tonumber(ARGV[4]))\n"
    "for _, id in ipairs(exp) do\n"
    "  redis.call('ZREM', K .. 'expiries', id)\n"
    "  publish('rm ' .. id)\n"
    "end\n"
    "return {1, off, gone, #exp}\n";


/*
 * admin_nodes (wgctl nodes list): ARGV = prefix.  Returns
 * ADMIN_FIELDS per node: id, name, ip, online, last_seen, ephemeral,
 * app_id, instance_id, key, key_expiry, endpoints, created_at,
 * node_type, user.
 */

const char  ngx_http_dstack_vpc_cp_lua_admin_nodes[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local out = {}\n"
    "for _, x in ipairs(redis.call('ZRANGE', K .. 'nodes', 0, -1)) do\n"
    "  local f = redis.call('HMGET', K .. 'node:' .. x, 'id', 'name',\n"
    "    'ip', 'online', 'last_seen', 'ephemeral', 'app_id', 'instance_id',\n"
    "    'key', 'key_expiry', 'endpoints', 'created_at', 'node_type',\n"
    "    'user')\n"
    "  if f[1] then\n"
    "    for i = 1, 14 do\n"
    "      out[#out + 1] = f[i] or ''\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";


/*
 * admin_node (wgctl nodes delete|expire): ARGV = prefix, "delete" or
 * "expire", the node (id, name, or nodekey:<hex>).  Returns {"ok", id}
 * or {"unknown"}.
 */

const char  ngx_http_dstack_vpc_cp_lua_admin_node[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local q, id = ARGV[3], nil\n"
    "if string.match(q, '^%d+$') then\n"
    "  if redis.call('EXISTS', K .. 'node:' .. q) == 1 then\n"
    "    id = q\n"
    "  end\n"
    "elseif string.match(q, '^nodekey:%x+$') then\n"
    "  local hex = string.lower(string.sub(q, 9))\n"
    "  id = redis.call('GET', K .. 'key:' .. hex)\n"
    "else\n"
    "  local n = string.gsub(string.lower(q), '%.dstack%.internal%.?$', '')\n"
    "  id = redis.call('HGET', K .. 'names', n)\n"
    "end\n"
    "if not id then\n"
    "  return {'unknown'}\n"
    "end\n"
    "if ARGV[2] == 'delete' then\n"
    "  remove(id)\n"
    "else\n"
    "  redis.call('HSET', K .. 'node:' .. id, 'key_expiry', clock())\n"
    "  redis.call('ZREM', K .. 'expiries', id)\n"
    "  publish('rm ' .. id)\n"
    "end\n"
    "return {'ok', id}\n";


/*
 * admin_key_create (wgctl preauthkeys create): ARGV = prefix, key id,
 * key hash, lifetime (s), reusable (1/0), ephemeral (1/0).  Returns
 * {"ok", expiration} or {"retry"} (the id exists).
 */

const char  ngx_http_dstack_vpc_cp_lua_admin_key_create[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local kk = p .. 'preauthkey:' .. ARGV[2]\n"
    "if redis.call('EXISTS', kk) == 1 then\n"
    "  return {'retry'}\n"
    "end\n"
    "local now = clock()\n"
    "local exp = now + tonumber(ARGV[4])\n"
    "redis.call('HSET', kk, 'id', ARGV[2], 'hash', ARGV[3],\n"
    "  'created_at', now, 'expiration', exp, 'reusable', ARGV[5],\n"
    "  'ephemeral', ARGV[6], 'used', '0', 'app_id', '', 'instance_id', '',\n"
    "  'node_name', '', 'creator', 'admin')\n"
    "redis.call('EXPIREAT', kk, exp + 86400)\n"
    "redis.call('ZADD', p .. 'preauthkeys', exp, ARGV[2])\n"
    "return {'ok', tostring(exp)}\n";


/*
 * admin_keys (wgctl preauthkeys list): ARGV = prefix.  Returns
 * KEY_FIELDS per key: id, created_at, expiration, reusable, ephemeral,
 * used, revoked, app_id, instance_id, node_name, creator, uses (never
 * the hash).
 */

const char  ngx_http_dstack_vpc_cp_lua_admin_keys[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local out = {}\n"
    "for _, x in ipairs(redis.call('ZRANGE', p .. 'preauthkeys', 0, -1)) do\n"
    "  local f = redis.call('HMGET', p .. 'preauthkey:' .. x, 'id',\n"
    "    'created_at', 'expiration', 'reusable', 'ephemeral', 'used',\n"
    "    'revoked', 'app_id', 'instance_id', 'node_name', 'creator',\n"
    "    'uses')\n"
    "  if f[1] then\n"
    "    for i = 1, 12 do\n"
    "      out[#out + 1] = f[i] or ''\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";


/*
 * admin_key_expire (wgctl preauthkeys expire): ARGV = prefix, key id.
 * Returns "ok" or "unknown".
 */

const char  ngx_http_dstack_vpc_cp_lua_admin_key_expire[] =
    NGX_HTTP_DSTACK_VPC_CP_LUA_COMMON
    "local kk = p .. 'preauthkey:' .. ARGV[2]\n"
    "if redis.call('EXISTS', kk) == 0 then\n"
    "  return 'unknown'\n"
    "end\n"
    "local now = clock()\n"
    "redis.call('HSET', kk, 'expiration', now, 'revoked', '1')\n"
    "redis.call('ZADD', p .. 'preauthkeys', now, ARGV[2])\n"
    "return 'ok'\n";
