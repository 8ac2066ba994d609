-- admin_key_create (wgctl preauthkeys create): ARGV = prefix, key id,
-- key hash, lifetime (s), reusable (1/0), ephemeral (1/0).  Returns
-- {"ok", expiration} or {"retry"} (the id exists).

local kk = p .. 'preauthkey:' .. ARGV[2]
if redis.call('EXISTS', kk) == 1 then
  return {'retry'}
end
local now = clock()
local exp = now + tonumber(ARGV[4])
redis.call('HSET', kk, 'id', ARGV[2], 'hash', ARGV[3],
  'created_at', now, 'expiration', exp, 'reusable', ARGV[5],
  'ephemeral', ARGV[6], 'used', '0', 'app_id', '', 'instance_id', '',
  'node_name', '', 'creator', 'admin')
redis.call('EXPIREAT', kk, exp + 86400)
redis.call('ZADD', p .. 'preauthkeys', exp, ARGV[2])
return {'ok', tostring(exp)}
