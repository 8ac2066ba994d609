-- The part every control plane script starts with (lua/cp_*.lua are
-- each appended to it at build time, scripts/lua2c.sh).  ARGV[1] is the
-- key prefix, "K" the prefix of the control plane's keys, and remove()
-- takes a node out everywhere (its key, instance, name and address, the
-- REST record's tailscale_ip) and publishes "rm <id>".
--
-- Messages on "<prefix>vpn:events", one change each, self-contained so
-- that a delta costs what changed and no read.  Each starts with its
-- sequence number (INCR <prefix>vpn:evseq), so that a map stream can
-- tell the changes that its full map already holds from later ones:
--     <seq> up <id> <key> <name> <ip> <endpoints> <online> <last_seen>
--              <key_expiry> <stable_id> <hostname> <user> <app_id>
--              <instance_id>  ("-": empty)
--     <seq> rm <id>
--     <seq> on <id> <0|1> <last_seen>
--     <seq> ep <id> <endpoints, comma-separated, or "-">
--

local p = ARGV[1]
local K = p .. 'vpn:'
local NF = {'id', 'key', 'name', 'ip', 'endpoints', 'online',
  'last_seen', 'key_expiry', 'stable_id', 'hostname', 'user',
  'app_id', 'instance_id'}
local function clock()
  return tonumber(redis.call('TIME')[1])
end
local function node_fields(id)
  local f = redis.call('HMGET', K .. 'node:' .. id, unpack(NF))
  if not f[1] then
    return nil
  end
  for i = 1, #NF do
    f[i] = f[i] or ''
  end
  return f
end
local function publish(m)
  local s = redis.call('INCR', K .. 'evseq')
  redis.call('PUBLISH', K .. 'events', s .. ' ' .. m)
end
local function publish_node(id)
  local f = node_fields(id)
  if f then
    for i = 1, #NF do
      if f[i] == '' then
        f[i] = '-'
      end
    end
    publish('up ' .. table.concat(f, ' '))
  end
end
local function ip2n(ip)
  local a, b, c, d = string.match(ip or '',
    '^(%d+)%.(%d+)%.(%d+)%.(%d+)$')
  if not a then
    return nil
  end
  return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256
    + tonumber(d)
end
local function n2ip(n)
  return string.format('%d.%d.%d.%d', math.floor(n / 16777216) % 256,
    math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
local function rest_changed(inst, t1, t2)
  redis.call('DEL', p .. 'view:nodes')
  if t1 ~= '' then
    redis.call('DEL', p .. 'view:type:' .. t1)
  end
  if t2 ~= '' and t2 ~= t1 then
    redis.call('DEL', p .. 'view:type:' .. t2)
  end
  redis.call('PUBLISH', p .. 'events', 'node ' .. inst)
end
local function remove(id)
  local nk = K .. 'node:' .. id
  local f = redis.call('HMGET', nk, 'key', 'instance_id', 'name',
    'ip', 'app_id')
  redis.call('ZREM', K .. 'nodes', id)
  redis.call('ZREM', K .. 'seen', id)
  redis.call('ZREM', K .. 'expiries', id)
  if not f[1] then
    return false
  end
  if redis.call('GET', K .. 'key:' .. f[1]) == id then
    redis.call('DEL', K .. 'key:' .. f[1])
  end
  local inst, ip = f[2] or '', f[4] or ''
  if inst ~= ''
    and redis.call('GET', K .. 'instance:' .. inst) == id
  then
    redis.call('DEL', K .. 'instance:' .. inst)
  end
  if f[3] and redis.call('HGET', K .. 'names', f[3]) == id then
    redis.call('HDEL', K .. 'names', f[3])
  end
  if ip ~= '' and redis.call('HGET', K .. 'ips', ip) == id then
    redis.call('HDEL', K .. 'ips', ip)
    local n = ip2n(ip)
    if n then
      redis.call('ZADD', K .. 'ipfree', n, ip)
    end
  end
  if f[5] then
    redis.call('SREM', p .. 'quota:nodes:' .. f[5], id)
  end
  redis.call('DEL', nk)
  if inst ~= '' and ip ~= '' then
    local rk = p .. 'node:' .. inst
    local r = redis.call('HMGET', rk, 'tailscale_ip', 'node_type')
    if r[1] == ip then
      redis.call('HSET', rk, 'tailscale_ip', '',
        'updated_at', clock())
      rest_changed(inst, r[2] or '', '')
    end
  end
  publish('rm ' .. id)
  return true
end
