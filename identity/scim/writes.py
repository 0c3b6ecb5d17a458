"""SCIM writes of users: each a ledger job on the user's key (`user:<uuid>`), ordered with the
/v1 writes of the same user, applied here under the key's lock.

A replace or a patch is applied to the user as it is when its turn comes, not as it was when
the request arrived: a PATCH sent while a /v1 PUT of the same user is pending applies on top
of that PUT. `If-Match` is checked at the same moment, against the version being replaced.
"""

import json
import uuid
from typing import Any, Literal

from pydantic import ValidationError
from scim2_models import Context, PatchOp, SCIMException, ScimPolicy
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.answers import Applied, upserted
from identity.keys import UserKey
from identity.ledger.jobs import Submission
from identity.scim import errors
from identity.scim.users import (
    SCIM_USER_COLUMNS,
    ScimUser,
    ScimUserFields,
    fields_of,
    if_match_holds,
    slug_for,
    to_scim,
)
from identity.users import UserWriteOut

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# The namespace of the ids of users created with an Idempotency-Key: the same key names the
# same user, so the request repeated is the same job.
_IDEMPOTENT_IDS = uuid.UUID("1b7e4c0e-6f54-4d2a-9a8e-2c6f1d0a5e13")
Dialect = Literal["strict", "entra"]
# Microsoft Entra's PATCH: a `remove` whose `value` says what to remove, and an `add` or
# `replace` through a filter no entry matches creating that entry.
_POLICIES = {
    "strict": ScimPolicy(),
    "entra": ScimPolicy(remove_value_as_filter="apply", unmatched_path_filter="create"),
}


class ScimUserWriteOut(UserWriteOut):
    """The result a SCIM write of a user keeps in the ledger: the row, SCIM columns included."""

    active: bool
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
) -> Submission:
    """PATCH /Users/{id}: operations checked already, applied when the job's turn comes."""
    return Submission(
        key=str(key),
        kind="user.scim_patch",
        payload={"operations": operations, "dialect": dialect, "if_match": if_match},
        idempotency_key=idempotency_key,
    )


def parse_patch(payload: dict[str, Any], dialect: Dialect) -> PatchOp[ScimUser]:
    """A PatchOp request body, checked; a SCIM error when it is not valid."""
    try:
        with _POLICIES[dialect]:
            return PatchOp[ScimUser].model_validate(
                payload, scim_ctx=Context.RESOURCE_PATCH_REQUEST
            )
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None
    except SCIMException as exc:
        raise errors.from_exception(exc) from None


_SELECT = text(f"SELECT {SCIM_USER_COLUMNS} FROM users WHERE id = :id")
_WRITE = text(
    f"""
    INSERT INTO users AS u (id, email, slug, plan, metadata, version, created_at, updated_at,
                            active, user_name, external_id, scim)
    VALUES (:id, :email, :slug, 'free', '{{}}', :version, clock_timestamp(), clock_timestamp(),
            :active, :user_name, :external_id, CAST(:scim AS jsonb))
    ON CONFLICT (id) DO UPDATE
        SET email = excluded.email, active = excluded.active, user_name = excluded.user_name,
            external_id = excluded.external_id, scim = excluded.scim,
            version = excluded.version, updated_at = clock_timestamp()
        WHERE u.version <= excluded.version
          AND (u.email, u.active, u.user_name, u.external_id, u.scim)
              IS DISTINCT FROM
              (excluded.email, excluded.active, excluded.user_name, excluded.external_id,
               excluded.scim)
    RETURNING {SCIM_USER_COLUMNS}, (xmax = 0) AS inserted
    """
)


def _current(session: Session, key: UserKey, if_match: str | None) -> Any:
    row = session.execute(_SELECT, {"id": key.user_id}).one_or_none()
    if row is None:
        raise errors.ScimNotFound("no user has this id", id=str(key.user_id))
    if not if_match_holds(if_match, row.version):
        raise errors.PreconditionFailed(
            "If-Match names another version of this user", version=row.version
        )
    return row


def _write(
    session: Session, key: UserKey, fields: ScimUserFields, version: int, current: Any
) -> Applied:
    params = {
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


def create_user(session: Session, key: UserKey, payload: dict[str, Any], version: int) -> Applied:
    """Create the user a POST /Users described."""
    fields = ScimUserFields.model_validate(payload["fields"])
    current = session.execute(_SELECT, {"id": key.user_id}).one_or_none()
    return _write(session, key, fields, version, current)


def replace_user(session: Session, key: UserKey, payload: dict[str, Any], version: int) -> Applied:
    """Replace a user's SCIM attributes; ScimNotFound when it does not exist."""
    current = _current(session, key, payload.get("if_match"))
    fields = ScimUserFields.model_validate(payload["fields"])
    return _write(session, key, fields, version, current)


def patch_user(session: Session, key: UserKey, payload: dict[str, Any], version: int) -> Applied:
    """Apply PATCH operations to the user as it is now."""
    current = _current(session, key, payload.get("if_match"))
    dialect: Dialect = payload.get("dialect", "strict")
    user = to_scim(current, "")
    patch = parse_patch({"schemas": [PATCH_SCHEMA], "Operations": payload["operations"]}, dialect)
    try:
        with _POLICIES[dialect]:
            patch.patch(user)
        fields = fields_of(user)
    except SCIMException as exc:
        raise errors.from_exception(exc) from None
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None
    return _write(session, key, fields, version, current)
