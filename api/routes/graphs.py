"""POST/PATCH /v1/agents/{ref}/update and GET /v1/agents/{ref}/graph."""

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import PrincipalDep
from api.contract import JsonRoute, answers, scope, write_answers
from api.deps import read_session
from api.params import AgentRefPath, GraphUpdateBody
from api.writes import LedgerDep, WriteOptions, submit, write_options
from identity import errors
from identity.db import transaction
from identity.graph import service as graph
from identity.graph.operations import AgentGraphUpdate
from identity.keys import AgentRef
from identity.ledger.jobs import Submission
from identity.settings import get_settings

router = APIRouter(prefix="/v1/agents", tags=["graphs"], route_class=JsonRoute)

# What an update's job may fail with, once accepted.
APPLY_ERRORS = (
    errors.AgentNotFound,
    errors.InvalidOperation,
    errors.NodeNotFound,
    errors.UnknownNodeType,
    errors.InvalidParams,
    errors.SelfLoop,
    errors.ConnectionExists,
    errors.ConnectionNotFound,
    errors.GraphCycle,
    errors.GraphTooLarge,
)
# What an update may be refused for when it arrives, then fail with.
UPDATE_ERRORS = (errors.InvalidAgentKey, errors.InvalidAgentRef, errors.EmptyUpdate, *APPLY_ERRORS)


def _submission(
    ref: str, body: AgentGraphUpdate, idempotency_key: str | None, sees: str | None
) -> Submission:
    with transaction() as session:
        return graph.update_submission(
            session,
            ref,
            body,
            idempotency_key,
            max_operations=get_settings().max_operations,
            sees=sees,
        )


def _with_graph(result: dict[str, Any]) -> dict[str, Any]:
    """The graph as it is right after the update.

    Read by the agent's id alone: a tombstoned agent keeps its graph, and an agent whose owner
    was deleted since went with its graph, which then reads as empty.
    """
    with transaction() as session:
        laid_out = graph.graph_of(session, result["agent"]["id"])
    return {**result, "graph": laid_out.model_dump(mode="json")}


@router.post(
    "/{ref}/update",
    operation_id="updateAgentGraph",
    dependencies=[scope("graphs:write")],
    responses=write_answers(graph.GraphUpdateOut, *UPDATE_ERRORS),
)
@router.patch(
    "/{ref}/update",
    operation_id="patchAgentGraph",
    dependencies=[scope("graphs:write")],
    responses=write_answers(graph.GraphUpdateOut, *UPDATE_ERRORS),
    description="The same update as POST, for clients that send changes with PATCH.",
)
async def update_agent(
    ref: AgentRefPath,
    body: GraphUpdateBody,
    into: LedgerDep,
    options: WriteOptions = Depends(write_options),
) -> Response:
    """Change an agent's name, description, visibility and graph, atomically and in order."""
    sub = await run_in_threadpool(
        _submission, ref, body, options.idempotency_key, options.actor.sees
    )
    return await submit(into, sub, options, complete=_with_graph)


@router.get(
    "/{ref}/graph",
    operation_id="getAgentGraph",
    dependencies=[scope("read")],
    responses=answers(errors.InvalidAgentKey, errors.InvalidAgentRef, errors.AgentNotFound),
)
def get_graph(
    ref: AgentRefPath, principal: PrincipalDep, session: Session = Depends(read_session)
) -> graph.GraphOut:
    """The agent's graph, with server-computed positions."""
    return graph.read_graph(session, AgentRef.parse(ref), sees=principal.actor.sees)
