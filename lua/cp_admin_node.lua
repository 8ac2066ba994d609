-- admin_node (wgctl nodes delete|expire): ARGV = prefix, "delete" or
-- "expire", the node (id, name, or nodekey:<hex>).  Returns {"ok", id}
-- or {"unknown"}.

local q, id = ARGV[3], nil
if string.match(q, '^%d+$') then
  if redis.call('EXISTS', K .. 'node:' .. q) == 1 then
    id = q
  end
elseif string.match(q, '^nodekey:%x+$') then
  local hex = string.lower(string.sub(q, 9))
  id = redis.call('GET', K .. 'key:' .. hex)
else
  local n = string.gsub(string.lower(q), '%.dstack%.internal%.?$', '')
  id = redis.call('HGET', K .. 'names', n)
end
if not id then
  return {'unknown'}
end
if ARGV[2] == 'delete' then
  remove(id)
else
  redis.call('HSET', K .. 'node:' .. id, 'key_expiry', clock())
  redis.call('ZREM', K .. 'expiries', id)
  publish('rm ' .. id)
end
return {'ok', id}
