"""Agent upserts through the ledger: `PUT /v1/internal/agents/{slug}@{user_slug}` driven through
API -> ledger -> Celery worker -> Postgres, in sync-wait and respond-async modes, on distinct
keys and on a few hot keys. Rewrites the "upserts" section of docs/benchmarks.md.

`workload` makes the requests, `measure` runs them against a stack and records each `runs.Run`,
`cpu`, `tables` and `comparison` read the runs, and `render` writes the section.
"""

import os

from bench.naive.server import start_naive
from bench.options import Options
from bench.probe import code_revision, machine, note_core_speed_at_end
from bench.report import write_section
from bench.stack import Stack, StackConfig
from bench.upserts.measure import Bench
from bench.upserts.render import render
from bench.upserts.runs import Run

SECTION = "upserts"


def run(options: Options) -> None:
    """Measure every stack configuration the options name, then rewrite the section."""
    runs: list[Run] = []
    facts: dict[str, str] = {}
    load_before = os.getloadavg()
    revisions: dict[StackConfig, str] = {}
    # Stacks of one worker concurrency run one after the other, so that the API process counts
    # compared with each other are measured close in time.
    stacks = [(a, w) for w in options.worker_concurrency for a in options.api_workers]
    for workers, concurrency in stacks:
        config = StackConfig(api_workers=workers, worker_concurrency=concurrency)
        print(f"-- stack: {config.describe()}", flush=True)
        revisions[config] = code_revision()  # the code the stack's processes import
        with Stack(config, keep=options.keep) as stack:
            bench = Bench(stack, options, start_naive(stack))
            try:
                if not facts:
                    facts = machine(bench.conn)
                    facts["load_before"] = " ".join(f"{v:.2f}" for v in load_before)
                    facts["services"] = (
                        "embedded Postgres and Redis in a temporary directory"
                        if stack.embedded
                        else "Postgres and Redis from IDMIRROR_DATABASE_URL / IDMIRROR_REDIS_URL"
                    )
                runs += bench.setup()
                bench.warm_up()
                runs += bench.rounds()
            finally:
                bench.close()
            if options.keep:
                print(f"   logs and data kept in {stack.home}")
    note_core_speed_at_end(facts)
    if options.write:
        write_section(SECTION, render(runs, facts, options, revisions))
        print("wrote docs/benchmarks.md")
