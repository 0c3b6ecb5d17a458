"""`python -m bench chaos`: each fault of bench/chaos/faults.py struck in the middle of a stream
of mixed writes, on services of its own; the checks of bench/chaos/verify.py; one row per fault
in docs/reliability.md.

`--duration` is the stream's length per scenario: a third of it before the fault, the rest after.
`--concurrency` sets the client threads (at most 12: each sends one write at a time); `--keep`
leaves each scenario's logs and data behind.
"""

import shutil
import tempfile
from pathlib import Path

import psycopg

from bench.chaos.faults import FAULTS
from bench.chaos.render import RELIABILITY, render
from bench.chaos.scenario import Result, Timing, run_scenario
from bench.chaos.services import Services
from bench.options import Options
from bench.probe import machine, note_core_speed_at_end
from bench.report import write_section


def run(options: Options) -> None:
    timing = Timing(
        before=options.duration / 3,
        after=options.duration * 2 / 3,
        settle=120.0,
        clients=min(options.concurrency, 12),
    )
    results: list[Result] = []
    facts: dict[str, str] = {}
    home = Path(tempfile.mkdtemp(prefix="idmirror-bench-chaos-"))
    try:
        for fault in FAULTS:
            with Services(home / fault.name) as services:
                if not facts:
                    with psycopg.connect(services.stack.database_url) as conn:
                        facts = machine(conn)
                result = run_scenario(services, fault, timing)
            results.append(result)
            _print(result)
    finally:
        if options.keep:
            print(f"  logs and data kept in {home}", flush=True)
        else:
            shutil.rmtree(home, ignore_errors=True)
    note_core_speed_at_end(facts)
    body = render(results, timing, facts, options.duration)
    if options.write:
        write_section("chaos", body, doc=RELIABILITY)
    print(body)


def _print(result: Result) -> None:
    v = result.verdict
    recovery = f"{result.recovery:.1f} s" if result.recovery is not None else "never"
    print(
        f"  {result.fault.name}: {result.writes} writes, {v.acknowledged} acknowledged, "
        f"{v.duplicated} duplicated, {v.lost} lost, recovered in {recovery}; "
        f"answers {result.answers}; problems {v.problems() or 'none'}",
        flush=True,
    )
