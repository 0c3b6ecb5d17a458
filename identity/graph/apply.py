"""Running graph operations against the stored graph without reading all of it.

`Overlay` loads only the nodes the operations name, with their out-edges, and keeps what the
operations change (new nodes, deleted nodes, added and removed connections, patched params) on
top. A cycle check walks further out-edges on demand, one query per level of the walk. Nothing
is written until every operation has passed, so a failing operation leaves the database as it was.
"""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity import node_types
from identity.errors import (
    ConnectionExists,
    ConnectionNotFound,
    GraphCycle,
    GraphTooLarge,
    InvalidOperation,
    NodeNotFound,
    SelfLoop,
    UnknownNodeType,
)
from identity.graph.operations import (
    CreateConnection,
    CreateNode,
    DeleteConnection,
    DeleteNode,
    Operation,
    UpdateNode,
)

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


def named_nodes(op: Operation) -> set[uuid.UUID]:
    """The stored nodes an operation names by id (temp refs name nodes not stored yet)."""
    match op:
        case UpdateNode(agent_node_id=node_id) | DeleteNode(agent_node_id=node_id):
            return {node_id}
        case CreateConnection() | DeleteConnection():
            ends = (op.source_agent_node_id, op.target_agent_node_id)
            return {node_id for node_id in ends if node_id is not None}
        case CreateNode():
            return set()


@dataclass
class Node:
    type_id: uuid.UUID
    params: dict[str, Any]
    seq: int


@dataclass
class Overlay:
    """The part of an agent's graph the operations touch, and what they did to it."""

    session: Session
    agent_id: str
    stored: dict[uuid.UUID, Node]  # stored nodes loaded so far (deleted ones included)
    stored_out: dict[uuid.UUID, set[uuid.UUID]]  # complete stored out-edges of loaded nodes
    size: int  # nodes the graph has now
    next_seq: int
    new: dict[uuid.UUID, Node] = field(default_factory=dict)
    deleted: set[uuid.UUID] = field(default_factory=set)
    added: set[Edge] = field(default_factory=set)
    removed: set[Edge] = field(default_factory=set)
    patched: set[uuid.UUID] = field(default_factory=set)

    @classmethod
    def load(cls, session: Session, agent_id: str, operations: list[Operation]) -> "Overlay":
        named = set().union(*(named_nodes(op) for op in operations))
        size, top = session.execute(
            text(
                "SELECT count(*), coalesce(max(created_seq), 0) FROM agent_nodes "
                "WHERE agent_id = :a"
            ),
            {"a": agent_id},
        ).one()
        overlay = cls(session, agent_id, {}, {}, size, top + 1)
        if named:
            for node_id, type_id, seq, params in session.execute(
                text(
                    "SELECT id, node_type_id, created_seq, params_used FROM agent_nodes "
                    "WHERE agent_id = :a AND id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"a": agent_id, "ids": list(named)},
            ):
                overlay.stored[node_id] = Node(type_id, params, seq)
            overlay.expand(set(overlay.stored))
        return overlay

    def expand(self, ids: set[uuid.UUID]) -> None:
        """Load the stored out-edges of stored nodes not expanded yet."""
        wanted = [i for i in ids if i not in self.stored_out and i not in self.new]
        if not wanted:
            return
        for node_id in wanted:
            self.stored_out[node_id] = set()
        for source, target in self.session.execute(
            text(
                "SELECT source_node_id, target_node_id FROM agent_connections "
                "WHERE agent_id = :a AND source_node_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"a": self.agent_id, "ids": wanted},
        ):
            self.stored_out[source].add(target)

    def node(self, node_id: uuid.UUID) -> Node | None:
        if node_id in self.deleted:
            return None
        return self.new.get(node_id) or self.stored.get(node_id)

    def out(self, node_id: uuid.UUID) -> set[uuid.UUID]:
        """Current targets of an expanded node."""
        targets = {t for s, t in self.added if s == node_id} if self.added else set()
        for target in self.stored_out.get(node_id, ()):
            if target not in self.deleted and (node_id, target) not in self.removed:
                targets.add(target)
        return targets

    def has_edge(self, source: uuid.UUID, target: uuid.UUID) -> bool:
        if (source, target) in self.added:
            return True
        return target in self.stored_out.get(source, ()) and (source, target) not in self.removed

    def reaches(self, start: uuid.UUID, goal: uuid.UUID) -> bool:
        """Is there a path start -> goal? Walks level by level, loading out-edges as it goes."""
        seen, frontier = {start}, {start}
        while frontier:
            self.expand(frontier)
            following = set()
            for node_id in frontier:
                for target in self.out(node_id):
                    if target == goal:
                        return True
                    if target not in seen:
                        seen.add(target)
                        following.add(target)
            frontier = following
        return False


class Run:
    """Applies operations in order to an Overlay, raising the contract's errors with op_index."""

    def __init__(self, overlay: Overlay, schemas: dict[uuid.UUID, dict[str, Any]], max_nodes: int):
        self.graph = overlay
        self.schemas = schemas
        self.max_nodes = max_nodes
        self.temp_refs: dict[str, uuid.UUID] = {}
        self.created: list[dict[str, str | None]] = []

    def node(self, node_id: uuid.UUID, index: int) -> Node:
        found = self.graph.node(node_id)
        if found is None:
            raise NodeNotFound(
                f"node {node_id} is not a node of this agent",
                op_index=index,
                agent_node_id=str(node_id),
            )
        return found

    def end(self, node_id: uuid.UUID | None, temp_ref: str | None, index: int) -> uuid.UUID:
        """The node one end of a connection refers to, by id or by temp ref."""
        if temp_ref is not None:
            if temp_ref not in self.temp_refs:
                raise InvalidOperation(f"unknown temp_ref_id {temp_ref!r}", op_index=index)
            node_id = self.temp_refs[temp_ref]
        assert node_id is not None, "each end names a node id or a temp ref"
        self.node(node_id, index)
        return node_id

    def ends(self, op: CreateConnection | DeleteConnection, index: int) -> Edge:
        source = self.end(op.source_agent_node_id, op.source_temp_ref_id, index)
        return source, self.end(op.target_agent_node_id, op.target_temp_ref_id, index)

    def apply(self, index: int, op: Operation) -> None:
        """Apply one operation to the overlay, or raise the error the contract gives it."""
        match op:
            case CreateNode():
                self.create_node(index, op)
            case UpdateNode():
                self.update_node(index, op)
            case DeleteNode():
                self.delete_node(index, op)
            case CreateConnection():
                self.create_connection(index, op)
            case DeleteConnection():
                self.delete_connection(index, op)

    def create_node(self, index: int, op: CreateNode) -> None:
        graph = self.graph
        schema = self.schemas.get(op.node_type_id)
        if schema is None:
            raise UnknownNodeType(
                f"no node type {op.node_type_id}",
                op_index=index,
                node_type_id=str(op.node_type_id),
            )
        node_types.validate_params(schema, op.params_used, op_index=index)
        if graph.size >= self.max_nodes:
            raise GraphTooLarge(f"an agent has at most {self.max_nodes} nodes", op_index=index)
        node_id = uuid.uuid4()
        graph.new[node_id] = Node(op.node_type_id, op.params_used, graph.next_seq)
        graph.next_seq += 1
        graph.size += 1
        if op.temp_ref_id is not None:
            self.temp_refs[op.temp_ref_id] = node_id
        self.created.append({"temp_ref_id": op.temp_ref_id, "agent_node_id": str(node_id)})

    def update_node(self, index: int, op: UpdateNode) -> None:
        node = self.node(op.agent_node_id, index)
        params = merge_patch(node.params, op.params_used)
        node_types.validate_params(self.schemas[node.type_id], params, op_index=index)
        node.params = params
        self.graph.patched.add(op.agent_node_id)

    def delete_node(self, index: int, op: DeleteNode) -> None:
        graph, node_id = self.graph, op.agent_node_id
        self.node(node_id, index)
        if graph.new.pop(node_id, None) is None:
            graph.deleted.add(node_id)
        graph.added = {(s, t) for s, t in graph.added if node_id not in (s, t)}
        graph.size -= 1

    def create_connection(self, index: int, op: CreateConnection) -> None:
        graph = self.graph
        source, target = self.ends(op, index)
        if source == target:
            raise SelfLoop("a node cannot connect to itself", op_index=index)
        if graph.has_edge(source, target):
            raise ConnectionExists("this connection exists already", op_index=index)
        if graph.reaches(target, source):
            raise GraphCycle("this connection would close a cycle", op_index=index)
        if (source, target) in graph.removed:
            graph.removed.discard((source, target))
        else:
            graph.added.add((source, target))

    def delete_connection(self, index: int, op: DeleteConnection) -> None:
        graph = self.graph
        source, target = self.ends(op, index)
        if not graph.has_edge(source, target):
            raise ConnectionNotFound("no such connection", op_index=index)
        if (source, target) in graph.added:
            graph.added.discard((source, target))
        else:
            graph.removed.add((source, target))


def write(overlay: Overlay) -> None:
    """Store what the operations changed, a few set-based statements in all."""
    session, agent_id = overlay.session, overlay.agent_id
    if overlay.deleted:
        session.execute(
            text("DELETE FROM agent_nodes WHERE agent_id = :a AND id = ANY(:ids)"),
            {"a": agent_id, "ids": list(overlay.deleted)},
        )
    removed = [(s, t) for s, t in overlay.removed if not {s, t} & overlay.deleted]
    if removed:
        session.execute(
            text(
                "DELETE FROM agent_connections c "
                "USING unnest(CAST(:s AS uuid[]), CAST(:t AS uuid[])) AS r(s, t) "
                "WHERE c.agent_id = :a AND c.source_node_id = r.s AND c.target_node_id = r.t"
            ),
            {"a": agent_id, "s": [s for s, _ in removed], "t": [t for _, t in removed]},
        )
    if overlay.new:
        ordered = sorted(overlay.new.items(), key=lambda item: item[1].seq)
        session.execute(
            text(
                "INSERT INTO agent_nodes (id, agent_id, node_type_id, params_used, created_seq) "
                "SELECT id, :a, type_id, params::jsonb, seq FROM "
                "unnest(CAST(:ids AS uuid[]), CAST(:types AS uuid[]), CAST(:params AS text[]), "
                "CAST(:seqs AS bigint[])) AS n(id, type_id, params, seq)"
            ),
            {
                "a": agent_id,
                "ids": [node_id for node_id, _ in ordered],
                "types": [node.type_id for _, node in ordered],
                "params": [json.dumps(node.params) for _, node in ordered],
                "seqs": [node.seq for _, node in ordered],
            },
        )
    patched = sorted(overlay.patched - overlay.deleted - set(overlay.new))
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
                "params": [json.dumps(overlay.stored[n].params) for n in patched],
            },
        )
    if overlay.added:
        added = sorted(overlay.added)
        session.execute(
            text(
                "INSERT INTO agent_connections (agent_id, source_node_id, target_node_id) "
                "SELECT :a, s, t FROM unnest(CAST(:s AS uuid[]), CAST(:t AS uuid[])) AS r(s, t)"
            ),
            {"a": agent_id, "s": [s for s, _ in added], "t": [t for _, t in added]},
        )
