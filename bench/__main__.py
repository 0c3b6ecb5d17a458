"""`python -m bench [name ...]`: run the named benchmarks, or all of them, in order."""

import argparse
import importlib
import logging
import os
import sys

from bench.options import Options

# Name -> module with `run(options)`. A new benchmark is a sibling module added here.
BENCHMARKS = {
    "upserts": "bench.upserts",
    "backfill": "bench.backfill",
    "graph": "bench.graph",
    "chaos": "bench.chaos",
    "scim": "bench.scim",
    "scaling": "bench.scaling",
}


def _workers(value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("each count must be at least 1")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="name",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up load")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each mode")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument(
        "--api-workers",
        type=_workers,
        default=(1,),
        help="uvicorn processes of the API (and of upserts' naive app); a list (1,2) runs one "
        "stack for each, and upserts compares them; scaling restarts one stack's API with each "
        "count of a list (by default 1,2)",
    )
    parser.add_argument(
        "--worker-concurrency",
        type=_workers,
        default=(os.cpu_count() or 1, 1),
        help="Celery prefork processes; a list runs one stack for each (default: CPU count, 1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if not 1 <= args.concurrency <= 512 or args.rounds < 1 or args.duration <= 0:
        parser.error("concurrency must be 1..512, rounds >= 1, duration > 0")

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    options = Options(
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        concurrency=args.concurrency,
        api_workers=args.api_workers,
        worker_concurrency=args.worker_concurrency,
        keep=args.keep,
        write=not args.no_write,
    )
    for name in args.names or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        importlib.import_module(BENCHMARKS[name]).run(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
