"""SCIM writes of users: each a ledger job on the user's key (`user:<uuid>`), ordered with the
/v1 writes of the same user, applied here under the key's lock.

A replace or a patch is applied to the user as it is when its turn comes, not as it was when
the request arrived: a PATCH sent while a /v1 PUT of the same user is pending applies on top
of that PUT. `If-Match` is checked at the same moment, against the version being replaced.
"""

import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.access import Actor, check_owner
from identity.answers import Applied, upserted
from identity.errors import IdmirrorError
from identity.keys import UserKey, parse_ledger_key
from identity.ledger.apply import PendingJob
from identity.ledger.jobs import Submission
from identity.scim import errors
from identity.scim.payloads import Dialect, patched
from identity.scim.resources import require_match
from identity.scim.users import (
    SCIM_USER_COLUMNS,
    ScimUser,
    ScimUserFields,
    fields_of,
    plainly_patched,
    slug_for,
    to_scim,
)
from identity.users import UserWriteOut

# The namespace of the ids of users created with an Idempotency-Key: the same key names the
# same user, so the request repeated is the same job.
_IDEMPOTENT_IDS = uuid.UUID("1b7e4c0e-6f54-4d2a-9a8e-2c6f1d0a5e13")


class ScimUserWriteOut(UserWriteOut):
    """The result a SCIM write of a user keeps in the ledger: the row, SCIM columns included."""

    active: bool | None
    user_name: str | None
    external_id: str | None
    scim: dict[str, Any]


def create_submission(fields: ScimUserFields, idempotency_key: str | None) -> Submission:
    """POST /Users: a new user, with an id of its own (derived from the Idempotency-Key when
    there is one)."""
    user_id = uuid.uuid5(_IDEMPOTENT_IDS, idempotency_key) if idempotency_key else uuid.uuid4()
    return Submission(
        key=str(UserKey(user_id)),
        kind="user.scim_create",
        payload={"fields": fields.model_dump(mode="json")},
        idempotency_key=idempotency_key,
    )


def replace_submission(
    key: UserKey, fields: ScimUserFields, if_match: str | None, idempotency_key: str | None
) -> Submission:
    """PUT /Users/{id}: replaces an existing user; never creates one."""
    return Submission(
        key=str(key),
        kind="user.scim_replace",
        payload={"fields": fields.model_dump(mode="json"), "if_match": if_match},
        idempotency_key=idempotency_key,
    )


def patch_submission(
    key: UserKey,
    operations: list[dict[str, Any]],
    dialect: Dialect,
    if_match: str | None,
    idempotency_key: str | None,
    checked: Any = None,
) -> Submission:
    """PATCH /Users/{id}: operations checked already (`checked`, their PatchOp), applied when
    the job's turn comes."""
    return Submission(
        key=str(key),
        kind="user.scim_patch",
        payload={"operations": operations, "dialect": dialect, "if_match": if_match},
        idempotency_key=idempotency_key,
        checked=checked,
    )


_SELECT = text(f"SELECT {SCIM_USER_COLUMNS}, owner FROM users WHERE id = :id")
# A stored user is rewritten unless it is newer or already holds what is written; the new row
# (or the rewritten one) is returned.
_UNLESS_NEWER_OR_SAME = f"""
    ON CONFLICT (id) DO UPDATE
        SET email = excluded.email, active = excluded.active, user_name = excluded.user_name,
            external_id = excluded.external_id, scim = excluded.scim,
            version = excluded.version, updated_at = clock_timestamp(),
            -- The row no longer holds what a backfill line wrote, nor that line's version.
            line_digest = NULL
        WHERE u.version <= excluded.version
          AND (u.email, u.active, u.user_name, u.external_id, u.scim)
              IS DISTINCT FROM
              (excluded.email, excluded.active, excluded.user_name, excluded.external_id,
               excluded.scim)
    RETURNING {SCIM_USER_COLUMNS}, (xmax = 0) AS inserted
"""
_WRITE = text(
    f"""
    INSERT INTO users AS u (id, email, slug, plan, metadata, version, created_at, updated_at,
                            active, user_name, external_id, scim, owner)
    VALUES (:id, :email, :slug, 'free', '{{}}', :version, clock_timestamp(), clock_timestamp(),
            :active, :user_name, :external_id, CAST(:scim AS jsonb), :owner)
    {_UNLESS_NEWER_OR_SAME}
    """
)


def _write(
    session: Session,
    key: UserKey,
    fields: ScimUserFields,
    version: int,
    current: Any,
    owner: str | None,
) -> Applied:
    params = {
        "owner": owner,  # a new user's; a user keeps the one it has
        "id": key.user_id,
        "email": fields.email(),
        "active": fields.active,
        "user_name": fields.user_name,
        "external_id": fields.external_id,
        "scim": json.dumps(fields.profile),
        "version": version,
    }
    for suffixed in (False, True):
        slug = (
            current.slug
            if current is not None
            else slug_for(fields.user_name, key.user_id, suffixed=suffixed)
        )
        try:
            with session.begin_nested():
                row = session.execute(_WRITE, {**params, "slug": slug}).one_or_none()
            return upserted(row, current, version, ScimUserWriteOut)
        except IntegrityError as exc:
            constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
            if constraint != "users_slug_key" or current is not None:
                raise errors.UserNameTaken(
                    f"userName {fields.user_name!r} belongs to another user",
                    user_name=fields.user_name,
                ) from None
    raise errors.UserNameTaken("no free slug for this userName", user_name=fields.user_name)


def _write_one(
    session: Session,
    key: UserKey,
    payload: dict[str, Any],
    version: int,
    actor: Actor,
    fields: "Fields",
) -> Applied:
    current = session.execute(_SELECT, {"id": key.user_id}).one_or_none()
    wanted = fields(payload, actor, key, current, None)
    return _write(session, key, wanted, version, current, actor.integrator)


def create_user(
    session: Session, key: UserKey, payload: dict[str, Any], version: int, actor: Actor
) -> Applied:
    """Create the user a POST /Users described, owned by the actor's integrator."""
    return _write_one(session, key, payload, version, actor, _created)


def replace_user(
    session: Session, key: UserKey, payload: dict[str, Any], version: int, actor: Actor
) -> Applied:
    """Replace a user's SCIM attributes; ScimNotFound when it does not exist."""
    return _write_one(session, key, payload, version, actor, _replaced)


def patch_user(
    session: Session, key: UserKey, payload: dict[str, Any], version: int, actor: Actor
) -> Applied:
    """Apply PATCH operations to the user as it is now."""
    return _write_one(session, key, payload, version, actor, _patched)


# The set-based form of the writes above, for jobs of distinct users applied together: one
# statement reads every user, one writes them all. A slug or userName another row holds fails
# the statement; the drain then applies the jobs one by one, where a slug is suffixed.
_SELECT_MANY = text(f"SELECT {SCIM_USER_COLUMNS}, owner FROM users WHERE id = ANY(:ids)")
_WRITE_MANY = text(
    f"""
    INSERT INTO users AS u (id, email, slug, plan, metadata, version, created_at, updated_at,
                            active, user_name, external_id, scim, owner)
    SELECT i.id, i.email, i.slug, 'free', '{{}}', i.version, clock_timestamp(),
           clock_timestamp(), i.active, i.user_name, i.external_id, i.scim, i.owner
    FROM json_to_recordset(CAST(:items AS json))
        AS i(id uuid, email text, slug text, version bigint, active boolean, user_name text,
             external_id text, scim jsonb, owner text)
    {_UNLESS_NEWER_OR_SAME}
    """
)

# What a write of each kind stores, given its payload, its actor, its key, the user as it is
# (None when there is none) and the PatchOp its request was checked as (if at hand): the
# fields, or the write's error. The same checks one by one and together.
Fields = Callable[[dict[str, Any], Actor, UserKey, Any, Any], ScimUserFields]


def _created(
    payload: dict[str, Any], actor: Actor, key: UserKey, current: Any, _: Any
) -> ScimUserFields:
    if current is not None:
        check_owner(actor, current.owner, "user", user_id=str(key.user_id))
    return ScimUserFields.model_validate(payload["fields"])


def _existing(payload: dict[str, Any], actor: Actor, key: UserKey, current: Any) -> None:
    if current is None:
        raise errors.ScimNotFound("no user has this id", id=str(key.user_id))
    check_owner(actor, current.owner, "user", user_id=str(key.user_id))
    require_match(payload.get("if_match"), current.version, "user")


def _replaced(
    payload: dict[str, Any], actor: Actor, key: UserKey, current: Any, _: Any
) -> ScimUserFields:
    _existing(payload, actor, key, current)
    return ScimUserFields.model_validate(payload["fields"])


def _patched(
    payload: dict[str, Any], actor: Actor, key: UserKey, current: Any, checked: Any
) -> ScimUserFields:
    _existing(payload, actor, key, current)
    plainly = plainly_patched(current, payload["operations"])
    if plainly is not None:
        return plainly
    dialect: Dialect = payload.get("dialect", "strict")
    user = patched(ScimUser, to_scim(current, ""), payload["operations"], dialect, checked)
    return fields_of(user)


def _write_together(
    session: Session, jobs: list[PendingJob], fields: Fields
) -> list[Applied | IdmirrorError]:
    keys = [parse_ledger_key(job.key) for job in jobs]
    assert all(isinstance(key, UserKey) for key in keys), "SCIM user jobs are addressed to users"
    user_keys: list[UserKey] = keys  # type: ignore[assignment]  # checked just above
    ids = [key.user_id for key in user_keys]
    found = {row.id: row for row in session.execute(_SELECT_MANY, {"ids": ids})}
    outcomes: list[Applied | IdmirrorError | None] = []
    items = []
    for job, key in zip(jobs, user_keys, strict=True):
        current = found.get(key.user_id)
        try:
            wanted = fields(job.payload, job.actor, key, current, job.checked)
        except IdmirrorError as exc:
            outcomes.append(exc)
            continue
        outcomes.append(None)
        slug = current.slug if current is not None else slug_for(wanted.user_name, key.user_id)
        items.append(
            {
                "id": str(key.user_id),
                "email": wanted.email(),
                "slug": slug,
                "version": job.version,
                "active": wanted.active,
                "user_name": wanted.user_name,
                "external_id": wanted.external_id,
                "scim": wanted.profile,
                "owner": job.actor.integrator,  # a new user's; a user keeps the one it has
            }
        )
    written: dict[uuid.UUID, Any] = {}
    if items:
        rows = session.execute(_WRITE_MANY, {"items": json.dumps(items)})
        written = {row.id: row for row in rows}
    return [
        outcome
        if outcome is not None
        else upserted(
            written.get(key.user_id), found.get(key.user_id), job.version, ScimUserWriteOut
        )
        for job, key, outcome in zip(jobs, user_keys, outcomes, strict=True)
    ]


def create_users(session: Session, jobs: list[PendingJob]) -> list[Applied | IdmirrorError]:
    """POST /Users jobs of distinct users, applied together."""
    return _write_together(session, jobs, _created)


def replace_users(session: Session, jobs: list[PendingJob]) -> list[Applied | IdmirrorError]:
    """PUT /Users/{id} jobs of distinct users, applied together."""
    return _write_together(session, jobs, _replaced)


def patch_users(session: Session, jobs: list[PendingJob]) -> list[Applied | IdmirrorError]:
    """PATCH /Users/{id} jobs of distinct users, applied together."""
    return _write_together(session, jobs, _patched)
