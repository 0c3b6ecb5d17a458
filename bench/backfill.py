"""A backfill from NDJSON end to end (upload until completed), beside the raw database floor:
the same rows loaded with COPY into staging tables and merged with one INSERT ... ON CONFLICT
each, in the same Postgres, in the same run. Then the same file again (every item unchanged).
Peak RSS growth of the API and worker processes is sampled throughout. Rewrites the "backfill"
section of docs/benchmarks.md.

`python -m bench backfill` (sizes from BENCH_BACKFILL_USERS / BENCH_BACKFILL_AGENTS, default
100,000 and 1,000,000) or `python -m bench.backfill --users N --agents N [--no-write]`.
"""

import argparse
import contextlib
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.options import Options
from bench.probe import machine, note_core_speed_at_end
from bench.report import table, write_section
from bench.stack import TOKEN, Stack, StackConfig
from identity.agents import new_agent_ids

SECTION = "backfill"
TARGET_FLOOR_RATIO = 3.0
TARGET_RERUN_SPEEDUP = 3.0
TARGET_RSS_GROWTH_MB = 200.0


def _user_id(i: int) -> str:
    return str(uuid.UUID(int=(0xB0F1 << 112) + i))


def write_input(path: Path, users: int, agents: int) -> int:
    """The NDJSON file: every user, then its agents spread evenly over the users."""
    per_user, extra = divmod(agents, users)
    with path.open("w") as out:
        for i in range(users):
            out.write(
                json.dumps(
                    {
                        "type": "user",
                        "id": _user_id(i),
                        "email": f"user{i}@example.com",
                        "slug": f"user-{i}",
                        "plan": ("free", "pro", "team")[i % 3],
                        "metadata": {"region": f"r{i % 5}"},
                    }
                )
                + "\n"
            )
        for i in range(users):
            for j in range(per_user + (1 if i < extra else 0)):
                out.write(
                    json.dumps(
                        {
                            "type": "agent",
                            "key": f"agent-{j}@user-{i}",
                            "display_name": f"Agent {j} of user {i}",
                            "webhook_url": f"https://hooks.example.com/u{i}/a{j}",
                            "metadata": {"team": f"t{i % 7}", "n": j},
                        }
                    )
                    + "\n"
                )
    return path.stat().st_size


def _tsv(value: Any) -> str:
    if value is None:
        return "\\N"
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def write_floor_input(ndjson: Path, users: Path, agents: Path) -> None:
    """The same rows as COPY text, prepared before the floor's clock starts. Agent ids are drawn
    as the service draws them (random, so their primary-key inserts land all over the index)."""
    ids: list[str] = []
    with ndjson.open() as source, users.open("w") as u, agents.open("w") as a:
        for line in source:
            item = json.loads(line)
            if item["type"] == "user":
                fields = [
                    item["id"],
                    item["email"],
                    item["slug"],
                    item.get("plan", "free"),
                    item.get("metadata", {}),
                    None,
                ]
                u.write("\t".join(_tsv(f) for f in fields) + "\n")
            else:
                slug, user_slug = item["key"].split("@")
                if not ids:
                    ids = new_agent_ids(10_000)
                fields = [
                    ids.pop(),
                    user_slug,
                    slug,
                    item["display_name"],
                    item.get("webhook_url"),
                    item.get("metadata", {}),
                ]
                a.write("\t".join(_tsv(f) for f in fields) + "\n")


def _copy(conn: Any, sql: str, path: Path) -> None:
    with conn.cursor().copy(sql) as copy, path.open("rb") as source:
        while block := source.read(1 << 20):
            copy.write(block)


def measure_floor(stack: Stack, users: Path, agents: Path) -> float:
    """COPY into staging tables, then one merge per table into copies of the real tables."""
    with stack.pg_connect() as conn:
        conn.execute("DROP SCHEMA IF EXISTS floor CASCADE")
        conn.execute("CREATE SCHEMA floor")
        conn.execute("CREATE TABLE floor.users (LIKE public.users INCLUDING ALL)")
        conn.execute("CREATE TABLE floor.agents (LIKE public.agents INCLUDING ALL)")
        version = int(time.time() * 1_000_000)
        started = time.monotonic()
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE stage_users (id uuid, email text, slug text, plan text, "
                "metadata jsonb, external_owner text) ON COMMIT DROP"
            )
            _copy(conn, "COPY stage_users FROM STDIN", users)
            conn.execute(
                """
                INSERT INTO floor.users AS u (id, email, slug, plan, metadata, external_owner,
                                              version, created_at, updated_at)
                SELECT id, email, slug, plan, metadata, external_owner, %s,
                       clock_timestamp(), clock_timestamp() FROM stage_users
                ON CONFLICT (id) DO UPDATE SET email = excluded.email, slug = excluded.slug,
                    plan = excluded.plan, metadata = excluded.metadata,
                    external_owner = excluded.external_owner, version = excluded.version,
                    updated_at = clock_timestamp()
                WHERE u.version <= excluded.version
                  AND (u.email, u.slug, u.plan, u.metadata, u.external_owner) IS DISTINCT FROM
                      (excluded.email, excluded.slug, excluded.plan, excluded.metadata,
                       excluded.external_owner)
                """,
                (version,),
            )
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE stage_agents (id text, user_slug text, slug text, "
                "display_name text, webhook_url text, metadata jsonb) ON COMMIT DROP"
            )
            _copy(conn, "COPY stage_agents FROM STDIN", agents)
            conn.execute(
                """
                INSERT INTO floor.agents AS a (id, user_id, slug, display_name, webhook_url,
                                               metadata, version, created_at, updated_at)
                SELECT s.id, u.id, s.slug, s.display_name, s.webhook_url, s.metadata, %s,
                       clock_timestamp(), clock_timestamp()
                FROM stage_agents s JOIN floor.users u ON u.slug = s.user_slug
                ON CONFLICT (user_id, slug) WHERE deleted_at IS NULL DO UPDATE
                    SET display_name = excluded.display_name, webhook_url = excluded.webhook_url,
                        metadata = excluded.metadata, version = excluded.version,
                        updated_at = clock_timestamp()
                WHERE a.version <= excluded.version
                  AND (a.display_name, a.webhook_url, a.metadata) IS DISTINCT FROM
                      (excluded.display_name, excluded.webhook_url, excluded.metadata)
                """,
                (version,),
            )
        seconds = time.monotonic() - started
        conn.execute("DROP SCHEMA floor CASCADE")
        conn.execute("CHECKPOINT")
    return seconds


class RssSampler:
    """Peak resident memory of process groups (a root pid and its descendants)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.2) -> None:
        self.roots = roots
        self.interval = interval
        self.baseline = {name: self._rss(pid) for name, pid in roots.items()}
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(root: int) -> float:
        try:
            process = psutil.Process(root)
            members = [process, *process.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for member in members:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, pid in self.roots.items():
                self.peak[name] = max(self.peak[name], self._rss(pid))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def growth(self) -> dict[str, float]:
        return {name: self.peak[name] - self.baseline[name] for name in self.roots}


@dataclass
class Run:
    label: str
    seconds: float
    upload_seconds: float
    counts: dict[str, int]
    items_per_second: float
    rss_growth: dict[str, float] = field(default_factory=dict)
    chunks: int = 0  # chunks stored: none for lines known from an earlier run


def run_once(stack: Stack, path: Path, label: str) -> Run:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    roots = {"api": stack.processes["api"].pid, "worker": stack.processes["worker"].pid}
    with (
        httpx.Client(
            base_url=stack.base_url, headers=headers, timeout=httpx.Timeout(30, read=None)
        ) as client,
        RssSampler(roots) as rss,
    ):

        def blocks():  # type: ignore[no-untyped-def]
            with path.open("rb") as source:
                while block := source.read(1 << 20):
                    yield block

        started = time.monotonic()
        response = client.post(
            "/v1/internal/backfills",
            content=blocks(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        response.raise_for_status()
        uploaded = time.monotonic() - started
        run = response.json()
        while run["status"] in ("receiving", "running"):
            time.sleep(0.2)
            run = client.get(f"/v1/internal/backfills/{run['id']}").json()
        seconds = time.monotonic() - started
    if run["status"] != "completed":
        raise RuntimeError(f"the backfill ended {run['status']}: {run.get('error')}")
    with stack.pg_connect() as conn:
        row = conn.execute("SELECT chunks FROM backfills WHERE id = %s", (run["id"],)).fetchone()
    chunks = row[0] if row else 0
    result = Run(
        label, seconds, uploaded, run["counts"], run["items_per_second"], rss.growth(), chunks
    )
    print(
        f"   {label}: {seconds:.1f}s (upload and validation {uploaded:.1f}s), "
        f"{run['counts']}, RSS growth {result.rss_growth}",
        flush=True,
    )
    return result


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(
    users: int, agents: int, size: int, floor: float, first: Run, second: Run, facts: dict[str, str]
) -> str:
    items = users + agents
    ratio = first.seconds / floor
    speedup = first.seconds / second.seconds
    growth = max(max(first.rss_growth.values()), max(second.rss_growth.values()))
    rows = [
        [
            "raw floor: COPY + one merge per table",
            f"{floor:.1f}",
            f"{items / floor:,.0f}",
            "",
            "",
            "",
        ],
    ]
    for run, label in (
        (first, "backfill, first run (all created)"),
        (second, "backfill, same file again (all unchanged)"),
    ):
        rows.append(
            [
                label,
                f"{run.seconds:.1f}",
                f"{items / run.seconds:,.0f}",
                f"{run.upload_seconds:.1f}",
                f"{run.seconds - run.upload_seconds:.1f}",
                " / ".join(f"{run.rss_growth[k]:.0f}" for k in ("api", "worker")),
            ]
        )
    apply_speedup = (first.seconds - first.upload_seconds) / max(
        second.seconds - second.upload_seconds, 1e-9
    )
    targets = [
        [
            f"end to end within {TARGET_FLOOR_RATIO:.0f}x of the floor",
            f"{ratio:.2f}x",
            _verdict(ratio <= TARGET_FLOOR_RATIO),
        ],
        [
            f"unchanged re-run at least {TARGET_RERUN_SPEEDUP:.0f}x faster",
            f"{speedup:.2f}x",
            _verdict(speedup >= TARGET_RERUN_SPEEDUP),
        ],
        [
            "(for reference) apply left after the upload, first run / re-run",
            f"{apply_speedup:.2f}x",
            "",
        ],
        [
            f"peak RSS growth under {TARGET_RSS_GROWTH_MB:.0f} MB (API, worker)",
            f"{growth:.0f} MB",
            _verdict(growth < TARGET_RSS_GROWTH_MB),
        ],
    ]
    return f"""## Backfill from NDJSON

`POST /v1/internal/backfills` with {users:,} users and {agents:,} agents ({items:,} lines,
{size / 2**20:,.0f} MiB) streamed from a file, timed from the first byte sent until the backfill
reads `completed`; then the same file again, where every item is unchanged. The floor is the same
rows loaded with `COPY` into staging tables and merged with one `INSERT ... ON CONFLICT DO UPDATE
... WHERE <changed and not older>` per table into copies of the real tables (same indexes, agent
ids random as the service draws them), in the same database during the same run. *upload* is the
time until the upload was answered: reading, validating and storing every line, while users and
then agents are applied as their chunks are stored; *apply* is what is left to apply after it.
RSS growth is the peak resident memory of the API process and of the worker's process group above
their level when the run started, sampled every 0.2 s.

{table(["run", "seconds", "items/s", "upload s", "apply s", "RSS growth MB (API / worker)"], rows)}

{table(["target", "measured", ""], targets)}

Where the time goes. In the first run, reading, validating (the same rules and webhook check as
a PUT) and storing the input took {first.upload_seconds:.1f} s, about
{1e6 * first.upload_seconds / items:.0f} us per line, in one API process, while
{os.cpu_count()} worker processes applied users and then agents as their chunks were stored
({first.chunks:,} chunks), sharing the machine's cores with Postgres and the API; applying what
was left after the upload took {first.seconds - first.upload_seconds:.1f} s. The re-run
recognised its lines instead of reading them: each row keeps the digest of the backfill line that
last wrote it, so a line whose row still holds its digest is counted unchanged after one lookup
per piece of the upload (one index probe per line), without being validated, stored or applied
(docs/backfills.md). It stored {second.chunks:,} chunks, for the few lines that went the long way
(the Bloom filter of keys seen earlier in the input has false positives), and took
{second.upload_seconds:.1f} s to upload, about {1e6 * second.upload_seconds / items:.0f} us per
line. The floor is one Postgres backend merging
rows that need no validation.

Machine: {facts["cpus"]} CPUs ({facts["cpu_model"]}; one core sums range(10**6) in
{facts["core_speed"]}), {facts["memory"]} RAM; Python
{facts["python"]}; PostgreSQL {facts["postgres"]} ({facts["postgres_settings"]}). Load average
before the run: {facts["load_before"]}, after it: {facts["load_after"]} (other work shares
this machine, and these figures move with it). Date: {facts["date"]}.
Code: {facts["revision"]}. Services: {facts["services"]}; API: 1 uvicorn process, worker: one
Celery worker with prefork concurrency {os.cpu_count()}, chunk size and buckets at their defaults.
"""


def bench(users: int, agents: int, *, keep: bool, write: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="idmirror-bench-backfill-"))
    path, user_rows, agent_rows = work / "input.ndjson", work / "users.tsv", work / "agents.tsv"
    print(f"   writing {users:,} users and {agents:,} agents to {path}", flush=True)
    size = write_input(path, users, agents)
    write_floor_input(path, user_rows, agent_rows)
    load_before = os.getloadavg()
    with Stack(StackConfig(), keep=keep) as stack:
        with stack.pg_connect() as conn:
            facts = machine(conn)
        facts["load_before"] = " ".join(f"{v:.2f}" for v in load_before)
        facts["services"] = (
            "embedded Postgres and Redis started by the benchmark"
            if stack.embedded
            else "Postgres and Redis from IDMIRROR_DATABASE_URL / IDMIRROR_REDIS_URL"
        )
        floor = measure_floor(stack, user_rows, agent_rows)
        print(f"   floor: {floor:.1f}s", flush=True)
        first = run_once(stack, path, "first run")
        second = run_once(stack, path, "unchanged re-run")
        facts["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        note_core_speed_at_end(facts)
    expected = users + agents
    assert first.counts["created"] == expected, first.counts
    assert second.counts["unchanged"] == expected, second.counts
    text = render(users, agents, size, floor, first, second, facts)
    print(text)
    if write:
        write_section(SECTION, text)
        print("wrote docs/benchmarks.md")
    if not keep:
        for file in (path, user_rows, agent_rows):
            file.unlink()
        work.rmdir()


def run(options: Options) -> None:
    users = int(os.environ.get("BENCH_BACKFILL_USERS", "100000"))
    agents = int(os.environ.get("BENCH_BACKFILL_AGENTS", "1000000"))
    bench(users, agents, keep=options.keep, write=options.write)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    bench(args.users, args.agents, keep=args.keep, write=not args.no_write)


if __name__ == "__main__":
    main()
