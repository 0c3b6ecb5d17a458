"""One chaos scenario: a write stream, one fault in the middle of it, then the checks.

The stream runs `before` seconds, the fault is injected (the stream goes on meanwhile), the
stream runs `after` more seconds and stops (clients finish their retries), and the ledger gets
`settle` seconds to have nothing pending. Recovery is the time from the fault's end to the first
sync write, sent after it, answered 200: accepted, applied by a worker and woken by its
notification, the whole path working again. A probe sends such writes (a new user each, with an
Idempotency-Key) from the fault's end until one succeeds, so recovery is measured even when it
comes after the stream stopped.
"""

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import psycopg

from bench.chaos.faults import Fault
from bench.chaos.services import Services
from bench.chaos.verify import Verdict, verify
from bench.chaos.workload import Workload, Write
from bench.rss import RssSampler


@dataclass(frozen=True)
class Timing:
    before: float = 2.0  # seconds of stream before the fault
    after: float = 3.0  # seconds of stream after the fault ended
    settle: float = 60.0  # seconds the ledger may take to drain once the stream stopped
    clients: int = 6


@dataclass
class Result:
    fault: Fault
    writes: int
    verdict: Verdict
    recovery: float | None  # seconds; None if no sync write succeeded after the fault
    drained: float | None  # seconds from the stream's end to nothing pending; None: never
    fault_seconds: float  # how long injecting the fault took (a restart, a kill and start)
    peak_rss: dict[str, float]  # MiB per process group
    answers: dict[str, int]  # status (or error name) -> attempts
    exited: dict[str, int | None]  # processes that ended on their own -> their exit status


def run_scenario(services: Services, fault: Fault, timing: Timing, seed: int = 7) -> Result:
    """Run the stream and the fault on `services`, which no one else uses."""
    workload = Workload(services.stack.base_url, services.token, timing.clients, seed=seed)
    workload.setup()
    with RssSampler(services.group_pids, name="chaos-rss") as rss:
        workload.start()
        try:
            time.sleep(timing.before)
            started = time.monotonic()
            ended = fault.inject(services)
            probe = Probe(services.stack.base_url, services.token, ended, timing.settle)
            time.sleep(timing.after)
        finally:
            workload.stop()
    stopped = time.monotonic()
    drained = _wait_drained(services, timing.settle)
    verdict = verify(services.stack.database_url, workload.writes)
    probe.join()
    exited = {
        name: process.returncode
        for name, process in services.stack.processes.items()
        if process.poll() is not None
    }
    return Result(
        fault=fault,
        writes=len(workload.writes),
        verdict=verdict,
        recovery=probe.recovery,
        drained=drained - stopped if drained is not None else None,
        fault_seconds=ended - started,
        peak_rss=dict(rss.peak),
        answers=_answers(workload.writes),
        exited=exited,
    )


def _pending(database_url: str) -> int | None:
    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM jobs WHERE status = 'pending'").fetchone()
    except psycopg.OperationalError:
        return None
    return int(row[0]) if row else None


def _wait_drained(services: Services, timeout: float) -> float | None:
    """The monotonic time at which nothing was pending; None if that took over `timeout` or a
    process ended (no one is left to drain)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pending(services.stack.database_url) == 0:
            return time.monotonic()
        if any(p.poll() is not None for p in services.stack.processes.values()):
            return None
        time.sleep(0.2)
    return None


class Probe(threading.Thread):
    """Sync user PUTs from `since` until one is answered 200; `recovery` is its delay."""

    def __init__(self, base_url: str, token: str, since: float, timeout: float) -> None:
        super().__init__(name="chaos-probe", daemon=True)
        self.base_url, self.token, self.since, self.timeout = base_url, token, since, timeout
        self.recovery: float | None = None
        self.start()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=20) as client:
            while time.monotonic() < self.since + self.timeout:
                user = uuid.uuid4()
                body = {"email": "probe@example.com", "slug": f"probe-{user.hex[:12]}"}
                key = {"Idempotency-Key": f"probe-{user}"}
                with contextlib.suppress(httpx.HTTPError):
                    response = client.put(f"/v1/internal/users/{user}", json=body, headers=key)
                    if response.status_code == 200:
                        self.recovery = time.monotonic() - self.since
                        return
                time.sleep(0.25)


def _answers(writes: list[Write]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for write in writes:
        for attempt in write.attempts:
            name = str(attempt.status) if attempt.status is not None else str(attempt.error)
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
