"""A backfill from NDJSON end to end (upload until completed), beside the raw database floor:
the same rows loaded with COPY into staging tables and merged with one INSERT ... ON CONFLICT
each, in the same Postgres, in the same run. Then the same file again (every item unchanged).
Peak RSS growth of the API and worker processes is sampled throughout. Rewrites the "backfill"
section of docs/benchmarks.md.

`python -m bench backfill` (sizes from BENCH_BACKFILL_USERS / BENCH_BACKFILL_AGENTS, default
100,000 and 1,000,000) or `python -m bench.backfill --users N --agents N [--no-write]`.
"""

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench import statements
from bench.backfill.floor import measure_floor
from bench.backfill.inputs import write_floor_input, write_input
from bench.backfill.render import render
from bench.backfill.runs import run_once
from bench.options import Options
from bench.probe import machine, note_core_speed_at_end
from bench.report import write_section
from bench.stack import Stack, StackConfig

SECTION = "backfill"
T = TypeVar("T")


def _counted(
    stack: Stack, usage: dict[str, statements.Usage], name: str, measure: Callable[[], T]
) -> T:
    """Run `measure`, keeping Postgres's time by statement over it as `usage[name]`."""
    if not stack.counts_statements:
        return measure()
    with stack.pg_connect() as conn:
        statements.reset(conn)
    result = measure()
    with stack.pg_connect() as conn:
        usage[name] = statements.take(conn)
    return result


def bench(users: int, agents: int, *, keep: bool, write: bool) -> None:
    """Write the input, measure the floor and both runs on one stack, and report them."""
    work = Path(tempfile.mkdtemp(prefix="idmirror-bench-backfill-"))
    path, user_rows, agent_rows = work / "input.ndjson", work / "users.tsv", work / "agents.tsv"
    print(f"   writing {users:,} users and {agents:,} agents to {path}", flush=True)
    size = write_input(path, users, agents)
    write_floor_input(path, user_rows, agent_rows)
    load_before = os.getloadavg()
    usage: dict[str, statements.Usage] = {}
    with Stack(StackConfig(), keep=keep, statement_stats=True) as stack:
        with stack.pg_connect() as conn:
            facts = machine(conn)
        facts["load_before"] = " ".join(f"{v:.2f}" for v in load_before)
        facts["services"] = (
            "embedded Postgres and Redis started by the benchmark"
            if stack.embedded
            else "Postgres and Redis from IDMIRROR_DATABASE_URL / IDMIRROR_REDIS_URL"
        )
        floor, floor_cpu = _counted(
            stack, usage, "floor", lambda: measure_floor(stack, user_rows, agent_rows)
        )
        print(f"   floor: {floor:.1f}s", flush=True)
        first = _counted(stack, usage, "first", lambda: run_once(stack, path, "first run"))
        second = _counted(stack, usage, "rerun", lambda: run_once(stack, path, "unchanged re-run"))
        facts["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        note_core_speed_at_end(facts)
    expected = users + agents
    assert first.counts["created"] == expected, first.counts
    assert second.counts["unchanged"] == expected, second.counts
    text = render(users, agents, size, (floor, floor_cpu), first, second, facts, usage)
    print(text)
    if write:
        write_section(SECTION, text)
        print("wrote docs/benchmarks.md")
    if not keep:
        for file in (path, user_rows, agent_rows):
            file.unlink()
        work.rmdir()


def run(options: Options) -> None:
    """`python -m bench backfill`: sizes from the environment."""
    users = int(os.environ.get("BENCH_BACKFILL_USERS", "100000"))
    agents = int(os.environ.get("BENCH_BACKFILL_AGENTS", "1000000"))
    bench(users, agents, keep=options.keep, write=options.write)


def main() -> None:
    """`python -m bench.backfill`: sizes from the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    bench(args.users, args.agents, keep=args.keep, write=not args.no_write)
