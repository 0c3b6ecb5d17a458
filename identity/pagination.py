"""Opaque cursors for list endpoints: the sort key of the last item, base64-encoded."""

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.errors import InvalidCursor


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def text_value(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
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
    out: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """A page of `select` (a SELECT over a table with a uuid `id`), ordered by id."""
    after = decode_cursor(cursor, uuid.UUID)
    rows = session.execute(
        text(
            f"{select} WHERE CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid) "
            "ORDER BY id LIMIT :limit"
        ),
        {"after": after[0] if after else None, "limit": limit + 1},
    ).all()
    return page([out(r) for r in rows], limit, ["id"])


def page(items: list[dict[str, Any]], limit: int, sort_key: list[str]) -> dict[str, Any]:
    """Trim a limit+1 query result to a page and derive the next cursor."""
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor([items[-1][k] for k in sort_key]) if more and items else None
    return {"items": items, "next_cursor": next_cursor}
