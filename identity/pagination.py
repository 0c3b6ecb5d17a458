"""Opaque cursors for list endpoints: the sort key of the last item, base64-encoded."""

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.errors import InvalidCursor

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a list: its items, and the cursor of the next page (null on the last)."""

    items: list[T]
    next_cursor: str | None


class HasId(Protocol):
    @property
    def id(self) -> uuid.UUID: ...


ById = TypeVar("ById", bound=HasId)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def text_value(value: Any) -> str:
    if not isinstance(value, str) or "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise ValueError("not text")
    return value


def bigint_value(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**63:
        raise ValueError("not a bigint")
    return value


def decode_cursor(cursor: str | None, *types: Callable[[Any], Any]) -> list[Any] | None:
    """The sort key a cursor carries, each part converted by its type (uuid.UUID, ...)."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong shape")
        return [convert(value) for convert, value in zip(types, values, strict=True)]
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this API issued", cursor=cursor) from None


def list_by_id(
    session: Session,
    select: str,
    cursor: str | None,
    limit: int,
    out: Callable[[Any], ById],
    *,
    owner: str | None = None,
) -> "Page[ById]":
    """A page of `select` (a SELECT over a table with a uuid `id` and an `owner`), ordered by
    id; only the rows of `owner`, if given."""
    after = decode_cursor(cursor, uuid.UUID)
    rows = session.execute(
        text(
            f"{select} WHERE (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) "
            "AND (CAST(:owner AS text) IS NULL OR owner = :owner) ORDER BY id LIMIT :limit"
        ),
        {"after": after[0] if after else None, "owner": owner, "limit": limit + 1},
    ).all()
    return page([out(r) for r in rows], limit, lambda item: [str(item.id)])


def page(items: list[T], limit: int, cursor_of: Callable[[T], list[Any]]) -> Page[T]:
    """Trim a limit+1 query result to a page; the next cursor is `cursor_of` its last item."""
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(cursor_of(items[-1])) if more and items else None
    return Page.model_construct(items=items, next_cursor=next_cursor)
