"""Let's Encrypt's rate limits as GCRA token buckets in Redis, checked and spent atomically.

One Lua script holds the whole protocol, so a decision over several buckets (the registered
domains, the exact name set, the account) is all-or-nothing even with many workers:

- spend: if every bucket has a token, take one from each and record a reservation. If one is
  empty, book the next free token of each empty bucket for this reservation (the k-th waiter of a
  bucket gets its k-th next token, so waiters are served in order) and say when to come back;
  spending the same reservation again then takes the remaining buckets' tokens;
- refund: give the tokens of a reservation back (granted or booked), exactly once;
- commit: forget a reservation (the certificate exists; nothing can be refunded any more);
- peek: tokens left and when the next one arrives;
- sync: the CA says a bucket is empty until a given time (a 429): make ours agree;
- seed: a lost bucket, rebuilt by the caller from PostgreSQL, written only if still missing.

A bucket is one key holding its theoretical arrival time (TAT) in microseconds of Redis' own clock
(`TIME`), unless the caller passes `now_us` (tests only). A bucket of `capacity` tokens refilling
one token per `interval` allows a spend at `now` when `TAT - now <= (capacity - 1) * interval`.
Keys expire when the bucket is full again, so idle buckets cost nothing.

A missing key therefore means "full", unless Redis lost it. `quota:since` records when this
Redis' quota state began; while it is younger than a durable bucket's period, a missing durable
bucket (a registered domain's) is not assumed full: the script asks the caller to rebuild it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis

logger = logging.getLogger(__name__)

SINCE_KEY = "quota:since"
RESERVATION_PREFIX = "quota:reservation:"

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

-- KEYS[1] is always quota:since, the moment this Redis' quota state began.
local since = tonumber(redis.call('GET', KEYS[1]) or '')
if not since then
  since = now
  redis.call('SET', KEYS[1], string.format('%.0f', now))
end

local function young(interval, capacity)
  return now - since < interval * capacity
end

-- The bucket's TAT, never before now; nil if a durable bucket is missing while it may have been lost.
local function tat_of(key, interval, capacity, durable)
  local stored = redis.call('GET', key)
  if stored then
    local value = tonumber(stored)
    if value > now then return value end
    return now
  end
  if durable and young(interval, capacity) then return nil end
  return now
end

local function store(key, tat, interval, capacity, durable)
  -- Expire when the bucket would be full again: nothing is lost by forgetting it then.
  local ttl_ms = math.ceil((tat - now) / 1000)
  if durable and young(interval, capacity) then
    -- Until the state is a period old, a missing durable key means "lost": keep even a full one.
    local until_old = math.ceil((since + interval * capacity - now) / 1000)
    if until_old > ttl_ms then ttl_ms = until_old end
  end
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
  -- KEYS: since, bucket...; ARGV: op, now, reservation key, reservation ttl ms,
  -- then interval, capacity, durable (0/1) per bucket.
  local reservation = ARGV[3]
  local record = redis.call('GET', reservation)
  local spent, taken = {}, {}
  if record then
    record = cjson.decode(record)
    -- Times are kept as strings: cjson keeps only 14 significant digits of a number.
    local ready = tonumber(record.ready)
    if ready > now then
      return {0, ready - now, record.why}
    end
    spent = record.spent
    for _, entry in ipairs(spent) do taken[entry[1]] = true end
  end
  local todo, at, why = {}, now, ''

  for i = 2, #KEYS do
    local key = KEYS[i]
    if not taken[key] then
      local base = 3 + 3 * (i - 1)
      local interval, capacity = tonumber(ARGV[base - 1]), tonumber(ARGV[base])
      local durable = ARGV[base + 1] == '1'
      local tat = tat_of(key, interval, capacity, durable)
      if tat == nil then return {-1, i - 1} end
      local allowed = tat - (capacity - 1) * interval
      if allowed > at then
        at = allowed
        why = key
      end
      todo[#todo + 1] = {key, interval, capacity, durable, tat, allowed}
    end
  end
  if #todo == 0 then
    return {1, 0}
  end
  local waiting = at > now
  for _, b in ipairs(todo) do
    local key, interval, capacity, durable, tat, allowed = b[1], b[2], b[3], b[4], b[5], b[6]
    if not waiting then
      store(key, tat + interval, interval, capacity, durable)
      spent[#spent + 1] = {key, string.format('%.0f', interval), capacity, durable}
    elseif allowed > now then
      -- Book this empty bucket's next free token (the token arriving at `at` or before),
      -- dated as if spent at `at`; buckets with room now are spent when the waiter returns.
      local from = tat
      if at > from then from = at end
      store(key, from + interval, interval, capacity, durable)
      spent[#spent + 1] = {key, string.format('%.0f', interval), capacity, durable}
    end
  end
  local ready = now
  if waiting then ready = at end
  local ttl = tonumber(ARGV[4]) + math.ceil((ready - now) / 1000)
  local encoded = cjson.encode({ready = string.format('%.0f', ready), spent = spent, why = why})
  redis.call('SET', reservation, encoded, 'PX', ttl)
  if waiting then return {0, at - now, why} end
  return {1, 0}
elseif op == 'refund' then
  -- KEYS: since; ARGV: op, now, reservation key
  local record = redis.call('GET', ARGV[3])
  if not record then
    return {0, 0}
  end
  redis.call('DEL', ARGV[3])
  record = cjson.decode(record)
  for _, entry in ipairs(record.spent) do
    local key, interval, capacity, durable = entry[1], tonumber(entry[2]), entry[3], entry[4]
    local stored = redis.call('GET', key)
    if stored then
      local tat = tonumber(stored) - interval
      if tat < now then tat = now end
      store(key, tat, interval, capacity, durable)
    end
  end
  return {1, 0}
elseif op == 'commit' then
  -- KEYS: since; ARGV: op, now, reservation key
  return {redis.call('DEL', ARGV[3]), 0}
elseif op == 'peek' or op == 'seed' or op == 'sync' then
  -- KEYS: since, bucket; ARGV: op, now, interval, capacity, durable, [TAT or CA's retry time]
  local key, interval, capacity = KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local durable = ARGV[5] == '1'
  if op == 'seed' then
    if redis.call('EXISTS', key) == 0 then
      local tat = tonumber(ARGV[6])
      if tat < now then tat = now end
      store(key, tat, interval, capacity, durable)
    end
    return {1, 0}
  end
  local tat = tat_of(key, interval, capacity, durable)
  if tat == nil then return {-1, 1} end
  if op == 'sync' then
    -- Empty until the CA's retry time: the next token arrives then, the others one interval apart.
    local synced = tonumber(ARGV[6]) + (capacity - 1) * interval
    if synced > tat then
      store(key, synced, interval, capacity, durable)
      return {1, synced - tat}
    end
    return {0, 0}
  end
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
    """One limit: `capacity` tokens, one more every `interval_us` microseconds.

    A durable bucket is rebuilt from PostgreSQL when Redis may have lost it (see `Quota.rebuild`);
    `subject` names what it counts (a registered domain, a name set, an account)."""

    key: str
    capacity: int
    interval_us: int
    durable: bool = False
    subject: str = ""

    @property
    def period_us(self) -> int:
        return self.capacity * self.interval_us

    def args(self) -> list:
        return [self.interval_us, self.capacity, 1 if self.durable else 0]


@dataclass(frozen=True)
class Decision:
    granted: bool
    # Microseconds until this reservation's tokens are all there, when not granted.
    wait_us: int = 0
    # The key of the bucket it waits for, when not granted.
    waiting_for: str = ""


@dataclass(frozen=True)
class Level:
    tokens_left: int
    next_token_in_us: int


# Rebuilds a lost durable bucket: its TAT in microseconds since the epoch, from what PostgreSQL knows.
Rebuilder = Callable[[Bucket], int]


def replay(spent_at_us: list[int], bucket: Bucket) -> int:
    """The TAT a bucket has after spends at these times (GCRA, one token each, in time order)."""
    tat = 0
    for at in sorted(spent_at_us):
        tat = max(tat, at) + bucket.interval_us
    return tat


class QuotaUnavailable(Exception):
    """The quota Redis could not be reached or answered with an error."""


class Quota:
    """The quota script on one Redis; loaded once, run with EVALSHA, reloaded after NOSCRIPT."""

    def __init__(
        self,
        client: redis.Redis,
        reservation_ttl_ms: int = 8 * 24 * 3600 * 1000,
        rebuild: Rebuilder | None = None,
    ) -> None:
        self.client = client
        self.script = client.register_script(SCRIPT)
        self.reservation_ttl_ms = reservation_ttl_ms
        self.rebuild = rebuild

    def _run(self, keys: list[str], args: list) -> list[int]:
        # redis-py's Script runs EVALSHA and, on NOSCRIPT (a restarted or flushed Redis), loads it again.
        try:
            return self.script(keys=[SINCE_KEY, *keys], args=args)
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"the quota store did not answer ({type(exc).__name__}: {exc})") from exc

    def _seed(self, bucket: Bucket, now_us: int | None) -> None:
        if self.rebuild is None:
            raise QuotaUnavailable(f"bucket {bucket.key} was lost and nothing can rebuild it")
        tat = self.rebuild(bucket)
        logger.info("quota bucket %s rebuilt from PostgreSQL", bucket.key)
        self._run([bucket.key], ["seed", _now(now_us), *bucket.args(), tat])

    def spend(self, reservation: str, buckets: list[Bucket], now_us: int | None = None) -> Decision:
        """Takes one token from every bucket, or books the next ones and says how long to wait.

        Idempotent per reservation: spending it again after the wait takes what is left."""
        args: list = ["spend", _now(now_us), RESERVATION_PREFIX + reservation, self.reservation_ttl_ms]
        for bucket in buckets:
            args += bucket.args()
        keys = [bucket.key for bucket in buckets]
        for _ in range(len(buckets) + 1):
            answer = self._run(keys, args)
            status, value = answer[0], answer[1]
            if status >= 0:
                why = answer[2] if len(answer) > 2 else b""
                return Decision(bool(status), int(value), why.decode() if isinstance(why, bytes) else why)
            self._seed(buckets[value - 1], now_us)
        raise QuotaUnavailable("the quota buckets kept disappearing while being rebuilt")

    def refund(self, reservation: str, now_us: int | None = None) -> bool:
        """Gives the reservation's tokens back (granted or booked); True only the first time."""
        done, _ = self._run([], ["refund", _now(now_us), RESERVATION_PREFIX + reservation])
        return bool(done)

    def commit(self, reservation: str) -> bool:
        """The certificate exists: its tokens are spent for good."""
        done, _ = self._run([], ["commit", "", RESERVATION_PREFIX + reservation])
        return bool(done)

    def peek(self, bucket: Bucket, now_us: int | None = None) -> Level:
        return self.peek_many([bucket], now_us)[0]

    def peek_many(self, buckets: list[Bucket], now_us: int | None = None) -> list[Level]:
        """Tokens left and the next token's arrival for each bucket, in one round trip."""
        if not buckets:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for bucket in buckets:
                self.script(
                    keys=[SINCE_KEY, bucket.key], args=["peek", _now(now_us), *bucket.args()], client=pipe
                )
            answers = pipe.execute()
        except redis.RedisError as exc:
            raise QuotaUnavailable(f"the quota store did not answer ({type(exc).__name__}: {exc})") from exc
        levels = []
        for bucket, (left, next_in) in zip(buckets, answers, strict=True):
            if left < 0:
                self._seed(bucket, now_us)
                left, next_in = self._run([bucket.key], ["peek", _now(now_us), *bucket.args()])
            levels.append(Level(int(left), int(next_in)))
        return levels

    def sync(self, bucket: Bucket, retry_at_us: int, now_us: int | None = None) -> bool:
        """The CA says the bucket is empty until `retry_at_us`: makes ours at least as empty.
        Returns whether ours had to change."""
        for _ in range(2):
            status, _ = self._run([bucket.key], ["sync", _now(now_us), *bucket.args(), retry_at_us])
            if status >= 0:
                return bool(status)
            self._seed(bucket, now_us)
        raise QuotaUnavailable(f"bucket {bucket.key} kept disappearing while being rebuilt")


def _now(now_us: int | None) -> int | str:
    return "" if now_us is None else now_us
