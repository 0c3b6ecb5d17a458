"""Apply time of one 1,000-operation graph update, on a small agent and on a 10,000-node one.

The update goes through the real drain path (identity.ledger.drain: lock, load, apply, write,
mark the job, notify) in one transaction that is rolled back, so every round starts from the same
graph.
The claim under test: cost grows with the number of operations, not with the graph's size.
"""

import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from bench.options import Options
from bench.probe import machine, note_core_speed_at_end
from bench.report import table, write_section
from cli.embedded import EmbeddedPostgres

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ROUNDS = 7
OPERATIONS = 1000


def _setup_database(home: Path) -> tuple[str, EmbeddedPostgres | None]:
    from cli.main import run_migrations

    url = os.environ.get("IDMIRROR_DATABASE_URL")
    server = None
    if not url:
        server = EmbeddedPostgres(home / "postgres")
        url = server.start("idmirror_bench_graph")
    run_migrations(url)
    os.environ["IDMIRROR_DATABASE_URL"] = url
    # The large agent starts at the default limit of 10,000 nodes and the update adds 450.
    os.environ["IDMIRROR_MAX_NODES"] = "20000"
    return url, server


def _agent_with_nodes(
    session: "Session", node_type: uuid.UUID, size: int, rng: random.Random
) -> tuple[str, str]:
    """A user, an agent and `size` nodes in a layered DAG with about one connection per node."""
    from identity.agents import upsert_agent
    from identity.graph.operations import GraphUpdateJob
    from identity.graph.service import update_agent_graph
    from identity.keys import AgentKey, UserKey
    from identity.schemas import AgentUpsert, UserUpsert
    from identity.users import upsert_user

    slug = f"u{uuid.uuid4().hex[:10]}"
    key = AgentKey("bot", slug)
    user = UserUpsert(email="b@example.com", slug=slug)
    upsert_user(session, UserKey(uuid.uuid4()), user, time.time_ns() // 1000)
    agent = upsert_agent(session, key, AgentUpsert(display_name="Bench"), time.time_ns() // 1000)
    ops = [
        {
            "op": "create_node",
            "node_type_id": str(node_type),
            "temp_ref_id": f"n{i}",
            "params_used": {"i": i},
        }
        for i in range(size)
    ]
    ops += [
        {
            "op": "create_connection",
            "source_temp_ref_id": f"n{rng.randrange(i)}",
            "target_temp_ref_id": f"n{i}",
        }
        for i in range(1, size)
    ]
    graph = GraphUpdateJob.model_validate({"operations": ops})
    update_agent_graph(session, key, graph, max_nodes=10**6)
    return agent.result["id"], slug


def _update_operations(
    existing: list[str], node_type: uuid.UUID, rng: random.Random
) -> list[dict[str, Any]]:
    """500 creates, 250 connections into the new nodes, 200 param patches, 50 deletes."""
    ops = [
        {
            "op": "create_node",
            "node_type_id": str(node_type),
            "temp_ref_id": f"t{i}",
            "params_used": {"new": i},
        }
        for i in range(500)
    ]
    ops += [
        {
            "op": "create_connection",
            "source_agent_node_id": rng.choice(existing),
            "target_temp_ref_id": f"t{i}",
        }
        for i in range(250)
    ]
    ops += [
        {"op": "update_node", "agent_node_id": rng.choice(existing), "params_used": {"patched": i}}
        for i in range(200)
    ]
    ops += [{"op": "delete_node", "agent_node_id": node} for node in rng.sample(existing, 50)]
    assert len(ops) == OPERATIONS
    return ops


def _measure(url: str, agent_id: str, slug: str, operations: list[dict[str, Any]]) -> list[float]:
    """Seconds per drain of one pending 1,000-op job; each round rolled back."""
    import json

    from sqlalchemy import text

    from identity.appliers import apply_job
    from identity.db import session_factory
    from identity.ledger.drain import drain

    key = f"agent:bot@{slug}"
    times = []
    for _ in range(ROUNDS):
        with session_factory()() as session:
            session.execute(
                text(
                    "INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version) "
                    "VALUES (:id, :key, "
                    "(SELECT coalesce(max(seq), 0) + 1 FROM jobs WHERE key = :key), "
                    "'agent.update', CAST(:payload AS jsonb), '', 0)"
                ),
                {
                    "id": uuid.uuid4(),
                    "key": key,
                    "payload": json.dumps({"agent_id": agent_id, "operations": operations}),
                },
            )
            started = time.perf_counter()
            report = drain(session, key, apply_job, batch_size=1)
            session.flush()
            times.append(time.perf_counter() - started)
            assert report.applied == 1 and report.failed == 0, report
            session.rollback()
    return times


def run(options: Options) -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="idmirror-bench-graph-") as tmp:
        url, server = _setup_database(Path(tmp))
        try:
            from identity.db import session_factory
            from identity.keys import NodeTypeKey
            from identity.node_types import NodeTypeUpsert, upsert_node_type

            node_type = uuid.uuid4()
            results: dict[int, list[float]] = {}
            with session_factory().begin() as session:
                step = NodeTypeUpsert(name="step", params_schema={"type": "object"})
                upsert_node_type(session, NodeTypeKey(node_type), step, 1)
                agents = {
                    size: _agent_with_nodes(session, node_type, size, rng) for size in (100, 10_000)
                }
            with psycopg.connect(url) as conn:
                facts = machine(conn)
                for size, (agent_id, slug) in agents.items():
                    existing = [
                        r[0]
                        for r in conn.execute(
                            "SELECT id::text FROM agent_nodes WHERE agent_id = %s", (agent_id,)
                        )
                    ]
                    operations = _update_operations(existing, node_type, rng)
                    results[size] = _measure(url, agent_id, slug, operations)
                    print(
                        f"  {size} nodes: median {statistics.median(results[size]) * 1000:.0f} ms",
                        flush=True,
                    )
                note_core_speed_at_end(facts)
        finally:
            if server is not None:
                server.stop()

    body = _render(results, facts)
    if options.write:
        write_section("graph", body)
    print(body)


def _render(results: dict[int, list[float]], facts: dict[str, str]) -> str:
    """The report section: the machine, the workload, times per graph size and the verdicts."""
    small, large = (statistics.median(results[s]) for s in (100, 10_000))
    rows = [
        [
            f"{size:,} nodes",
            f"{statistics.median(t) * 1000:.0f}",
            f"{min(t) * 1000:.0f}",
            f"{max(t) * 1000:.0f}",
        ]
        for size, t in results.items()
    ]
    verdict_ratio = "met" if large <= 1.5 * small else "NOT met"
    verdict_abs = "met" if large < 0.5 and small < 0.5 else "NOT met"
    return f"""## Graph updates: one update of 1,000 operations

Machine: {facts["cpus"]} cores ({facts["cpu_model"]}; one core sums range(10**6) in
{facts["core_speed"]}), {facts["memory"]}, Python {facts["python"]},
PostgreSQL {facts["postgres"]}; load before the run {facts["load_before"]}. Date: {facts["date"]}.
Revision {facts["revision"]}.

One `POST /v1/agents/{{ref}}/update` of 1,000 operations (500 `create_node`, 250
`create_connection` from existing nodes into new ones, 200 `update_node`, 50 `delete_node`),
applied through the worker's own drain path (`identity.ledger.drain.drain`: key lock, graph load,
operations, set-based write, job result, notify) in a transaction rolled back after each
of {ROUNDS} rounds. Times are wall clock of the drain, in ms.

{table(["agent before the update", "median", "min", "max"], rows)}

- 10,000-node agent vs 100-node agent: **{large / small:.2f}x**
  (target at most 1.5x: {verdict_ratio}).
- Apply time under 0.5 s for one 1,000-op update: {verdict_abs}.
- What grows with the graph: one read of its node ids, types and connections (params are read
  only for the nodes an `update_node` patches). Positions are derived when the graph is read,
  and the synchronous answer reads the graph after the job is applied, outside the key lock.
"""
