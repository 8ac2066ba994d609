-- poll: ARGV = prefix, node key, app id, endpoints (comma-separated),
-- 1 when the request carried Endpoints, 1 when the worker holds a copy
-- of the map (ngx_http_dstack_vpc_cp_cache.c) and wants no nodes.
-- Refreshes the node's last-seen and returns {"ok", id, seq, <fields of
-- every node, NODE_FIELDS each>} (seq: the last event the map includes;
-- no fields for a worker with its copy), or {"unknown"}, {"forbidden"},
-- {"expired"}.  Without a node key: {"ok", "0", seq, <fields of every
-- node>}, changing nothing (a worker loads its copy).

local hex, app = ARGV[2], ARGV[3]
local function all_nodes(out)
  for _, x in ipairs(redis.call('ZRANGE', K .. 'nodes', 0, -1)) do
    local n = node_fields(x)
    if n then
      for i = 1, #NF do
        out[#out + 1] = n[i]
      end
    end
  end
  return out
end
if hex == '' then
  return all_nodes({'ok', '0', redis.call('GET', K .. 'evseq') or '0'})
end
local now = clock()
local id = redis.call('GET', K .. 'key:' .. hex)
if not id then
  return {'unknown'}
end
local nk = K .. 'node:' .. id
local f = redis.call('HMGET', nk, 'app_id', 'key_expiry', 'online',
  'endpoints')
if not f[1] then
  return {'unknown'}
end
if f[1] ~= app then
  return {'forbidden'}
end
local exp = tonumber(f[2] or '0') or 0
if exp > 0 and exp <= now then
  return {'expired'}
end
redis.call('HSET', nk, 'last_seen', now)
redis.call('ZADD', K .. 'seen', now, id)
if ARGV[5] == '1' and ARGV[4] ~= (f[4] or '') then
  redis.call('HSET', nk, 'endpoints', ARGV[4])
  publish('ep ' .. id .. ' ' .. (ARGV[4] ~= '' and ARGV[4] or '-'))
end
if f[3] ~= '1' then
  redis.call('HSET', nk, 'online', '1')
  publish('on ' .. id .. ' 1 ' .. now)
end
local out = {'ok', id, redis.call('GET', K .. 'evseq') or '0'}
if ARGV[6] == '1' then
  return out
end
return all_nodes(out)
