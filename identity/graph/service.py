"""Agent graphs: applying an update (its operations run in identity/graph/apply.py) and reading a
graph whole.

Positions are not stored: they are derived from the structure whenever the graph is read
(identity/graph/layout.py), so they are always those of the graph as it is.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity import node_types
from identity.access import OPERATOR, Actor
from identity.agents import AGENT_COLUMNS, AgentOut, agent_out, check_agent_owner, get_agent
from identity.answers import Applied
from identity.errors import AgentNotFound
from identity.graph.apply import Overlay, Run, write
from identity.graph.layout import layered_positions
from identity.graph.operations import (
    AgentGraphUpdate,
    CreateNode,
    GraphUpdateJob,
    Operation,
    UpdateNode,
    update_job,
)
from identity.keys import AgentKey, AgentRef
from identity.ledger.jobs import Submission

# Returns the agent as written, so the answer needs no second read of it.
_UPDATE_AGENT = text(
    "UPDATE agents a SET name = coalesce(:name, a.name), "
    "description = coalesce(:description, a.description), "
    "visibility = coalesce(:visibility, a.visibility), updated_at = clock_timestamp() "
    f"FROM users u WHERE a.id = :id AND u.id = a.user_id RETURNING {AGENT_COLUMNS}"
)


class Position(BaseModel):
    """Where the layout puts a node: `x` its layer, `y` its place within the layer."""

    x: int
    y: int


class GraphNodeOut(BaseModel):
    agent_node_id: uuid.UUID
    node_type_id: uuid.UUID
    params_used: dict[str, Any]
    position: Position


class ConnectionOut(BaseModel):
    source_agent_node_id: uuid.UUID
    target_agent_node_id: uuid.UUID


class GraphOut(BaseModel):
    """An agent's graph as the API shows it, laid out."""

    nodes: list[GraphNodeOut]
    connections: list[ConnectionOut]


class CreatedNodeOut(BaseModel):
    temp_ref_id: str | None
    agent_node_id: uuid.UUID


class GraphUpdateResult(BaseModel):
    """What a graph update's job stores: the agent as updated and the nodes it created."""

    agent: AgentOut
    created_nodes: list[CreatedNodeOut]


class GraphUpdateOut(GraphUpdateResult):
    """The answer to a graph update: its job's result and the graph as it is after it."""

    graph: GraphOut


@dataclass
class StoredGraph:
    nodes: dict[uuid.UUID, tuple[uuid.UUID, dict[str, Any], int]]  # id -> (type, params, seq)
    outgoing: dict[uuid.UUID, set[uuid.UUID]]


def load_graph(session: Session, agent_id: str) -> StoredGraph:
    """The agent's whole graph, in two statements of one row each.

    Each statement aggregates its rows into arrays (and the params into one JSON document):
    building a result row per node would cost more than the query itself on a large graph."""
    ids, types, seqs, params = session.execute(
        text(
            "SELECT coalesce(array_agg(id), '{}'), coalesce(array_agg(node_type_id), '{}'), "
            "coalesce(array_agg(created_seq), '{}'), coalesce(json_agg(params_used), '[]') "
            "FROM agent_nodes WHERE agent_id = :a"
        ),
        {"a": agent_id},
    ).one()
    nodes = {
        node_id: (type_id, node_params, seq)
        for node_id, type_id, seq, node_params in zip(ids, types, seqs, params, strict=True)
    }
    sources, targets = session.execute(
        text(
            "SELECT coalesce(array_agg(source_node_id), '{}'), "
            "coalesce(array_agg(target_node_id), '{}') "
            "FROM agent_connections WHERE agent_id = :a"
        ),
        {"a": agent_id},
    ).one()
    outgoing: dict[uuid.UUID, set[uuid.UUID]] = {}
    for source, target in zip(sources, targets, strict=True):
        outgoing.setdefault(source, set()).add(target)
    return StoredGraph(nodes, outgoing)


def graph_out(graph: StoredGraph) -> GraphOut:
    """The public form of a graph, with the layout computed from its structure.

    Validated whole in one call: on a graph of thousands of nodes, building a model per node
    in Python would cost more than reading the graph does."""
    seq = {node_id: node[2] for node_id, node in graph.nodes.items()}
    ordered = sorted(graph.nodes.items(), key=lambda item: item[1][2])
    positions = layered_positions(seq, graph.outgoing)
    return GraphOut.model_validate(
        {
            "nodes": [
                {
                    "agent_node_id": node_id,
                    "node_type_id": type_id,
                    "params_used": params,
                    "position": {"x": positions[node_id][0], "y": positions[node_id][1]},
                }
                for node_id, (type_id, params, _) in ordered
            ],
            "connections": [
                {"source_agent_node_id": s, "target_agent_node_id": t}
                for s, t in sorted(
                    ((s, t) for s, targets in graph.outgoing.items() for t in targets),
                    key=lambda edge: (seq[edge[0]], seq[edge[1]]),
                )
            ],
        }
    )


def _schema_types(overlay: Overlay, operations: list[Operation]) -> set[uuid.UUID]:
    """The node types whose params schemas the operations are checked against."""
    wanted = set()
    for op in operations:
        match op:
            case CreateNode(node_type_id=type_id):
                wanted.add(type_id)
            case UpdateNode(agent_node_id=node_id) if node_id in overlay.stored:
                wanted.add(overlay.stored[node_id].type_id)
    return wanted


def update_agent_graph(
    session: Session,
    key: AgentKey,
    update: GraphUpdateJob,
    *,
    max_nodes: int,
    actor: Actor = OPERATOR,
) -> Applied:
    """Apply an update's fields and operations in order, all or nothing."""
    check_agent_owner(session, key, actor)
    agent = get_agent(session, AgentRef(key=key))
    if update.agent_id is not None and update.agent_id != agent.id:
        raise AgentNotFound("the agent this update named has been replaced", ref=update.agent_id)
    operations = update.operations
    overlay = Overlay.load(session, agent.id, operations)
    schemas = node_types.schemas_for(session, _schema_types(overlay, operations))
    run = Run(overlay, schemas, max_nodes)
    for index, op in enumerate(operations):
        run.apply(index, op)

    fields = {k: v for k, v in update.fields().items() if v != getattr(agent, k)}
    if not fields and not operations:
        # Asked for what is already there: like an identical PUT, nothing is rewritten.
        unchanged = GraphUpdateResult(agent=agent, created_nodes=[])
        return Applied("unchanged", unchanged.model_dump(mode="json"))
    if operations:
        write(overlay)
    written = session.execute(
        _UPDATE_AGENT,
        {"id": agent.id, **{k: fields.get(k) for k in ("name", "description", "visibility")}},
    ).one()
    # The graph itself is not copied into the ledger: the API reads it when it answers.
    updated = GraphUpdateResult.model_validate(
        {"agent": agent_out(written), "created_nodes": run.created}
    )
    return Applied("updated", updated.model_dump(mode="json"))


def read_graph(
    session: Session, ref: AgentRef, *, include_deleted: bool = False, sees: str | None = None
) -> GraphOut:
    """The graph of the agent `ref` names, laid out, if `sees` may see it; AgentNotFound when
    there is none."""
    agent = get_agent(session, ref, include_deleted=include_deleted, sees=sees)
    return graph_of(session, agent.id)


def graph_of(session: Session, agent_id: str) -> GraphOut:
    """The graph of the agent with this id, laid out; empty once the agent row is gone."""
    return graph_out(load_graph(session, agent_id))


def update_submission(
    session: Session,
    raw_ref: str,
    body: AgentGraphUpdate,
    idempotency_key: str | None,
    *,
    max_operations: int,
    sees: str | None = None,
) -> Submission:
    """Check an update without the graph and address it to the agent's key (an agent named
    by its id must be one `sees` may see)."""
    ref = AgentRef.parse(raw_ref)
    update = update_job(body, max_operations=max_operations)
    key = ref.key
    if ref.agent_id is not None:
        agent = get_agent(session, ref, sees=sees)
        key = AgentKey(agent.slug, agent.user_slug)
        update = update.model_copy(update={"agent_id": ref.agent_id})
    return Submission(
        key=str(key), kind="agent.update", payload=update.stored(), idempotency_key=idempotency_key
    )
