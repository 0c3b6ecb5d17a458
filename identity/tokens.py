"""Integrators' bearer tokens: a random secret shown once, stored only as its SHA-256.

A token is `idm_` and 43 URL-safe characters (32 random bytes). With that much entropy a plain
SHA-256 cannot be reversed or guessed, so no salt or slow hash is needed, and a token is found by
its hash alone: the tokens table, or a dump of it, holds nothing that authenticates. API
processes resolve a token with RESOLVE (api/auth.py caches the answer briefly);
that statement also marks the token used, at most once a minute.
"""

import hashlib
import secrets
import uuid
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity import audit
from identity.access import SCOPES, Actor
from identity.answers import Timestamp
from identity.errors import IntegratorNotFound, TokenNotFound, ValidationFailed
from identity.integrators import TOKENS_CHANNEL
from identity.pagination import Page, decode_cursor, page
from identity.schemas import StrictBody

PREFIX = "idm_"
_COLUMNS = "id, integrator, scopes, name, created_at, expires_at, last_used_at, revoked_at"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class TokenCreate(StrictBody):
    """POST /v1/admin/tokens."""

    integrator: str = Field(max_length=64)
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES))
    name: str | None = Field(None, max_length=255)
    expires_at: AwareDatetime | None = None

    def check(self, now: datetime) -> None:
        unknown = sorted(set(self.scopes) - set(SCOPES))
        if unknown:
            raise ValidationFailed(
                f"unknown scopes: {', '.join(unknown)}",
                errors=[{"loc": "body.scopes", "message": f"one of {', '.join(SCOPES)}"}],
            )
        if self.expires_at is not None and self.expires_at <= now:
            raise ValidationFailed(
                "expires_at is in the past",
                errors=[{"loc": "body.expires_at", "message": "must be in the future"}],
            )


class TokenOut(BaseModel):
    """A token as listed: never its secret."""

    id: uuid.UUID
    integrator: str
    scopes: list[str]
    name: str | None
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class TokenCreatedOut(TokenOut):
    """The answer to a create: the only time the secret is shown."""

    token: str


def create_token(
    session: Session, body: TokenCreate, actor: Actor, origin: audit.Origin, now: datetime
) -> TokenCreatedOut:
    body.check(now)
    exists = session.execute(
        text("SELECT 1 FROM integrators WHERE name = :name"), {"name": body.integrator}
    ).scalar()
    if exists is None:
        raise IntegratorNotFound("no integrator has this name", name=body.integrator)
    secret = new_secret()
    scopes = [scope for scope in SCOPES if scope in body.scopes]  # in a stable order, once each
    row = session.execute(
        text(
            "INSERT INTO tokens (id, integrator, secret_hash, scopes, name, expires_at) "
            "VALUES (:id, :integrator, :hash, :scopes, :name, :expires_at) "
            f"RETURNING {_COLUMNS}"
        ),
        {
            "id": uuid.uuid4(),
            "integrator": body.integrator,
            "hash": secret_hash(secret),
            "scopes": scopes,
            "name": body.name,
            "expires_at": body.expires_at,
        },
    ).one()
    details = {"token_id": str(row.id), "scopes": scopes, "name": body.name}
    audit.record(
        session, actor, origin, "token.create", key=f"integrator:{body.integrator}", details=details
    )
    return TokenCreatedOut.model_validate({**row._mapping, "token": secret})


def list_tokens(
    session: Session, *, limit: int, cursor: str | None, integrator: str | None = None
) -> Page[TokenOut]:
    """Newest first; of one integrator if asked."""
    after = decode_cursor(cursor, datetime.fromisoformat, uuid.UUID)
    rows = session.execute(
        text(
            f"SELECT {_COLUMNS} FROM tokens "
            "WHERE (CAST(:integrator AS text) IS NULL OR integrator = :integrator) "
            "AND (CAST(:after_at AS timestamptz) IS NULL "
            "     OR (created_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))) "
            "ORDER BY created_at DESC, id DESC LIMIT :limit"
        ),
        {
            "integrator": integrator,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        },
    ).all()
    tokens = [TokenOut.model_validate(row._mapping) for row in rows]
    return page(tokens, limit, lambda t: [t.created_at.isoformat(), str(t.id)])


def revoke_token(session: Session, token_id: uuid.UUID, actor: Actor, origin: audit.Origin) -> None:
    """Revoke a token for good (again: nothing changes); every API process forgets it."""
    row = session.execute(
        text(
            "UPDATE tokens SET revoked_at = coalesce(revoked_at, clock_timestamp()) "
            "WHERE id = :id RETURNING integrator"
        ),
        {"id": token_id},
    ).one_or_none()
    if row is None:
        raise TokenNotFound("no token has this id", token_id=str(token_id))
    session.execute(text(f"SELECT pg_notify('{TOKENS_CHANNEL}', '')"))
    audit.record(
        session,
        actor,
        origin,
        "token.revoke",
        key=f"integrator:{row.integrator}",
        details={"token_id": str(token_id)},
    )


# A token as an API process needs it, by the hash of its secret; a token in use is marked used
# at most once a minute, in the same statement (on a connection in autocommit mode).
RESOLVE = text(
    """
    WITH found AS (
        SELECT t.id, t.integrator, t.scopes, t.expires_at, t.revoked_at, t.last_used_at,
               i.disabled, i.rate_per_second, i.rate_burst
        FROM tokens t JOIN integrators i ON i.name = t.integrator
        WHERE t.secret_hash = :hash
    ),
    used AS (
        UPDATE tokens SET last_used_at = clock_timestamp()
        WHERE id = (SELECT id FROM found WHERE revoked_at IS NULL
                    AND (last_used_at IS NULL
                         OR last_used_at < clock_timestamp() - interval '1 minute'))
    )
    SELECT * FROM found
    """
)
