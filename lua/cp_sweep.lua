-- sweep: ARGV = prefix, inactivity timeout (s), interval (ms), batch,
-- caller (for the log).  Runs once per interval slot of Redis' clock,
-- whoever calls it: nodes silent for the timeout go offline (ephemeral
-- ones are removed), nodes whose key expired leave the maps ("rm"; their
-- record stays until they register again).  The last runs are kept in
-- "<prefix>vpn:sweep:log" as "<slot> <caller>".  Returns {ran, offline,
-- removed, expired}.

local t = redis.call('TIME')
local now = tonumber(t[1])
local ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot = math.floor(ms / tonumber(ARGV[3]))
local sk = K .. 'sweep'
local last = tonumber(redis.call('HGET', sk, 'slot') or '-1') or -1
if slot <= last then
  return {0, 0, 0}
end
redis.call('HSET', sk, 'slot', slot, 'at', now)
redis.call('HINCRBY', sk, 'runs', 1)
redis.call('LPUSH', sk .. ':log', slot .. ' ' .. (ARGV[5] or ''))
redis.call('LTRIM', sk .. ':log', 0, 99)
local ids = redis.call('ZRANGEBYSCORE', K .. 'seen', '-inf',
  now - tonumber(ARGV[2]), 'LIMIT', 0, tonumber(ARGV[4]))
local off, gone = 0, 0
for _, id in ipairs(ids) do
  local nk = K .. 'node:' .. id
  local f = redis.call('HMGET', nk, 'ephemeral', 'online',
    'last_seen')
  if f[1] == '1' then
    remove(id)
    gone = gone + 1
  else
    redis.call('ZREM', K .. 'seen', id)
    if f[2] == '1' then
      redis.call('HSET', nk, 'online', '0')
      publish('on ' .. id .. ' 0 ' .. (f[3] or now))
      off = off + 1
    end
  end
end
local exp = redis.call('ZRANGEBYSCORE', K .. 'expiries', '-inf', now,
  'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(exp) do
  redis.call('ZREM', K .. 'expiries', id)
  publish('rm ' .. id)
end
return {1, off, gone, #exp}
