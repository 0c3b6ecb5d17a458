"""The upserts benchmark's section of docs/benchmarks.md: the method, the machine, the tables
and the comparison with the reference peer, as Markdown wrapped at 100 columns."""

import re
import textwrap

from bench.naive.app import POOL_SIZE
from bench.options import Options
from bench.stack import StackConfig
from bench.upserts.against_naive import RATIOS, figures_table, ratios_table
from bench.upserts.api_processes import api_processes_table
from bench.upserts.comparison import ceiling, comparison
from bench.upserts.runs import AGENTS, HOT_KEYS, ROUND, USERS, Run
from bench.upserts.tables import cpu_table, queue_table, results_table


def prose(text: str, width: int = 100) -> str:
    """Re-wrap paragraphs and list items; leave headings and tables alone."""
    blocks = []
    for block in text.strip().split("\n\n"):
        if block.startswith(("|", "#")):
            blocks.append(block)
            continue
        items = re.split(r"\n(?=- )", block)
        filled = []
        for item in items:
            words = " ".join(item.split())
            indent = "  " if words.startswith("- ") else ""
            filled.append(textwrap.fill(words, width, subsequent_indent=indent))
        blocks.append("\n".join(filled))
    return "\n\n".join(blocks)


def _method(options: Options) -> str:
    per_client = AGENTS // options.concurrency
    return f"""## Upserts through the ledger, and against a naive endpoint

`PUT /v1/internal/agents/{{slug}}@{{user_slug}}` and `PUT /v1/internal/users/{{user_id}}` through
API -> ledger -> Celery worker -> Postgres, and the same requests to a naive endpoint, driven by
{options.concurrency} concurrent aiohttp clients (closed loop, on the same machine, 127.0.0.1) for
{options.duration:.0f} s per run after {options.warmup:.0f} s of warm-up, {options.rounds}
round(s) of each mode. {USERS} users and {AGENTS} agents over them are created first in idmirror
and in the naive app (the "creates" rows); every measured request then carries a body that
differs from the stored one, so each is a real update.

- **sync-wait** (the default): the request waits for the worker to apply its job and answers 200.
Each client cycles over its own {per_client} or so keys of the {AGENTS}.
- **respond-async** (`Prefer: respond-async`): answers 202 once the job is durable. *applied/s*
is accepted jobs divided by the time from the first request until no job was pending (`SELECT
count(*) FROM jobs WHERE status = 'pending'` = 0): the honest end-to-end rate.
- **sync-wait, hot keys**: all clients on {HOT_KEYS} keys, {options.concurrency // HOT_KEYS}
clients per key, still a new body every time.
- **naive**: the same updates to what a user would build instead of idmirror (`bench/naive`): a
FastAPI app whose routes validate the body with idmirror's `AgentUpsert` and `UserUpsert` and
run one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING (xmax = 0) AS created` each, in a sync
`def` route (FastAPI's threadpool) on a SQLAlchemy engine with a pool of {POOL_SIZE} connections
per process, into tables of its own in the same database (the users' and agents' columns it
writes, their unique keys and the agents' foreign key, none of idmirror's other indexes). No
ledger, no ordering, no queue, no token check. It runs under uvicorn with the API's options and
as many processes.
- **..., users**: sync-wait, respond-async and naive on user updates; each client cycles over its
own {USERS // options.concurrency} or so of the {USERS} users.

Each round runs the modes in this order, so that the runs compared with each other are
neighbours in time: {"; ".join(f"*{mode}*" for mode in ROUND)}."""


def _machine(facts: dict[str, str], busiest: float, shared: str) -> str:
    return f"""Machine: {facts["cpus"]} CPUs ({facts["cpu_model"]}; one core sums range(10**6) in
{facts["core_speed"]}), {facts["memory"]} RAM, Linux {facts["kernel"]}; Python {facts["python"]};
PostgreSQL {facts["postgres"]}
({facts["postgres_settings"]}). Load average before the run: {facts["load_before"]}; other
processes on the machine used up to {busiest:.0f}% of a core during a measured run (column
*other* below).{shared} Date: {facts["date"]}. Services: {facts["services"]}, started by the
benchmark with the API, one worker, beat and the naive app."""


def _results(runs: list[Run], several: bool) -> str:
    return f"""### Results

{results_table(runs, several)}

*Other answers*: responses that were not the mode's 200/202 (a sync wait that timed out answers
202), client errors, and jobs that ended `failed`. *Bound*: a process group at 85% or more of what
it can use (one core per Python process, all cores for Postgres), else the whole machine at 85% or
more, else the latency of the round trip that each client of the closed loop waits for; the three
largest CPU users (other processes included) follow."""


def _against_naive(runs: list[Run], several: bool) -> str:
    return f"""### Against a naive endpoint

idmirror's sync-wait and respond-async runs of each round against the naive app's run between
them (same clients, keys and bodies), for agents and for users. Medians and ranges over the
rounds; *applied/s* is jobs applied end to end a second for respond-async, 200 answers a second
for the others.

{figures_table(runs, several)}

The targets: durability for free, or close to it. Sync-wait keeps at least
{RATIOS[0].target:g}x the naive endpoint's rate, at a p99 latency at most {RATIOS[1].target:g}x
its own, and respond-async applies at least {RATIOS[2].target:g}x as many updates a second as the
naive endpoint answers. Each ratio is taken within a round, from runs minutes apart at most.

{ratios_table(runs, several)}"""


def _api_processes(runs: list[Run]) -> str:
    compared = api_processes_table(runs)
    if compared is None:
        return """### One API process against two

Not measured in this run: `python -m bench upserts --api-workers 1,2` runs a stack with each
number of API processes and compares them here."""
    return f"""### One API process against two

Each mode's median rate (req/s; applied/s for respond-async) on stacks that differ only in the
number of uvicorn processes of the API (and of the naive app beside it), run one after the other.
On a machine whose cores the service already keeps busy, a second process should lose no
throughput (target: ratio >= 1); the naive app's rows are shown, not judged. Stacks are minutes
apart, so a ratio moves with the machine as well.

{compared}"""


def _cpu(runs: list[Run], several: bool, measured: list[Run], cpus: str) -> str:
    return f"""### Where the CPU goes

CPU in percent of one core (100% = one core busy), sampled with psutil over each process group and
its children: the API, the naive app, the Celery worker with its pool, Postgres with its backends,
Redis, the load generator (the benchmark process: aiohttp clients and samplers), and *other*
(everything else on the machine). *machine* is the share of all {cpus} cores busy, *steal* the
share the hypervisor took. *CPU ms/req* is CPU time per request over the whole run, for the API,
the worker, Postgres, and the whole service (those three with Redis and beat); on the naive
rows for the naive app, the (idle) worker, Postgres, and the naive app with Postgres.
respond-async has three phases: *send* until the last answer, *drain* until no job was pending
(the end of *applied/s*), and *tail* until the worker had consumed the drain messages still
queued, which then find nothing to do but still cost a task each.

{cpu_table(runs, several)}

{ceiling(measured)}"""


def _queue(runs: list[Run], several: bool) -> str:
    return f"""### Queue and database

*commits/s* is the `pg_stat_database.xact_commit` rate (read-only transactions included) over the
interior of the window. *drain tasks/req* counts `identity.drain_key` tasks the worker ran
(`celery inspect stats`), *broker msgs/req* the LPUSHes to Redis (task messages), *events/req* the
PUBLISHes (Celery events, for Flower). *queued at end* is the drain messages still in the broker or
reserved by the worker when the last answer came. *Postgres backends active* is the mean number of
the service's backends running a statement, by wait event (`CPU` = not waiting), sampled from
`pg_stat_activity` every 0.5 s.

{queue_table(runs, several)}"""


def render(
    runs: list[Run], facts: dict[str, str], options: Options, revisions: dict[StackConfig, str]
) -> str:
    """The whole section for these runs, on this machine, with these options."""
    configs = list(dict.fromkeys(r.config for r in runs))
    several = len(configs) > 1
    config_lines = "\n".join(
        f"- {c.describe()}; code {revisions.get(c, facts['revision'])}" for c in configs
    )
    measured = [r for r in runs if r.round]
    busiest = max(r.usage.other for r in measured)
    shared = (
        " The machine was shared during this run, so these figures are lower than what it does"
        " alone; compare rounds by the *other* column."
        if busiest >= 25
        else ""
    )
    blocks = [
        _method(options),
        _machine(facts, busiest, shared),
        f"Configuration:\n\n{config_lines}",
        _results(runs, several),
        _against_naive(runs, several),
        _api_processes(runs),
        _cpu(runs, several, measured, facts["cpus"]),
        _queue(runs, several),
        f"### Against the reference peer\n\n{comparison(runs)}",
    ]
    return prose("\n\n".join(blocks) + "\n")
