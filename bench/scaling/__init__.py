"""What one job costs, and what that predicts on more cores: sync-wait user and agent PUTs on
one stack with 1 and then 2 API processes, with CPU seconds per process group, Postgres commits,
WAL bytes and WAL fsyncs counted around each run. A model (throughput = cores / CPU-seconds per
job, bounded by one core per API process) is checked against both runs and extrapolated to 8, 32
and 64 cores. Rewrites the generated section of docs/scaling.md.
"""

import os

from bench.options import Options
from bench.probe import machine, note_core_speed_at_end
from bench.report import write_section
from bench.scaling.measure import Sample, with_processes
from bench.scaling.render import render
from bench.stack import ROOT, Stack, StackConfig
from bench.upserts.measure import Bench

SECTION = "scaling"
DOC = ROOT / "docs" / "scaling.md"
API_PROCESSES = (1, 2)  # unless --api-workers lists several counts


def run(options: Options) -> None:
    """Measure with each API process count on one stack, then rewrite the section."""
    counts = options.api_workers if len(options.api_workers) > 1 else API_PROCESSES
    config = StackConfig(api_workers=counts[0], worker_concurrency=options.worker_concurrency[0])
    load_before = os.getloadavg()
    samples: list[Sample] = []
    with Stack(config, keep=options.keep) as stack:
        bench = Bench(stack, options)
        try:
            facts = machine(bench.conn)
            facts["load_before"] = " ".join(f"{v:.2f}" for v in load_before)
            bench.create()
            for processes in counts:
                samples += with_processes(bench, processes, options)
        finally:
            bench.close()
    note_core_speed_at_end(facts)
    body = render(samples, facts, options)
    print(body)
    if options.write:
        write_section(SECTION, body, DOC)
        print(f"wrote {DOC.relative_to(ROOT)}")
