-- nodes (GET /api/nodes): KEYS none; ARGV = prefix.  Returns the response
-- document (JSON text), cached in view:nodes until any node changes.

local p = ARGV[1]
local vk = p .. 'view:nodes'
local v = redis.call('GET', vk)
if v then
  return v
end
local function s(x)
  if not x or x == '' then
    return 'null'
  end
  return cjson.encode(x)
end
local function n(x)
  if not x or x == '' then
    return 'null'
  end
  return tostring(tonumber(x))
end
local ids = redis.call('ZRANGE', p .. 'nodes', 0, -1)
local out = {}
for i, id in ipairs(ids) do
  local f = redis.call('HMGET', p .. 'node:' .. id, 'name', 'app_id',
    'node_type', 'tailscale_ip', 'hostname', 'created_at',
    'updated_at', 'registered_at')
  out[i] = '{"uuid":' .. s(id) .. ',"name":' .. s(f[1])
    .. ',"app_id":' .. s(f[2]) .. ',"node_type":' .. s(f[3])
    .. ',"tailscale_ip":' .. s(f[4]) .. ',"hostname":' .. s(f[5])
    .. ',"created_at":' .. n(f[6]) .. ',"updated_at":' .. n(f[7])
    .. ',"registered_at":' .. n(f[8]) .. '}'
end
v = '{"nodes":[' .. table.concat(out, ',') .. '],"count":'
  .. #ids .. '}'
redis.call('SET', vk, v)
return v
