"""Per-integrator rate limits: a token bucket per integrator in Redis, shared by every API
process.

One Lua script refills a bucket by the time passed (Redis's clock, so processes need not agree
on theirs) and takes a request's cost from it, atomically. The checks of requests that arrive
together go to Redis as one script call, so under load a round trip serves many requests. When
Redis cannot be reached, requests pass: the limiter is not worth refusing writes for. Each
request let through that way is counted in `idmirror_rate_limiter_unavailable_total`, and Redis
is not asked again for a second.
"""

import asyncio
import logging
import math
from dataclasses import dataclass

import redis.asyncio
from prometheus_client import Counter
from redis.exceptions import RedisError

from identity.integrators import RateLimit

log = logging.getLogger(__name__)
UNAVAILABLE = Counter(
    "idmirror_rate_limiter_unavailable",
    "Requests let through without a rate limit check because Redis could not be reached",
)
# KEYS: one bucket per check (an integrator's may come several times); ARGV: per check its
# rate, burst, cost and whether to take the cost even from too few tokens (1: a debt that later
# requests pay for). Returns per check whether it was allowed and the tokens left, as text.
_SCRIPT = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
    local rate, burst = tonumber(ARGV[4 * i - 3]), tonumber(ARGV[4 * i - 2])
    local cost, force = tonumber(ARGV[4 * i - 1]), ARGV[4 * i] == '1'
    local state = redis.call('HMGET', key, 't', 'at')
    local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
    local allowed = 0
    if tokens >= cost or force then
        tokens = tokens - cost
        allowed = 1
    end
    redis.call('HSET', key, 't', tostring(tokens), 'at', tostring(now))
    redis.call('PEXPIRE', key, math.ceil(1000 * (burst - math.min(tokens, 0)) / rate) + 1000)
    out[i] = {allowed, tostring(tokens)}
end
return out
"""
_BATCH = 200
_QUIET_SECONDS = 1.0  # after Redis failed, how long requests pass without asking it


@dataclass(frozen=True)
class Decision:
    """What the bucket said: whether the request may go on, and the headers that say so."""

    allowed: bool
    limit: RateLimit
    tokens: float
    cost: float

    def headers(self) -> dict[str, str]:
        rate, burst = self.limit.per_second, self.limit.burst
        headers = {
            "RateLimit-Limit": str(burst),
            "RateLimit-Remaining": str(max(0, math.floor(self.tokens))),
            "RateLimit-Reset": str(max(0, math.ceil((burst - self.tokens) / rate))),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil((self.cost - self.tokens) / rate)))
        return headers


@dataclass
class _Check:
    key: str
    limit: RateLimit
    cost: float
    force: bool
    future: "asyncio.Future[Decision | None]"


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

    async def take(
        self, integrator: str, limit: RateLimit, cost: float = 1.0, *, force: bool = False
    ) -> Decision | None:
        """Take `cost` from the integrator's bucket; None when Redis could not say."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._quiet_until:
            UNAVAILABLE.inc()
            return None
        future: asyncio.Future[Decision | None] = loop.create_future()
        self._queue.append(_Check("{idmirror:rate}:" + integrator, limit, cost, force, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_while_queued(), name="rate-limiter")
        return await future

    async def close(self) -> None:
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        await self._redis.aclose()

    async def _send_while_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
            args: list[str | float] = []
            for check in batch:
                args += [check.limit.per_second, check.limit.burst, check.cost, int(check.force)]
            try:
                answers = await self._script(keys=[check.key for check in batch], args=args)
            except Exception as exc:  # Redis down or answering nonsense: no reason to refuse
                if isinstance(exc, RedisError | OSError):
                    log.warning("rate limiter: Redis unreachable (%s); letting requests pass", exc)
                else:
                    log.exception("rate limiter failed; letting requests pass")
                self._quiet_until = asyncio.get_running_loop().time() + _QUIET_SECONDS
                UNAVAILABLE.inc(len(batch))
                for check in batch:
                    if not check.future.done():
                        check.future.set_result(None)
                continue
            for check, (allowed, tokens) in zip(batch, answers, strict=True):
                if not check.future.done():
                    decision = Decision(bool(allowed), check.limit, float(tokens), check.cost)
                    check.future.set_result(decision)
