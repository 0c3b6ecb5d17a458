"""One measured run of the upserts benchmark: the modes, the workload's size and the `Run`
record every other module of the benchmark reads. A mode names what was sent (agents unless
it says users) and to whom (idmirror's API unless it says naive)."""

from dataclasses import dataclass

from bench.load import LoadResult
from bench.probe import Usage
from bench.stack import StackConfig

USERS = 200
AGENTS = 2000
HOT_KEYS = 8

SYNC, ASYNC = "sync-wait", "respond-async"
HOT, CREATES = "sync-wait, hot keys", "sync-wait, creates"
# The same updates sent with an integrator's token: its scopes checked, its ownership of each
# agent's user checked by the worker, its rate limit (far above the load) taken from Redis.
SYNC_TOKEN, ASYNC_TOKEN = "sync-wait, integrator token", "respond-async, integrator token"
# The naive comparator (bench/naive) on the same requests: one synchronous upsert a request.
NAIVE, NAIVE_CREATES = "naive", "naive, creates"
# The same three on user updates.
USERS_SYNC, USERS_ASYNC, USERS_NAIVE = "sync-wait, users", "respond-async, users", "naive, users"
# Resource -> its (sync-wait, respond-async, naive) modes: the runs compared with the naive app.
COMPARED = {"agents": (SYNC, ASYNC, NAIVE), "users": (USERS_SYNC, USERS_ASYNC, USERS_NAIVE)}
# One round, in this order: the runs compared with each other (with and without the
# integrator's token, idmirror and the naive app) next to each other in time.
ROUND = (SYNC_TOKEN, SYNC, NAIVE, ASYNC, ASYNC_TOKEN, HOT, USERS_SYNC, USERS_NAIVE, USERS_ASYNC)


def is_async(mode: str) -> bool:
    return mode.startswith(ASYNC)


def is_naive(mode: str) -> bool:
    return mode.startswith(NAIVE)


def is_users(mode: str) -> bool:
    return mode in (USERS_SYNC, USERS_ASYNC, USERS_NAIVE)


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
        return 202 if is_async(self.mode) else 200

    @property
    def unexpected(self) -> int:
        ok = self.load.statuses[self.expected_status]
        return self.load.answered - ok + sum(self.load.errors.values())

    @property
    def applied_rate(self) -> float:
        if self.applied_seconds is not None:
            return self.load.statuses[202] / self.applied_seconds
        return self.load.statuses[200] / self.load.elapsed if self.load.elapsed else 0.0


def throughput(run: Run) -> float:
    """What a run got done per second: jobs applied for respond-async, requests answered else."""
    return run.applied_rate if is_async(run.mode) else run.load.rate
