"""Agent upserts through the ledger: `PUT /v1/internal/agents/{slug}@{user_slug}` driven through
API -> ledger -> Celery worker -> Postgres, in sync-wait and respond-async modes, on distinct
keys and on a few hot keys. Rewrites the "upserts" section of docs/benchmarks.md.
"""

import json
import os
import re
import secrets
import statistics
import textwrap
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from bench import load
from bench.load import LoadResult, RequestFactory
from bench.options import Options
from bench.probe import (
    Sampler,
    Usage,
    code_revision,
    machine,
    note_core_speed_at_end,
    redis_command_calls,
)
from bench.report import table, write_section
from bench.stack import TOKEN, Stack, StackConfig

SECTION = "upserts"
USERS = 200
AGENTS = 2000
HOT_KEYS = 8
DRAIN_TIMEOUT = 300.0
QUEUE, UNACKED = "celery", "unacked"  # kombu's Redis keys for the default queue
MAX_RATE = 20_000  # requests/s; with the duration, the budget that bounds every request loop

# The reference peer: a synchronous, non-queued FastAPI + asyncpg service on this machine kind.
PEER_RPS, PEER_P50_MS, PEER_P99_MS = 155.0, 190.0, 430.0
INTEGRATOR_RPS = (65.0, 110.0)  # agents/s integrators reach doing GET-then-POST
SYNC_TARGET_RPS = 2 * PEER_RPS
ASYNC_TARGET_RPS = 4 * PEER_RPS

SYNC, ASYNC = "sync-wait", "respond-async"
HOT, CREATES = "sync-wait, hot keys", "sync-wait, creates"
GROUPS = ("api", "worker", "postgres", "redis", "beat", "loadgen")


@dataclass
class Run:
    mode: str
    keys: int
    round: int
    config: StackConfig
    concurrency: int
    load: LoadResult
    usage: Usage
    drain_usage: Usage | None
    applied_seconds: float | None  # respond-async: first request until nothing was pending
    backlog: int | None  # respond-async: jobs pending when the last request was answered
    queued: int  # drain messages in the broker when the last request was answered
    queue_tail: tuple[int, float] | None  # respond-async: messages left once all was applied,
    # and the seconds the worker took to consume them
    tail_usage: Usage | None
    drain_tasks: int | None
    broker_messages: int | None
    events: int | None
    failed_jobs: int

    @property
    def expected_status(self) -> int:
        return 202 if self.mode == ASYNC else 200

    @property
    def unexpected(self) -> int:
        ok = self.load.statuses[self.expected_status]
        return self.load.answered - ok + sum(self.load.errors.values())

    @property
    def applied_rate(self) -> float:
        if self.applied_seconds is not None:
            return self.load.statuses[202] / self.applied_seconds
        return self.load.statuses[200] / self.load.elapsed if self.load.elapsed else 0.0


def _headers(respond_async: bool) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if respond_async:
        headers["Prefer"] = "respond-async"
    return headers


def _pending(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM jobs WHERE status = 'pending'").fetchone()
    return int(row[0]) if row else 0


def _failed(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM jobs WHERE status = 'failed'").fetchone()
    return int(row[0]) if row else 0


def _wait_drained(conn: psycopg.Connection, timeout: float = DRAIN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while _pending(conn):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still pending after {timeout:.0f}s")
        time.sleep(0.05)


def _queued(client: redis.Redis) -> int:
    """Drain messages waiting in the broker or reserved by the worker and not yet acknowledged."""
    return int(client.llen(QUEUE)) + int(client.hlen(UNACKED))


def _wait_queue_empty(client: redis.Redis, timeout: float = DRAIN_TIMEOUT) -> None:
    """Messages left from an earlier run (drains of keys another drain already took) would
    otherwise run, and be counted, in the next one."""
    deadline = time.monotonic() + timeout
    while _queued(client):
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker queue not empty after {timeout:.0f}s")
        time.sleep(0.05)


class Workload:
    """The keys and bodies: USERS users, AGENTS agents spread over them, HOT_KEYS hot agents."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        prefix = "b" + secrets.token_hex(3)  # fresh keys even on a shared, external database
        self.users = [(uuid.uuid4(), f"{prefix}-u{j}") for j in range(USERS)]
        self.agents = [f"a{i}@{self.users[i % USERS][1]}" for i in range(AGENTS)]
        self.hot = self.agents[:HOT_KEYS]

    def user_puts(self) -> RequestFactory:
        def make(c: int, n: int) -> tuple[str, bytes] | None:
            i = c + n * self.concurrency
            if i >= len(self.users):
                return None
            user_id, slug = self.users[i]
            body = {"email": f"{slug}@bench.idmirror.dev", "slug": slug, "metadata": {"i": i}}
            return f"/v1/internal/users/{user_id}", json.dumps(body).encode()

        return make

    def agent_creates(self) -> RequestFactory:
        def make(c: int, n: int) -> tuple[str, bytes] | None:
            i = c + n * self.concurrency
            if i >= len(self.agents):
                return None
            return self._agent_put(self.agents[i], f"create {i}", {"i": i})

        return make

    def updates(self, tag: str, *, hot: bool) -> RequestFactory:
        """Client c cycles over its own slice of the keys (or its hot key); every body is new."""
        keys = self.hot if hot else self.agents

        def make(c: int, n: int) -> tuple[str, bytes] | None:
            if hot:
                key = keys[c % len(keys)]
            else:
                mine = range(c, len(keys), self.concurrency)
                key = keys[mine[n % len(mine)]]
            return self._agent_put(key, f"{tag} c{c} n{n}", {"tag": tag, "c": c, "n": n})

        return make

    @staticmethod
    def _agent_put(key: str, name: str, metadata: dict[str, Any]) -> tuple[str, bytes]:
        body = {"display_name": f"agent {name}", "metadata": metadata}
        return f"/v1/internal/agents/{key}", json.dumps(body).encode()


class Bench:
    def __init__(self, stack: Stack, options: Options) -> None:
        self.stack = stack
        self.options = options
        self.conn = stack.pg_connect()
        self.redis = stack.redis_client()
        self.roots = stack.process_roots()
        self.roots["loadgen"] = [-os.getpid()]  # this process only, not the services under it
        self.workload = Workload(options.concurrency)

    def close(self) -> None:
        self.conn.close()
        self.redis.close()

    def measure(
        self,
        mode: str,
        make: RequestFactory,
        *,
        keys: int,
        round_: int,
        duration: float,
        max_requests: int,
    ) -> Run:
        respond_async = mode == ASYNC
        _wait_drained(self.conn)
        _wait_queue_empty(self.redis)
        time.sleep(1.0)
        tasks_before = self.stack.celery_task_totals()
        calls_before = redis_command_calls(self.redis)
        failed_before = _failed(self.conn)
        started = time.monotonic()
        with Sampler(self.roots, self.stack.pg_conninfo) as sampler:
            result = load.run(
                self.stack.base_url,
                self.options.concurrency,
                make,
                headers=_headers(respond_async),
                duration=duration,
                max_requests=max_requests,
            )
        queued = _queued(self.redis)
        backlog = applied_seconds = drain_usage = None
        if respond_async:
            backlog = _pending(self.conn)
            with Sampler(self.roots, self.stack.pg_conninfo) as drain_sampler:
                _wait_drained(self.conn)
                applied_seconds = time.monotonic() - started
            drain_usage = drain_sampler.usage
        else:
            _wait_drained(self.conn)
        queue_tail = tail_usage = None
        if respond_async:
            left, tail_started = _queued(self.redis), time.monotonic()
            with Sampler(self.roots, self.stack.pg_conninfo) as tail_sampler:
                _wait_queue_empty(self.redis)
                queue_tail = (left, time.monotonic() - tail_started)
            tail_usage = tail_sampler.usage
        _wait_queue_empty(self.redis)
        time.sleep(0.5)  # the worker counts a task when it starts it
        tasks_after = self.stack.celery_task_totals()
        calls_after = redis_command_calls(self.redis)
        drain_tasks = None
        if tasks_before is not None and tasks_after is not None:
            name = "identity.drain_key"
            drain_tasks = tasks_after.get(name, 0) - tasks_before.get(name, 0)
        run = Run(
            mode=mode,
            keys=keys,
            round=round_,
            config=self.stack.config,
            concurrency=self.options.concurrency,
            load=result,
            usage=sampler.usage,
            drain_usage=drain_usage,
            applied_seconds=applied_seconds,
            backlog=backlog,
            queued=queued,
            queue_tail=queue_tail,
            tail_usage=tail_usage,
            drain_tasks=drain_tasks,
            broker_messages=calls_after.get("lpush", 0) - calls_before.get("lpush", 0),
            events=calls_after.get("publish", 0) - calls_before.get("publish", 0),
            failed_jobs=_failed(self.conn) - failed_before,
        )
        _print_run(run)
        return run

    def setup(self) -> Run:
        """Create the users (unmeasured) and the agents (measured as the creates row)."""
        users = load.run(
            self.stack.base_url,
            self.options.concurrency,
            self.workload.user_puts(),
            headers=_headers(False),
            duration=300,
            max_requests=USERS,
        )
        if users.statuses[200] != USERS:
            raise RuntimeError(f"creating users: {dict(users.statuses)} {dict(users.errors)}")
        creates = self.measure(
            CREATES,
            self.workload.agent_creates(),
            keys=AGENTS,
            round_=0,
            duration=300,
            max_requests=AGENTS,
        )
        if creates.load.outcomes["created"] != AGENTS:
            raise RuntimeError(f"creating agents: {dict(creates.load.outcomes)}")
        return creates

    def warm_up(self) -> None:
        if self.options.warmup > 0:
            load.run(
                self.stack.base_url,
                self.options.concurrency,
                self.workload.updates("warmup", hot=False),
                headers=_headers(False),
                duration=self.options.warmup,
                max_requests=int(self.options.warmup * MAX_RATE),
            )

    def rounds(self) -> list[Run]:
        runs = []
        duration = self.options.duration
        budget = int(duration * MAX_RATE)
        for r in range(1, self.options.rounds + 1):
            for mode, hot in ((SYNC, False), (ASYNC, False), (HOT, True)):
                make = self.workload.updates(f"{mode} r{r}", hot=hot)
                keys = HOT_KEYS if hot else AGENTS
                runs.append(
                    self.measure(
                        mode, make, keys=keys, round_=r, duration=duration, max_requests=budget
                    )
                )
        return runs


def _print_run(run: Run) -> None:
    u = run.usage
    cpu = " ".join(f"{g}={u.cpu.get(g, 0):.0f}%" for g in GROUPS if g in u.cpu)
    line = (
        f"{run.mode:<22} r{run.round} {run.config.label} n={run.load.answered:<6} "
        f"{run.load.rate:7.1f} req/s p50={run.load.percentile_ms(0.5):6.1f}ms "
        f"p99={run.load.percentile_ms(0.99):6.1f}ms applied/s={run.applied_rate:7.1f} "
        f"statuses={dict(run.load.statuses)} errors={dict(run.load.errors)} "
        f"queued={run.queued} tasks={run.drain_tasks} lpush={run.broker_messages} "
        f"publish={run.events} "
        f"commits/s={u.commits_per_s or 0:.0f} machine={u.machine_busy:.0f}% steal={u.steal:.0f}% "
        f"{cpu} other={u.other:.0f}% pg-active=[{u.top_waits()}]"
    )
    if run.drain_usage is not None:
        d = run.drain_usage
        line += (
            f" | backlog={run.backlog} drain={d.seconds:.1f}s "
            f"worker={d.cpu.get('worker', 0):.0f}% pg={d.cpu.get('postgres', 0):.0f}% "
            f"commits/s={d.commits_per_s or 0:.0f} pg-active=[{d.top_waits()}] "
            f"queue tail={run.queue_tail}"
        )
    if run.tail_usage is not None:
        t = run.tail_usage
        line += f" | tail worker={t.cpu.get('worker', 0):.0f}% pg={t.cpu.get('postgres', 0):.0f}%"
    line += f" | service {service_cpu_ms(run):.1f} CPU-ms/req"
    print(line, flush=True)


# --- the report -----------------------------------------------------------------------------


def _capacity(group: str, config: StackConfig) -> float:
    """CPU percent a group can use at most: one core per Python process, all cores for Postgres."""
    cores = os.cpu_count() or 1
    if group == "api":
        return 100.0 * config.api_workers
    if group == "worker":
        return 100.0 * min(cores, config.worker_concurrency or cores)
    if group in ("redis", "loadgen", "beat"):
        return 100.0
    return 100.0 * cores


NAMES = {
    "api": "API",
    "worker": "worker",
    "postgres": "Postgres",
    "redis": "Redis",
    "beat": "beat",
    "loadgen": "load generator",
    "other": "other processes",
}


def bound(usage: Usage, config: StackConfig, concurrency: int, mode: str) -> str:
    """The resource that limits a run, judged from CPU: a saturated group, else the machine,
    else the round trip each of the closed loop's clients waits for."""
    cores = os.cpu_count() or 1
    ranked = sorted(((v, g) for g, v in usage.cpu.items()), reverse=True)
    users = sorted([*ranked, (usage.other, "other")], reverse=True)
    top = ", ".join(f"{NAMES[g]} {v:.0f}%" for v, g in users[:3])
    saturated = [g for v, g in ranked if v >= 0.85 * _capacity(g, config)]
    if saturated:
        group = saturated[0]
        what = {
            "api": "API process CPU" if config.api_workers == 1 else "API processes' CPU",
            "worker": "worker processes' CPU",
            "loadgen": "load generator CPU",
        }.get(group, f"{NAMES[group]} CPU")
        return f"{what} ({top})"
    if usage.machine_busy >= 85:
        return f"machine CPU, {usage.machine_busy:.0f}% of {cores} cores ({top})"
    waits = usage.top_waits()
    answer = "its accept's commit" if mode == ASYNC else "its accept's commit and a drain pass"
    return (
        f"latency: each of the {concurrency} clients waits for {answer}; no CPU saturated "
        f"({usage.machine_busy:.0f}% of {cores} cores; {top})"
        + (f"; Postgres backends: {waits}" if waits else "")
    )


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _per(value: float | None, count: int) -> str:
    return f"{value / count:.2f}" if value is not None and count else "n/a"


def _results_table(runs: list[Run], several_configs: bool) -> str:
    headers = ["Mode", "Round", "Keys", "Concurrency", "Requests", "req/s", "p50 ms", "p99 ms"]
    headers += ["applied/s", "Other answers", "Bound"]
    if several_configs:
        headers.insert(1, "Stack")
    rows = []
    for run in runs:
        row = [
            run.mode,
            str(run.round) if run.round else "setup",
            str(run.keys),
            str(run.concurrency),
            str(run.load.answered),
            f"{run.load.rate:.0f}",
            _ms(run.load.percentile_ms(0.5)),
            _ms(run.load.percentile_ms(0.99)),
            f"{run.applied_rate:.0f}",
            str(run.unexpected + run.failed_jobs),
            bound(run.usage, run.config, run.concurrency, run.mode),
        ]
        if several_configs:
            row.insert(1, run.config.label)
        rows.append(row)
    return table(headers, rows)


SERVICE = ("api", "worker", "postgres", "redis", "beat")


def _phases(run: Run) -> list[tuple[str, Usage]]:
    phases = [("send", run.usage)]
    if run.drain_usage is not None:
        phases.append((f"drain: {run.backlog} jobs pending", run.drain_usage))
    if run.tail_usage is not None and run.queue_tail is not None and run.queue_tail[0]:
        phases.append((f"tail: {run.queue_tail[0]} messages left", run.tail_usage))
    return phases


def cpu_ms(run: Run, groups: tuple[str, ...] = SERVICE) -> float:
    """CPU milliseconds `groups` spent per request over all phases of the run; by default the
    whole service (API, worker, Postgres, Redis, beat)."""
    seconds = sum(
        usage.seconds * sum(usage.cpu.get(g, 0.0) for g in groups) / 100.0
        for _, usage in _phases(run)
    )
    return 1000.0 * seconds / run.load.answered if run.load.answered else float("nan")


def service_cpu_ms(run: Run) -> float:
    return cpu_ms(run)


def _cpu_split(run: Run) -> str:
    parts = [cpu_ms(run, (g,)) for g in ("api", "worker", "postgres")]
    return " / ".join(f"{v:.1f}" for v in [*parts, service_cpu_ms(run)])


def _cpu_table(runs: list[Run], several_configs: bool) -> str:
    headers = ["Mode", "Round", "Phase", "API", "worker", "Postgres", "Redis", "load gen"]
    headers += ["other", "machine", "steal", "CPU ms/req: API / worker / PG / service"]
    if several_configs:
        headers.insert(1, "Stack")
    rows = []
    for run in runs:
        for i, (phase, usage) in enumerate(_phases(run)):
            row = [
                run.mode,
                str(run.round) if run.round else "setup",
                phase,
                *(f"{usage.cpu.get(g, 0):.0f}%" for g in ("api", "worker", "postgres", "redis")),
                f"{usage.cpu.get('loadgen', 0):.0f}%",
                f"{usage.other:.0f}%",
                f"{usage.machine_busy:.0f}%",
                f"{usage.steal:.0f}%",
                _cpu_split(run) if i == 0 else "",
            ]
            if several_configs:
                row.insert(1, run.config.label)
            rows.append(row)
    return table(headers, rows)


def _queue_table(runs: list[Run], several_configs: bool) -> str:
    headers = ["Mode", "Round", "Phase", "commits/s", "commits/req", "drain tasks/req"]
    headers += ["broker msgs/req", "events/req", "queued at end", "Postgres backends active"]
    if several_configs:
        headers.insert(1, "Stack")
    rows = []
    for run in runs:
        for phase, usage in _phases(run):
            n = run.load.answered
            sending = phase == "send"
            commits = usage.commits_per_s
            row = [
                run.mode,
                str(run.round) if run.round else "setup",
                phase,
                f"{commits:.0f}" if commits is not None else "n/a",
                _per(commits, int(run.load.rate)) if sending and run.mode != ASYNC else "",
                _per(run.drain_tasks, n) if sending else "",
                _per(run.broker_messages, n) if sending else "",
                _per(run.events, n) if sending else "",
                str(run.queued) if sending else "",
                usage.top_waits() or "-",
            ]
            if several_configs:
                row.insert(1, run.config.label)
            rows.append(row)
    return table(headers, rows)


def _verdict(values: list[bool]) -> str:
    if all(values):
        return "**met**" + (f" in all {len(values)} rounds" if len(values) > 1 else "")
    if not any(values):
        return "**not met**" + (f" in any of {len(values)} rounds" if len(values) > 1 else "")
    return f"**met in {sum(values)} of {len(values)} rounds**"


def _span(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.0f}"
    return f"{statistics.median(values):.0f} (range {min(values):.0f}-{max(values):.0f})"


def _comparison(runs: list[Run]) -> str:
    lines = [
        f"Reference: a synchronous, non-queued FastAPI + asyncpg peer on this machine kind answers "
        f"about {PEER_RPS:.0f} user upserts/s at p50 {PEER_P50_MS:.0f} ms / p99 "
        f"{PEER_P99_MS:.0f} ms; integrators doing GET-then-POST manage "
        f"{INTEGRATOR_RPS[0]:.0f}-{INTEGRATOR_RPS[1]:.0f} agents/s. Targets: sync-wait "
        f">= {SYNC_TARGET_RPS:.0f} req/s (2x) with p99 < {PEER_P99_MS:.0f} ms; respond-async "
        f">= {ASYNC_TARGET_RPS:.0f} req/s (4x).",
        "",
    ]
    for config in dict.fromkeys(r.config for r in runs):  # in the order they ran
        mine = [r for r in runs if r.config == config]
        label = config.label
        sync = [r for r in mine if r.mode == SYNC]
        rates = [r.load.rate for r in sync]
        p99s = [r.load.percentile_ms(0.99) for r in sync]
        lines.append(
            f"- {label}, sync-wait: {_span(rates)} req/s = "
            f"{statistics.median(rates) / PEER_RPS:.1f}x the peer, p99 {_span(p99s)} ms. "
            f"Target (>= {SYNC_TARGET_RPS:.0f} req/s and p99 < {PEER_P99_MS:.0f} ms) "
            + _verdict(
                [
                    r.load.rate >= SYNC_TARGET_RPS and p < PEER_P99_MS
                    for r, p in zip(sync, p99s, strict=True)
                ]
            )
            + "."
        )
        asyn = [r for r in mine if r.mode == ASYNC]
        accepted = [r.load.rate for r in asyn]
        applied = [r.applied_rate for r in asyn]
        lines.append(
            f"- {label}, respond-async: accepted {_span(accepted)} req/s "
            f"({statistics.median(accepted) / PEER_RPS:.1f}x), applied end to end "
            f"{_span(applied)} jobs/s ({statistics.median(applied) / PEER_RPS:.1f}x). "
            f"Target (>= {ASYNC_TARGET_RPS:.0f}/s) on acceptance "
            + _verdict([v >= ASYNC_TARGET_RPS for v in accepted])
            + ", end to end "
            + _verdict([v >= ASYNC_TARGET_RPS for v in applied])
            + "."
        )
        hot = [r for r in mine if r.mode == HOT]
        hot_rates = [r.load.rate for r in hot]
        lines.append(
            f"- {label}, sync-wait on {HOT_KEYS} hot keys: {_span(hot_rates)} req/s "
            f"({statistics.median(hot_rates) / PEER_RPS:.1f}x the peer), p99 "
            f"{_span([r.load.percentile_ms(0.99) for r in hot])} ms."
        )
        lines.append(
            f"- Against integrators' GET-then-POST ({INTEGRATOR_RPS[0]:.0f}-"
            f"{INTEGRATOR_RPS[1]:.0f} agents/s), sync-wait agent upserts run "
            f"{statistics.median(rates) / INTEGRATOR_RPS[1]:.1f}-"
            f"{statistics.median(rates) / INTEGRATOR_RPS[0]:.1f}x faster."
        )
    return "\n".join(lines)


def _prose(text: str, width: int = 100) -> str:
    """Re-wrap paragraphs and list items; leave headings and tables alone."""
    blocks = []
    for block in text.strip().split("\n\n"):
        if block.startswith(("|", "#")):
            blocks.append(block)
            continue
        items = re.split(r"\n(?=- )", block)
        filled = []
        for item in items:
            words = " ".join(item.split())
            indent = "  " if words.startswith("- ") else ""
            filled.append(textwrap.fill(words, width, subsequent_indent=indent))
        blocks.append("\n".join(filled))
    return "\n\n".join(blocks)


def _ceiling(runs: list[Run]) -> str:
    sync = [r for r in runs if r.mode == SYNC]
    asyn = [r for r in runs if r.mode == ASYNC]
    cores = os.cpu_count() or 1
    sync_ms = statistics.median(service_cpu_ms(r) for r in sync)
    async_ms = statistics.median(service_cpu_ms(r) for r in asyn)
    return (
        f"The service itself spends a median {sync_ms:.1f} CPU-ms per sync-wait request and "
        f"{async_ms:.1f} per respond-async request (accept, apply and the drain messages). "
        f"On {cores} cores with nothing else running, not even the load generator, that caps "
        f"sync-wait at about {cores * 1000 / sync_ms:.0f} req/s and respond-async end to end at "
        f"about {cores * 1000 / async_ms:.0f} jobs/s. The targets need at most "
        f"{cores * 1000 / SYNC_TARGET_RPS:.1f} and {cores * 1000 / ASYNC_TARGET_RPS:.1f} CPU-ms "
        f"per request on this machine kind, and less with a load generator beside it."
    )


def render(
    runs: list[Run], facts: dict[str, str], options: Options, revisions: dict[StackConfig, str]
) -> str:
    configs = list(dict.fromkeys(r.config for r in runs))
    several = len(configs) > 1
    config_lines = "\n".join(
        f"- {c.describe()}; code {revisions.get(c, facts['revision'])}" for c in configs
    )
    measured = [r for r in runs if r.round]
    busiest = max(r.usage.other for r in measured)
    shared = (
        " The machine was shared during this run, so these figures are lower than what it does"
        " alone; compare rounds by the *other* column."
        if busiest >= 25
        else ""
    )
    text = f"""## Agent upserts through the ledger

`PUT /v1/internal/agents/{{slug}}@{{user_slug}}` through API -> ledger -> Celery worker ->
Postgres, driven by {options.concurrency} concurrent aiohttp clients (closed loop, on the same
machine, 127.0.0.1) for {options.duration:.0f} s per run after {options.warmup:.0f} s of warm-up,
{options.rounds} round(s) of each mode. {USERS} users and {AGENTS} agents over them are created
first (the "creates" row, also sync-wait); every measured request then carries a body that
differs from the stored one, so each is a real update.

- **sync-wait** (the default): the request waits for the worker to apply its job and answers 200.
Each client cycles over its own {AGENTS // options.concurrency} or so keys of the {AGENTS}.
- **respond-async** (`Prefer: respond-async`): answers 202 once the job is durable. *applied/s*
is accepted jobs divided by the time from the first request until no job was pending (`SELECT
count(*) FROM jobs WHERE status = 'pending'` = 0): the honest end-to-end rate.
- **sync-wait, hot keys**: all clients on {HOT_KEYS} keys, {options.concurrency // HOT_KEYS}
clients per key, still a new body every time.

Machine: {facts["cpus"]} CPUs ({facts["cpu_model"]}; one core sums range(10**6) in
{facts["core_speed"]}), {facts["memory"]} RAM, Linux {facts["kernel"]}; Python {facts["python"]};
PostgreSQL {facts["postgres"]}
({facts["postgres_settings"]}). Load average before the run: {facts["load_before"]}; other
processes on the machine used up to {busiest:.0f}% of a core during a measured run (column
*other* below).{shared} Date: {facts["date"]}. Services: {facts["services"]}, started by the
benchmark with the API, one worker and beat.

Configuration:

{config_lines}

### Results

{_results_table(runs, several)}

*Other answers*: responses that were not the mode's 200/202 (a sync wait that timed out answers
202), client errors, and jobs that ended `failed`. *Bound*: a process group at 85% or more of what
it can use (one core per Python process, all cores for Postgres), else the whole machine at 85% or
more, else the latency of the round trip that each client of the closed loop waits for; the three
largest CPU users (other processes included) follow.

### Where the CPU goes

CPU in percent of one core (100% = one core busy), sampled with psutil over each process group and
its children: the API, the Celery worker with its pool, Postgres with its backends, Redis, the load
generator (the benchmark process: aiohttp clients and samplers), and *other* (everything else on
the machine). *machine* is the share of all {facts["cpus"]} cores busy, *steal* the share the
hypervisor took. *CPU ms/req* is CPU time per request over the whole run, for the API, the
worker, Postgres, and the whole service (those three with Redis and beat). respond-async has three
phases: *send* until the last answer, *drain* until no
job was pending (the end of *applied/s*), and *tail* until the worker had consumed the drain
messages still queued, which then find nothing to do but still cost a task each.

{_cpu_table(runs, several)}

{_ceiling(measured)}

### Queue and database

*commits/s* is the `pg_stat_database.xact_commit` rate (read-only transactions included) over the
interior of the window. *drain tasks/req* counts `identity.drain_key` tasks the worker ran
(`celery inspect stats`), *broker msgs/req* the LPUSHes to Redis (task messages), *events/req* the
PUBLISHes (Celery events, for Flower). *queued at end* is the drain messages still in the broker or
reserved by the worker when the last answer came. *Postgres backends active* is the mean number of
the service's backends running a statement, by wait event (`CPU` = not waiting), sampled from
`pg_stat_activity` every 0.5 s.

{_queue_table(runs, several)}

### Against the reference peer

{_comparison(runs)}
"""
    return _prose(text)


def run(options: Options) -> None:
    runs: list[Run] = []
    facts: dict[str, str] = {}
    load_before = os.getloadavg()
    revisions: dict[StackConfig, str] = {}
    stacks = [(a, w) for a in options.api_workers for w in options.worker_concurrency]
    for workers, concurrency in stacks:
        config = StackConfig(api_workers=workers, worker_concurrency=concurrency)
        print(f"-- stack: {config.describe()}", flush=True)
        revisions[config] = code_revision()  # the code the stack's processes import
        with Stack(config, keep=options.keep) as stack:
            bench = Bench(stack, options)
            try:
                if not facts:
                    facts = machine(bench.conn)
                    facts["load_before"] = " ".join(f"{v:.2f}" for v in load_before)
                    facts["services"] = (
                        "embedded Postgres and Redis in a temporary directory"
                        if stack.embedded
                        else "Postgres and Redis from IDMIRROR_DATABASE_URL / IDMIRROR_REDIS_URL"
                    )
                runs.append(bench.setup())
                bench.warm_up()
                runs += bench.rounds()
            finally:
                bench.close()
            if options.keep:
                print(f"   logs and data kept in {stack.home}")
    note_core_speed_at_end(facts)
    if options.write:
        write_section(SECTION, render(runs, facts, options, revisions))
        print("wrote docs/benchmarks.md")
