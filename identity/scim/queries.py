"""Reading users as SCIM resources: one by id, or a filtered page with its total."""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.scim.errors import ScimNotFound
from identity.scim.filters import where
from identity.scim.users import SCIM_USER_COLUMNS


@dataclass(frozen=True)
class Found:
    """A page of a filtered list: the rows, and how many match in all."""

    total: int
    rows: list[Any]


def parse_id(raw: str) -> uuid.UUID:
    """A SCIM user id; one that is not a UUID names no user."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ScimNotFound("no user has this id", id=raw) from None


def get_user(session: Session, raw_id: str) -> Any:
    """The users row of a SCIM id; ScimNotFound when there is none."""
    row = session.execute(
        text(f"SELECT {SCIM_USER_COLUMNS} FROM users WHERE id = :id"), {"id": parse_id(raw_id)}
    ).one_or_none()
    if row is None:
        raise ScimNotFound("no user has this id", id=raw_id)
    return row


def find_users(session: Session, expression: str | None, *, start_index: int, count: int) -> Found:
    """The users a filter matches, `count` of them from the `start_index`th (1-based), in id
    order, and how many match in all. Both run in SQL on the filter's indexes."""
    clause, params = where(expression)
    total = session.execute(
        text(f"SELECT count(*) FROM users AS u WHERE {clause}"), params
    ).scalar_one()
    rows: list[Any] = []
    if count > 0 and start_index <= total:
        rows = list(
            session.execute(
                text(
                    f"SELECT {SCIM_USER_COLUMNS} FROM users AS u WHERE {clause} "
                    "ORDER BY u.id LIMIT :limit OFFSET :offset"
                ),
                {**params, "limit": count, "offset": start_index - 1},
            )
        )
    return Found(total=int(total), rows=rows)
