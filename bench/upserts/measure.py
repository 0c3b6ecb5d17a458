"""Measuring the upserts benchmark: each mode's requests sent against a running stack, waiting
until every job was applied and every queued message consumed, with CPU, Postgres and broker
counters sampled around it."""

import os
import time
import uuid
from dataclasses import dataclass

import httpx
import psycopg
import redis

from bench import load
from bench.load import RequestFactory
from bench.options import Options
from bench.probe import Sampler, Usage, redis_command_calls
from bench.stack import TOKEN, Stack
from bench.upserts.cpu import service_cpu_ms
from bench.upserts.runs import (
    AGENTS,
    ASYNC_TOKEN,
    CREATES,
    NAIVE,
    NAIVE_CREATES,
    ROUND,
    SYNC,
    SYNC_TOKEN,
    USERS,
    Run,
    is_async,
    is_naive,
)
from bench.upserts.workload import Workload, headers

DRAIN_TIMEOUT = 300.0
QUEUE, UNACKED = "celery", "unacked"  # kombu's Redis keys for the default queue
MAX_RATE = 20_000  # requests/s; with the duration, the budget that bounds every request loop
GROUPS = ("api", "naive", "worker", "postgres", "redis", "beat", "loadgen")


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


@dataclass
class _Counters:
    """Totals read before and after a run; the run reports their differences."""

    tasks: dict[str, int] | None  # tasks the worker ran, by name
    calls: dict[str, int]  # Redis commands, by name
    failed: int  # jobs that ended failed

    def drain_tasks_since(self, before: "_Counters") -> int | None:
        if before.tasks is None or self.tasks is None:
            return None
        name = "identity.drain_key"
        return self.tasks.get(name, 0) - before.tasks.get(name, 0)

    def calls_since(self, before: "_Counters", command: str) -> int:
        return self.calls.get(command, 0) - before.calls.get(command, 0)


class Bench:
    """The benchmark against one running stack and the naive app beside it: setup, warm-up and
    the measured rounds."""

    def __init__(self, stack: Stack, options: Options, naive_url: str = "") -> None:
        self.stack = stack
        self.options = options
        self.naive_url = naive_url  # none: the naive modes cannot be measured
        self.conn = stack.pg_connect()
        self.redis = stack.redis_client()
        self.roots: dict[str, list[int]] = {}
        self.find_processes()
        self.workload = Workload(options.concurrency)

    def find_processes(self) -> None:
        """Read the process groups whose CPU is sampled (again, once the stack restarted one)."""
        self.roots = self.stack.process_roots()
        self.roots["loadgen"] = [-os.getpid()]  # this process only, not the services under it

    def close(self) -> None:
        """Close the benchmark's own Postgres and Redis connections."""
        self.conn.close()
        self.redis.close()

    def _counters(self) -> _Counters:
        return _Counters(
            self.stack.celery_task_totals(), redis_command_calls(self.redis), _failed(self.conn)
        )

    def _settle(self) -> None:
        """Wait until an earlier run's jobs and messages are gone, then a little longer."""
        _wait_drained(self.conn)
        _wait_queue_empty(self.redis)
        time.sleep(1.0)

    def _sampler(self) -> Sampler:
        return Sampler(self.roots, self.stack.pg_conninfo)

    def _drain(self, started: float) -> tuple[int, float, Usage]:
        """respond-async: the jobs pending at the last answer, the seconds from the first request
        until none was, and what waiting for them used."""
        backlog = _pending(self.conn)
        with self._sampler() as drain_sampler:
            _wait_drained(self.conn)
            applied_seconds = time.monotonic() - started
        return backlog, applied_seconds, drain_sampler.usage

    def _tail(self) -> tuple[tuple[int, float], Usage]:
        """respond-async: drain messages left once all was applied, the seconds the worker took
        to consume them, and what that used."""
        left, tail_started = _queued(self.redis), time.monotonic()
        with self._sampler() as tail_sampler:
            _wait_queue_empty(self.redis)
            queue_tail = (left, time.monotonic() - tail_started)
        return queue_tail, tail_sampler.usage

    def _url(self, mode: str) -> str:
        """Where a mode's requests go: the naive app or idmirror's API."""
        return self.naive_url if is_naive(mode) else self.stack.base_url

    def measure(
        self,
        mode: str,
        make: RequestFactory,
        *,
        keys: int,
        round_: int,
        duration: float,
        max_requests: int,
        token: str = TOKEN,
    ) -> Run:
        """Send one mode's requests, wait until all is applied and consumed, record the cost."""
        respond_async = is_async(mode)
        self._settle()
        before = self._counters()
        started = time.monotonic()
        with self._sampler() as sampler:
            result = load.run(
                self._url(mode),
                self.options.concurrency,
                make,
                headers=headers(respond_async, token),
                duration=duration,
                max_requests=max_requests,
            )
        queued = _queued(self.redis)
        backlog: int | None = None
        applied_seconds: float | None = None
        drain_usage: Usage | None = None
        queue_tail: tuple[int, float] | None = None
        tail_usage: Usage | None = None
        if respond_async:
            backlog, applied_seconds, drain_usage = self._drain(started)
            queue_tail, tail_usage = self._tail()
        else:
            _wait_drained(self.conn)
        _wait_queue_empty(self.redis)
        time.sleep(0.5)  # the worker counts a task when it starts it
        after = self._counters()
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
            drain_tasks=after.drain_tasks_since(before),
            broker_messages=after.calls_since(before, "lpush"),
            events=after.calls_since(before, "publish"),
            failed_jobs=after.failed - before.failed,
        )
        print_run(run)
        return run

    def _integrator_token(self) -> str:
        """An integrator with a rate limit far above the load, and its token."""
        name = "bench-" + uuid.uuid4().hex[:8]
        admin = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.stack.base_url, headers=admin, timeout=30) as c:
            limit = {"per_second": 1_000_000, "burst": 10_000_000}
            body = {"name": name, "display_name": name, "rate_limit": limit}
            c.post("/v1/admin/integrators", json=body).raise_for_status()
            scopes = ["users:write", "agents:write"]
            created = c.post("/v1/admin/tokens", json={"integrator": name, "scopes": scopes})
            created.raise_for_status()
        token: str = created.json()["token"]
        return token

    def _create_users(self, mode: str, token: str) -> None:
        """One PUT per user, unmeasured, where `mode`'s requests go."""
        users = load.run(
            self._url(mode),
            self.options.concurrency,
            self.workload.user_puts(),
            headers=headers(False, token),
            duration=300,
            max_requests=USERS,
        )
        if users.statuses[200] != USERS:
            raise RuntimeError(f"creating users: {dict(users.statuses)} {dict(users.errors)}")

    def _create_agents(self, mode: str) -> Run:
        """One PUT per agent, measured as `mode`."""
        make = self.workload.agent_creates()
        run = self.measure(mode, make, keys=AGENTS, round_=0, duration=300, max_requests=AGENTS)
        if run.load.outcomes["created"] != AGENTS:
            raise RuntimeError(f"creating agents: {dict(run.load.outcomes)}")
        return run

    def create(self, token: str = TOKEN) -> Run:
        """Create the workload's users and agents in idmirror, the users as `token`'s; the
        agents' creates are measured."""
        self._create_users(CREATES, token)
        return self._create_agents(CREATES)

    def setup(self) -> list[Run]:
        """Create the users and agents in idmirror and in the naive app. In idmirror the users
        are the integrator's (its token may write their agents, as the bootstrap token may);
        the agents' creates are measured."""
        self.token = self._integrator_token()
        creates = self.create(self.token)
        self._create_users(NAIVE_CREATES, TOKEN)
        return [creates, self._create_agents(NAIVE_CREATES)]

    def warm_up(self) -> None:
        """Unmeasured sync-wait updates for the warm-up seconds, if any, to idmirror's API and
        then to the naive app."""
        if self.options.warmup <= 0:
            return
        for mode in (SYNC, NAIVE):
            load.run(
                self._url(mode),
                self.options.concurrency,
                self.workload.updates("warmup", hot=False),
                headers=headers(False),
                duration=self.options.warmup,
                max_requests=int(self.options.warmup * MAX_RATE),
            )

    def rounds(self) -> list[Run]:
        """Each round measures the modes of ROUND, in its order."""
        runs = []
        duration = self.options.duration
        for r in range(1, self.options.rounds + 1):
            for mode in ROUND:
                token = self.token if mode in (SYNC_TOKEN, ASYNC_TOKEN) else TOKEN
                runs.append(self.measure_updates(mode, r, duration, token=token))
        return runs

    def measure_updates(
        self, mode: str, round_: int, duration: float, *, token: str = TOKEN, tag: str = ""
    ) -> Run:
        """Measure `mode`'s updates for `duration` seconds as round `round_`; bodies differ from
        every other round's, and from those of runs with another `tag`."""
        make, keys = self.workload.updates_for(mode, f"{mode} r{round_}{tag}")
        return self.measure(
            mode,
            make,
            keys=keys,
            round_=round_,
            duration=duration,
            max_requests=int(duration * MAX_RATE),
            token=token,
        )


def print_run(run: Run) -> None:
    """One line per run on stdout, with everything measured, as it finishes."""
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
