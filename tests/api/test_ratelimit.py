"""Per-integrator rate limits: one bucket in Redis for every API process, 429 with Retry-After
when it is empty, RateLimit headers on every answer, a backfill's bytes counted, and requests
let through (and counted) while Redis cannot be reached."""

import time
import uuid
from pathlib import Path

import httpx

from cli.embedded import free_port
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
