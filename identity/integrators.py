"""Integrators: the systems that write into idmirror, each with its own tokens, rate limit and
identities. Admin actions on them are audited; a change that can refuse tokens (disabling an
integrator) is announced on TOKENS_CHANNEL, so every API process drops what it cached."""

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity import audit
from identity.access import Actor
from identity.answers import Timestamp
from identity.errors import IntegratorExists, IntegratorNotFound, UserNotFound
from identity.keys import SLUG_RE
from identity.pagination import Page, decode_cursor, page, text_value
from identity.schemas import StrictBody

# API processes LISTEN here and forget the tokens they resolved: one was revoked, or an
# integrator disabled or changed.
TOKENS_CHANNEL = "idmirror_tokens"
_ANNOUNCE = text(f"SELECT pg_notify('{TOKENS_CHANNEL}', '')")
_COLUMNS = "name, display_name, created_at, disabled, rate_per_second, rate_burst"


class RateLimit(BaseModel):
    """A token bucket: `per_second` requests a second on average, up to `burst` at once."""

    model_config = ConfigDict(extra="forbid")

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=10_000_000)


class IntegratorCreate(StrictBody):
    """POST /v1/admin/integrators. Without `rate_limit`, the settings' default applies."""

    name: str = Field(pattern=SLUG_RE.pattern, max_length=64)
    display_name: str = Field(min_length=1, max_length=255)
    rate_limit: RateLimit | None = None


class IntegratorUpdate(StrictBody):
    """PATCH /v1/admin/integrators/{name}: the fields given change; `rate_limit: null` goes
    back to the settings' default."""

    display_name: str | None = Field(None, min_length=1, max_length=255)
    disabled: bool | None = None
    rate_limit: RateLimit | None = None


class IntegratorOut(BaseModel):
    """An integrator as the API shows it, with the rate limit in force."""

    name: str
    display_name: str
    created_at: Timestamp
    disabled: bool
    rate_limit: RateLimit


def integrator_out(row: Any, default: RateLimit) -> IntegratorOut:
    limit = default
    if row.rate_per_second is not None and row.rate_burst is not None:
        limit = RateLimit(per_second=row.rate_per_second, burst=row.rate_burst)
    return IntegratorOut(
        name=row.name,
        display_name=row.display_name,
        created_at=row.created_at,
        disabled=row.disabled,
        rate_limit=limit,
    )


def _row(session: Session, name: str, *, lock: bool = False) -> Any:
    row = session.execute(
        text(f"SELECT {_COLUMNS} FROM integrators WHERE name = :name" + (" FOR UPDATE" * lock)),
        {"name": name},
    ).one_or_none()
    if row is None:
        raise IntegratorNotFound("no integrator has this name", name=name)
    return row


def create_integrator(
    session: Session, body: IntegratorCreate, actor: Actor, origin: audit.Origin, default: RateLimit
) -> IntegratorOut:
    limit = body.rate_limit
    try:
        with session.begin_nested():
            row = session.execute(
                text(
                    "INSERT INTO integrators (name, display_name, rate_per_second, rate_burst) "
                    f"VALUES (:name, :display_name, :rate, :burst) RETURNING {_COLUMNS}"
                ),
                {
                    "name": body.name,
                    "display_name": body.display_name,
                    "rate": limit.per_second if limit else None,
                    "burst": limit.burst if limit else None,
                },
            ).one()
    except IntegrityError:
        raise IntegratorExists("an integrator has this name", name=body.name) from None
    details = body.model_dump(mode="json")
    audit.record(
        session, actor, origin, "integrator.create", key=f"integrator:{body.name}", details=details
    )
    return integrator_out(row, default)


def get_integrator(session: Session, name: str, default: RateLimit) -> IntegratorOut:
    return integrator_out(_row(session, name), default)


def list_integrators(
    session: Session, *, limit: int, cursor: str | None, default: RateLimit
) -> Page[IntegratorOut]:
    """Integrators in name order, a page at a time."""
    after = decode_cursor(cursor, text_value)
    rows = session.execute(
        text(
            f"SELECT {_COLUMNS} FROM integrators "
            "WHERE CAST(:after AS text) IS NULL OR name > :after ORDER BY name LIMIT :limit"
        ),
        {"after": after[0] if after else None, "limit": limit + 1},
    ).all()
    return page([integrator_out(r, default) for r in rows], limit, lambda i: [i.name])


def update_integrator(
    session: Session,
    name: str,
    body: IntegratorUpdate,
    actor: Actor,
    origin: audit.Origin,
    default: RateLimit,
) -> IntegratorOut:
    """Change what the body gives; tokens cached by API processes are dropped."""
    row = _row(session, name, lock=True)
    changes = body.model_dump(mode="json", exclude_unset=True)
    limit = body.rate_limit if "rate_limit" in changes else None
    keep_limit = "rate_limit" not in changes
    row = session.execute(
        text(
            "UPDATE integrators SET display_name = coalesce(:display_name, display_name), "
            "disabled = coalesce(:disabled, disabled), "
            "rate_per_second = CASE WHEN :keep THEN rate_per_second ELSE :rate END, "
            "rate_burst = CASE WHEN :keep THEN rate_burst ELSE :burst END "
            f"WHERE name = :name RETURNING {_COLUMNS}"
        ),
        {
            "name": name,
            "display_name": body.display_name,
            "disabled": body.disabled,
            "keep": keep_limit,
            "rate": limit.per_second if limit else None,
            "burst": limit.burst if limit else None,
        },
    ).one()
    session.execute(_ANNOUNCE)
    audit.record(
        session, actor, origin, "integrator.update", key=f"integrator:{name}", details=changes
    )
    return integrator_out(row, default)


class OwnerMove(BaseModel):
    """PUT /v1/admin/users/{user_id}/owner: the integrator that owns the user from now on
    (null: none), and with it the user's agents and graphs."""

    model_config = ConfigDict(extra="forbid")

    integrator: str | None = Field(pattern=SLUG_RE.pattern, max_length=64)


class OwnerOut(BaseModel):
    """A user and the integrator that owns it now (null: none)."""

    id: uuid.UUID
    owner: str | None


def move_user(
    session: Session, user_id: uuid.UUID, body: OwnerMove, actor: Actor, origin: audit.Origin
) -> OwnerOut:
    """Give a user (its agents and graphs with it) to another integrator, under the user's key
    lock, so no write of the key is applied halfway through."""
    if body.integrator is not None:
        _row(session, body.integrator)
    key = f"user:{user_id}"
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})
    before = session.execute(
        text("SELECT owner FROM users WHERE id = :id FOR UPDATE"), {"id": user_id}
    ).one_or_none()
    if before is None:
        raise UserNotFound("no user has this id", user_id=str(user_id))
    session.execute(
        text("UPDATE users SET owner = :owner WHERE id = :id"),
        {"owner": body.integrator, "id": user_id},
    )
    details = {"from": before.owner, "to": body.integrator}
    audit.record(session, actor, origin, "ownership.move", key=key, details=details)
    return OwnerOut(id=user_id, owner=body.integrator)
