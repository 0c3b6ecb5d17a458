"""POST /scim/v2/.search: one SearchRequest over every resource type served (RFC 7644
§3.4.3), users first, then agents."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.contract import scope
from api.deps import read_session
from api.scim import agents, users
from api.scim.bodies import json_body
from api.scim.reads import search_all

router = APIRouter(
    prefix="/scim/v2", tags=["scim"], dependencies=[scope("scim")], include_in_schema=False
)


@router.post("/.search")
async def search(request: Request, session: Session = Depends(read_session)) -> Response:
    """Users and agents a filter matches, a page of them, and how many in all."""
    query = await json_body(request)
    return await run_in_threadpool(
        search_all, request, session, query, [users.SERVED, agents.SERVED]
    )
