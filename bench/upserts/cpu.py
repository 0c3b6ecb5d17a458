"""Where a run's CPU went: CPU milliseconds per request by process group and phase, and the
resource that bounded the run."""

import os

from bench.probe import Usage
from bench.stack import StackConfig
from bench.upserts.runs import Run, is_async, is_naive

SERVICE = ("api", "worker", "postgres", "redis", "beat")
NAIVE_SERVICE = ("naive", "postgres")

NAMES = {
    "api": "API",
    "naive": "naive app",
    "worker": "worker",
    "postgres": "Postgres",
    "redis": "Redis",
    "beat": "beat",
    "loadgen": "load generator",
    "other": "other processes",
}


def _capacity(group: str, config: StackConfig) -> float:
    """CPU percent a group can use at most: one core per Python process, all cores for Postgres."""
    cores = os.cpu_count() or 1
    if group in ("api", "naive"):  # the naive app runs as many processes as the API
        return 100.0 * config.api_workers
    if group == "worker":
        return 100.0 * min(cores, config.worker_concurrency or cores)
    if group in ("redis", "loadgen", "beat"):
        return 100.0
    return 100.0 * cores


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
            "naive": "naive app CPU",
            "worker": "worker processes' CPU",
            "loadgen": "load generator CPU",
        }.get(group, f"{NAMES[group]} CPU")
        return f"{what} ({top})"
    if usage.machine_busy >= 85:
        return f"machine CPU, {usage.machine_busy:.0f}% of {cores} cores ({top})"
    waits = usage.top_waits()
    if is_naive(mode):
        answer = "its upsert's commit"
    elif is_async(mode):
        answer = "its accept's commit"
    else:
        answer = "its accept's commit and a drain pass"
    return (
        f"latency: each of the {concurrency} clients waits for {answer}; no CPU saturated "
        f"({usage.machine_busy:.0f}% of {cores} cores; {top})"
        + (f"; Postgres backends: {waits}" if waits else "")
    )


def phases(run: Run) -> list[tuple[str, Usage]]:
    """The run's sampled windows: send, and for respond-async its drain and queue tail."""
    phases = [("send", run.usage)]
    if run.drain_usage is not None:
        phases.append((f"drain: {run.backlog} jobs pending", run.drain_usage))
    if run.tail_usage is not None and run.queue_tail is not None and run.queue_tail[0]:
        phases.append((f"tail: {run.queue_tail[0]} messages left", run.tail_usage))
    return phases


def front(run: Run) -> str:
    """The process group that answered the run's requests: the naive app or idmirror's API."""
    return "naive" if is_naive(run.mode) else "api"


def cpu_ms(run: Run, groups: tuple[str, ...] | None = None) -> float:
    """CPU milliseconds `groups` spent per request over all phases of the run; by default the
    whole service that answered it (idmirror's API, worker, Postgres, Redis and beat, or the
    naive app and Postgres)."""
    if groups is None:
        groups = NAIVE_SERVICE if is_naive(run.mode) else SERVICE
    seconds = sum(
        usage.seconds * sum(usage.cpu.get(g, 0.0) for g in groups) / 100.0
        for _, usage in phases(run)
    )
    return 1000.0 * seconds / run.load.answered if run.load.answered else float("nan")


def service_cpu_ms(run: Run) -> float:
    """CPU milliseconds the whole service that answered the run spent per request."""
    return cpu_ms(run)
