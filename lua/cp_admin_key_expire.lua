-- admin_key_expire (wgctl preauthkeys expire): ARGV = prefix, key id.
-- Returns "ok" or "unknown".

local kk = p .. 'preauthkey:' .. ARGV[2]
if redis.call('EXISTS', kk) == 0 then
  return 'unknown'
end
local now = clock()
local app = redis.call('HGET', kk, 'app_id')
if app and app ~= '' then
  redis.call('ZREM', p .. 'quota:keys:' .. app, ARGV[2])
end
redis.call('HSET', kk, 'expiration', now, 'revoked', '1')
redis.call('ZADD', p .. 'preauthkeys', now, ARGV[2])
return 'ok'
