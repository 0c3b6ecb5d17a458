"""docs/reliability.md: the chaos benchmark's table, one row per fault, and how it was made."""

from pathlib import Path

from bench.chaos.scenario import Result, Timing
from bench.report import table

RELIABILITY = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "never"


def _row(result: Result) -> list[str]:
    v = result.verdict
    others = {
        "pending": v.pending,
        "misordered": v.misordered,
        "stale won": v.stale_won,
        "5xx after recording": v.refused_after_recording,
    }
    broken = [f"{name} {n}" for name, n in others.items() if n]
    broken += [f"{name} exited ({code})" for name, code in result.exited.items()]
    return [
        result.fault.title,
        f"{result.writes:,}",
        f"{v.acknowledged:,}",
        f"{v.applied:,}",
        f"{v.failed:,}",
        f"{v.duplicated:,}",
        f"{v.lost:,}",
        _seconds(result.recovery),
        _seconds(result.drained),
        f"{result.peak_rss['api']:.0f}",
        f"{result.peak_rss['worker']:.0f}",
        ", ".join(broken) or "none",
    ]


HEADERS = [
    "fault",
    "writes sent",
    "acknowledged",
    "applied",
    "failed",
    "duplicated",
    "lost",
    "time to recover",
    "drained after stream",
    "peak RSS API (MiB)",
    "peak RSS worker (MiB)",
    "other broken invariants",
]


def render(results: list[Result], timing: Timing, facts: dict[str, str], duration: float) -> str:
    rows = [_row(result) for result in results]
    return f"""## Faults under a stream of mixed writes

Machine: {facts["cpus"]} cores ({facts["cpu_model"]}; one core sums range(10**6) in
{facts["core_speed"]}), {facts["memory"]}, Python {facts["python"]},
PostgreSQL {facts["postgres"]}; load before the run {facts["load_before"]}. Date: {facts["date"]}.
Revision {facts["revision"]}. Stream of {duration:.0f} s per fault
({timing.before:.0f} s before it, {timing.after:.0f} s after it ended), {timing.clients} clients.

{table(HEADERS, rows)}

Method: for each fault a fresh embedded PostgreSQL and Redis, and real `idmirror api`, `worker`
(prefork, 2 processes) and `beat` processes. {timing.clients} client threads each own a few keys
and send one write at a time: user PUTs, agent PUTs, graph updates (two nodes and a connection),
user and agent DELETEs, and user PUTs with a `source_updated_at` of 2001 (stale); 70 % wait for
their job, 30 % send `Prefer: respond-async`; half carry an `Idempotency-Key` and are sent again
with it after a connection error, a timeout or a 5xx. *Acknowledged*: answered 202, or 200/4xx
with `Idmirror-Job-Id`. *Applied*/*failed*: the final status of their job (graph updates of an
agent a DELETE removed fail by design). *Duplicated*: effects beyond one per logical write (two
jobs carrying its marker, two job ids in its answers, more DELETE jobs on a key than DELETEs sent,
a graph update's nodes created twice). *Lost*: acknowledged writes without a final job, or an
applied graph update without its nodes. *Time to recover*: from the end of the fault (the killed
process or the server back up) to the first sync PUT, sent after it, answered 200. *Drained
after stream*: from the stream's end to no job pending. The other invariants: each key stores
the body of its last applied job by `seq` (and a client's acknowledged writes of a key have
increasing `seq`), no stale write is applied or stored, and no 5xx without a job id answers the
request that recorded the job. Peak RSS is of each process group (root and children), sampled
every 0.2 s. The same scenarios, shorter, are `tests/test_chaos.py`.
"""
