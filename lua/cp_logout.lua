-- logout: ARGV = prefix, node key, app id.  Returns "ok", "unknown" or
-- "forbidden".

local id = redis.call('GET', K .. 'key:' .. ARGV[2])
if not id then
  return 'unknown'
end
local app = redis.call('HGET', K .. 'node:' .. id, 'app_id')
if not app then
  redis.call('DEL', K .. 'key:' .. ARGV[2])
  return 'unknown'
end
if app ~= ARGV[3] then
  return 'forbidden'
end
remove(id)
return 'ok'
