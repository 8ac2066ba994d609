-- register (GET /api/register): KEYS none; ARGV = prefix, instance_id,
-- node_name, app_id, key_id, key_hash, ttl, reusable, ephemeral,
-- shared_key_candidate, the most outstanding keys and the most node
-- records per app.  Returns {status, shared_key} (status "created" or
-- "updated"), {"forbidden"}, {"retry"} (the key id exists) or {"limit",
-- directive, value}.
--
-- Per-app counts (docs/api.md, "Limits"): quota:keys:<app> holds the
-- app's unused keys by expiration; quota:records:<app> the records it
-- created; quota:apps every app that has counts.  The checks only read:
-- Redis refuses a script for memory only at its first write, so that
-- one stays the shared key's SET.

local p = ARGV[1]
local id, name, app = ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(redis.call('TIME')[1])
local nk = p .. 'node:' .. id
local owner = redis.call('HGET', nk, 'app_id')
if owner and owner ~= app then
  return {'forbidden'}
end
local qk = p .. 'quota:keys:' .. app
local qr = p .. 'quota:records:' .. app
if redis.call('ZCOUNT', qk, '(' .. now, '+inf') >= tonumber(ARGV[11])
then
  return {'limit', 'dstack_vpc_api_max_keys_per_app', ARGV[11]}
end
if not owner and redis.call('SCARD', qr) >= tonumber(ARGV[12]) then
  return {'limit', 'dstack_vpc_api_max_records_per_app', ARGV[12]}
end
local kk = p .. 'preauthkey:' .. ARGV[5]
if redis.call('EXISTS', kk) == 1 then
  return {'retry'}
end
redis.call('SET', p .. 'shared_key', ARGV[10], 'NX')
local shared = redis.call('GET', p .. 'shared_key')
local exp = now + tonumber(ARGV[7])
redis.call('HSET', kk, 'id', ARGV[5], 'hash', ARGV[6],
  'created_at', now, 'expiration', exp, 'reusable', ARGV[8],
  'ephemeral', ARGV[9],
  'used', '0', 'app_id', app, 'instance_id', id, 'node_name', name)
redis.call('EXPIREAT', kk, exp + 86400)
redis.call('ZADD', p .. 'preauthkeys', exp, ARGV[5])
redis.call('ZREMRANGEBYSCORE', p .. 'preauthkeys', '-inf', now - 86400)
redis.call('ZREMRANGEBYSCORE', qk, '-inf', now)
redis.call('ZADD', qk, exp, ARGV[5])
redis.call('SADD', p .. 'quota:apps', app)
local status = 'updated'
if redis.call('HSETNX', nk, 'created_at', now) == 1 then
  status = 'created'
  redis.call('ZADD', p .. 'nodes', 0, id)
  redis.call('SADD', qr, id)
end
redis.call('HSET', nk, 'uuid', id, 'name', name, 'app_id', app,
  'registered_at', now, 'updated_at', now)
redis.call('DEL', p .. 'view:nodes')
redis.call('PUBLISH', p .. 'events', 'node ' .. id)
return {status, shared}
