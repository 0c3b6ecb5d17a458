"""The backfill benchmark's section of docs/benchmarks.md: the floor and both runs, the targets
and whether they were met, where the time went, and the machine."""

import os

from bench.backfill.runs import Run
from bench.report import table
from bench.statements import OTHER, Usage

TARGET_FLOOR_RATIO = 1.3  # the first target was 3x
TARGET_RERUN_SPEEDUP = 8.0  # the first target was 3x
TARGET_RSS_GROWTH_MB = 200.0


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _timings(items: int, floor: float, first: Run, second: Run) -> list[list[str]]:
    rows = [
        [
            "raw floor: COPY + one merge per table",
            f"{floor:.1f}",
            f"{items / floor:,.0f}",
            "",
            "",
            "",
        ],
    ]
    for run, label in (
        (first, "backfill, first run (all created)"),
        (second, "backfill, same file again (all unchanged)"),
    ):
        rows.append(
            [
                label,
                f"{run.seconds:.1f}",
                f"{items / run.seconds:,.0f}",
                f"{run.upload_seconds:.1f}",
                f"{run.seconds - run.upload_seconds:.1f}",
                " / ".join(f"{run.rss_growth[k]:.0f}" for k in ("api", "worker")),
            ]
        )
    return rows


def _targets(floor: float, first: Run, second: Run) -> list[list[str]]:
    ratio = first.seconds / floor
    speedup = first.seconds / second.seconds
    growth = max(max(first.rss_growth.values()), max(second.rss_growth.values()))
    # What is left to apply once the upload is answered: a re-run leaves a few hundredths of a
    # second (its lines that went the long way), which a ratio would make much of.
    applies = [max(run.seconds - run.upload_seconds, 0.0) for run in (first, second)]
    return [
        [
            f"end to end within {TARGET_FLOOR_RATIO:g}x of the floor",
            f"{ratio:.2f}x",
            _verdict(ratio <= TARGET_FLOOR_RATIO),
        ],
        [
            f"unchanged re-run at least {TARGET_RERUN_SPEEDUP:g}x faster",
            f"{speedup:.2f}x",
            _verdict(speedup >= TARGET_RERUN_SPEEDUP),
        ],
        [
            "(for reference) apply left after the upload, first run / re-run",
            f"{applies[0]:.1f} s / {applies[1]:.2f} s",
            "",
        ],
        [
            f"peak RSS growth under {TARGET_RSS_GROWTH_MB:.0f} MB (API, worker)",
            f"{growth:.0f} MB",
            _verdict(growth < TARGET_RSS_GROWTH_MB),
        ],
    ]


def _cpu(items: int, floor: tuple[float, dict[str, float]], first: Run, second: Run) -> str:
    """CPU per line of each process group, and what the floor target leaves on these cores."""
    groups = [("api", "API"), ("worker", "worker"), ("postgres", "Postgres"), ("bench", "client")]
    rows = []
    for label, cpu in (
        ("raw floor", floor[1]),
        ("first run", first.cpu),
        ("unchanged re-run", second.cpu),
    ):
        per_line = [1e6 * cpu.get(name, 0.0) / items for name, _ in groups]
        rows.append([label, *(f"{us:.1f}" for us in per_line), f"{sum(per_line):.1f}"])
    cores = os.cpu_count() or 1
    budget = 1e6 * TARGET_FLOOR_RATIO * floor[0] * cores / items
    used = 1e6 * sum(first.cpu.values()) / items
    headers = ["CPU us per line", *(label for _, label in groups), "total"]
    return f"""{table(headers, rows)}

CPU per line of each process group over each run (the API's threads, the worker's prefork
processes and Postgres's backends; *client* is the benchmark's own process, which sends the
floor's `COPY`). Within {TARGET_FLOOR_RATIO:g}x of the floor's time, {cores} cores give
at most {budget:.1f} us of CPU per line however well the work overlaps; the first run used
{used:.1f}."""


def _statements(items: int, usage: dict[str, Usage]) -> str:
    """Postgres's time per line by statement in each window (floor, first run, re-run)."""
    windows = ("floor", "first", "rerun")
    if not all(name in usage for name in windows):
        return ""
    per_line = {w: {k: 1e3 * ms / items for k, ms in usage[w].ms.items()} for w in windows}
    shown = {k for w in windows for k, us in per_line[w].items() if us >= 0.05} - {OTHER}
    order = sorted(shown, key=lambda k: (-per_line["first"].get(k, 0.0), k))
    rows = []
    for name in [*order, OTHER]:
        cells = [f"{per_line[w].get(name, 0.0):.2f}" for w in windows]
        wal = usage["first"].wal.get(name, 0) / items
        rows.append([name, *cells, f"{wal:,.0f}"])
    totals = [f"{sum(per_line[w].values()):.2f}" for w in windows]
    rows.append(["total", *totals, f"{sum(usage['first'].wal.values()) / items:,.0f}"])
    headers = ["Postgres us per line, by statement", "floor", "first run", "re-run", "WAL B/line"]
    return f"""{table(headers, rows)}

Execution time of Postgres's top-level statements in each window, per line of the input (from
`pg_stat_statements`, loaded for this benchmark; *WAL* is the first run's). It is the time each
backend spent in the statement, so it counts waits for a lock or for a core beside its CPU, and
a statement's foreign-key checks and the key-history rows it inserts are part of it. Statements
under 0.05 us a line are counted in *other*, with the beat's and the sweeper's."""


def _method(users: int, agents: int, size: int) -> str:
    items = users + agents
    return f"""## Backfill from NDJSON

`POST /v1/internal/backfills` with {users:,} users and {agents:,} agents ({items:,} lines,
{size / 2**20:,.0f} MiB) streamed from a file, timed from the first byte sent until the backfill
reads `completed`; then the same file again, where every item is unchanged. The floor is the same
rows loaded with `COPY` into staging tables and merged with one `INSERT ... ON CONFLICT DO UPDATE
... WHERE <changed and not older>` per table into copies of the real tables (same indexes, agent
ids random as the service draws them), in the same database during the same run. *upload* is the
time until the upload was answered: reading, validating and storing every line, while users and
then agents are applied as their chunks are stored; *apply* is what is left to apply after it.
RSS growth is the peak resident memory of the API process and of the worker's process group above
their level when the run started, sampled every 0.2 s."""


def _where_the_time_goes(items: int, first: Run, second: Run) -> str:
    return (
        "Where the time goes. In the first run, reading, validating (the same rules and webhook "
        f"""check as
a PUT) and storing the input took {first.upload_seconds:.1f} s, about
{1e6 * first.upload_seconds / items:.0f} us per line, in one API process, while
{os.cpu_count()} worker processes applied users and then agents as their chunks were stored
({first.chunks:,} chunks), sharing the machine's cores with Postgres and the API; applying what
was left after the upload took {first.seconds - first.upload_seconds:.1f} s. The re-run
recognised its lines instead of reading them: each row keeps the digest of the backfill line that
last wrote it, so a line whose row still holds its digest is counted unchanged after one lookup
per part of the upload (up to 1,000 lines, one index probe each; two parts looked up on two
connections while the part before them is read), without being validated, stored or applied
(docs/backfills.md). It stored {second.chunks:,} chunks, for the few lines that went the long way
(the Bloom filter of keys seen earlier in the input has false positives), and took
{second.upload_seconds:.1f} s to upload, about {1e6 * second.upload_seconds / items:.0f} us per
line. The floor is one Postgres backend merging
rows that need no validation."""
    )


def _machine(facts: dict[str, str]) -> str:
    return f"""Machine: {facts["cpus"]} CPUs ({facts["cpu_model"]}; one core sums range(10**6) in
{facts["core_speed"]}), {facts["memory"]} RAM; Python
{facts["python"]}; PostgreSQL {facts["postgres"]} ({facts["postgres_settings"]}). Load average
before the run: {facts["load_before"]}, after it: {facts["load_after"]} (other work shares
this machine, and these figures move with it). Date: {facts["date"]}.
Code: {facts["revision"]}. Services: {facts["services"]}; API: 1 uvicorn process, worker: one
Celery worker with prefork concurrency {os.cpu_count()}, chunk size and buckets at their defaults.
"""


def render(
    users: int,
    agents: int,
    size: int,
    floor_run: tuple[float, dict[str, float]],
    first: Run,
    second: Run,
    facts: dict[str, str],
    usage: dict[str, Usage] | None = None,
) -> str:
    """The whole section for the floor (its seconds and CPU-seconds by group) and both runs,
    on this machine."""
    items = users + agents
    floor = floor_run[0]
    headers = ["run", "seconds", "items/s", "upload s", "apply s", "RSS growth MB (API / worker)"]
    blocks = [
        _method(users, agents, size),
        table(headers, _timings(items, floor, first, second)),
        table(["target", "measured", ""], _targets(floor, first, second)),
        _where_the_time_goes(items, first, second),
        _cpu(items, floor_run, first, second),
        _statements(items, usage or {}),
        _machine(facts),
    ]
    return "\n\n".join(block for block in blocks if block)
