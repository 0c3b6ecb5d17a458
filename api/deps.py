"""Request dependencies: the bearer token and a read-only session."""

import hmac
from collections.abc import Iterator

from fastapi import Header, Query
from sqlalchemy.orm import Session

from identity.db import session_factory
from identity.errors import InvalidToken
from identity.settings import get_settings


async def require_token(authorization: str | None = Header(None)) -> None:
    """Bearer token, compared in constant time."""
    expected = get_settings().internal_token
    scheme, _, token = (authorization or "").partition(" ")
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(token.strip().encode(), expected.encode())
    ):
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
