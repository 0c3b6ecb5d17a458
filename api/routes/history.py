"""GET /v1/history?key=: a key's jobs and backfill items, newest first."""

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.auth import PrincipalDep
from api.contract import JsonRoute, answers, scope
from api.deps import read_session
from api.params import NO_NUL
from api.routes.jobs import KEY_ERRORS, KEY_FILTER
from identity.errors import ValidationFailed
from identity.keys import searched_keys
from identity.ledger.history import HISTORY_LIMIT, HistoryEntry, key_history

router = APIRouter(prefix="/v1/history", tags=["jobs"], route_class=JsonRoute)


class HistoryOut(BaseModel):
    """The keys the search named (a bare UUID names a user's and a node type's) and their
    writes."""

    keys: list[str]
    items: list[HistoryEntry]


@router.get(
    "",
    operation_id="getHistory",
    dependencies=[scope("jobs:read")],
    responses=answers(ValidationFailed, *KEY_ERRORS),
)
def history(
    principal: PrincipalDep,
    key: str = Query(max_length=300, pattern=NO_NUL, description=KEY_FILTER),
    limit: int = Query(HISTORY_LIMIT, ge=1, le=1000),
    session: Session = Depends(read_session),
) -> HistoryOut:
    """Live writes, retries and backfill items of the key, newest first."""
    keys = searched_keys(key)
    items = key_history(session, keys, limit=limit, sees=principal.actor.sees)
    return HistoryOut(keys=keys, items=items)
