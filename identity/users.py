"""Users: the integrator's own UUIDs, mirrored with versions and tombstones."""

import json
import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.access import OPERATOR, Actor, check_owner
from identity.answers import (
    Applied,
    DeleteOut,
    DeleteOutcome,
    SupersededOut,
    Timestamp,
    UpsertOutcome,
    upserted,
)
from identity.errors import SlugTaken, UserNotFound
from identity.keys import UserKey
from identity.ledger.jobs import Submission
from identity.ledger.tombstones import (
    set_agent_tombstones_of_user,
    set_tombstone,
    tombstone_version,
)
from identity.pagination import Page, list_by_id
from identity.schemas import UserUpsert

USER_COLUMNS = "id, email, slug, plan, metadata, external_owner, version, created_at, updated_at"


class UserOut(BaseModel):
    """A user as the API shows it."""

    id: uuid.UUID
    email: str
    slug: str
    plan: str
    metadata: dict[str, Any]
    external_owner: str | None
    version: int
    created_at: Timestamp
    updated_at: Timestamp


class UserWriteOut(UserOut):
    """The answer to a user upsert: the user as written, and what the write did."""

    created: bool
    outcome: UpsertOutcome


def user_out(row: Any) -> UserOut:
    """A users row in its public form."""
    return UserOut.model_validate(row._mapping)


def _select(session: Session, user_id: uuid.UUID, sees: str | None = None) -> Any:
    """The user's row and its owner; None if there is none `sees` may see (None: anyone)."""
    return session.execute(
        text(
            f"SELECT {USER_COLUMNS}, owner FROM users WHERE id = :id "
            "AND (CAST(:sees AS text) IS NULL OR owner = :sees)"
        ),
        {"id": user_id, "sees": sees},
    ).one_or_none()


# The rule live writes and backfills share: write only when the body differs from what is
# stored and is not older than it. Goes after `INSERT INTO users AS u (...) ...`.
ON_CONFLICT = """
    ON CONFLICT (id) DO UPDATE
        SET email = excluded.email, slug = excluded.slug, plan = excluded.plan,
            metadata = excluded.metadata, external_owner = excluded.external_owner,
            version = excluded.version, line_digest = excluded.line_digest,
            updated_at = clock_timestamp()
        WHERE u.version <= excluded.version
          AND (u.email, u.slug, u.plan, u.metadata, u.external_owner)
              IS DISTINCT FROM
              (excluded.email, excluded.slug, excluded.plan, excluded.metadata,
               excluded.external_owner)
"""
_UPSERT = text(
    f"""
    INSERT INTO users AS u (id, email, slug, plan, metadata, external_owner, version,
                            owner, created_at, updated_at)
    VALUES (:id, :email, :slug, :plan, CAST(:metadata AS jsonb), :external_owner, :version,
            :owner, clock_timestamp(), clock_timestamp())
    {ON_CONFLICT}
    RETURNING {USER_COLUMNS}, (xmax = 0) AS inserted
    """
)


def upsert_user(
    session: Session, key: UserKey, body: UserUpsert, version: int, actor: Actor = OPERATOR
) -> Applied:
    """Create or replace a user's mirrored fields; older and identical writes change nothing.
    A new user belongs to the actor's integrator; another integrator's user is refused."""
    existing = _select(session, key.user_id)
    if existing is not None:
        check_owner(actor, existing.owner, "user", user_id=str(key.user_id))
    if existing is None and (tombstone_version(session, str(key)) or -1) > version:
        superseded = SupersededOut(id=str(key.user_id), created=False)
        return Applied("superseded", superseded.model_dump(mode="json"))
    try:
        with session.begin_nested():
            row = session.execute(
                _UPSERT,
                {
                    "id": key.user_id,
                    "email": body.email,
                    "slug": body.slug,
                    "plan": body.plan,
                    "metadata": json.dumps(body.metadata),
                    "external_owner": body.external_owner,
                    "version": version,
                    "owner": actor.integrator,
                },
            ).one_or_none()
    except IntegrityError:
        raise SlugTaken(f"slug {body.slug!r} belongs to another user", slug=body.slug) from None
    return upserted(row, existing, version, UserWriteOut)


def delete_user(session: Session, key: UserKey, version: int, actor: Actor = OPERATOR) -> Applied:
    """Remove a user and, by cascade, its agents; remember the delete so stale writes stay out."""
    existing = _select(session, key.user_id)
    if existing is not None:
        check_owner(actor, existing.owner, "user", user_id=str(key.user_id))
    if existing is not None and existing.version > version:
        return Applied("superseded", _deleted(key, "superseded"))
    set_tombstone(session, str(key), version)
    if existing is None:
        return Applied("unchanged", _deleted(key, "unchanged"))
    set_agent_tombstones_of_user(session, key.user_id, version)
    session.execute(text("DELETE FROM users WHERE id = :id"), {"id": key.user_id})
    return Applied("deleted", _deleted(key, "deleted"))


def _deleted(key: UserKey, outcome: DeleteOutcome) -> dict[str, Any]:
    return DeleteOut(id=str(key.user_id), outcome=outcome).model_dump(mode="json")


def get_user(session: Session, user_id: uuid.UUID, *, sees: str | None = None) -> UserOut:
    """The user with this id, if `sees` may see it; UserNotFound when there is none."""
    row = _select(session, user_id, sees)
    if row is None:
        raise UserNotFound("no user has this id", user_id=str(user_id))
    return user_out(row)


def list_users(
    session: Session, *, limit: int, cursor: str | None, sees: str | None = None
) -> Page[UserOut]:
    """Users in id order, a page at a time; only those of the integrator `sees`, if given."""
    select = f"SELECT {USER_COLUMNS} FROM users"
    return list_by_id(session, select, cursor, limit, user_out, owner=sees)


def upsert_submission(
    raw_user_id: str, body: UserUpsert, idempotency_key: str | None
) -> Submission:
    key = UserKey.parse(raw_user_id)
    return Submission(
        key=str(key),
        kind="user.upsert",
        payload=body.model_dump(mode="json"),
        explicit_version=body.explicit_version(),
        idempotency_key=idempotency_key,
    )


def delete_submission(raw_user_id: str, idempotency_key: str | None) -> Submission:
    key = UserKey.parse(raw_user_id)
    return Submission(key=str(key), kind="user.delete", payload={}, idempotency_key=idempotency_key)
