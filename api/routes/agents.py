"""PUT/DELETE /v1/internal/agents/{slug}@{user_slug}; GET /v1/agents."""

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.auth import PrincipalDep
from api.contract import JsonRoute, answers, scope, write_answers
from api.deps import Paging, read_session
from api.params import AgentBody, AgentKeyPath, AgentRefPath
from api.writes import LedgerDep, WriteOptions, submit, write_options
from identity import agents
from identity.answers import DeleteOut, SupersededOut
from identity.errors import (
    AgentNotFound,
    InvalidAgentKey,
    InvalidAgentRef,
    InvalidCursor,
    InvalidWebhookUrl,
    UserNotFound,
    ValidationFailed,
)
from identity.keys import SLUG_RE, AgentRef
from identity.pagination import Page
from identity.settings import get_settings

internal = APIRouter(prefix="/v1/internal/agents", tags=["agents"], route_class=JsonRoute)
public = APIRouter(prefix="/v1/agents", tags=["agents"], route_class=JsonRoute)


@internal.put(
    "/{agent_key}",
    operation_id="upsertAgent",
    dependencies=[scope("agents:write")],
    responses=write_answers(
        agents.AgentWriteOut | SupersededOut, InvalidAgentKey, InvalidWebhookUrl, UserNotFound
    ),
)
async def put_agent(
    agent_key: AgentKeyPath,
    body: AgentBody,
    into: LedgerDep,
    options: WriteOptions = Depends(write_options),
) -> Response:
    """Create or replace an agent by {slug}@{user_slug}."""
    sub = agents.upsert_submission(
        agent_key,
        body,
        options.idempotency_key,
        allow_private_webhooks=get_settings().allow_private_webhooks,
    )
    return await submit(into, sub, options)


@internal.delete(
    "/{agent_key}",
    operation_id="deleteAgent",
    dependencies=[scope("agents:write")],
    responses=write_answers(DeleteOut, InvalidAgentKey, body=False),
)
async def delete_agent(
    agent_key: AgentKeyPath, into: LedgerDep, options: WriteOptions = Depends(write_options)
) -> Response:
    """Soft-delete an agent; its tombstone keeps older writes out."""
    return await submit(into, agents.delete_submission(agent_key, options.idempotency_key), options)


@public.get(
    "/{ref}",
    operation_id="getAgent",
    dependencies=[scope("read")],
    responses=answers(InvalidAgentKey, InvalidAgentRef, AgentNotFound, ValidationFailed),
)
def get_agent(
    ref: AgentRefPath,
    principal: PrincipalDep,
    include_deleted: bool = False,
    session: Session = Depends(read_session),
) -> agents.AgentOut:
    """The agent, by key or id; a tombstone too with `include_deleted`."""
    return agents.get_agent(
        session, AgentRef.parse(ref), include_deleted=include_deleted, sees=principal.actor.sees
    )


@public.get(
    "",
    operation_id="listAgents",
    dependencies=[scope("read")],
    responses=answers(InvalidCursor, ValidationFailed),
)
def list_agents(
    principal: PrincipalDep,
    user_slug: str | None = Query(None, pattern=SLUG_RE.pattern, max_length=64),
    include_deleted: bool = False,
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[agents.AgentOut]:
    """A page of agents, ordered by id; one user's with `user_slug`."""
    return agents.list_agents(
        session,
        limit=paging.limit,
        cursor=paging.cursor,
        user_slug=user_slug,
        include_deleted=include_deleted,
        sees=principal.actor.sees,
    )
