"""One API process against two: each mode's rate on stacks that differ only in their number of
uvicorn processes (the naive app runs as many as the API), with the target that a second
process loses no throughput."""

import statistics

from bench.report import table
from bench.stack import StackConfig
from bench.upserts.runs import COMPARED, NAIVE, USERS_NAIVE, Run, throughput
from bench.upserts.summary import verdict

MODES = tuple(mode for modes in COMPARED.values() for mode in modes)
TARGET = 1.0  # idmirror's rate with more API processes over its rate with fewest, at least


def _median(runs: list[Run], config: StackConfig, mode: str) -> float | None:
    rates = [throughput(r) for r in runs if r.config == config and r.mode == mode and r.round]
    return statistics.median(rates) if rates else None


def api_processes_table(runs: list[Run]) -> str | None:
    """For each worker concurrency run with several API process counts, each mode's median
    rate with the fewest processes and with each other count; None when no two stacks differ
    only in their API processes."""
    headers = ["Worker", "Mode", "API processes", "rate (req/s or applied/s)", "ratio"]
    headers += ["Target", "Verdict"]
    rows = []
    configs = list(dict.fromkeys(r.config for r in runs))
    for concurrency in dict.fromkeys(c.worker_concurrency for c in configs):
        alike = sorted(
            (c for c in configs if c.worker_concurrency == concurrency),
            key=lambda c: c.api_workers,
        )
        fewest = alike[0]
        for other in alike[1:]:
            for mode in MODES:
                base, rate = _median(runs, fewest, mode), _median(runs, other, mode)
                if base is None or rate is None:
                    continue
                ratio = rate / base
                naive = mode in (NAIVE, USERS_NAIVE)  # shown, not judged
                rows.append(
                    [
                        f"x{other.worker_processes}",
                        mode,
                        f"{fewest.api_workers} -> {other.api_workers}",
                        f"{base:.0f} -> {rate:.0f}",
                        f"{ratio:.2f}",
                        "" if naive else f">= {TARGET:g}",
                        "" if naive else verdict([ratio >= TARGET]),
                    ]
                )
    return table(headers, rows) if rows else None
