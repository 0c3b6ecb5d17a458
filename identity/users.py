"""Users: the integrator's own UUIDs, mirrored with versions and tombstones."""

import json
import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.access import OPERATOR, Actor, check_owner, may_write
from identity.answers import (
    Applied,
    DeleteOut,
    DeleteOutcome,
    SupersededOut,
    Timestamp,
    UpsertOutcome,
    upserted,
)
from identity.errors import IdmirrorError, OwnedByAnotherIntegrator, SlugTaken, UserNotFound
from identity.keys import UserKey
from identity.ledger.jobs import Submission
from identity.ledger.tombstones import (
    set_agent_tombstones_of_user,
    set_tombstone,
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
# One user upsert: its key, its body and its version.
UserWrite = tuple[UserKey, UserUpsert, int]


def upsert_user(
    session: Session, key: UserKey, body: UserUpsert, version: int, actor: Actor = OPERATOR
) -> Applied:
    """Create or replace a user's mirrored fields; older and identical writes change nothing.
    A new user belongs to the actor's integrator; another integrator's user is refused."""
    try:
        with session.begin_nested():
            outcome = upsert_users(session, [(key, body, version)], [actor])[0]
    except IntegrityError:  # a user of another key took the slug since it was read
        raise _slug_taken(body.slug) from None
    if isinstance(outcome, IdmirrorError):
        raise outcome
    return outcome


_CURRENT_COLUMNS = ", ".join(f"u.{column}" for column in USER_COLUMNS.split(", "))

# Each item's stored user and its owner, its key's tombstone, and the user holding the slug the
# item asks for.
_CURRENT = text(
    f"""
    SELECT i.n, {_CURRENT_COLUMNS}, u.owner, t.version AS tombstone_version,
           h.id AS slug_holder
    FROM unnest(CAST(:ids AS uuid[]), CAST(:keys AS text[]), CAST(:slugs AS text[]))
         WITH ORDINALITY AS i(id, key, slug, n)
    LEFT JOIN users u ON u.id = i.id
    LEFT JOIN users h ON h.slug = i.slug
    LEFT JOIN key_tombstones t ON t.key = i.key
    """
)
# In the items' order, so that a user can take the slug another gave up earlier in the batch.
_UPSERT = text(
    f"""
    INSERT INTO users AS u (id, email, slug, plan, metadata, external_owner, version,
                            owner, created_at, updated_at)
    SELECT id, email, slug, plan, metadata, external_owner, version,
           owner, clock_timestamp(), clock_timestamp()
    FROM json_to_recordset(CAST(:items AS json))
         AS i(n int, id uuid, email text, slug text, plan text, metadata jsonb,
              external_owner text, version bigint, owner text)
    ORDER BY n
    {ON_CONFLICT}
    RETURNING {USER_COLUMNS}, (xmax = 0) AS inserted
    """
)


def _slug_taken(slug: str) -> SlugTaken:
    return SlugTaken(f"slug {slug!r} belongs to another user", slug=slug)


def _settled_before_writing(
    key: UserKey,
    body: UserUpsert,
    version: int,
    row: Any,
    actor: Actor,
    holders: dict[str, uuid.UUID],
) -> Applied | IdmirrorError | None:
    """The outcome of a write that its stored user, tombstone and slug decide alone (another
    integrator's user, older than the key's delete, a slug another user holds); None when it
    goes on to the statement. `holders` maps slugs to their users as the writes before this
    one leave them; a write that will take a slug takes it there."""
    current = row if row.id is not None else None
    if current is not None and not may_write(actor, current.owner):
        return OwnedByAnotherIntegrator(
            "this user belongs to another integrator", user_id=str(key.user_id)
        )
    if current is None and (row.tombstone_version or -1) > version:
        superseded = SupersededOut(id=str(key.user_id), created=False)
        return Applied("superseded", superseded.model_dump(mode="json"))
    # Only an insert, or an update that renames and is not older, takes a slug: any other
    # write to a stored user leaves its slug as it is.
    if current is None or (current.slug != body.slug and current.version <= version):
        if holders.get(body.slug, key.user_id) != key.user_id:
            return _slug_taken(body.slug)
        if current is not None:
            del holders[current.slug]
        holders[body.slug] = key.user_id
    return None


def upsert_users(
    session: Session, writes: list[UserWrite], actors: list[Actor] | None = None
) -> list[Applied | IdmirrorError]:
    """Upsert users of distinct keys in two statements: read the stored users, tombstones and
    slug holders of all, then write those that may write (each by its actor, if given: the
    operator's otherwise). An outcome per write, in order, as one upsert_user after another
    would give."""
    if not writes:
        return []
    acting = actors or [OPERATOR] * len(writes)
    keys, bodies, versions = (list(column) for column in zip(*writes, strict=True))
    params = {
        "ids": [key.user_id for key in keys],
        "keys": [str(key) for key in keys],
        "slugs": [body.slug for body in bodies],
    }
    found = {row.n: row for row in session.execute(_CURRENT, params)}
    rows = [found[n] for n in range(1, len(writes) + 1)]
    holders: dict[str, uuid.UUID] = {}
    for row, body in zip(rows, bodies, strict=True):
        if row.slug_holder is not None:
            holders[body.slug] = row.slug_holder
        if row.id is not None:
            holders[row.slug] = row.id
    outcomes: list[Applied | IdmirrorError | None] = []
    writing: list[int] = []  # indexes of the writes that go on to the statement
    for index, row in enumerate(rows):
        key, body, version = keys[index], bodies[index], versions[index]
        outcome = _settled_before_writing(key, body, version, row, acting[index], holders)
        if outcome is None:
            writing.append(index)
        outcomes.append(outcome)
    if writing:
        items = [
            {
                "n": n,
                "id": str(keys[i].user_id),
                "email": bodies[i].email,
                "slug": bodies[i].slug,
                "plan": bodies[i].plan,
                "metadata": bodies[i].metadata,
                "external_owner": bodies[i].external_owner,
                "version": versions[i],
                "owner": acting[i].integrator,
            }
            for n, i in enumerate(writing)
        ]
        written = {row.id: row for row in session.execute(_UPSERT, {"items": json.dumps(items)})}
        for i in writing:
            current = rows[i] if rows[i].id is not None else None
            wrote = written.get(keys[i].user_id)
            assert wrote is not None or current is not None, "only a stored user can make it skip"
            outcomes[i] = upserted(wrote, current, versions[i], UserWriteOut)
    done = [outcome for outcome in outcomes if outcome is not None]
    assert len(done) == len(writes), "every write has its outcome"
    return done


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
        checked=body,
    )


def delete_submission(raw_user_id: str, idempotency_key: str | None) -> Submission:
    key = UserKey.parse(raw_user_id)
    return Submission(key=str(key), kind="user.delete", payload={}, idempotency_key=idempotency_key)
