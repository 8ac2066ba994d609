-- update (POST /api/nodes/update): KEYS none; ARGV = prefix, uuid,
-- node_type, tailscale_ip, hostname, app_id, 1 when the uuid has an
-- instance id's shape, the most node records per app; empty values keep
-- the stored ones.  Returns {status, uuid, node_type, tailscale_ip,
-- hostname} (status "created" or "updated"), {"forbidden"}, {"limit",
-- directive, value} or {"reserved"}: an instance id names a record only
-- once a registration created it, so that no app can take another app's
-- instance (instance ids are public) before it registers.

local p, id, ntype = ARGV[1], ARGV[2], ARGV[3]
local ip, host, app = ARGV[4], ARGV[5], ARGV[6]
local now = tonumber(redis.call('TIME')[1])
local nk = p .. 'node:' .. id
local cur = redis.call('HMGET', nk, 'app_id', 'node_type',
  'tailscale_ip', 'hostname', 'created_at')
if cur[1] and cur[1] ~= app then
  return {'forbidden'}
end
local status = 'updated'
if not cur[5] then
  if ARGV[7] == '1' then
    return {'reserved'}
  end
  local qr = p .. 'quota:records:' .. app
  if redis.call('SCARD', qr) >= tonumber(ARGV[8]) then
    return {'limit', 'dstack_vpc_api_max_records_per_app', ARGV[8]}
  end
  redis.call('SADD', qr, id)
  redis.call('SADD', p .. 'quota:apps', app)
  status = 'created'
  redis.call('HSET', nk, 'uuid', id, 'name', id, 'app_id', app,
    'created_at', now)
  redis.call('ZADD', p .. 'nodes', 0, id)
end
local otype, oip, ohost = cur[2] or '', cur[3] or '', cur[4] or ''
local t = ntype ~= '' and ntype or otype
local i = ip ~= '' and ip or oip
local h = host ~= '' and host or ohost
redis.call('HSET', nk, 'node_type', t, 'tailscale_ip', i,
  'hostname', h, 'updated_at', now)
if otype ~= '' then
  if otype ~= t or h == '' then
    redis.call('ZREM', p .. 'type:' .. otype, id)
  end
  redis.call('DEL', p .. 'view:type:' .. otype)
end
if t ~= '' then
  if h ~= '' then
    redis.call('ZADD', p .. 'type:' .. t, 0, id)
  end
  redis.call('DEL', p .. 'view:type:' .. t)
end
redis.call('DEL', p .. 'view:nodes')
redis.call('PUBLISH', p .. 'events', 'node ' .. id)
return {status, id, t, i, h}
