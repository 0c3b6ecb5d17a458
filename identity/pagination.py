"""Opaque cursors for list endpoints: the sort key of the last item, base64-encoded."""

import base64
import json
from typing import Any

from identity.errors import InvalidCursor


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, length: int) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this API issued", cursor=cursor) from None
    if not isinstance(values, list) or len(values) != length:
        raise InvalidCursor("cursor is not one this API issued", cursor=cursor)
    return values


def page(items: list[dict[str, Any]], limit: int, sort_key: list[str]) -> dict[str, Any]:
    """Trim a limit+1 query result to a page and derive the next cursor."""
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor([items[-1][k] for k in sort_key]) if more and items else None
    return {"items": items, "next_cursor": next_cursor}
