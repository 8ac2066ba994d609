-- admin_apps (wgctl nodes apps): ARGV = prefix.  Returns APP_FIELDS per
-- app with counts, by app id: app_id, live nodes, of them online,
-- outstanding pre-auth keys, node records: what the per-app limits
-- count.

local now = clock()
local apps = redis.call('SMEMBERS', p .. 'quota:apps')
table.sort(apps)
local out = {}
for _, a in ipairs(apps) do
  local ids = redis.call('SMEMBERS', p .. 'quota:nodes:' .. a)
  local on = 0
  for _, x in ipairs(ids) do
    if redis.call('HGET', K .. 'node:' .. x, 'online') == '1' then
      on = on + 1
    end
  end
  out[#out + 1] = a
  out[#out + 1] = tostring(#ids)
  out[#out + 1] = tostring(on)
  out[#out + 1] = tostring(redis.call('ZCOUNT',
    p .. 'quota:keys:' .. a, '(' .. now, '+inf'))
  out[#out + 1] = tostring(redis.call('SCARD',
    p .. 'quota:records:' .. a))
end
return out
