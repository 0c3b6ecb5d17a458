"""Per-integrator rate limits: one bucket in Redis for every API process, 429 with Retry-After
when it is empty, RateLimit headers on every answer, a backfill's bytes counted, and requests
let through (and counted) while Redis cannot be reached; each API process takes tokens from
the bucket in leases, never spending more than it was given."""

import asyncio
import math
import time
import uuid
from pathlib import Path

import httpx
import redis

from api.ratelimit import _SCRIPT, LEASE_SECONDS, Decision, RateLimiter
from cli.embedded import free_port
from identity.integrators import RateLimit
from tests.integrators import client_for, new_integrator, new_token
from tests.stack import Stack


def test_over_the_limit_is_429_with_retry_after_and_every_answer_has_the_headers(
    stack: Stack, client: httpx.Client
) -> None:
    integrator = new_integrator(client, per_second=0.5, burst=5)
    with client_for(stack, new_token(client, integrator)["token"]) as c:
        answers = [c.get("/v1/internal/users", params={"limit": 1}) for _ in range(8)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    assert {a.status_code for a in answers[5:]} == {429}
    assert [a.headers["RateLimit-Remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["details"]["integrator"] == integrator
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    for answer in answers:
        assert answer.headers["RateLimit-Limit"] == "5"
        assert 0 < int(answer.headers["RateLimit-Reset"]) <= 10
    assert "RateLimit-Limit" not in client.get("/v1/jobs").headers, (
        "the bootstrap token is not limited"
    )


def test_the_bucket_holds_across_two_api_processes(
    stack: Stack, client: httpx.Client, tmp_home: Path
) -> None:
    second = Stack(stack.database_url, stack.redis_url, tmp_home)
    second.start("api")
    try:
        integrator = new_integrator(client, per_second=1, burst=20)
        token = new_token(client, integrator)["token"]
        started = time.monotonic()
        with client_for(stack, token) as one, client_for(second, token) as two:
            answers = [
                (one if n % 2 else two).get("/v1/jobs", params={"limit": 1}) for n in range(60)
            ]
        elapsed = time.monotonic() - started
        allowed = sum(a.status_code == 200 for a in answers)
        assert {a.status_code for a in answers} == {200, 429}
        assert 20 <= allowed <= 20 + int(elapsed * 1) + 1, (allowed, elapsed)
        served_by = {n % 2 for n, a in enumerate(answers) if a.status_code == 200}
        assert served_by == {0, 1}, "both processes served from the one bucket"
    finally:
        second.stop()


def test_a_backfill_counts_one_request_plus_its_bytes(stack: Stack, client: httpx.Client) -> None:
    integrator = new_integrator(client, per_second=0.1, burst=4)
    lines = [
        f'{{"type": "user", "id": "{uuid.uuid4()}", "email": "b@example.com", '
        f'"slug": "b-{uuid.uuid4().hex[:12]}", "metadata": {{"pad": "{"x" * 900}"}}}}\n'
        for _ in range(5000)
    ]
    body = "".join(lines).encode()  # ~5 MiB: one request and four more for its bytes
    with client_for(stack, new_token(client, integrator)["token"]) as c:
        upload = c.post(
            "/v1/internal/backfills", content=body, headers={"Content-Type": "application/x-ndjson"}
        )
        assert upload.status_code == 202, upload.text
        after = c.get("/v1/jobs", params={"limit": 1})
    assert after.status_code == 429, "the upload's bytes emptied the bucket"


def test_requests_pass_and_are_counted_while_redis_is_unreachable(
    stack: Stack, client: httpx.Client, tmp_home: Path
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    blind = Stack(stack.database_url, nowhere, tmp_home)
    blind.start("api")
    try:
        integrator = new_integrator(client, per_second=0.1, burst=1)
        with client_for(blind, new_token(client, integrator, ["read", "metrics"])["token"]) as c:
            answers = [c.get("/v1/internal/users", params={"limit": 1}) for _ in range(5)]
            metrics = c.get("/metrics").text
        assert [a.status_code for a in answers] == [200] * 5
        assert "RateLimit-Limit" not in answers[0].headers
        counted = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("idmirror_rate_limiter_unavailable_total")
        )
        assert counted >= 5
    finally:
        blind.stop()


def _script_calls(redis_url: str) -> int:
    """EVALSHA calls Redis has answered so far (the limiter's only command once loaded)."""
    with redis.Redis.from_url(redis_url) as client:
        stats: dict[str, dict[str, int]] = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


async def _spend(limiter: RateLimiter, integrator: str, limit: RateLimit, seconds: float) -> int:
    """Take one token at a time from 10 concurrent tasks for `seconds`; the tokens allowed."""
    deadline = asyncio.get_running_loop().time() + seconds
    allowed = 0

    async def client() -> None:
        nonlocal allowed
        while asyncio.get_running_loop().time() < deadline:
            decision = await limiter.take(integrator, limit)
            assert decision is not None
            allowed += decision.allowed
            await asyncio.sleep(0)

    await asyncio.gather(*(client() for _ in range(10)))
    return allowed


def test_a_process_takes_tokens_in_leases_so_most_requests_ask_redis_nothing(
    redis_url: str,
) -> None:
    limit = RateLimit(per_second=100_000, burst=1_000_000)
    integrator = f"lease-{uuid.uuid4().hex[:8]}"

    async def run() -> list[Decision | None]:
        limiter = RateLimiter(redis_url)
        try:
            return [await limiter.take(integrator, limit) for _ in range(2000)]
        finally:
            await limiter.close()

    before = _script_calls(redis_url)
    decisions = asyncio.run(run())
    calls = _script_calls(redis_url) - before
    assert all(d is not None and d.allowed for d in decisions)
    assert calls <= 2000 / 20, f"{calls} script calls for 2000 requests"
    remaining = [d.tokens for d in decisions if d is not None]
    assert 1_000_000 - 2000 - 1 <= remaining[-1] < 1_000_000, "what the bucket and lease hold"


def test_leases_of_two_processes_never_spend_more_than_the_bucket_gives(redis_url: str) -> None:
    # A lease holds at most LEASE_SECONDS of the refill beyond what its requests need: 20 here.
    limit = RateLimit(per_second=200, burst=400)
    integrator = f"lease-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[int, float]:
        one, two = RateLimiter(redis_url), RateLimiter(redis_url)
        try:
            started = time.monotonic()
            allowed = await asyncio.gather(
                _spend(one, integrator, limit, 1.5), _spend(two, integrator, limit, 1.5)
            )
            return sum(allowed), time.monotonic() - started
        finally:
            await one.close()
            await two.close()

    allowed, elapsed = asyncio.run(run())
    refill = limit.per_second * elapsed
    assert allowed <= limit.burst + refill + 1, (allowed, elapsed)
    stranded = 2 * limit.per_second * LEASE_SECONDS  # held by the processes as they stopped
    assert allowed >= limit.burst + 0.9 * refill - stranded, (allowed, elapsed)


def test_a_small_limit_takes_exactly_what_each_request_costs(redis_url: str) -> None:
    # Under a tenth of a second's refill per token, a lease holds nothing spare: the bucket
    # sees every request, and the answers count down one by one.
    limit = RateLimit(per_second=5, burst=10)
    integrator = f"lease-{uuid.uuid4().hex[:8]}"

    async def run() -> list[Decision | None]:
        one, two = RateLimiter(redis_url), RateLimiter(redis_url)
        try:
            return [await (one, two)[n % 2].take(integrator, limit) for n in range(12)]
        finally:
            await one.close()
            await two.close()

    decisions = [d for d in asyncio.run(run()) if d is not None]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
    assert [math.floor(d.tokens) for d in decisions[:10]] == list(range(9, -1, -1))
    assert decisions[-1].headers()["Retry-After"] == "1"


def test_the_bucket_refills_by_the_time_passed_however_close_its_calls(redis_url: str) -> None:
    # Calls a few microseconds apart, at a rate where a tenth of a millisecond is 10 tokens: a
    # time stored rounded (as Lua's tostring() keeps 14 digits) refilled the rounded part again
    # at each call, and two processes took more than the burst and the refill gave.
    client = redis.Redis.from_url(redis_url)
    script = client.register_script(_SCRIPT)
    key = "{idmirror:rate}:" + f"close-{uuid.uuid4().hex[:8]}"
    rate, burst = 100_000, 10

    def redis_time() -> float:
        seconds, micros = client.time()
        return float(seconds) + micros / 1_000_000

    started = redis_time()
    with client.pipeline(transaction=False) as pipe:
        for _ in range(2000):
            script(keys=[key], args=[rate, burst, 1e9, 0, 0], client=pipe)
        answers = pipe.execute()
    ended = redis_time()
    client.close()
    granted = sum(float(answer[0][0]) for answer in answers)
    assert granted <= burst + rate * (ended - started) + 1, (granted, ended - started)
