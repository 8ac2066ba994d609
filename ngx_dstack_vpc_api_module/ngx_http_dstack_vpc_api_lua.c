
/*
 * The Lua scripts of ngx_dstack_vpc_api_module.  Each runs atomically in
 * Redis; ARGV[1] is always the key prefix.  The data model they keep is
 * described in docs/api.md ("Redis data model").
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_dstack_vpc_api.h"


/*
 * register: ARGV = prefix, instance_id, node_name, app_id, key_id,
 * key_hash, ttl, reusable, ephemeral, shared_key_candidate, the most
 * outstanding keys and the most node records per app.
 * Returns {status, shared_key}, {"forbidden"}, {"retry"} or
 * {"limit", directive, value}.
 *
 * Per-app counts (docs/api.md, "Limits"): quota:keys:<app> holds the
 * app's unused keys by expiration; quota:records:<app> the records it
 * created; quota:apps every app that has counts.  The checks only read:
 * Redis refuses a script for memory only at its first write, so that
 * one stays the shared key's SET.
 */

ngx_str_t  ngx_http_dstack_vpc_api_lua_register = ngx_string(
    "local p = ARGV[1]\n"
    "local id, name, app = ARGV[2], ARGV[3], ARGV[4]\n"
    "local now = tonumber(redis.call('TIME')[1])\n"
    "local nk = p .. 'node:' .. id\n"
    "local owner = redis.call('HGET', nk, 'app_id')\n"
    "if owner and owner ~= app then\n"
    "  return {'forbidden'}\n"
    "end\n"
    "local qk = p .. 'quota:keys:' .. app\n"
    "local qr = p .. 'quota:records:' .. app\n"
    "if redis.call('ZCOUNT', qk, '(' .. now, '+inf') >= tonumber(ARGV[11])\n"
    "then\n"
    "  return {'limit', 'dstack_vpc_api_max_keys_per_app', ARGV[11]}\n"
    "end\n"
    "if not owner and redis.call('SCARD', qr) >= tonumber(ARGV[12]) then\n"
    "  return {'limit', 'dstack_vpc_api_max_records_per_app', ARGV[12]}\n"
    "end\n"
    "local kk = p .. 'preauthkey:' .. ARGV[5]\n"
    "if redis.call('EXISTS', kk) == 1 then\n"
    "  return {'retry'}\n"
    "end\n"
    "redis.call('SET', p .. 'shared_key', ARGV[10], 'NX')\n"
    "local shared = redis.call('GET', p .. 'shared_key')\n"
    "local exp = now + tonumber(ARGV[7])\n"
    "redis.call('HSET', kk, 'id', ARGV[5], 'hash', ARGV[6],\n"
    "  'created_at', now, 'expiration', exp, 'reusable', ARGV[8],\n"
    "  'ephemeral', ARGV[9],\n"
    "  'used', '0', 'app_id', app, 'instance_id', id, 'node_name', name)\n"
    "redis.call('EXPIREAT', kk, exp + 86400)\n"
    "redis.call('ZADD', p .. 'preauthkeys', exp, ARGV[5])\n"
    "redis.call('ZREMRANGEBYSCORE', p .. 'preauthkeys', '-inf', now - 86400)\n"
    "redis.call('ZREMRANGEBYSCORE', qk, '-inf', now)\n"
    "redis.call('ZADD', qk, exp, ARGV[5])\n"
    "redis.call('SADD', p .. 'quota:apps', app)\n"
    "local status = 'updated'\n"
    "if redis.call('HSETNX', nk, 'created_at', now) == 1 then\n"
    "  status = 'created'\n"
    "  redis.call('ZADD', p .. 'nodes', 0, id)\n"
    "  redis.call('SADD', qr, id)\n"
    "end\n"
    "redis.call('HSET', nk, 'uuid', id, 'name', name, 'app_id', app,\n"
    "  'registered_at', now, 'updated_at', now)\n"
    "redis.call('DEL', p .. 'view:nodes')\n"
    "redis.call('PUBLISH', p .. 'events', 'node ' .. id)\n"
    "return {status, shared}\n"
);


/*
 * update: ARGV = prefix, uuid, node_type, tailscale_ip, hostname, app_id,
 * 1 when the uuid has an instance id's shape, the most node records per
 * app; empty values keep the stored ones.  Returns {status, uuid,
 * node_type, tailscale_ip, hostname}, {"forbidden"}, {"limit", directive,
 * value} or {"reserved"}: an instance id names a record only once
 * a registration created it, so that no app can take another app's
 * instance (instance ids are public) before it registers.
 */

ngx_str_t  ngx_http_dstack_vpc_api_lua_update = ngx_string(
    "local p, id, ntype = ARGV[1], ARGV[2], ARGV[3]\n"
    "local ip, host, app = ARGV[4], ARGV[5], ARGV[6]\n"
    "local now = tonumber(redis.call('TIME')[1])\n"
    "local nk = p .. 'node:' .. id\n"
    "local cur = redis.call('HMGET', nk, 'app_id', 'node_type',\n"
    "  'tailscale_ip', 'hostname', 'created_at')\n"
    "if cur[1] and cur[1] ~= app then\n"
    "  return {'forbidden'}\n"
    "end\n"
    "local status = 'updated'\n"
    "if not cur[5] then\n"
    "  if ARGV[7] == '1' then\n"
    "    return {'reserved'}\n"
    "  end\n"
    "  local qr = p .. 'quota:records:' .. app\n"
    "  if redis.call('SCARD', qr) >= tonumber(ARGV[8]) then\n"
    "    return {'limit', 'dstack_vpc_api_max_records_per_app', ARGV[8]}\n"
    "  end\n"
    "  redis.call('SADD', qr, id)\n"
    "  redis.call('SADD', p .. 'quota:apps', app)\n"
    "  status = 'created'\n"
    "  redis.call('HSET', nk, 'uuid', id, 'name', id, 'app_id', app,\n"
    "    'created_at', now)\n"
    "  redis.call('ZADD', p .. 'nodes', 0, id)\n"
    "end\n"
    "local otype, oip, ohost = cur[2] or '', cur[3] or '', cur[4] or ''\n"
    "local t = ntype ~= '' and ntype or otype\n"
    "local i = ip ~= '' and ip or oip\n"
    "local h = host ~= '' and host or ohost\n"
    "redis.call('HSET', nk, 'node_type', t, 'tailscale_ip', i,\n"
    "  'hostname', h, 'updated_at', now)\n"
    "if otype ~= '' then\n"
    "  if otype ~= t or h == '' then\n"
    "    redis.call('ZREM', p .. 'type:' .. otype, id)\n"
    "  end\n"
    "  redis.call('DEL', p .. 'view:type:' .. otype)\n"
    "end\n"
    "if t ~= '' then\n"
    "  if h ~= '' then\n"
    "    redis.call('ZADD', p .. 'type:' .. t, 0, id)\n"
    "  end\n"
    "  redis.call('DEL', p .. 'view:type:' .. t)\n"
    "end\n"
    "redis.call('DEL', p .. 'view:nodes')\n"
    "redis.call('PUBLISH', p .. 'events', 'node ' .. id)\n"
    "return {status, id, t, i, h}\n"
);


/*
 * discover: ARGV = prefix, node_type.  Returns the response document, or
 * nil when no node of the type has a hostname.  The document is cached
 * in view:type:<type> until a node of the type changes.  etcd nodes also
 * carry "hostname_with_port" (<hostname>:2379, etcd's client port), as
 * the seed's answer did.
 */

ngx_str_t  ngx_http_dstack_vpc_api_lua_discover = ngx_string(
    "local p, t = ARGV[1], ARGV[2]\n"
    "local vk = p .. 'view:type:' .. t\n"
    "local v = redis.call('GET', vk)\n"
    "if v then\n"
    "  return v\n"
    "end\n"
    "local ids = redis.call('ZRANGE', p .. 'type:' .. t, 0, -1)\n"
    "if #ids == 0 then\n"
    "  return false\n"
    "end\n"
    "local function s(x)\n"
    "  if not x or x == '' then\n"
    "    return 'null'\n"
    "  end\n"
    "  return cjson.encode(x)\n"
    "end\n"
    "local out = {}\n"
    "for n, id in ipairs(ids) do\n"
    "  local f = redis.call('HMGET', p .. 'node:' .. id, 'hostname',\n"
    "    'tailscale_ip')\n"
    "  local port = ''\n"
    "  if t == 'etcd' and f[1] and f[1] ~= '' then\n"
    "    port = ',\"hostname_with_port\":' .. s(f[1] .. ':2379')\n"
    "  end\n"
    "  out[n] = '{\"hostname\":' .. s(f[1])\n"
    "    .. ',\"tailscale_ip\":' .. s(f[2]) .. ',\"uuid\":' .. s(id)\n"
    "    .. port .. '}'\n"
    "end\n"
    "v = '{\"nodes\":[' .. table.concat(out, ',') .. '],\"count\":' .. #ids\n"
    "  .. ',\"node_type\":' .. s(t) .. '}'\n"
    "redis.call('SET', vk, v)\n"
    "return v\n"
);


/*
 * nodes: ARGV = prefix.  Returns the response document, cached in
 * view:nodes until any node changes.
 */

ngx_str_t  ngx_http_dstack_vpc_api_lua_nodes = ngx_string(
    "local p = ARGV[1]\n"
    "local vk = p .. 'view:nodes'\n"
    "local v = redis.call('GET', vk)\n"
    "if v then\n"
    "  return v\n"
    "end\n"
    "local function s(x)\n"
    "  if not x or x == '' then\n"
    "    return 'null'\n"
    "  end\n"
    "  return cjson.encode(x)\n"
    "end\n"
    "local function n(x)\n"
    "  if not x or x == '' then\n"
    "    return 'null'\n"
    "  end\n"
    "  return tostring(tonumber(x))\n"
    "end\n"
    "local ids = redis.call('ZRANGE', p .. 'nodes', 0, -1)\n"
    "local out = {}\n"
    "for i, id in ipairs(ids) do\n"
    "  local f = redis.call('HMGET', p .. 'node:' .. id, 'name', 'app_id',\n"
    "    'node_type', 'tailscale_ip', 'hostname', 'created_at',\n"
    "    'updated_at', 'registered_at')\n"
    "  out[i] = '{\"uuid\":' .. s(id) .. ',\"name\":' .. s(f[1])\n"
    "    .. ',\"app_id\":' .. s(f[2]) .. ',\"node_type\":' .. s(f[3])\n"
    "    .. ',\"tailscale_ip\":' .. s(f[4]) .. ',\"hostname\":' .. s(f[5])\n"
    "    .. ',\"created_at\":' .. n(f[6]) .. ',\"updated_at\":' .. n(f[7])\n"
    "    .. ',\"registered_at\":' .. n(f[8]) .. '}'\n"
    "end\n"
    "v = '{\"nodes\":[' .. table.concat(out, ',') .. '],\"count\":'\n"
    "  .. #ids .. '}'\n"
    "redis.call('SET', vk, v)\n"
    "return v\n"
);
