"""Per-integrator rate limits: a token bucket per integrator in Redis, shared by every API
process.

One Lua script refills a bucket by the time passed (Redis's clock, so processes need not agree
on theirs) and takes tokens from it, atomically. A process takes them in leases: with the
tokens its requests need, a spare share sized to about LEASE_SECONDS of its recent use of the
integrator (at most a tenth of the burst and LEASE_SECONDS of the refill), which it spends
locally until the share runs out or LEASE_SECONDS have passed; what it did not spend goes back
to the bucket with its next call. So under load most requests ask Redis nothing, and the
requests that do ask it together (one script call for all that arrive at once). A process
never spends a token the bucket did not give it; docs/operations.md says what leases cost the
limit's precision.

When Redis cannot be reached, requests pass: the limiter is not worth refusing writes for. Each
request let through that way is counted in `idmirror_rate_limiter_unavailable_total`, and Redis
is not asked again for a second.
"""

import asyncio
import logging
import math
from dataclasses import dataclass, field

import redis.asyncio
from prometheus_client import Counter
from redis.exceptions import RedisError

from identity.integrators import RateLimit

log = logging.getLogger(__name__)
UNAVAILABLE = Counter(
    "idmirror_rate_limiter_unavailable",
    "Requests let through without a rate limit check because Redis could not be reached",
)
# KEYS: one bucket per check; ARGV: per check its rate, burst, the tokens wanted, the tokens
# given back (a lease's rest) and whether to take the wanted tokens even from too few (1: a debt
# that later requests pay for). Returns per check the tokens granted (all wanted, or as many
# whole ones as the bucket holds) and the tokens left, as text.
_SCRIPT = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
    local rate, burst = tonumber(ARGV[5 * i - 4]), tonumber(ARGV[5 * i - 3])
    local want, give = tonumber(ARGV[5 * i - 2]), tonumber(ARGV[5 * i - 1])
    local force = ARGV[5 * i] == '1'
    local state = redis.call('HMGET', key, 't', 'at')
    local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate + give)
    local granted = want
    if not force then
        granted = math.min(want, math.max(0, math.floor(tokens)))
    end
    tokens = tokens - granted
    -- Stored in full: tostring() keeps 14 digits, a tenth of a millisecond of the time, and
    -- with calls that close together the refill it rounded away and back added up. A clock
    -- stepped back refills nothing until it has caught up with the last call.
    redis.call('HSET', key, 't', string.format('%.17g', tokens),
               'at', string.format('%.6f', math.max(now, at)))
    redis.call('PEXPIRE', key, math.ceil(1000 * (burst - math.min(tokens, 0)) / rate) + 1000)
    out[i] = {tostring(granted), tostring(tokens)}
end
return out
"""
_BATCH = 200
_QUIET_SECONDS = 1.0  # after Redis failed, how long requests pass without asking it
LEASE_SECONDS = 0.1  # how long a process spends a lease's tokens before giving the rest back
_LEASE_SHARE = 0.1  # of the burst, the most a lease holds beyond what its requests need


@dataclass(frozen=True)
class Decision:
    """What the bucket said: whether the request may go on, and the headers that say so."""

    allowed: bool
    limit: RateLimit
    tokens: float
    cost: float

    def headers(self) -> dict[str, str]:
        headers = {name.decode(): value.decode() for name, value in self.raw_headers()}
        if not self.allowed:
            rate = self.limit.per_second
            headers["Retry-After"] = str(max(1, math.ceil((self.cost - self.tokens) / rate)))
        return headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit-Limit, -Remaining and -Reset, as an ASGI answer carries them."""
        rate, burst = self.limit.per_second, self.limit.burst
        return [
            (b"ratelimit-limit", b"%d" % burst),
            (b"ratelimit-remaining", b"%d" % max(0, math.floor(self.tokens))),
            (b"ratelimit-reset", b"%d" % max(0, math.ceil((burst - self.tokens) / rate))),
        ]


@dataclass
class _Lease:
    """Tokens of one integrator this process took from the bucket and has not spent yet."""

    limit: RateLimit
    granted: float
    left: float
    bucket: float  # what the bucket held once they were taken
    at: float  # loop time they were taken
    until: float  # loop time after which they are not spent, but given back

    def serves(self, limit: RateLimit, cost: float, now: float) -> bool:
        """Whether this lease may pay for a request now (the limit it was taken under is the
        integrator's, the same object until the principal is resolved again)."""
        same = self.limit is limit or self.limit == limit
        return same and now < self.until and self.left >= cost

    def spend(self, cost: float) -> Decision:
        self.left -= cost
        return Decision(True, self.limit, self.bucket + self.left, cost)


@dataclass
class _Check:
    """One call for one integrator in a script batch: the requests waiting for tokens (or a
    forced charge) and a spare share, and the rest of the integrator's last lease, given back."""

    integrator: str
    limit: RateLimit
    want: float
    give: float
    force: bool
    waiters: "list[tuple[float, asyncio.Future[Decision | None]]]" = field(default_factory=list)
    answered: "asyncio.Future[None] | None" = None  # set once the waiters have their decisions

    @property
    def key(self) -> str:
        return "{idmirror:rate}:" + self.integrator


class RateLimiter:
    """Token buckets in Redis, for the event loop it is used on."""

    def __init__(self, redis_url: str, *, timeout: float = 0.5) -> None:
        self._redis = redis.asyncio.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._script = self._redis.register_script(_SCRIPT)
        self._queue: list[_Check] = []
        self._sender: asyncio.Task[None] | None = None
        self._quiet_until = 0.0
        self._leases: dict[str, _Lease] = {}
        self._unsent: dict[str, _Check] = {}  # per integrator, its call still in the queue
        self._sent: dict[str, _Check] = {}  # per integrator, its call Redis has not answered

    async def take(
        self, integrator: str, limit: RateLimit, cost: float = 1.0, *, force: bool = False
    ) -> Decision | None:
        """Take `cost` from the integrator's bucket (from this process's lease when it holds
        enough); None when Redis could not say."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now < self._quiet_until:
                UNAVAILABLE.inc()
                return None
            if force:
                check = _Check(integrator, limit, cost, 0.0, True)
                self._enqueue(check)
                break
            lease = self._leases.get(integrator)
            if lease is not None and lease.serves(limit, cost, now):
                return lease.spend(cost)
            if integrator in self._unsent or integrator not in self._sent:
                check = self._unsent.get(integrator) or self._refill(integrator, limit, now)
                check.want += cost
                break
            answered = self._sent[integrator].answered
            assert answered is not None
            await asyncio.shield(answered)  # the lease it brings may serve this request
        future: asyncio.Future[Decision | None] = loop.create_future()
        check.waiters.append((cost, future))
        decision = await future
        if decision is None:
            UNAVAILABLE.inc()
        return decision

    def _refill(self, integrator: str, limit: RateLimit, now: float) -> _Check:
        """Queue the call that gives back the rest of the integrator's lease and takes a new
        one: what the waiting requests cost (each adds its own) and a spare share of about
        LEASE_SECONDS of the use the last lease saw."""
        lease = self._leases.pop(integrator, None)
        spare, give = 0.0, 0.0
        if lease is not None:
            give = max(0.0, lease.left)
            if lease.limit == limit and now > lease.at:
                spare = (lease.granted - give) / (now - lease.at) * LEASE_SECONDS
        most = min(limit.burst * _LEASE_SHARE, limit.per_second * LEASE_SECONDS)
        check = _Check(integrator, limit, float(math.floor(min(spare, most))), give, False)
        check.answered = asyncio.get_running_loop().create_future()
        self._unsent[integrator] = check
        self._enqueue(check)
        return check

    def _answer(self, check: _Check, answer: tuple[float, float] | None) -> None:
        """Decide the check's waiters, in the order they came, from what the bucket granted;
        what they leave is the integrator's new lease."""
        if not check.force:
            del self._sent[check.integrator]
        lease: _Lease | None = None
        if answer is not None and not check.force:
            granted, tokens = answer
            now = asyncio.get_running_loop().time()
            lease = _Lease(check.limit, granted, granted, tokens, now, now + LEASE_SECONDS)
            self._leases[check.integrator] = lease
        for cost, future in check.waiters:
            if future.done():  # the request went away: its tokens stay in the lease
                continue
            if answer is None:
                future.set_result(None)
            elif lease is None:
                future.set_result(Decision(True, check.limit, answer[1], cost))
            elif lease.left >= cost:
                future.set_result(lease.spend(cost))
            else:
                future.set_result(Decision(False, check.limit, lease.bucket + lease.left, cost))
        if check.answered is not None:
            check.answered.set_result(None)

    def _enqueue(self, check: _Check) -> None:
        self._queue.append(check)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_while_queued(), name="rate-limiter")

    async def close(self) -> None:
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        await self._redis.aclose()

    async def _send_while_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
            args: list[str | float] = []
            for check in batch:
                rate, burst = check.limit.per_second, check.limit.burst
                args += [rate, burst, check.want, check.give, int(check.force)]
                if not check.force:
                    self._sent[check.integrator] = self._unsent.pop(check.integrator)
            try:
                answers = await self._script(keys=[check.key for check in batch], args=args)
            except Exception as exc:  # Redis down or answering nonsense: no reason to refuse
                if isinstance(exc, RedisError | OSError):
                    log.warning("rate limiter: Redis unreachable (%s); letting requests pass", exc)
                else:
                    log.exception("rate limiter failed; letting requests pass")
                self._quiet_until = asyncio.get_running_loop().time() + _QUIET_SECONDS
                for check in batch:
                    self._answer(check, None)
                continue
            for check, (granted, tokens) in zip(batch, answers, strict=True):
                self._answer(check, (float(granted), float(tokens)))
