-- admin_nodes (wgctl nodes list): ARGV = prefix.  Returns
-- ADMIN_FIELDS per node: id, name, ip, online, last_seen, ephemeral,
-- app_id, instance_id, key, key_expiry, endpoints, created_at,
-- node_type, user.

local out = {}
for _, x in ipairs(redis.call('ZRANGE', K .. 'nodes', 0, -1)) do
  local f = redis.call('HMGET', K .. 'node:' .. x, 'id', 'name',
    'ip', 'online', 'last_seen', 'ephemeral', 'app_id', 'instance_id',
    'key', 'key_expiry', 'endpoints', 'created_at', 'node_type',
    'user')
  if f[1] then
    for i = 1, 14 do
      out[#out + 1] = f[i] or ''
    end
  end
end
return out
