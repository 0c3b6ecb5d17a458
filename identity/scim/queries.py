"""Reading users and agents as SCIM resources: one by id, or a filtered page with its total.
Every read sees what its integrator owns (`sees`; None for an admin, who sees everything): a
user it owns, and that user's agents."""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.scim.agents import SCIM_AGENT_COLUMNS
from identity.scim.errors import InvalidValue, ScimNotFound
from identity.scim.filters import where
from identity.scim.users import SCIM_USER_COLUMNS

_SEES = "(CAST(:sees AS text) IS NULL OR u.owner = :sees)"
_USERS = f"FROM users AS u WHERE {_SEES}"
_AGENTS = (
    f"FROM agents AS a JOIN users AS u ON u.id = a.user_id WHERE a.deleted_at IS NULL AND {_SEES}"
)


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


def get_user(session: Session, raw_id: str, sees: str | None = None) -> Any:
    """The users row of a SCIM id; ScimNotFound when there is none `sees` may see."""
    row = session.execute(
        text(f"SELECT {SCIM_USER_COLUMNS} {_USERS} AND u.id = :id"),
        {"id": parse_id(raw_id), "sees": sees},
    ).one_or_none()
    if row is None:
        raise ScimNotFound("no user has this id", id=raw_id)
    return row


def _found(
    session: Session,
    columns: str,
    source: str,
    where_clause: tuple[str, dict[str, Any]],
    start_index: int,
    count: int,
) -> Found:
    """A page of `source` (a FROM ... WHERE), `count` rows from the `start_index`th (1-based)
    in id order, and how many match in all; both run in SQL on the filter's indexes."""
    clause, params = where_clause
    total = session.execute(text(f"SELECT count(*) {source} AND {clause}"), params).scalar_one()
    rows: list[Any] = []
    if count > 0 and start_index <= total:
        rows = list(
            session.execute(
                text(
                    f"SELECT {columns} {source} AND {clause} "
                    "ORDER BY id LIMIT :limit OFFSET :offset"
                ),
                {**params, "limit": count, "offset": start_index - 1},
            )
        )
    return Found(total=int(total), rows=rows)


def find_users(
    session: Session, expression: str | None, start_index: int, count: int, sees: str | None
) -> Found:
    """The users a filter matches, a page of them in id order, and how many in all."""
    clause, params = where(expression)
    found = (clause, {**params, "sees": sees})
    return _found(session, SCIM_USER_COLUMNS, _USERS, found, start_index, count)


def get_agent(session: Session, agent_id: str, sees: str | None = None) -> Any:
    """The live agent of a SCIM id, with its owner; ScimNotFound when there is none `sees`
    may see."""
    row = session.execute(
        text(f"SELECT {SCIM_AGENT_COLUMNS} {_AGENTS} AND a.id = :id"),
        {"id": agent_id, "sees": sees},
    ).one_or_none()
    if row is None:
        raise ScimNotFound("no agent has this id", id=agent_id)
    return row


def owner_slug(session: Session, raw_id: str, sees: str | None = None) -> str:
    """The slug of the user a SCIM Agent's `owners` names; invalidValue when there is none
    `sees` may see."""
    try:
        user_id = uuid.UUID(raw_id)
    except ValueError:
        user_id = None
    slug = (
        user_id
        and session.execute(
            text(f"SELECT slug {_USERS} AND u.id = :id"), {"id": user_id, "sees": sees}
        ).scalar_one_or_none()
    )
    if not slug:
        raise InvalidValue(f"owners names no user: {raw_id!r}", owner=raw_id)
    return str(slug)


def find_agents(
    session: Session, expression: str | None, start_index: int, count: int, sees: str | None
) -> Found:
    """The live agents a filter matches, a page of them in id order, and how many in all."""
    clause, params = where(expression, "Agent")
    found = (clause, {**params, "sees": sees})
    return _found(session, SCIM_AGENT_COLUMNS, _AGENTS, found, start_index, count)
