"""The Redis side of the shared store: one Lua library of functions, one key per call.

Every Store operation is one `FCALL` on one key (so it runs unchanged on Redis Cluster) that
sets a TTL on what it writes (so no key outlives its use). Sliding windows are sorted sets of
microsecond timestamps read from `TIME` inside Redis: every node counts on the same clock.
Numbers cross into Redis commands as `%.0f` strings: Lua would print a microsecond timestamp
with 14 significant digits and lose the last ones.

A ban written or lifted here is published on `CHANNEL` (argument `publish` = 1), so that
every node learns it at once (`store.ban_feed`).
"""

from __future__ import annotations

LIBRARY = "mailmoat"
PREFIX = "mm:"
"""Prefix of every key mailmoat writes in Redis."""
CHANNEL = "mailmoat:bans"
"""Pub/sub channel of ban changes: `set <key> <ms> <value>` or `del <key>`, tab-separated."""
COUNTS_CHANNEL = "mailmoat:counts"
"""Pub/sub channel of what each node counted for admission, tab-separated, keys with PREFIX:
`slots <key> <node> <open connections>` and `hit <key> <node> <events> <window_ms>`."""

SOURCE = (
    r"""#!lua name=mailmoat

local function num(x)
  return string.format('%.0f', x)
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- mm_incr KEYS[1]; ttl_ms, amount: a fixed-window counter, the TTL set by its first increment
local function incr(keys, args)
  local v = redis.call('INCRBY', keys[1], args[2])
  if redis.call('PTTL', keys[1]) < 0 then
    redis.call('PEXPIRE', keys[1], args[1])
  end
  return v
end

-- mm_hit KEYS[1]; window_us, window_ms, cap[, n, node]: record n events (default 1) now,
-- return the events in the window; given a node, publish them on the counts channel
local function hit(keys, args)
  local key, window, cap = keys[1], tonumber(args[1]), tonumber(args[3])
  local n = math.min(tonumber(args[4] or '1'), cap)
  local now = now_us()
  redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now - window))
  for i = 1, n do
    local base = num(now)
    if i > 1 then
      base = base .. ':' .. i
    end
    local member, k = base, 0
    while redis.call('ZSCORE', key, member) and k < 64 do
      k = k + 1
      member = base .. '.' .. k
    end
    redis.call('ZADD', key, num(now), member)
  end
  local card = redis.call('ZCARD', key)
  if card > cap then
    redis.call('ZREMRANGEBYRANK', key, 0, card - cap - 1)
    card = cap
  end
  redis.call('PEXPIRE', key, args[2])
  if args[5] then
    redis.call('PUBLISH', '"""
    + COUNTS_CHANNEL
    + r"""',
      'hit\t' .. key .. '\t' .. args[5] .. '\t' .. n .. '\t' .. args[2])
  end
  return card
end

-- mm_count KEYS[1]; window_us: the events in the window, none recorded
local function count(keys, args)
  local now = now_us()
  return redis.call('ZCOUNT', keys[1], '(' .. num(now - tonumber(args[1])), '+inf')
end

-- mm_get KEYS[1]: a string value (nil for a window or a counter's absence)
local function get(keys, args)
  if redis.call('TYPE', keys[1])['ok'] ~= 'string' then
    return nil
  end
  return redis.call('GET', keys[1])
end

-- mm_set KEYS[1]; value, ttl_ms, publish, name
local function set(keys, args)
  redis.call('SET', keys[1], args[1], 'PX', args[2])
  if args[3] == '1' then
    local change = 'set\t' .. args[4] .. '\t' .. args[2] .. '\t' .. args[1]
    redis.call('PUBLISH', '"""
    + CHANNEL
    + r"""', change)
  end
  return 1
end

-- mm_ttl KEYS[1]: milliseconds left, negative when the key does not exist
local function ttl(keys, args)
  return redis.call('PTTL', keys[1])
end

-- mm_del KEYS[1]; publish, name
local function del(keys, args)
  local n = redis.call('DEL', keys[1])
  if args[1] == '1' then
    redis.call('PUBLISH', '"""
    + CHANNEL
    + r"""', 'del\t' .. args[2])
  end
  return n
end

-- mm_nodes KEYS[1]; node, alive_us, ttl_ms: a node's heartbeat, returns the live nodes' names
local function nodes(keys, args)
  local now = now_us()
  redis.call('ZADD', keys[1], num(now), args[1])
  redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', num(now - tonumber(args[2])))
  redis.call('PEXPIRE', keys[1], args[3])
  return redis.call('ZRANGE', keys[1], 0, -1)
end

-- mm_slots KEYS[1]; node, own, alive_us, ttl_ms, live nodes...: set this node's count of open
-- connections (a hash field per node, "count time_us"), publish it on the counts channel, and
-- return the sum over the nodes that are live or reported within alive_us; the fields of other
-- nodes (crashed ones) are dropped
local function slots(keys, args)
  local key, now, alive = keys[1], now_us(), tonumber(args[3])
  redis.call('PUBLISH', '"""
    + COUNTS_CHANNEL
    + r"""', 'slots\t' .. key .. '\t' .. args[1] .. '\t' .. args[2])
  if tonumber(args[2]) > 0 then
    redis.call('HSET', key, args[1], args[2] .. ' ' .. num(now))
  else
    redis.call('HDEL', key, args[1])
  end
  local live = {}
  for i = 5, #args do
    live[args[i]] = true
  end
  local total, fields = 0, redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local n, at = string.match(fields[i + 1], '^(%d+) (%d+)$')
    if n and (live[fields[i]] or now - tonumber(at) < alive) then
      total = total + tonumber(n)
    else
      redis.call('HDEL', key, fields[i])
    end
  end
  if total > 0 then
    redis.call('PEXPIRE', key, args[4])
  end
  return total
end

redis.register_function('mm_incr', incr)
redis.register_function('mm_hit', hit)
redis.register_function{function_name='mm_count', callback=count, flags={'no-writes'}}
redis.register_function{function_name='mm_get', callback=get, flags={'no-writes'}}
redis.register_function('mm_set', set)
redis.register_function{function_name='mm_ttl', callback=ttl, flags={'no-writes'}}
redis.register_function('mm_del', del)
redis.register_function('mm_nodes', nodes)
redis.register_function('mm_slots', slots)
"""
)
