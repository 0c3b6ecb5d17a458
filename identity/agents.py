"""Agents: addressed by {slug}@{user_slug}, soft-deleted with tombstones."""

import json
import secrets
import string
import uuid
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.access import OPERATOR, Actor, check_owner, may_write
from identity.answers import (
    Applied,
    DeleteOut,
    DeleteOutcome,
    SupersededOut,
    Timestamp,
    UpsertOutcome,
    stored,
    upserted,
)
from identity.errors import (
    AgentNotFound,
    IdmirrorError,
    OwnedByAnotherIntegrator,
    UserNotFound,
)
from identity.keys import AgentKey, AgentRef
from identity.ledger.jobs import Submission
from identity.ledger.tombstones import set_tombstone
from identity.pagination import Page, decode_cursor, page, text_value
from identity.schemas import AgentUpsert
from identity.webhooks import check_webhook_url

AGENT_COLUMNS = (
    "a.id, a.slug, a.user_id, u.slug AS user_slug, a.display_name, a.webhook_url, a.metadata, "
    "a.name, a.description, a.visibility, a.version, a.created_at, a.updated_at, a.deleted_at"
)
_ID_ALPHABET = (string.ascii_uppercase + string.ascii_lowercase + string.digits).encode()
_ID_TABLE = bytes(_ID_ALPHABET[b % 62] for b in range(256))
_ID_REJECT = bytes(range(248, 256))  # 248 = 4 * 62: the bytes below it map uniformly


def new_agent_ids(count: int) -> list[str]:
    """`count` fresh agent ids (agt_ + 12 base62), drawn without modulo bias."""
    out = bytearray()
    while len(out) < count * 12:
        out += secrets.token_bytes(count * 13 + 16).translate(_ID_TABLE, _ID_REJECT)
    chars = out.decode()
    return ["agt_" + chars[i * 12 : i * 12 + 12] for i in range(count)]


class AgentOut(BaseModel):
    """An agent as the API shows it; `deleted_at` is set on a tombstone."""

    id: str
    slug: str
    user_id: uuid.UUID
    user_slug: str
    display_name: str
    webhook_url: str | None
    metadata: dict[str, Any]
    name: str | None
    description: str | None
    visibility: Literal["public", "private"]
    version: int
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class AgentWriteOut(AgentOut):
    """The answer to an agent upsert: the agent as written, and what the write did."""

    created: bool
    outcome: UpsertOutcome


def agent_out(row: Any) -> AgentOut:
    """An agents row (joined with its user's slug) in its public form."""
    return AgentOut.model_validate(row._mapping)


# An upsert's stored result; on the worker's hot path, one per agent of a batch.
agent_result = partial(stored, AgentWriteOut)


# Reads see the agents of the owner `sees` names, or every agent when it is NULL (an admin).
_SEES = "(CAST(:sees AS text) IS NULL OR u.owner = :sees)"


def _latest(
    session: Session, key: AgentKey, *, include_deleted: bool, sees: str | None = None
) -> Any:
    """The live agent for a key, else (if asked) its most recent tombstone."""
    return session.execute(
        text(
            f"SELECT {AGENT_COLUMNS} FROM agents a JOIN users u ON u.id = a.user_id "
            f"WHERE u.slug = :user_slug AND a.slug = :slug AND {_SEES} "
            "AND (:include_deleted OR a.deleted_at IS NULL) "
            "ORDER BY a.deleted_at IS NULL DESC, a.version DESC LIMIT 1"
        ),
        {
            "user_slug": key.user_slug,
            "slug": key.slug,
            "include_deleted": include_deleted,
            "sees": sees,
        },
    ).one_or_none()


def check_agent_owner(session: Session, key: AgentKey, actor: Actor) -> None:
    """Refuse a write to an agent whose user another integrator owns (agents and graphs
    belong to their user's owner)."""
    if actor.admin:
        return
    user = session.execute(
        text("SELECT owner FROM users WHERE slug = :slug"), {"slug": key.user_slug}
    ).one_or_none()
    if user is not None:
        check_owner(actor, user.owner, "agent", key=key.path)


# The rule live writes and backfills share: write only when the body differs from the live
# agent and is not older than it. Goes after `INSERT INTO agents AS a (...) ...`.
ON_CONFLICT = """
    ON CONFLICT (user_id, slug) WHERE deleted_at IS NULL DO UPDATE
        SET display_name = excluded.display_name, webhook_url = excluded.webhook_url,
            metadata = excluded.metadata, version = excluded.version,
            line_digest = excluded.line_digest,
            updated_at = clock_timestamp()
        WHERE a.version <= excluded.version
          AND (a.display_name, a.webhook_url, a.metadata)
              IS DISTINCT FROM (excluded.display_name, excluded.webhook_url, excluded.metadata)
"""


# One agent upsert: its key, its body and its version.
AgentWrite = tuple[AgentKey, AgentUpsert, int]


def upsert_agent(
    session: Session, key: AgentKey, body: AgentUpsert, version: int, actor: Actor = OPERATOR
) -> Applied:
    """Create or replace an agent's mirrored fields; a write newer than a tombstone starts over."""
    outcome = upsert_agents(session, [(key, body, version)], [actor])[0]
    if isinstance(outcome, IdmirrorError):
        raise outcome
    return outcome


# Each item's owner and its latest row, live first, and the key's tombstone. Locking the owners
# (KEY SHARE) keeps a concurrent user delete out until the write commits.
_OWNERS_AND_CURRENT = text(
    """
    SELECT i.n, u.id AS owner, u.owner AS integrator, a.*, u.slug AS user_slug,
           t.version AS tombstone_version
    FROM unnest(CAST(:keys AS text[]), CAST(:slugs AS text[]), CAST(:user_slugs AS text[]))
         WITH ORDINALITY AS i(key, slug, user_slug, n)
    JOIN users u ON u.slug = i.user_slug
    LEFT JOIN LATERAL (
        SELECT a.id, a.slug, a.user_id, a.display_name, a.webhook_url, a.metadata, a.name,
               a.description, a.visibility, a.version, a.created_at, a.updated_at, a.deleted_at
        FROM agents a WHERE a.user_id = u.id AND a.slug = i.slug
        ORDER BY a.deleted_at IS NULL DESC, a.version DESC LIMIT 1
    ) a ON true
    LEFT JOIN key_tombstones t ON t.key = i.key
    FOR KEY SHARE OF u
    """
)
_UPSERT = text(
    f"""
    WITH items AS (
        SELECT * FROM json_to_recordset(CAST(:items AS json))
             AS i(id text, user_id uuid, slug text, user_slug text, display_name text,
                  webhook_url text, metadata jsonb, version bigint)
    ),
    written AS (
        INSERT INTO agents AS a (id, user_id, slug, display_name, webhook_url, metadata, version,
                                 created_at, updated_at)
        SELECT id, user_id, slug, display_name, webhook_url, metadata, version,
               clock_timestamp(), clock_timestamp()
        FROM items
        {ON_CONFLICT}
        RETURNING a.*, (xmax = 0) AS inserted
    )
    SELECT w.*, i.user_slug FROM written w
    JOIN items i ON i.user_id = w.user_id AND i.slug = w.slug
    """
)


def _settled_before_writing(
    key: AgentKey, version: int, row: Any, actor: Actor
) -> Applied | IdmirrorError | None:
    """The outcome of a write that its owner and current row decide alone (no user, a user of
    another integrator, or older than the key's tombstone or deleted row); None when it goes on
    to the statement."""
    if row is None:
        return UserNotFound(
            f"no user has slug {key.user_slug!r}; upsert the user first", user_slug=key.user_slug
        )
    if not may_write(actor, row.integrator):
        return OwnedByAnotherIntegrator("this agent belongs to another integrator", key=key.path)
    if row.id is not None and row.deleted_at is None:
        return None  # a live agent: the statement's own condition decides
    current = row if row.id is not None else None
    floor = max(
        -1 if row.tombstone_version is None else row.tombstone_version,
        current.version if current is not None else -1,
    )
    if floor <= version:
        return None
    if current is None:
        return Applied("superseded", SupersededOut().model_dump(mode="json"))
    return Applied("superseded", agent_result(current, created=False, outcome="superseded"))


def upsert_agents(
    session: Session, writes: list[AgentWrite], actors: list[Actor] | None = None
) -> list[Applied | IdmirrorError]:
    """Upsert agents of distinct keys in two statements: read the owners and current
    rows of all, then write those that may write (each by its actor, if given: the operator's
    otherwise). An outcome per write, in order."""
    if not writes:
        return []
    acting = actors or [OPERATOR] * len(writes)
    keys, bodies, versions = (list(column) for column in zip(*writes, strict=True))
    params = {
        "keys": [str(key) for key in keys],
        "slugs": [key.slug for key in keys],
        "user_slugs": [key.user_slug for key in keys],
    }
    found = {row.n: row for row in session.execute(_OWNERS_AND_CURRENT, params)}
    outcomes: list[Applied | IdmirrorError | None] = []
    writing: list[int] = []  # indexes of the writes that go on to the statement
    for index, (key, version) in enumerate(zip(keys, versions, strict=True)):
        outcome = _settled_before_writing(key, version, found.get(index + 1), acting[index])
        if outcome is None:
            writing.append(index)
        outcomes.append(outcome)
    if writing:
        items = []
        for i, agent_id in zip(writing, new_agent_ids(len(writing)), strict=True):
            body = bodies[i]
            items.append(
                {
                    "id": agent_id,
                    "user_id": str(found[i + 1].owner),
                    "slug": keys[i].slug,
                    "user_slug": keys[i].user_slug,
                    "display_name": body.display_name,
                    "webhook_url": body.webhook_url,
                    "metadata": body.metadata,
                    "version": versions[i],
                }
            )
        rows = session.execute(_UPSERT, {"items": json.dumps(items)})
        written = {(row.user_id, row.slug): row for row in rows}
        for i in writing:
            row = found[i + 1]
            live = row if row.id is not None and row.deleted_at is None else None
            wrote = written.get((row.owner, keys[i].slug))
            assert wrote is not None or live is not None, "only a live agent can make it skip"
            outcomes[i] = upserted(wrote, live, versions[i], AgentWriteOut)
    done = [outcome for outcome in outcomes if outcome is not None]
    assert len(done) == len(writes), "every write has its outcome"
    return done


def delete_agent(session: Session, key: AgentKey, version: int, actor: Actor = OPERATOR) -> Applied:
    """Soft-delete: the row stays as a tombstone and the key remembers the delete's version."""
    check_agent_owner(session, key, actor)
    live = _latest(session, key, include_deleted=False)
    if live is not None and live.version > version:
        return Applied("superseded", _deleted(live.id, "superseded"))
    set_tombstone(session, str(key), version)
    if live is None:
        return Applied("unchanged", _deleted(None, "unchanged"))
    session.execute(
        text(
            "UPDATE agents SET deleted_at = clock_timestamp(), updated_at = clock_timestamp(), "
            "version = :version WHERE id = :id"
        ),
        {"id": live.id, "version": version},
    )
    return Applied("deleted", _deleted(live.id, "deleted"))


def _deleted(agent_id: str | None, outcome: DeleteOutcome) -> dict[str, Any]:
    return DeleteOut(id=agent_id, outcome=outcome).model_dump(mode="json")


def get_agent(
    session: Session, ref: AgentRef, *, include_deleted: bool = False, sees: str | None = None
) -> AgentOut:
    """The agent `ref` names (live, or its latest tombstone if asked), if `sees` (an
    integrator; None: anyone) may see it; AgentNotFound if none."""
    if ref.key is not None:
        row = _latest(session, ref.key, include_deleted=include_deleted, sees=sees)
    else:
        row = session.execute(
            text(
                f"SELECT {AGENT_COLUMNS} FROM agents a JOIN users u ON u.id = a.user_id "
                f"WHERE a.id = :id AND (:include_deleted OR a.deleted_at IS NULL) AND {_SEES}"
            ),
            {"id": ref.agent_id, "include_deleted": include_deleted, "sees": sees},
        ).one_or_none()
    if row is None:
        raise AgentNotFound("no agent matches this ref", ref=ref.agent_id or ref.key.path)  # type: ignore[union-attr]
    return agent_out(row)


def list_agents(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    user_slug: str | None = None,
    include_deleted: bool = False,
    sees: str | None = None,
) -> Page[AgentOut]:
    """Agents in id order, a page at a time, of one user if asked; only those of the
    integrator `sees`, if given."""
    after = decode_cursor(cursor, text_value)
    rows = session.execute(
        text(
            f"SELECT {AGENT_COLUMNS} FROM agents a JOIN users u ON u.id = a.user_id "
            "WHERE (CAST(:user_slug AS text) IS NULL OR u.slug = :user_slug) "
            f"AND (:include_deleted OR a.deleted_at IS NULL) AND {_SEES} "
            "AND (CAST(:after AS text) IS NULL OR a.id > :after) ORDER BY a.id LIMIT :limit"
        ),
        {
            "user_slug": user_slug,
            "include_deleted": include_deleted,
            "sees": sees,
            "after": after[0] if after else None,
            "limit": limit + 1,
        },
    ).all()
    return page([agent_out(r) for r in rows], limit, lambda agent: [agent.id])


def upsert_submission(
    raw_key: str, body: AgentUpsert, idempotency_key: str | None, *, allow_private_webhooks: bool
) -> Submission:
    key = AgentKey.parse(raw_key)
    if body.webhook_url is not None:
        check_webhook_url(body.webhook_url, allow_private=allow_private_webhooks)
    return Submission(
        key=str(key),
        kind="agent.upsert",
        payload=body.model_dump(mode="json"),
        explicit_version=body.explicit_version(),
        idempotency_key=idempotency_key,
        checked=body,
    )


def delete_submission(raw_key: str, idempotency_key: str | None) -> Submission:
    key = AgentKey.parse(raw_key)
    return Submission(
        key=str(key), kind="agent.delete", payload={}, idempotency_key=idempotency_key
    )
