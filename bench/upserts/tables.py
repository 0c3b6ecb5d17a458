"""The upserts benchmark's Markdown tables: results per run, CPU per phase, queue and database."""

from bench.report import table
from bench.upserts.cpu import bound, cpu_ms, front, phases, service_cpu_ms
from bench.upserts.runs import Run, is_async

SAMPLED = ("api", "naive", "worker", "postgres", "redis")  # the CPU table's service columns


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _per(value: float | None, count: int) -> str:
    return f"{value / count:.2f}" if value is not None and count else "n/a"


def results_table(runs: list[Run], several_configs: bool) -> str:
    """Rate, latency, applied rate, other answers and bound of every run."""
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


def _cpu_split(run: Run) -> str:
    parts = [cpu_ms(run, (g,)) for g in (front(run), "worker", "postgres")]
    return " / ".join(f"{v:.1f}" for v in [*parts, service_cpu_ms(run)])


def cpu_table(runs: list[Run], several_configs: bool) -> str:
    """CPU of each process group in each phase of every run, and CPU-ms per request."""
    headers = ["Mode", "Round", "Phase", "API", "naive app", "worker", "Postgres", "Redis"]
    headers += ["load gen", "other", "machine", "steal"]
    headers += ["CPU ms/req: API or naive app / worker / PG / service"]
    if several_configs:
        headers.insert(1, "Stack")
    rows = []
    for run in runs:
        for i, (phase, usage) in enumerate(phases(run)):
            row = [
                run.mode,
                str(run.round) if run.round else "setup",
                phase,
                *(f"{usage.cpu.get(g, 0):.0f}%" for g in SAMPLED),
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


def queue_table(runs: list[Run], several_configs: bool) -> str:
    """Commits, drain tasks, broker messages and Postgres backends of every run's phases."""
    headers = ["Mode", "Round", "Phase", "commits/s", "commits/req", "drain tasks/req"]
    headers += ["broker msgs/req", "events/req", "queued at end", "Postgres backends active"]
    if several_configs:
        headers.insert(1, "Stack")
    rows = []
    for run in runs:
        for phase, usage in phases(run):
            n = run.load.answered
            sending = phase == "send"
            commits = usage.commits_per_s
            row = [
                run.mode,
                str(run.round) if run.round else "setup",
                phase,
                f"{commits:.0f}" if commits is not None else "n/a",
                _per(commits, int(run.load.rate)) if sending and not is_async(run.mode) else "",
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
