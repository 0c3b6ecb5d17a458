"""SCIM against REST on one stack: `POST /scim/v2/Users` and `PATCH /scim/v2/Users/{id}` at
the same concurrency as `PUT /v1/internal/users/{id}`, in turns, each a sync-wait write through
the ledger; then `GET /scim/v2/Users?filter=userName eq "..."` on 100,000 users, one request at
a time. Rewrites the "scim" section of docs/benchmarks.md.
"""

import itertools
import json
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import psycopg

from bench import load
from bench.options import Options
from bench.probe import code_revision, machine, note_core_speed_at_end
from bench.report import table, write_section
from bench.stack import TOKEN, Stack, StackConfig

SECTION = "scim"
USERS = 100_000
LOOKUPS = 500
_SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass(frozen=True)
class Mode:
    """One kind of write: its HTTP method and the request client `c` sends `n`-th."""

    name: str
    method: str
    make: Callable[[int, int], tuple[str, bytes]]


def _modes(patched: list[str]) -> list[Mode]:
    unique = itertools.count()  # load.run numbers each run's requests from 0 again

    def rest_put(c: int, n: int) -> tuple[str, bytes]:
        user_id = uuid.uuid4()
        patched.append(str(user_id))
        body = {"email": f"r{c}-{n}@example.com", "slug": f"r-{next(unique)}"}
        return f"/v1/internal/users/{user_id}", json.dumps(body).encode()

    def scim_post(c: int, n: int) -> tuple[str, bytes]:
        name = f"S.{next(unique)}@Example.com"
        body = {
            "schemas": [_SCIM_USER],
            "userName": name,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": name, "type": "work", "primary": True}],
            "active": True,
        }
        return "/scim/v2/Users", json.dumps(body).encode()

    def scim_patch(c: int, n: int) -> tuple[str, bytes]:
        user_id = patched[(c * 7919 + n) % len(patched)]
        operation = {"op": "replace", "path": "displayName", "value": f"D{c}-{n}"}
        body = {"schemas": [_PATCH], "Operations": [operation]}
        return f"/scim/v2/Users/{user_id}", json.dumps(body).encode()

    return [
        Mode("REST PUT /v1/internal/users/{id}", "PUT", rest_put),
        Mode("SCIM POST /Users", "POST", scim_post),
        Mode("SCIM PATCH /Users/{id}", "PATCH", scim_patch),
    ]


def _drive(stack: Stack, mode: Mode, options: Options, duration: float) -> load.LoadResult:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    return load.run(
        stack.base_url,
        options.concurrency,
        mode.make,
        headers=headers,
        duration=duration,
        max_requests=10**9,
        method=mode.method,
    )


def _writes(stack: Stack, options: Options) -> dict[str, list[load.LoadResult]]:
    """Each mode `options.rounds` times, in turns, after a warm-up of each."""
    patched: list[str] = []
    modes = _modes(patched)
    for mode in modes:
        _drive(stack, mode, options, options.warmup / len(modes))
    results: dict[str, list[load.LoadResult]] = {mode.name: [] for mode in modes}
    for round_ in range(options.rounds):
        for mode in modes:
            result = _drive(stack, mode, options, options.duration)
            print(f"   round {round_ + 1} {mode.name}: {result.rate:.0f} req/s", flush=True)
            results[mode.name].append(result)
    return results


def _lookups(stack: Stack) -> list[float]:
    """Seconds per filtered GET of one user by userName, on 100,000 users."""
    with psycopg.connect(stack.pg_conninfo, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO users (id, email, slug, plan, metadata, version, created_at, updated_at,
                               active, user_name, external_id, scim)
            SELECT gen_random_uuid(), format('l%%s@example.com', i), format('l-%%s', i), 'free',
                   '{}', i, now(), now(), true, format('Look.%%s@Example.com', i),
                   format('ext-%%s', i),
                   jsonb_build_object('emails', jsonb_build_array(jsonb_build_object(
                       'value', format('l%%s@example.com', i), 'primary', true)))
            FROM generate_series(1, %s) AS i
            """,
            (USERS,),
        )
        conn.execute("ANALYZE users")
    rng, times = random.Random(16), []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=stack.base_url, headers=headers) as client:
        for _ in range(LOOKUPS):
            wanted = f"look.{rng.randrange(1, USERS + 1)}@example.com"
            params = {"filter": f'userName eq "{wanted}"'}
            started = time.perf_counter()
            found = client.get("/scim/v2/Users", params=params)
            times.append(time.perf_counter() - started)
            assert found.status_code == 200 and found.json()["totalResults"] == 1, found.text
    return times


def _render(
    writes: dict[str, list[load.LoadResult]],
    lookups: list[float],
    facts: dict[str, str],
    options: Options,
    revision: str,
) -> str:
    rest = statistics.median(r.rate for r in next(iter(writes.values())))
    rows = []
    for name, results in writes.items():
        rate = statistics.median(r.rate for r in results)
        statuses: Counter[int] = Counter()
        for result in results:
            statuses.update(result.statuses)
        rows.append(
            [
                name,
                " / ".join(f"{r.rate:,.0f}" for r in results),
                f"{rate / rest:.0%}",
                " / ".join(f"{r.percentile_ms(0.5):.0f}" for r in results),
                " / ".join(f"{r.percentile_ms(0.99):.0f}" for r in results),
                ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())),
            ]
        )
    ms = sorted(1000 * t for t in lookups)
    return f"""## SCIM against REST

`python -m bench scim`: on one stack ({options.api_workers[0]} API process,
{options.worker_concurrency[0]} worker processes), {options.concurrency} clients of an aiohttp
closed loop write for {options.duration:g} s in each of {options.rounds} rounds, the three kinds
of write in turns: REST `PUT` of new users, SCIM `POST /Users` of new users, SCIM `PATCH` of a
`displayName` of the users the REST rounds made. Every write waits for its job, as SCIM writes
always do. Code {revision}, {facts["date"]}; {facts["cpus"]} CPUs ({facts["cpu_model"]});
one core's `sum(range(10**6))` {facts["core_speed"]}.

{table(["write", "req/s (each round)", "of REST", "p50 ms", "p99 ms", "statuses"], rows)}

Filtered `GET /scim/v2/Users?filter=userName eq "..."` on {USERS:,} users (and the users the
writes made), {LOOKUPS} lookups of random users one after another: median
**{statistics.median(ms):.1f} ms**, p95 {ms[int(0.95 * len(ms))]:.1f} ms, the fastest
{ms[0]:.1f} ms (the round trip through the API included).
"""


def run(options: Options) -> None:
    """Measure, then rewrite the section."""
    config = StackConfig(
        api_workers=options.api_workers[0], worker_concurrency=options.worker_concurrency[0]
    )
    revision = code_revision()
    with Stack(config, keep=options.keep) as stack:
        with psycopg.connect(stack.pg_conninfo) as conn:
            facts = machine(conn)
        writes = _writes(stack, options)
        lookups = _lookups(stack)
    note_core_speed_at_end(facts)
    body = _render(writes, lookups, facts, options, revision)
    print(body)
    if options.write:
        write_section(SECTION, body)
        print("wrote docs/benchmarks.md")
