"""Options every benchmark takes from the command line."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    duration: float  # seconds per measured run
    warmup: float  # seconds of unmeasured load before the first run
    rounds: int  # times each mode is measured, to show variance
    concurrency: int
    api_workers: tuple[int, ...]  # one stack per entry: uvicorn processes of the API
    worker_concurrency: tuple[int, ...]  # one stack per entry (and per API entry): processes
    keep: bool  # leave the temporary directory (logs, data) behind
    write: bool  # rewrite the benchmark's section of docs/benchmarks.md
