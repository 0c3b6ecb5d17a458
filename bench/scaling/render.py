"""The scaling benchmark's section of docs/scaling.md: costs per job, the model against the
measurement, and the extrapolation."""

from bench.options import Options
from bench.report import table
from bench.scaling.measure import MODES, STATS_FLUSH_SECONDS, Sample
from bench.scaling.model import (
    FLUSH_MS,
    RETENTION_HOURS,
    Check,
    Costs,
    Extrapolation,
    checks,
    costs,
)
from bench.upserts.render import prose
from identity.counters import SHARDS

CORES = (8, 32, 64)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _measured_table(all_costs: list[Costs]) -> str:
    headers = ["writes", "API proc.", "jobs/s", "API", "worker", "Postgres", "Redis+beat"]
    headers += ["load gen", "commits/job", "WAL B/job", "WAL fsyncs/job", "DB B/job"]
    headers += ["machine busy", "Postgres waits"]
    rows = [
        [
            MODES[c.mode],
            str(c.processes),
            f"{c.rate:,.0f}",
            *(f"{c.cpu[g]:.2f}" for g in ("api", "worker", "postgres")),
            f"{c.cpu['redis'] + c.cpu['beat']:.2f}",
            f"{c.cpu['loadgen']:.2f}",
            _fmt(c.commits, 2),
            _fmt(c.wal_bytes, 0),
            _fmt(c.wal_fsyncs, 3),
            _fmt(c.database_bytes, 0),
            f"{c.busy:.0f}%",
            c.waits or "-",
        ]
        for c in all_costs
    ]
    return table(headers, rows)


def _check_table(checks: list[Check]) -> str:
    headers = ["writes", "API proc.", "costs from", "free cores", "bound", "predicted jobs/s"]
    headers += ["measured jobs/s", "measured / predicted"]
    rows = [
        [
            MODES[k.measured.mode],
            str(k.measured.processes),
            f"{k.base.processes} API proc." + (" (fitted)" if k.fitted else ""),
            f"{k.free_cores:.2f}",
            k.bound,
            f"{k.predicted:,.0f}",
            f"{k.measured.rate:,.0f}",
            f"{k.ratio:.2f}",
        ]
        for k in checks
    ]
    return table(headers, rows)


def _check_summary(checks: list[Check]) -> str:
    out = [k for k in checks if not k.fitted]
    if not out:
        return "Only one API process count was measured: nothing was predicted out of sample."
    ratios = [k.ratio for k in out]
    changes = "; ".join(
        f"{MODES[k.measured.mode]} with {k.measured.processes} API processes: "
        f"{k.base.service_ms:.2f} -> {k.measured.service_ms:.2f} service CPU-ms per job, "
        f"{_fmt(k.base.jobs_per_commit)} -> {_fmt(k.measured.jobs_per_commit)} jobs per commit"
        for k in out
    )
    return (
        f"Out of sample, the measured rate was {min(ratios):.2f} to {max(ratios):.2f} times the "
        f"predicted one. Against the costs it was predicted from: {changes}."
    )


def _extrapolation_table(all_costs: list[Costs]) -> str:
    headers = ["writes", "cores", "Postgres cores", "CPU bound jobs/s", "hot-row bound jobs/s"]
    headers += ["jobs/s", "commits/s", "WAL MB/s", "ledger rows kept (bn)"]
    rows = []
    for mode in MODES:
        mine = [c for c in all_costs if c.mode == mode]
        if not mine:
            continue
        costs = max(mine, key=lambda c: c.processes)
        for cores in CORES:
            e = Extrapolation(costs, cores)
            wal = None if costs.wal_bytes is None else e.rate * costs.wal_bytes / 2**20
            commits = None if costs.commits is None else e.rate * costs.commits
            kept = e.rate * RETENTION_HOURS * 3600 / 1e9
            rows.append(
                [
                    MODES[mode],
                    str(cores),
                    f"{e.postgres_cores:.1f}",
                    f"{e.cpu_rate:,.0f}",
                    _fmt(e.hot_row_rate, 0),
                    f"**{e.rate:,.0f}**",
                    _fmt(commits, 0),
                    _fmt(wal, 1),
                    f"{kept:.1f}",
                ]
            )
    return table(headers, rows)


def render(samples: list[Sample], facts: dict[str, str], options: Options) -> str:
    processes = sorted({s.processes for s in samples})
    all_costs = [costs(samples, mode, n) for n in processes for mode in MODES]
    cpus = int(facts["cpus"])
    found = checks(all_costs, cpus)
    return prose(f"""## Measured: CPU, commits and WAL per job

`python -m bench scaling`: one stack (worker prefork concurrency
{options.worker_concurrency[0]}; the API restarted with 1 and then 2 uvicorn processes),
{options.concurrency} closed-loop clients (`bench/load.py`) sending sync-wait `PUT`s, each a
real update: users, then agents, in turns, {options.rounds} round(s) of {options.duration:g} s
each after {options.warmup:g} s of warm-up. CPU is psutil's user + system time of each process
group over the run, per answered request (each answer is one applied job); Postgres's counters
(`xact_commit`, read-only transactions included; `pg_current_wal_lsn()`; WAL fsyncs from
`pg_stat_io`; `pg_database_size()`) are read before the run and {STATS_FLUSH_SECONDS:g} s after
it. Medians over the rounds.

Machine: {facts["cpus"]} CPUs ({facts["cpu_model"]}; one core's `sum(range(10**6))`
{facts["core_speed"]}), {facts["memory"]}; PostgreSQL {facts["postgres"]}
({facts["postgres_settings"]}); load average before the run {facts["load_before"]}. Code
{facts["revision"]}, {facts["date"]}.

CPU in ms per job:

{_measured_table(all_costs)}

### The model against the measurement

Predicted jobs/s = the machine's free cores (its {cpus} minus what other processes used during
the run) / the CPU-seconds per job of everything on it (service and load generator), or the API
processes / the API's CPU-seconds per job (one core each), whichever is lower. Costs come from the
run with the fewest API processes; its own row is therefore fitted, the others are predictions.
A ratio under 1 is time the machine had spare: the 32 clients waited on round trips (commit
flushes, the event loop) rather than on CPU.

{_check_table(found)}

{_check_summary(found)}

### Extrapolation

From the costs of the run with the most API processes, for `cores` split across machines: API
processes, workers and Redis on stateless machines, Postgres on one machine of its own, the cores
shared in proportion to each side's CPU per job (the load generator elsewhere). *CPU bound* =
cores / (service CPU-seconds per job); *hot-row bound* = one applying commit per WAL flush of
{FLUSH_MS:g} ms and counter shard ({SHARDS}), times the jobs per commit measured here.
Per-job costs are assumed constant: no gain from larger batches, no loss to contention.
*ledger rows kept* = jobs/s x {RETENTION_HOURS:g} h of job retention.

{_extrapolation_table(all_costs)}
""")
