"""Let's Encrypt's rate limits as GCRA token buckets in Redis, checked and spent atomically.

One Lua script holds the whole protocol, so a decision over several buckets (the registered
domains, the exact name set, the account) is all-or-nothing even with many workers:

- spend: if every bucket has a token, take one from each for the reservation. If one is empty,
  book the next free token of each empty bucket for the reservation (the k-th waiter of a bucket
  gets its k-th next token, so waiters are served in order) and say when to come back; spending
  the same reservation again then takes the remaining buckets' tokens;
- refund: give the tokens of a reservation back (taken or booked), exactly once;
- commit: forget a reservation (the certificate exists; nothing can be refunded any more);
- peek: tokens left and when the next one arrives;
- sync: the CA says a bucket is empty until a given time (a 429): make ours agree;
- seed: a lost bucket, rebuilt by the caller from PostgreSQL, written only if still missing;
- charge: one token taken after the fact, once per `once` key (a failed authorization the CA
  counted), never refused.

A "check only" bucket in a spend is one the order must find a token in, without taking it (Let's
Encrypt's failed-authorization limit: an order needs room for one more failure; only a failure
spends, through `charge`). It holds no reservation and books nothing: when it is empty the spend
waits until its next token arrives, and every waiter may go then, as at the CA.

A bucket is one hash: field `t` holds its theoretical arrival time (TAT) in microseconds of
Redis' own clock (`TIME`), unless the caller passes `now_us` (tests only), and one field per
reservation holding its tokens (so a spend costs one read and one write per bucket, and a
reservation lives exactly as long as the bucket it could be refunded to). A bucket of `capacity`
tokens refilling one token per `interval` allows a spend at `now` when
`TAT - now <= (capacity - 1) * interval`. Keys expire when the bucket is full again, so idle
buckets cost nothing.

A missing key therefore means "full", unless Redis lost it. `quota:since` records when this
Redis' quota state began; while it is younger than a durable bucket's period, a missing durable
bucket (a registered domain's) is not assumed full: the script asks the caller to rebuild it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import redis

logger = logging.getLogger(__name__)

SINCE_KEY = "quota:since"
# How long a charge is remembered at least (Quota.charge): a day, longer than any order lives.
ONCE_LIFETIME_MS = 24 * 3600 * 1000

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

-- Whether this Redis' quota state (KEYS[1], quota:since) is younger than a bucket's period, and
-- since when. Read only when a durable bucket is missing: the hot path never touches it.
local function young(interval, capacity)
  local since = tonumber(redis.call('GET', KEYS[1]) or '')
  if not since then
    redis.call('SET', KEYS[1], string.format('%d', now))
    return true, now
  end
  return now - since < interval * capacity, since
end

-- Writes a bucket's TAT (field t), and one reservation's field when given, expiring when the
-- bucket is full again (nothing is lost by forgetting it then) or not before `floor_ms`. Redis
-- writes a Lua number with 17 significant digits: microseconds survive exactly.
local function store(key, tat, field, value, floor_ms)
  local ttl_ms = math.ceil((tat - now) / 1000)
  if floor_ms and floor_ms > ttl_ms then ttl_ms = floor_ms end
  if injected and ttl_ms > 0 and ttl_ms < 3600000 then
    -- A test's clock is not Redis' expiry clock: keep such keys an hour rather than let Redis
    -- expire them in real time between two steps of the test's own timeline.
    ttl_ms = 3600000
  end
  if ttl_ms <= 0 then
    redis.call('DEL', key)
    return
  end
  if field then
    redis.call('HSET', key, 't', tat, field, value)
  else
    redis.call('HSET', key, 't', tat)
  end
  redis.call('PEXPIRE', key, ttl_ms)
end

if op == 'spend' then
  -- KEYS: since, bucket...; ARGV: op, now, reservation, then interval, capacity, durable (0/1),
  -- check only (0/1) per bucket. A bucket's field named after the reservation holds when its
  -- token is there: 0 once taken, or the booked token's arrival.
  local reservation = ARGV[3]
  local n, at, why = 0, now, ''
  local todo, tats, allowed = {}, {}, {}
  for i = 2, #KEYS do
    local key = KEYS[i]
    local base = 4 * i - 4
    local found = redis.call('HMGET', key, 't', reservation)
    -- A bucket full again (TAT not after now) is as good as expired: its reservations are void.
    local live = found[1] and tonumber(found[1]) > now
    if ARGV[base + 3] == '1' then
      -- Check only: a token must be there; none is taken or booked.
      if live then
        local ready = tonumber(found[1]) - (tonumber(ARGV[base + 1]) - 1) * tonumber(ARGV[base])
        if ready > at then
          at = ready
          why = key
        end
      end
    elseif live and found[2] then
      local ready = tonumber(found[2])
      if ready > now then return {0, ready - now, key} end
    else
      local interval, capacity = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
      local tat = now
      if live then
        tat = tonumber(found[1])
      elseif found[1] then
        -- What Redis would have expired by now (within its millisecond, or on a test's clock).
        redis.call('DEL', key)
      elseif ARGV[base + 2] == '1' and young(interval, capacity) then
        return {-1, i - 1}
      end
      n = n + 1
      todo[n], tats[n] = i, tat
      allowed[n] = tat - (capacity - 1) * interval
      if allowed[n] > at then
        at = allowed[n]
        why = key
      end
    end
  end
  local waiting = at > now
  if n == 0 and not waiting then
    return 1
  end
  for j = 1, n do
    -- Granted: every bucket's token is taken now. Waiting: each empty bucket's next free token
    -- (arriving at `at` or before) is booked, dated as if spent at `at`; buckets with room now
    -- are spent when the waiter returns.
    if not waiting then
      store(KEYS[todo[j]], tats[j] + tonumber(ARGV[4 * todo[j] - 4]), reservation, 0)
    elseif allowed[j] > now then
      local from = tats[j]
      if at > from then from = at end
      store(KEYS[todo[j]], from + tonumber(ARGV[4 * todo[j] - 4]), reservation, at)
    end
  end
  if waiting then return {0, at - now, why} end
  return 1
elseif op == 'refund' or op == 'commit' then
  -- KEYS: since, bucket...; ARGV: op, now, reservation, then the interval of each bucket.
  -- Refund gives each bucket's token of the reservation back, commit forgets it; once each.
  local reservation, done = ARGV[3], 0
  for i = 2, #KEYS do
    local found = redis.call('HMGET', KEYS[i], 't', reservation)
    if found[2] and tonumber(found[1]) <= now then
      -- Full again since: the token came back by itself, and the reservation is void.
      redis.call('HDEL', KEYS[i], reservation)
    elseif found[2] then
      done = 1
      redis.call('HDEL', KEYS[i], reservation)
      if op == 'refund' then
        local tat = tonumber(found[1]) - tonumber(ARGV[2 + i])
        if tat < now then tat = now end
        store(KEYS[i], tat)
      end
    end
  end
  return done
elseif op == 'charge' then
  -- KEYS: since, bucket, once; ARGV: op, now, interval, capacity, once's lifetime (ms).
  -- Charges one token for the event named by KEYS[3], once: 0 when it was charged already.
  -- Never refused, but never below empty either: Let's Encrypt's own spend of a failed
  -- authorization is best effort (spend-only), so one on an empty bucket changes nothing there
  -- (2), and ours must not wait longer than the CA would.
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', tonumber(ARGV[5])) then return 0 end
  local key, interval, capacity = KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local tat = tonumber(redis.call('HGET', key, 't') or '')
  if not tat or tat < now then tat = now end
  if tat - (capacity - 1) * interval > now then return 2 end
  store(key, tat + interval)
  return 1
elseif op == 'peek' or op == 'seed' or op == 'sync' then
  -- KEYS: since, bucket; ARGV: op, now, interval, capacity, durable, [TAT or CA's retry time]
  local key, interval, capacity = KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local stored = redis.call('HGET', key, 't')
  if op == 'seed' then
    if not stored then
      local tat = tonumber(ARGV[6])
      if tat < now then tat = now end
      -- Kept, even full, until the state is a period old: a missing key would be rebuilt again.
      local is_young, since = young(interval, capacity)
      local floor = nil
      if is_young then floor = math.ceil((since + interval * capacity - now) / 1000) end
      store(key, tat, nil, nil, floor)
    end
    return {1, 0}
  end
  local tat = now
  if stored then
    tat = tonumber(stored)
    if tat < now then tat = now end
  elseif ARGV[5] == '1' and young(interval, capacity) then
    return {-1, 1}
  end
  if op == 'sync' then
    -- Empty until the CA's retry time: the next token arrives then, the others one interval apart.
    local synced = tonumber(ARGV[6]) + (capacity - 1) * interval
    if synced > tat then
      if stored and tonumber(stored) <= now then redis.call('DEL', key) end
      store(key, synced)
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
# EVALSHA names a script by its SHA-1, as Redis computes it (an identifier, not a security measure).
SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()


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
    # Spends need a token here but take none (see `Quota.charge`).
    check_only: bool = False

    @property
    def period_us(self) -> int:
        return self.capacity * self.interval_us

    def args(self) -> list:
        return [self.interval_us, self.capacity, 1 if self.durable else 0]

    def spend_args(self) -> list:
        """This bucket's ARGV in a spend: `args()` and whether the spend only checks it."""
        return [self.interval_us, self.capacity, 1 if self.durable else 0, 1 if self.check_only else 0]


class Decision(NamedTuple):
    granted: bool
    # Microseconds until this reservation's tokens are all there, when not granted.
    wait_us: int = 0
    # The key of the bucket it waits for, when not granted.
    waiting_for: str = ""


class Level(NamedTuple):
    tokens_left: int
    next_token_in_us: int


GRANTED = Decision(True)


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

    def __init__(self, client: redis.Redis, rebuild: Rebuilder | None = None) -> None:
        self.client = client
        self.rebuild = rebuild

    def _run(self, keys: list[str], args: list) -> list:
        """EVALSHA of the script; on NOSCRIPT (a restarted or flushed Redis) it is loaded again."""
        try:
            try:
                return self.client.evalsha(SHA, len(keys) + 1, SINCE_KEY, *keys, *args)
            except redis.exceptions.NoScriptError:
                self.client.script_load(SCRIPT)
                return self.client.evalsha(SHA, len(keys) + 1, SINCE_KEY, *keys, *args)
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
        args: list = ["spend", _now(now_us), reservation]
        for bucket in buckets:
            args += bucket.spend_args()
        keys = [bucket.key for bucket in buckets]
        for _ in range(len(buckets) + 1):
            answer = self._run(keys, args)
            if answer == 1:
                return GRANTED
            status = answer[0]
            if status == 0:
                why = answer[2]
                return Decision(False, answer[1], why.decode() if isinstance(why, bytes) else why)
            self._seed(buckets[answer[1] - 1], now_us)
        raise QuotaUnavailable("the quota buckets kept disappearing while being rebuilt")

    def refund(self, reservation: str, buckets: list[Bucket], now_us: int | None = None) -> bool:
        """Gives the reservation's tokens in these buckets back (taken or booked; buckets it spent
        nothing from are left alone); True only the first time."""
        args = ["refund", _now(now_us), reservation, *(bucket.interval_us for bucket in buckets)]
        return bool(self._run([bucket.key for bucket in buckets], args))

    def charge(self, bucket: Bucket, once: str, now_us: int | None = None) -> bool:
        """Takes one token from `bucket` after the fact (never refused; an empty bucket stays
        empty), at most once per `once` key; True when this call charged it."""
        # The once key outlives any rerun of the step that charges, and the bucket's own period.
        lifetime_ms = max(bucket.period_us // 1000, ONCE_LIFETIME_MS)
        args = ["charge", _now(now_us), bucket.interval_us, bucket.capacity, lifetime_ms]
        return self._run([bucket.key, once], args) != 0

    def commit(self, reservation: str, buckets: list[Bucket]) -> bool:
        """The certificate exists: its tokens are spent for good (nothing can refund them)."""
        args = ["commit", "", reservation, *(bucket.interval_us for bucket in buckets)]
        return bool(self._run([bucket.key for bucket in buckets], args))

    def peek(self, bucket: Bucket, now_us: int | None = None) -> Level:
        return self.peek_many([bucket], now_us)[0]

    def peek_many(self, buckets: list[Bucket], now_us: int | None = None) -> list[Level]:
        """Tokens left and the next token's arrival for each bucket, in one round trip."""
        if not buckets:
            return []
        try:
            for attempt in range(2):
                pipe = self.client.pipeline(transaction=False)
                for bucket in buckets:
                    pipe.evalsha(SHA, 2, SINCE_KEY, bucket.key, "peek", _now(now_us), *bucket.args())
                try:
                    answers = pipe.execute()
                    break
                except redis.exceptions.NoScriptError:
                    if attempt:
                        raise
                    self.client.script_load(SCRIPT)
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
