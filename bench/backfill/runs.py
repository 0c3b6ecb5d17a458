"""One backfill through the service: the NDJSON file uploaded, followed until it completed, with
the API's and worker's memory sampled throughout."""

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from bench.probe import Sampler
from bench.rss import RssSampler
from bench.stack import TOKEN, Stack

# The process groups whose CPU a run reports: the bench's own process (-pid: it alone) sends the
# floor's COPY; the service's are the API, the worker (with its prefork children) and Postgres.
GROUPS = ("api", "worker", "postgres", "bench")


def cpu_sampler(stack: Stack) -> Sampler:
    """A sampler of the CPU of the groups above, for one timed window."""
    roots = {name: pids for name, pids in stack.process_roots().items() if name in GROUPS}
    return Sampler({**roots, "bench": [-os.getpid()]}, stack.pg_conninfo)


def cpu_seconds(sampler: Sampler) -> dict[str, float]:
    """CPU-seconds each group used in the sampler's window."""
    usage = sampler.usage
    return {name: usage.cpu.get(name, 0.0) / 100 * usage.seconds for name in GROUPS}


@dataclass
class Run:
    """What one backfill took: time, counts, rate and memory growth."""

    label: str
    seconds: float
    upload_seconds: float
    counts: dict[str, int]
    items_per_second: float
    rss_growth: dict[str, float] = field(default_factory=dict)
    chunks: int = 0  # chunks stored: none for lines known from an earlier run
    cpu: dict[str, float] = field(default_factory=dict)  # CPU-seconds by group (GROUPS)


def run_once(stack: Stack, path: Path, label: str) -> Run:
    """Upload the file as a backfill and poll it until it ends; it must end completed."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    roots = {"api": stack.processes["api"].pid, "worker": stack.processes["worker"].pid}
    with (
        httpx.Client(
            base_url=stack.base_url, headers=headers, timeout=httpx.Timeout(30, read=None)
        ) as client,
        RssSampler(lambda: roots) as rss,
        cpu_sampler(stack) as sampler,
    ):

        def blocks() -> Iterator[bytes]:
            with path.open("rb") as source:
                while block := source.read(1 << 20):
                    yield block

        # The run ends when the service marks it finished, not at the poll that sees it (every
        # 0.2 s): its clock is this host's.
        started_at, started = time.time(), time.monotonic()
        response = client.post(
            "/v1/internal/backfills",
            content=blocks(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        response.raise_for_status()
        uploaded = time.monotonic() - started
        run = response.json()
        while run["status"] in ("receiving", "running"):
            time.sleep(0.2)
            run = client.get(f"/v1/internal/backfills/{run['id']}").json()
    if run["status"] != "completed":
        raise RuntimeError(f"the backfill ended {run['status']}: {run.get('error')}")
    seconds = datetime.fromisoformat(run["finished_at"]).timestamp() - started_at
    with stack.pg_connect() as conn:
        row = conn.execute("SELECT chunks FROM backfills WHERE id = %s", (run["id"],)).fetchone()
    chunks = row[0] if row else 0
    result = Run(
        label,
        seconds,
        uploaded,
        run["counts"],
        run["items_per_second"],
        rss.growth(),
        chunks,
        cpu_seconds(sampler),
    )
    print(
        f"   {label}: {seconds:.1f}s (upload and validation {uploaded:.1f}s), "
        f"{run['counts']}, RSS growth {result.rss_growth}",
        flush=True,
    )
    return result
