"""The Lua scripts CacheStorage runs, each on one record and its tombstone, atomically."""

# Every script touches one record (KEYS[1]) and its tombstone (KEYS[2]), whose names share
# a hash tag, so both live in one slot and every script stays valid on a Redis Cluster.
#
# A tombstone outlives its record by ``CacheStorage.tombstone`` (when that is not 0): its
# value, "<state>:<expiry in ms>", is what a claim of the dead key reports it took over.
#
# HMGET answers false for a missing field, and a nil inside a Lua table would cut the
# reply short, hence the ``or ''`` on the fields an in-flight record does not have.
#
# The origin (``origin_kind``, ``origin_name``) is written for operators and never read, so
# records written before it replaced ``method`` and ``path`` read the same. ``lease`` (ms)
# is read by the census only: the lease minus the remaining TTL is how long a key has run.

from __future__ import annotations

_CLAIM = """
local found = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'token',
                         'status', 'headers', 'body')
if found[1] then
  if found[1] == 'in_flight' and found[3] == ARGV[1] then
    -- Our own claim, sent again by the client's retry after a lost reply, or by a claim
    -- waiting for replicas: the write makes the WAIT after it cover the first copy's.
    redis.call('HSET', KEYS[1], 'token', ARGV[1])
    return {1}
  end
  return {0, found[1], found[2], found[3], found[4] or '', found[5] or '', found[6] or '',
          redis.call('PTTL', KEYS[1])}
end
local gone = false
if ARGV[8] ~= '0' then
  gone = redis.call('GET', KEYS[2])
end
redis.call('HSET', KEYS[1], 'state', 'in_flight', 'token', ARGV[1], 'fingerprint', ARGV[2],
           'scope', ARGV[4], 'key', ARGV[5], 'origin_kind', ARGV[6], 'origin_name', ARGV[7],
           'lease', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[8] == '0' then
  return {1}
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('SET', KEYS[2], 'in_flight:' .. string.format('%.0f', ms + tonumber(ARGV[3])),
           'PX', tonumber(ARGV[3]) + tonumber(ARGV[8]))
if not gone then
  return {1}
end
local state, expired = string.match(gone, '^([a-z_]+):(%d+)$')
return {1, state, ms - tonumber(expired)}
"""

_COMPLETE = """
local found = redis.call('HMGET', KEYS[1], 'state', 'token')
if found[2] ~= ARGV[1] then
  return 0
end
if found[1] == 'in_flight' then
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'status', ARGV[4], 'headers', ARGV[5],
             'body', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if ARGV[7] ~= '0' then
    local now = redis.call('TIME')
    local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('SET', KEYS[2], ARGV[2] .. ':' .. string.format('%.0f', ms + tonumber(ARGV[3])),
               'PX', tonumber(ARGV[3]) + tonumber(ARGV[7]))
  end
  return 1
end
-- The same owner already completed: the client's retry after a lost reply, or a
-- completion waiting for replicas (the write, as in the claim, is for its WAIT).
if found[1] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'state', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
local found = redis.call('HMGET', KEYS[1], 'state', 'token')
if found[1] == 'in_flight' and found[2] == ARGV[1] then
  -- Freed, not dead: a retry is a new request, not a takeover.
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""

_GET = """
local found = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'token',
                         'status', 'headers', 'body')
if not found[1] then
  return {}
end
return {found[1], found[2], found[3], found[4] or '', found[5] or '', found[6] or '',
        redis.call('PTTL', KEYS[1])}
"""

# A record's name is a digest of its scope and key, so an erasure finds a scope's records
# by their ``scope`` field; the script re-reads it, so a name it was given is only deleted
# while it still holds a record of that scope.
_ERASE = """
if redis.call('HGET', KEYS[1], 'scope') == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# An operator's release or expiry (storage/cache_operations.py), of the record as they saw
# it: same token and same state (a completion keeps the token, so the state tells it). A
# release deletes the tombstone too (the key was freed); an expiry keeps it, so the next
# claim is told what it took over, as after a TTL that ended by itself.
_DROP = """
local found = redis.call('HMGET', KEYS[1], 'state', 'token')
if found[2] ~= ARGV[1] or found[1] ~= ARGV[2] then
  return 0
end
if ARGV[3] == 'release' then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

SCRIPTS = {
    "claim": _CLAIM,
    "complete": _COMPLETE,
    "release": _RELEASE,
    "get": _GET,
    "erase": _ERASE,
    "drop": _DROP,
}
