-- touch: ARGV = prefix, id, node key.  A stream is alive: refreshes
-- last-seen.  Returns "ok", "gone" (removed, or another key now) or
-- "expired".

local id = ARGV[2]
local nk = K .. 'node:' .. id
local f = redis.call('HMGET', nk, 'key', 'key_expiry', 'online')
if f[1] ~= ARGV[3] then
  return 'gone'
end
local now = clock()
local exp = tonumber(f[2] or '0') or 0
if exp > 0 and exp <= now then
  return 'expired'
end
redis.call('HSET', nk, 'last_seen', now)
redis.call('ZADD', K .. 'seen', now, id)
if f[3] ~= '1' then
  redis.call('HSET', nk, 'online', '1')
  publish('on ' .. id .. ' 1 ' .. now)
end
return 'ok'
