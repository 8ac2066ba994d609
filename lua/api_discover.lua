-- discover (GET /api/discover/<node_type>): KEYS none; ARGV = prefix,
-- node_type.  Returns the response document (JSON text), or nil when
-- no node of the type has a hostname.  The document is cached in
-- view:type:<type> until a node of the type changes.  etcd nodes also
-- carry "hostname_with_port" (<hostname>:2379, etcd's client port),
-- as the seed's answer did.

local p, t = ARGV[1], ARGV[2]
local vk = p .. 'view:type:' .. t
local v = redis.call('GET', vk)
if v then
  return v
end
local ids = redis.call('ZRANGE', p .. 'type:' .. t, 0, -1)
if #ids == 0 then
  return false
end
local function s(x)
  if not x or x == '' then
    return 'null'
  end
  return cjson.encode(x)
end
local out = {}
for n, id in ipairs(ids) do
  local f = redis.call('HMGET', p .. 'node:' .. id, 'hostname',
    'tailscale_ip')
  local port = ''
  if t == 'etcd' and f[1] and f[1] ~= '' then
    port = ',"hostname_with_port":' .. s(f[1] .. ':2379')
  end
  out[n] = '{"hostname":' .. s(f[1])
    .. ',"tailscale_ip":' .. s(f[2]) .. ',"uuid":' .. s(id)
    .. port .. '}'
end
v = '{"nodes":[' .. table.concat(out, ',') .. '],"count":' .. #ids
  .. ',"node_type":' .. s(t) .. '}'
redis.call('SET', vk, v)
return v
