"""Let's Encrypt's rate limits as GCRA token buckets in Redis, checked and spent atomically.

One Lua script holds the whole protocol, so a decision over several buckets (the registered
domains, the exact name set, the account) is all-or-nothing even with many workers:

- spend: if every bucket has a token, take one from each and record a reservation;
- refund: give the tokens of a reservation back, exactly once;
- commit: forget a reservation (the certificate exists; nothing can be refunded any more);
- peek: tokens left and when the next one arrives.

A bucket is one key holding its theoretical arrival time (TAT) in microseconds of Redis' own clock
(`TIME`), unless the caller passes `now_us` (tests only). A bucket of `capacity` tokens refilling
one token per `interval` allows a spend at `now` when `TAT - now <= (capacity - 1) * interval`.
Keys expire when the bucket is full again, so idle buckets cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

SCRIPT = r"""
local op = ARGV[1]
local now
local injected = ARGV[2] ~= ''
if injected then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function tat_of(key)
  local stored = redis.call('GET', key)
  if stored then
    local value = tonumber(stored)
    if value > now then return value end
  end
  return now
end

local function store(key, tat, interval, capacity)
  -- Expire when the bucket would be full again: nothing is lost by forgetting it then.
  local ttl_ms = math.ceil((tat - now) / 1000)
  if injected and ttl_ms > 0 and ttl_ms < 3600000 then
    -- A test's clock is not Redis' expiry clock: keep such keys an hour rather than let Redis
    -- expire them in real time between two steps of the test's own timeline.
    ttl_ms = 3600000
  end
  if ttl_ms <= 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl_ms)
  end
end

if op == 'spend' then
  -- ARGV: op, now, reservation key, reservation ttl ms, then interval/capacity pairs per KEY
  local reservation = ARGV[3]
  if redis.call('EXISTS', reservation) == 1 then
    return {1, 0}
  end
  local tats = {}
  local wait = 0
  for i, key in ipairs(KEYS) do
    local interval = tonumber(ARGV[3 + 2 * i])
    local capacity = tonumber(ARGV[4 + 2 * i])
    local tat = tat_of(key)
    local allowed_at = tat - (capacity - 1) * interval
    if allowed_at > now and allowed_at - now > wait then
      wait = allowed_at - now
    end
    tats[i] = tat + interval
  end
  if wait > 0 then
    return {0, wait}
  end
  for i, key in ipairs(KEYS) do
    store(key, tats[i], tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i]))
  end
  local spec = {}
  for i, key in ipairs(KEYS) do
    spec[#spec + 1] = key
    spec[#spec + 1] = ARGV[3 + 2 * i]
    spec[#spec + 1] = ARGV[4 + 2 * i]
  end
  redis.call('SET', reservation, cjson.encode(spec), 'PX', tonumber(ARGV[4]))
  return {1, 0}
elseif op == 'refund' then
  -- ARGV: op, now, reservation key
  local spec = redis.call('GET', ARGV[3])
  if not spec then
    return {0, 0}
  end
  redis.call('DEL', ARGV[3])
  spec = cjson.decode(spec)
  for i = 1, #spec, 3 do
    local key, interval, capacity = spec[i], tonumber(spec[i + 1]), tonumber(spec[i + 2])
    local tat = tat_of(key) - interval
    if tat < now then tat = now end
    store(key, tat, interval, capacity)
  end
  return {1, 0}
elseif op == 'commit' then
  return {redis.call('DEL', ARGV[3]), 0}
elseif op == 'peek' then
  -- ARGV: op, now, interval, capacity (one KEY)
  local interval, capacity = tonumber(ARGV[3]), tonumber(ARGV[4])
  local tat = tat_of(KEYS[1])
  local left = math.floor((now + capacity * interval - tat) / interval)
  if left > capacity then left = capacity end
  if left < 0 then left = 0 end
  local next_in = 0
  if left < capacity then
    next_in = (tat - now) - (capacity - left - 1) * interval
    if next_in < 0 then next_in = 0 end
  end
  return {left, next_in}
end
return redis.error_reply('unknown quota operation ' .. tostring(op))
"""


@dataclass(frozen=True)
class Bucket:
    """One limit: `capacity` tokens, one more every `interval_us` microseconds."""

    key: str
    capacity: int
    interval_us: int


@dataclass(frozen=True)
class Decision:
    granted: bool
    # Microseconds until every bucket has a token, when not granted.
    wait_us: int = 0


@dataclass(frozen=True)
class Level:
    tokens_left: int
    next_token_in_us: int


class Quota:
    """The quota script on one Redis; loaded once, run with EVALSHA, reloaded after NOSCRIPT."""

    def __init__(self, client: redis.Redis, reservation_ttl_ms: int = 8 * 24 * 3600 * 1000) -> None:
        self.client = client
        self.script = client.register_script(SCRIPT)
        self.reservation_ttl_ms = reservation_ttl_ms

    def _run(self, keys: list[str], args: list) -> list[int]:
        # redis-py's Script runs EVALSHA and, on NOSCRIPT (a restarted or flushed Redis), loads it again.
        return self.script(keys=keys, args=args)

    def spend(self, reservation: str, buckets: list[Bucket], now_us: int | None = None) -> Decision:
        """Takes one token from every bucket, or none; idempotent per reservation id."""
        args: list = ["spend", "" if now_us is None else now_us, f"quota:reservation:{reservation}"]
        args.append(self.reservation_ttl_ms)
        for bucket in buckets:
            args += [bucket.interval_us, bucket.capacity]
        granted, wait = self._run([b.key for b in buckets], args)
        return Decision(bool(granted), int(wait))

    def refund(self, reservation: str, now_us: int | None = None) -> bool:
        """Gives the reservation's tokens back; True only the first time."""
        done, _ = self._run(
            [], ["refund", "" if now_us is None else now_us, f"quota:reservation:{reservation}"]
        )
        return bool(done)

    def commit(self, reservation: str) -> bool:
        """The certificate exists: its tokens are spent for good."""
        done, _ = self._run([], ["commit", "", f"quota:reservation:{reservation}"])
        return bool(done)

    def peek(self, bucket: Bucket, now_us: int | None = None) -> Level:
        left, next_in = self._run(
            [bucket.key], ["peek", "" if now_us is None else now_us, bucket.interval_us, bucket.capacity]
        )
        return Level(int(left), int(next_in))
