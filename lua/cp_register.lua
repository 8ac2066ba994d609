-- register: ARGV = prefix, node key (hex), app id, instance id,
-- label, node type, ephemeral (1/0), key expiry (Unix s, 0: none),
-- auth key id, auth key hash, pool (text), pool base, pool size, the
-- most live nodes per app.
-- Returns {"ok", id, name, ip, user id, "created"|"updated"|"existing"}
-- or {refusal, message}.  A new node counts in quota:nodes:<app>
-- (remove() takes it out); a single-use key leaves quota:keys:<app>.

local hex, app, inst, label = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ntype, pool = ARGV[6], ARGV[11]
local base, size = tonumber(ARGV[12]), tonumber(ARGV[13])
local now = clock()
local function label_of(s)
  s = string.gsub(string.lower(s or ''), '[^a-z0-9]+', '-')
  s = string.sub(string.gsub(s, '^%-+', ''), 1, 63)
  s = string.gsub(s, '%-+$', '')
  return s
end
local function answer(id, status)
  local f = redis.call('HMGET', K .. 'node:' .. id, 'name', 'ip',
    'user')
  return {'ok', id, f[1] or '', f[2] or '', f[3] or '', status}
end
local function same(a, b)
  if #a ~= #b then
    return false
  end
  local d = 0
  for i = 1, #a do
    d = bit.bor(d, bit.bxor(string.byte(a, i), string.byte(b, i)))
  end
  return d == 0
end
local function pick_name(want, id, seeds)
  local names = K .. 'names'
  local cur = redis.call('HGET', names, want)
  if not cur or cur == id then
    return want
  end
  for _, s in ipairs(seeds) do
    local c = string.gsub(string.sub(want, 1, 62 - #s), '%-+$', '')
      .. '-' .. s
    cur = redis.call('HGET', names, c)
    if not cur or cur == id then
      return c
    end
  end
  return nil
end
local function alloc(id)
  local lo, hi = base + 1, base + size - 2
  while true do
    local f = redis.call('ZRANGEBYSCORE', K .. 'ipfree', lo, hi,
      'LIMIT', 0, 1)
    if not f[1] then
      break
    end
    redis.call('ZREM', K .. 'ipfree', f[1])
    if redis.call('HSETNX', K .. 'ips', f[1], id) == 1 then
      return f[1]
    end
  end
  for _ = 1, 1000 do
    local off = redis.call('HINCRBY', K .. 'ipnext', pool, 1)
    if off > size - 2 then
      redis.call('HSET', K .. 'ipnext', pool, size - 2)
      return nil
    end
    local ip = n2ip(base + off)
    if redis.call('HSETNX', K .. 'ips', ip, id) == 1 then
      return ip
    end
  end
  return nil
end
local id = redis.call('GET', K .. 'key:' .. hex)
if id then
  local f = redis.call('HMGET', K .. 'node:' .. id, 'app_id',
    'key_expiry')
  if not f[1] then
    redis.call('DEL', K .. 'key:' .. hex)
    id = nil
  elseif f[1] ~= app then
    return {'forbidden', 'node key is registered by another app'}
  else
    local exp = tonumber(f[2] or '0') or 0
    if exp == 0 or exp > now then
      return answer(id, 'existing')
    end
  end
end
if ARGV[9] == '' then
  return {'unknown', 'unknown auth key'}
end
local kk = p .. 'preauthkey:' .. ARGV[9]
local k = redis.call('HMGET', kk, 'hash', 'expiration', 'reusable',
  'ephemeral', 'used', 'app_id', 'instance_id', 'node_name',
  'revoked')
if not k[1] or not same(k[1], ARGV[10]) then
  return {'unknown', 'unknown auth key'}
end
if k[9] == '1' then
  return {'revoked', 'auth key revoked'}
end
if (tonumber(k[2]) or 0) <= now then
  return {'expired', 'auth key expired'}
end
if k[6] and k[6] ~= '' and k[6] ~= app then
  return {'forbidden', 'auth key belongs to another app'}
end
if k[5] == '1' and k[3] ~= '1' then
  return {'used', 'auth key already used'}
end
if inst == '' then
  inst = k[7] or ''
end
if label == '' then
  label = label_of(k[8])
end
if label == '' then
  label = 'node'
end
local eph = (ARGV[7] == '1' or k[4] == '1') and '1' or '0'
if inst ~= '' then
  local owner = redis.call('HGET', p .. 'node:' .. inst, 'app_id')
  if owner and owner ~= app then
    return {'forbidden', 'instance is registered by another app'}
  end
  local iid = redis.call('GET', K .. 'instance:' .. inst)
  if iid and iid ~= id then
    local o = redis.call('HGET', K .. 'node:' .. iid, 'app_id')
    if o and o ~= app then
      return {'forbidden', 'instance is registered by another app'}
    end
    if o then
      if id then
        remove(id)
      end
      id = iid
    end
  end
end
local status, old = 'updated', {}
local nk
if id then
  nk = K .. 'node:' .. id
  old = redis.call('HMGET', nk, 'key', 'instance_id', 'name', 'ip',
    'node_type', 'created_at')
else
  local qn = p .. 'quota:nodes:' .. app
  local max = tonumber(ARGV[14])
  if redis.call('SCARD', qn) >= max then
    for _, x in ipairs(redis.call('SMEMBERS', qn)) do
      if redis.call('HGET', K .. 'node:' .. x, 'app_id') ~= app then
        redis.call('SREM', qn, x)
      end
    end
    if redis.call('SCARD', qn) >= max then
      return {'limit', 'limit reached: '
        .. 'dstack_vpc_control_max_nodes_per_app ' .. ARGV[14]
        .. ' per app'}
    end
  end
  id = tostring(redis.call('INCR', K .. 'seq'))
  nk = K .. 'node:' .. id
  status = 'created'
end
local seed = inst ~= '' and inst or hex
local name = pick_name(label, id, {string.sub(seed, 1, 6),
  string.sub(seed, 1, 12), 'n' .. id})
if not name then
  return {'conflict', 'no free name for ' .. label}
end
local ip = old[4] or ''
local n = ip2n(ip)
if ip == '' or not n or n <= base or n >= base + size - 1
  or redis.call('HGET', K .. 'ips', ip) ~= id
then
  local fresh = alloc(id)
  if not fresh then
    return {'exhausted', 'no free address in ' .. pool}
  end
  if ip ~= '' and redis.call('HGET', K .. 'ips', ip) == id then
    redis.call('HDEL', K .. 'ips', ip)
    if n then
      redis.call('ZADD', K .. 'ipfree', n, ip)
    end
  end
  ip = fresh
end
if old[1] and old[1] ~= hex
  and redis.call('GET', K .. 'key:' .. old[1]) == id
then
  redis.call('DEL', K .. 'key:' .. old[1])
end
if old[2] and old[2] ~= '' and old[2] ~= inst
  and redis.call('GET', K .. 'instance:' .. old[2]) == id
then
  redis.call('DEL', K .. 'instance:' .. old[2])
end
if old[3] and old[3] ~= name
  and redis.call('HGET', K .. 'names', old[3]) == id
then
  redis.call('HDEL', K .. 'names', old[3])
end
redis.call('HSET', K .. 'names', name, id)
local uid = redis.call('HGET', K .. 'users', app)
if not uid then
  uid = tostring(redis.call('INCR', K .. 'userseq'))
  redis.call('HSET', K .. 'users', app, uid)
end
local t = ntype ~= '' and ntype or (old[5] or '')
redis.call('HSET', nk, 'id', id, 'key', hex, 'app_id', app,
  'instance_id', inst, 'stable_id', inst ~= '' and inst or id,
  'name', name, 'hostname', label, 'ip', ip, 'node_type', t,
  'ephemeral', eph, 'key_expiry', ARGV[8], 'user', uid,
  'auth_key', ARGV[9], 'registered_at', now, 'last_seen', now)
if not old[6] then
  redis.call('HSET', nk, 'created_at', now, 'online', '0',
    'endpoints', '')
end
redis.call('SET', K .. 'key:' .. hex, id)
if inst ~= '' then
  redis.call('SET', K .. 'instance:' .. inst, id)
end
redis.call('ZADD', K .. 'nodes', id, id)
redis.call('ZADD', K .. 'seen', now, id)
if tonumber(ARGV[8]) > 0 then
  redis.call('ZADD', K .. 'expiries', ARGV[8], id)
else
  redis.call('ZREM', K .. 'expiries', id)
end
redis.call('HSET', kk, 'used', '1')
redis.call('HINCRBY', kk, 'uses', 1)
if k[3] ~= '1' and k[6] and k[6] ~= '' then
  redis.call('ZREM', p .. 'quota:keys:' .. k[6], ARGV[9])
end
redis.call('SADD', p .. 'quota:nodes:' .. app, id)
redis.call('SADD', p .. 'quota:apps', app)
if inst ~= '' then
  local rk = p .. 'node:' .. inst
  local r = redis.call('HMGET', rk, 'node_type', 'hostname',
    'created_at')
  if not r[3] then
    redis.call('HSET', rk, 'uuid', inst, 'name', name, 'app_id', app,
      'created_at', now)
    redis.call('ZADD', p .. 'nodes', 0, inst)
  end
  local ot, h = r[1] or '', r[2] or ''
  local rt = t ~= '' and t or ot
  if h == '' then
    h = name .. '.dstack.internal'
  end
  redis.call('HSET', rk, 'tailscale_ip', ip, 'node_type', rt,
    'hostname', h, 'updated_at', now)
  if ot ~= '' and ot ~= rt then
    redis.call('ZREM', p .. 'type:' .. ot, inst)
  end
  if rt ~= '' then
    redis.call('ZADD', p .. 'type:' .. rt, 0, inst)
  end
  rest_changed(inst, ot, rt)
end
publish_node(id)
return answer(id, status)
