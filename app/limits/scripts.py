"""The Lua scripts ``RedisLimiter`` runs (one EVALSHA per admission, one per settle) and their
SHA1 digests. Both mirror the pure maths of ``app.limits.model`` (``window``) and
``app.limits.local`` (``correct``); a slot counts while ``now < slot + 61``.

ADMIT  KEYS: per bucket, its request window, token window and spend counter (3 keys each).
       ARGV: one comma-separated string: now in ms (0: the server's TIME), tokens, then per
       bucket rpm, tpm, budget in nano-dollars (-1: none), then the credit asked for (requests;
       0: none), then optionally 0: charge no call, only ask for the credit (a renewal,
       ``RedisLimiter``; ``tokens`` is then each of the credit's calls' estimate).
       Returns one comma-separated string: status (0 admitted, 1 rate limit, 2 budget),
       refusing bucket (1-based, budget only), now in ms, then per bucket six integers:
       requests used, reset ms, retry ms, tokens used, reset ms, retry ms (used -1: no such
       limit; a granted credit counted in "used"; on a refusal, a window with room still
       counts the call in "used", which ``uncharged`` takes out, but its reset is the
       uncharged one: when its last charge leaves, 0 when it holds none); when admitted, two
       more: the credit granted (0: none) and its slot. All buckets are charged, or none; a
       credit is granted to all of them, or to none, only where the window, credit included,
       stays under an eighth of every limit, and the spend under half of every budget
       (``app.limits.model``).
RELEASE KEYS: per bucket, its request window and token window (2 keys each).
       ARGV: one comma-separated string: a credit's slot, its requests and tokens left.
       Takes them out of that slot (never below zero). Returns 1.
       (One string each way: redis-py spends most of an EVALSHA's client CPU encoding arguments
       and parsing reply elements one by one; see bench/limiter.py.)
SETTLE KEYS: per bucket, its token window and spend counter (2 keys each).
       ARGV[1]: one comma-separated string: now in ms (0: TIME), used - reserved, ms since the
       admission (-1: unknown), cost in nano-dollars, the slot the reservation was charged to
       (-1: unknown; then the ms since the admission find it), then per bucket: 1 if it has a
       TPM limit else 0, the spend counter's TTL in s (-1: none), its budget in nano-dollars
       (-1: none). ARGV[2]: the budget-news channel: when this spend takes a counter to half
       its budget or past it from below, one message ``half`` is published there (every
       process then drops the credits of its callers with a budget, ``app.limits.model``).
       Returns 2 when it published (the settling process drops them at once), else 1.

Spend and budgets are integer nano-dollars. INCRBY keeps a counter as a 64-bit integer, exact to
$9.2 billion; the scripts compare it, as Lua 5.1 numbers (doubles), exactly up to 2^53
nano-dollars (about $9 million) and beyond that within one part in 2^53 (at most $0.00000013
at a $1,000,000,000 budget, the largest a key or team may have: ``app.keys.model.Budget``).
"""

from __future__ import annotations

import hashlib

_CLOCK = """
local A = {}
for v in string.gmatch(ARGV[1], '[^,]+') do A[#A + 1] = tonumber(v) end
local now_ms = A[1]
if now_ms <= 0 then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local second = math.floor(now_ms / 1000)
local life = 61
local credit_life = 30
local function live_slots(key)
  local flat = redis.call('HGETALL', key)
  local live, stale, total = {}, {}, 0
  for j = 1, #flat, 2 do
    local s = tonumber(flat[j])
    if s + life <= second then
      stale[#stale + 1] = flat[j]
    else
      local c = tonumber(flat[j + 1])
      total = total + c
      live[#live + 1] = {s, c}
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  return live, total
end
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
"""

ADMIT = _CLOCK + """
local want = A[2]
local n = #KEYS / 3
local spent = {}
for i = 1, n do
  local budget = A[3 * i + 2]
  if budget >= 0 then
    spent[i] = tonumber(redis.call('GET', KEYS[3 * i]) or '0')
    if spent[i] >= budget then return table.concat({2, i, now_ms}, ',') end
  end
end
local function scan(key, limit, cost)
  local live, total = live_slots(key)
  local fits = math.min(cost, limit)
  if total + fits <= limit then return {total + cost, (second + life) * 1000 - now_ms, 0} end
  local need, freed, retry, last = total + fits - limit, 0, life * 1000, second - life
  for _, sc in ipairs(live) do
    if sc[2] > 0 then last = sc[1] end
  end
  for _, sc in ipairs(live) do
    freed = freed + sc[2]
    if freed >= need then
      retry = (sc[1] + life) * 1000 - now_ms
      break
    end
  end
  return {total, math.max(0, (last + life) * 1000 - now_ms), retry}
end
local out, refused = {0, 0, now_ms}, false
local credit = A[3 * n + 3] or 0
local charge = A[3 * n + 4] or 1
for i = 1, n do
  local r, t = {-1, 0, 0}, {-1, 0, 0}
  local rpm, tpm, budget = A[3 * i], A[3 * i + 1], A[3 * i + 2]
  if rpm >= 0 then r = scan(KEYS[3 * i - 2], rpm, charge) end
  if tpm >= 0 then t = scan(KEYS[3 * i - 1], tpm, want * charge) end
  if r[3] > 0 or t[3] > 0 then refused = true end
  for _, v in ipairs({r[1], r[2], r[3], t[1], t[2], t[3]}) do out[#out + 1] = v end
  if rpm >= 0 and (r[1] + credit) * 8 > rpm then credit = 0 end
  if tpm >= 0 and (t[1] + credit * want) * 8 > tpm then credit = 0 end
  if budget >= 0 and spent[i] * 2 >= budget then credit = 0 end
end
if refused then
  out[1] = 1
  -- A window with room reports its reset as it stands, uncharged (scan gave the charged
  -- one's, a full life away): nothing is charged for a refused call (app.limits.model).
  for i = 1, n do
    for k = 0, 1 do
      local at = 6 * i - 2 + 3 * k
      if out[at] >= 0 and out[at + 2] == 0 then
        local live = live_slots(KEYS[3 * i - 2 + k])
        local last = nil
        for _, sc in ipairs(live) do
          if sc[2] > 0 then last = sc[1] end
        end
        out[at + 1] = last and math.max(0, (last + life) * 1000 - now_ms) or 0
      end
    end
  end
  return table.concat(out, ',')
end
local slot = second + credit_life
for i = 1, n do
  if credit > 0 and A[3 * i] >= 0 then out[6 * i - 2] = out[6 * i - 2] + credit end
  if credit > 0 and A[3 * i + 1] >= 0 then out[6 * i + 1] = out[6 * i + 1] + credit * want end
end
for i = 1, n do
  local req, tok = KEYS[3 * i - 2], KEYS[3 * i - 1]
  if A[3 * i] >= 0 then
    if charge > 0 then redis.call('HINCRBY', req, second, 1) end
    if credit > 0 then redis.call('HINCRBY', req, slot, credit) end
    extend(req, ((credit > 0 and slot or second) + life + 1 - second) * 1000)
  end
  if A[3 * i + 1] >= 0 and want > 0 then
    if charge > 0 then redis.call('HINCRBY', tok, second, want) end
    if credit > 0 then redis.call('HINCRBY', tok, slot, credit * want) end
    extend(tok, ((credit > 0 and slot or second) + life + 1 - second) * 1000)
  end
end
out[#out + 1] = credit
out[#out + 1] = slot
return table.concat(out, ',')
"""

RELEASE = _CLOCK + """
local slot, requests, tokens = A[1], A[2], A[3]
for i = 1, #KEYS / 2 do
  for _, pair in ipairs({{KEYS[2 * i - 1], requests}, {KEYS[2 * i], tokens}}) do
    local have = tonumber(redis.call('HGET', pair[1], slot) or '0')
    local take = math.min(have, pair[2])
    if take > 0 then redis.call('HINCRBY', pair[1], slot, -take) end
  end
end
return 1
"""

SETTLE = _CLOCK + """
local delta, elapsed, cost, charged = A[2], A[3], A[4], A[5]
local crossed = false
for i = 1, #KEYS / 2 do
  local key = KEYS[2 * i - 1]
  if A[3 + 3 * i] == 1 and delta > 0 then
    redis.call('HINCRBY', key, second, delta)
    extend(key, (life + 1) * 1000)
  elseif A[3 + 3 * i] == 1 and delta < 0 then
    local owed = -delta
    local live = live_slots(key)
    if charged >= 0 then
      local only = {}
      for _, sc in ipairs(live) do
        if sc[1] == charged then only[1] = sc end
      end
      live = only
    elseif elapsed >= 0 then
      -- the admission's second, and the seconds beside it: the gateway's clock and Redis's
      -- disagree by milliseconds, which crosses a second's edge now and then
      local target = math.floor((now_ms - elapsed) / 1000)
      local near = {}
      for _, sc in ipairs(live) do
        if math.abs(sc[1] - target) <= 1 then near[#near + 1] = sc end
      end
      table.sort(near, function(a, b)
        return math.abs(a[1] - target) < math.abs(b[1] - target)
      end)
      live = near
    end
    for _, sc in ipairs(live) do
      local take = math.min(owed, sc[2])
      if take > 0 then
        redis.call('HINCRBY', key, sc[1], -take)
        owed = owed - take
      end
      if owed == 0 then break end
    end
  end
  if cost > 0 then
    local after = redis.call('INCRBY', KEYS[2 * i], cost)
    local ttl, budget = A[4 + 3 * i], A[5 + 3 * i]
    if ttl > 0 then redis.call('EXPIRE', KEYS[2 * i], ttl) end
    if budget >= 0 and after * 2 >= budget and (after - cost) * 2 < budget then
      crossed = true
    end
  end
end
if crossed then
  redis.call('PUBLISH', ARGV[2], 'half')
  return 2
end
return 1
"""

RAISE = """
local raised = {}
for i, key in ipairs(KEYS) do
  local value = tonumber(ARGV[2 * i - 1])
  if value > tonumber(redis.call('GET', key) or '0') then
    redis.call('SET', key, ARGV[2 * i - 1])
    local ttl = tonumber(ARGV[2 * i])
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    raised[#raised + 1] = i
  end
end
return raised
"""
"""RAISE  KEYS: spend counters of one hash tag. ARGV: per counter, nano-dollars then TTL in s
(-1: none). Sets each counter to its value if that is higher (never lowers one); returns the
(1-based) positions of the counters it raised."""


def sha1(source: str) -> str:
    """The digest EVALSHA names ``source`` by."""
    return hashlib.sha1(source.encode()).hexdigest()
