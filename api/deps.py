"""Request dependencies: the bearer token, a read-only session, and the way into the ledger."""

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from identity.db import session_factory
from identity.errors import InvalidToken
from identity.ledger.accept import Accepts
from identity.ledger.notify import JobWaiter
from identity.settings import get_settings


def token_matches(authorization: str | None) -> bool:
    """Whether an Authorization header carries the bearer token, compared in constant time."""
    expected = get_settings().internal_token
    scheme, _, token = (authorization or "").partition(" ")
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), (expected or "").encode())
    )


async def require_token(authorization: str | None = Header(None)) -> None:
    """Bearer token (api/limits.py has refused a wrong one before any body was read)."""
    if not token_matches(authorization):
        raise InvalidToken("missing or wrong bearer token")


def read_session() -> Iterator[Session]:
    with session_factory()() as session:
        yield session


class Paging:
    def __init__(
        self,
        limit: int = Query(100, ge=1, le=500),
        cursor: str | None = Query(None, max_length=512),
    ) -> None:
        self.limit = limit
        self.cursor = cursor


@dataclass(frozen=True)
class Ledger:
    """What a write needs in the API process: the accept batcher and the job waiter, both made
    for the app's event loop by its lifespan."""

    accepts: Accepts
    waiter: JobWaiter


async def get_ledger(request: Request) -> Ledger:
    """The app's Ledger, which create_app's lifespan sets. (Async: FastAPI runs a plain
    function dependency on its thread pool, a thread hop per request for a field read.)"""
    ledger: Ledger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
