"""Request dependencies of reads: a read-only session and paging."""

from collections.abc import Iterator

from fastapi import Query
from sqlalchemy.orm import Session

from identity.db import session_factory


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
