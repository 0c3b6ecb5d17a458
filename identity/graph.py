"""Applying a graph update: every operation in order, in memory, then one set-based write.

The worker loads the agent's node ids, types and connections once, runs the operations against
that model (so a failing operation leaves the database untouched), and writes only the
difference. Work grows with the number of operations; the graph's size adds one read of its
structure and the layout pass.
"""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity import node_types
from identity.agents import get_agent
from identity.errors import (
    AgentNotFound,
    ConnectionExists,
    ConnectionNotFound,
    GraphCycle,
    GraphTooLarge,
    InvalidOperation,
    NodeNotFound,
    SelfLoop,
    UnknownNodeType,
)
from identity.graph_ops import (
    AgentGraphUpdate,
    CreateConnection,
    CreateNode,
    DeleteConnection,
    DeleteNode,
    UpdateNode,
    load_operations,
    update_payload,
)
from identity.keys import AgentKey, AgentRef
from identity.layout import layered_positions
from identity.ledger import Applied, PendingJob, Submission

Edge = tuple[uuid.UUID, uuid.UUID]


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON Merge Patch (RFC 7386): a null value removes its key."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


@dataclass
class Node:
    type_id: uuid.UUID
    params: dict[str, Any]
    seq: int
    position: tuple[int, int]


@dataclass
class Graph:
    """An agent's graph in memory, with what the operations changed."""

    nodes: dict[uuid.UUID, Node]
    outgoing: dict[uuid.UUID, set[uuid.UUID]]
    incoming: dict[uuid.UUID, set[uuid.UUID]]
    next_seq: int
    stored_edges: set[Edge]
    stored_nodes: set[uuid.UUID]
    changed_params: set[uuid.UUID] = field(default_factory=set)

    def reaches(self, start: uuid.UUID, goal: uuid.UUID) -> bool:
        seen, stack = {start}, [start]
        while stack:
            for nxt in self.outgoing.get(stack.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def edges(self) -> set[Edge]:
        return {(s, t) for s, targets in self.outgoing.items() for t in targets}


def load_graph(session: Session, agent_id: str) -> Graph:
    nodes = {
        row.id: Node(row.node_type_id, row.params_used, row.created_seq, (row.x, row.y))
        for row in session.execute(
            text(
                "SELECT id, node_type_id, params_used, created_seq, position_x AS x, "
                "position_y AS y FROM agent_nodes WHERE agent_id = :a"
            ),
            {"a": agent_id},
        )
    }
    outgoing: dict[uuid.UUID, set[uuid.UUID]] = {}
    incoming: dict[uuid.UUID, set[uuid.UUID]] = {}
    stored_edges = set()
    for source, target in session.execute(
        text("SELECT source_node_id, target_node_id FROM agent_connections WHERE agent_id = :a"),
        {"a": agent_id},
    ).tuples():
        outgoing.setdefault(source, set()).add(target)
        incoming.setdefault(target, set()).add(source)
        stored_edges.add((source, target))
    next_seq = max((n.seq for n in nodes.values()), default=0) + 1
    return Graph(nodes, outgoing, incoming, next_seq, stored_edges, set(nodes))


class _Run:
    """Runs operations against a Graph, raising the contract's errors with op_index."""

    def __init__(self, graph: Graph, schemas: dict[uuid.UUID, dict[str, Any]], max_nodes: int):
        self.graph = graph
        self.schemas = schemas
        self.max_nodes = max_nodes
        self.temp_refs: dict[str, uuid.UUID] = {}
        self.created: list[dict[str, str | None]] = []

    def node(self, node_id: uuid.UUID, index: int) -> Node:
        found = self.graph.nodes.get(node_id)
        if found is None:
            raise NodeNotFound(
                f"node {node_id} is not a node of this agent",
                op_index=index,
                agent_node_id=str(node_id),
            )
        return found

    def end(self, op: CreateConnection | DeleteConnection, end: str, index: int) -> uuid.UUID:
        node_id = getattr(op, f"{end}_agent_node_id")
        temp_ref = getattr(op, f"{end}_temp_ref_id")
        if temp_ref is not None:
            if temp_ref not in self.temp_refs:
                raise InvalidOperation(f"unknown temp_ref_id {temp_ref!r}", op_index=index)
            node_id = self.temp_refs[temp_ref]
        self.node(node_id, index)
        return node_id

    def apply(self, index: int, op: Any) -> None:
        graph = self.graph
        if isinstance(op, CreateNode):
            schema = self.schemas.get(op.node_type_id)
            if schema is None:
                raise UnknownNodeType(
                    f"no node type {op.node_type_id}",
                    op_index=index,
                    node_type_id=str(op.node_type_id),
                )
            node_types.validate_params(schema, op.params_used, op_index=index)
            if len(graph.nodes) >= self.max_nodes:
                raise GraphTooLarge(f"an agent has at most {self.max_nodes} nodes", op_index=index)
            node_id = uuid.uuid4()
            graph.nodes[node_id] = Node(op.node_type_id, op.params_used, graph.next_seq, (0, 0))
            graph.next_seq += 1
            if op.temp_ref_id is not None:
                self.temp_refs[op.temp_ref_id] = node_id
            self.created.append({"temp_ref_id": op.temp_ref_id, "agent_node_id": str(node_id)})
        elif isinstance(op, UpdateNode):
            node = self.node(op.agent_node_id, index)
            params = merge_patch(node.params, op.params_used)
            node_types.validate_params(self.schemas[node.type_id], params, op_index=index)
            node.params = params
            graph.changed_params.add(op.agent_node_id)
        elif isinstance(op, DeleteNode):
            node_id = op.agent_node_id
            self.node(node_id, index)
            del graph.nodes[node_id]
            for target in graph.outgoing.pop(node_id, ()):
                graph.incoming[target].discard(node_id)
            for source in graph.incoming.pop(node_id, ()):
                graph.outgoing[source].discard(node_id)
        elif isinstance(op, CreateConnection):
            source, target = self.end(op, "source", index), self.end(op, "target", index)
            if source == target:
                raise SelfLoop("a node cannot connect to itself", op_index=index)
            if target in graph.outgoing.get(source, ()):
                raise ConnectionExists("this connection exists already", op_index=index)
            if graph.reaches(target, source):
                raise GraphCycle("this connection would close a cycle", op_index=index)
            graph.outgoing.setdefault(source, set()).add(target)
            graph.incoming.setdefault(target, set()).add(source)
        elif isinstance(op, DeleteConnection):
            source, target = self.end(op, "source", index), self.end(op, "target", index)
            if target not in graph.outgoing.get(source, ()):
                raise ConnectionNotFound("no such connection", op_index=index)
            graph.outgoing[source].discard(target)
            graph.incoming[target].discard(source)


def _write(session: Session, agent_id: str, graph: Graph) -> None:
    """Store the difference between the loaded graph and the one the operations left."""
    live = set(graph.nodes)
    gone = graph.stored_nodes - live
    new = live - graph.stored_nodes
    edges = graph.edges()
    old_edges = {(s, t) for s, t in graph.stored_edges if s in live and t in live}
    positions = layered_positions({n: graph.nodes[n].seq for n in live}, graph.outgoing)

    if gone:
        session.execute(
            text("DELETE FROM agent_nodes WHERE agent_id = :a AND id = ANY(:ids)"),
            {"a": agent_id, "ids": list(gone)},
        )
    removed = old_edges - edges
    if removed:
        session.execute(
            text(
                "DELETE FROM agent_connections c "
                "USING unnest(CAST(:s AS uuid[]), CAST(:t AS uuid[])) AS r(s, t) "
                "WHERE c.agent_id = :a AND c.source_node_id = r.s AND c.target_node_id = r.t"
            ),
            {"a": agent_id, "s": [s for s, _ in removed], "t": [t for _, t in removed]},
        )
    if new:
        ordered = sorted(new, key=lambda n: graph.nodes[n].seq)
        session.execute(
            text(
                "INSERT INTO agent_nodes (id, agent_id, node_type_id, params_used, created_seq, "
                "position_x, position_y) SELECT id, :a, type_id, params::jsonb, seq, x, y FROM "
                "unnest(CAST(:ids AS uuid[]), CAST(:types AS uuid[]), CAST(:params AS text[]), "
                "CAST(:seqs AS bigint[]), CAST(:xs AS int[]), CAST(:ys AS int[])) "
                "AS n(id, type_id, params, seq, x, y)"
            ),
            {
                "a": agent_id,
                "ids": ordered,
                "types": [graph.nodes[n].type_id for n in ordered],
                "params": [json.dumps(graph.nodes[n].params) for n in ordered],
                "seqs": [graph.nodes[n].seq for n in ordered],
                "xs": [positions[n][0] for n in ordered],
                "ys": [positions[n][1] for n in ordered],
            },
        )
    patched = sorted(graph.changed_params & live & graph.stored_nodes)
    moved = sorted(n for n in live & graph.stored_nodes if positions[n] != graph.nodes[n].position)
    if patched:
        session.execute(
            text(
                "UPDATE agent_nodes n SET params_used = u.params::jsonb FROM "
                "unnest(CAST(:ids AS uuid[]), CAST(:params AS text[])) AS u(id, params) "
                "WHERE n.id = u.id AND n.agent_id = :a"
            ),
            {
                "a": agent_id,
                "ids": patched,
                "params": [json.dumps(graph.nodes[n].params) for n in patched],
            },
        )
    if moved:
        session.execute(
            text(
                "UPDATE agent_nodes n SET position_x = u.x, position_y = u.y FROM "
                "unnest(CAST(:ids AS uuid[]), CAST(:xs AS int[]), CAST(:ys AS int[])) "
                "AS u(id, x, y) WHERE n.id = u.id AND n.agent_id = :a"
            ),
            {
                "a": agent_id,
                "ids": moved,
                "xs": [positions[n][0] for n in moved],
                "ys": [positions[n][1] for n in moved],
            },
        )
    added = edges - old_edges
    if added:
        session.execute(
            text(
                "INSERT INTO agent_connections (agent_id, source_node_id, target_node_id) "
                "SELECT :a, s, t FROM unnest(CAST(:s AS uuid[]), CAST(:t AS uuid[])) AS r(s, t)"
            ),
            {"a": agent_id, "s": [s for s, _ in added], "t": [t for _, t in added]},
        )
    for node_id, position in positions.items():
        graph.nodes[node_id].position = position


def graph_out(graph: Graph) -> dict[str, Any]:
    ordered = sorted(graph.nodes.items(), key=lambda item: item[1].seq)
    return {
        "nodes": [
            {
                "agent_node_id": str(node_id),
                "node_type_id": str(node.type_id),
                "params_used": node.params,
                "position": {"x": node.position[0], "y": node.position[1]},
            }
            for node_id, node in ordered
        ],
        "connections": [
            {"source_agent_node_id": str(s), "target_agent_node_id": str(t)}
            for s, t in sorted(
                graph.edges(), key=lambda e: (graph.nodes[e[0]].seq, graph.nodes[e[1]].seq)
            )
        ],
    }


def update_agent_graph(session: Session, job: PendingJob, *, max_nodes: int) -> Applied:
    """Apply an update's fields and operations in order, all or nothing."""
    key = AgentKey.parse(job.key.removeprefix("agent:"))
    agent = get_agent(session, AgentRef(key=key))
    wanted_id = job.payload.get("agent_id")
    if wanted_id is not None and wanted_id != agent["id"]:
        raise AgentNotFound("the agent this update named has been replaced", ref=wanted_id)
    operations = load_operations(job.payload)
    graph = load_graph(session, agent["id"])
    wanted_types = {op.node_type_id for op in operations if isinstance(op, CreateNode)}
    schemas = node_types.schemas_for(
        session, wanted_types | {n.type_id for n in graph.nodes.values()}
    )
    run = _Run(graph, schemas, max_nodes)
    for index, op in enumerate(operations):
        run.apply(index, op)

    fields = {k: job.payload[k] for k in ("name", "description", "visibility") if k in job.payload}
    if operations:
        _write(session, agent["id"], graph)
    if fields or operations:
        session.execute(
            text(
                "UPDATE agents SET name = coalesce(:name, name), "
                "description = coalesce(:description, description), "
                "visibility = coalesce(:visibility, visibility), updated_at = clock_timestamp() "
                "WHERE id = :id"
            ),
            {
                "id": agent["id"],
                **{k: fields.get(k) for k in ("name", "description", "visibility")},
            },
        )
    result = {
        "agent": get_agent(session, AgentRef(agent_id=agent["id"])),
        "created_nodes": run.created,
        "graph": graph_out(graph),
    }
    return Applied("updated", result)


def read_graph(session: Session, ref: AgentRef) -> dict[str, Any]:
    agent = get_agent(session, ref)
    return graph_out(load_graph(session, agent["id"]))


def update_submission(
    session: Session,
    raw_ref: str,
    body: AgentGraphUpdate,
    idempotency_key: str | None,
    *,
    max_operations: int,
) -> Submission:
    """Check an update without the graph and address it to the agent's key."""
    ref = AgentRef.parse(raw_ref)
    payload = update_payload(body, max_operations=max_operations)
    key = ref.key
    if ref.agent_id is not None:
        agent = get_agent(session, ref)
        key = AgentKey(agent["slug"], agent["user_slug"])
        payload["agent_id"] = ref.agent_id
    return Submission(
        key=str(key), kind="agent.update", payload=payload, idempotency_key=idempotency_key
    )
