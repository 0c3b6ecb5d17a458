"""PUT/DELETE /v1/internal/agents/{slug}@{user_slug}; GET /v1/agents."""

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.deps import Paging, read_session
from api.writes import LedgerDep, WriteOptions, submit, write_options, write_responses
from identity import agents
from identity.answers import DeleteOut, SupersededOut
from identity.keys import SLUG_RE, AgentRef
from identity.pagination import Page
from identity.schemas import AgentUpsert
from identity.settings import get_settings

internal = APIRouter(prefix="/v1/internal/agents", tags=["agents"])
public = APIRouter(prefix="/v1/agents", tags=["agents"])


@internal.put("/{agent_key}", responses=write_responses(agents.AgentWriteOut | SupersededOut))
async def put_agent(
    agent_key: str,
    body: AgentUpsert,
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


@internal.delete("/{agent_key}", responses=write_responses(DeleteOut))
async def delete_agent(
    agent_key: str, into: LedgerDep, options: WriteOptions = Depends(write_options)
) -> Response:
    """Soft-delete an agent; its tombstone keeps older writes out."""
    return await submit(into, agents.delete_submission(agent_key, options.idempotency_key), options)


@public.get("/{ref}")
def get_agent(
    ref: str, include_deleted: bool = False, session: Session = Depends(read_session)
) -> agents.AgentOut:
    return agents.get_agent(session, AgentRef.parse(ref), include_deleted=include_deleted)


@public.get("")
def list_agents(
    user_slug: str | None = Query(None, pattern=SLUG_RE.pattern, max_length=64),
    include_deleted: bool = False,
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[agents.AgentOut]:
    return agents.list_agents(
        session,
        limit=paging.limit,
        cursor=paging.cursor,
        user_slug=user_slug,
        include_deleted=include_deleted,
    )
