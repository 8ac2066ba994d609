-- admin_keys (wgctl preauthkeys list): ARGV = prefix.  Returns
-- KEY_FIELDS per key: id, created_at, expiration, reusable, ephemeral,
-- used, revoked, app_id, instance_id, node_name, creator, uses (never
-- the hash).

local out = {}
for _, x in ipairs(redis.call('ZRANGE', p .. 'preauthkeys', 0, -1)) do
  local f = redis.call('HMGET', p .. 'preauthkey:' .. x, 'id',
    'created_at', 'expiration', 'reusable', 'ephemeral', 'used',
    'revoked', 'app_id', 'instance_id', 'node_name', 'creator',
    'uses')
  if f[1] then
    for i = 1, 12 do
      out[#out + 1] = f[i] or ''
    end
  end
end
return out
