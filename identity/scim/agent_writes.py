"""SCIM writes of agents: each a ledger job on the agent's key (`agent:<slug>@<user_slug>`),
ordered with the /v1 writes of the same agent, applied here under the key's lock.

The key comes from the request (a create's `name` and owner; the id's live agent for the
others), and the job names the agent's id too: a replace, patch or delete whose agent was
deleted (and its key perhaps written again, as a new agent) before its turn came finds no
agent of that id, 404. `If-Match` is checked when the job's turn comes.
"""

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.access import Actor
from identity.agents import AgentWriteOut, check_agent_owner, delete_agent, new_agent_ids
from identity.answers import Applied, DeleteOut, upserted
from identity.errors import UserNotFound
from identity.keys import AgentKey
from identity.ledger.jobs import Submission
from identity.scim import errors
from identity.scim.agents import (
    SCIM_AGENT_COLUMNS,
    ScimAgent,
    ScimAgentFields,
    fields_of,
    named_key,
    owner_id,
    to_scim,
)
from identity.scim.payloads import patched
from identity.scim.resources import require_match


class ScimAgentWriteOut(AgentWriteOut):
    """The result a SCIM write of an agent keeps in the ledger: the row, SCIM columns and its
    owner's userName included."""

    active: bool | None
    external_id: str | None
    scim: dict[str, Any]
    owner_name: str


def create_submission(
    key: AgentKey, fields: ScimAgentFields, idempotency_key: str | None
) -> Submission:
    """POST /Agents: a new agent on `key`, which must have none."""
    return Submission(
        key=str(key),
        kind="agent.scim_create",
        payload={"fields": fields.model_dump(mode="json")},
        idempotency_key=idempotency_key,
    )


def change_submission(
    kind: str, key: AgentKey, agent_id: str, idempotency_key: str | None, **payload: Any
) -> Submission:
    """PUT, PATCH or DELETE /Agents/{id} (`kind` agent.scim_replace, agent.scim_patch or
    agent.scim_delete): a change of the live agent `agent_id`, on its key."""
    return Submission(
        key=str(key),
        kind=kind,
        payload={"agent_id": agent_id, **payload},
        idempotency_key=idempotency_key,
    )


_FROM = "FROM agents a JOIN users u ON u.id = a.user_id"
_LIVE = text(
    f"SELECT {SCIM_AGENT_COLUMNS} {_FROM} "
    "WHERE u.slug = :user_slug AND a.slug = :slug AND a.deleted_at IS NULL"
)
_CREATE = text(
    f"""
    WITH written AS (
        INSERT INTO agents AS a (id, user_id, slug, display_name, webhook_url, metadata, version,
                                 created_at, updated_at, active, external_id, scim)
        SELECT :id, u.id, :slug, :display_name, :webhook_url, '{{}}', :version,
               clock_timestamp(), clock_timestamp(), :active, :external_id, CAST(:scim AS jsonb)
        FROM users u WHERE u.slug = :user_slug
        RETURNING a.*
    )
    SELECT {SCIM_AGENT_COLUMNS.replace("a.", "w.")}, true AS inserted
    FROM written w JOIN users u ON u.id = w.user_id
    """
)
_CHANGE = text(
    f"""
    WITH written AS (
        UPDATE agents AS a
        SET display_name = :display_name, webhook_url = :webhook_url, active = :active,
            external_id = :external_id, scim = CAST(:scim AS jsonb), version = :version,
            updated_at = clock_timestamp(),
            -- The row no longer holds what a backfill line wrote, nor that line's version.
            line_digest = NULL
        WHERE a.id = :id AND a.version <= :version
          AND (a.display_name, a.webhook_url, a.active, a.external_id, a.scim)
              IS DISTINCT FROM
              (:display_name, :webhook_url, :active, :external_id, CAST(:scim AS jsonb))
        RETURNING a.*
    )
    SELECT {SCIM_AGENT_COLUMNS.replace("a.", "w.")}, false AS inserted
    FROM written w JOIN users u ON u.id = w.user_id
    """
)


def _params(key: AgentKey, fields: ScimAgentFields, version: int) -> dict[str, Any]:
    return {
        "slug": key.slug,
        "user_slug": key.user_slug,
        "display_name": fields.display_name or key.slug,
        "webhook_url": fields.webhook_url,
        "active": fields.active,
        "external_id": fields.external_id,
        "scim": json.dumps(fields.profile),
        "version": version,
    }


def create_agent(
    session: Session, key: AgentKey, payload: dict[str, Any], version: int, actor: Actor
) -> Applied:
    """Create the agent a POST /Agents described; uniqueness when its key has one."""
    check_agent_owner(session, key, actor)
    if session.execute(_LIVE, {"slug": key.slug, "user_slug": key.user_slug}).first():
        raise errors.AgentNameTaken(f"an agent named {key.path!r} exists", name=key.path)
    fields = ScimAgentFields.model_validate(payload["fields"])
    params = {**_params(key, fields, version), "id": new_agent_ids(1)[0]}
    try:
        with session.begin_nested():
            row = session.execute(_CREATE, params).one_or_none()
    except IntegrityError:  # a backfill wrote the key outside its lock
        raise errors.AgentNameTaken(f"an agent named {key.path!r} exists", name=key.path) from None
    if row is None:
        raise UserNotFound(f"no user has slug {key.user_slug!r}", user_slug=key.user_slug)
    return upserted(row, None, version, ScimAgentWriteOut)


def _current(session: Session, key: AgentKey, payload: dict[str, Any], actor: Actor) -> Any:
    check_agent_owner(session, key, actor)
    row = session.execute(_LIVE, {"slug": key.slug, "user_slug": key.user_slug}).one_or_none()
    if row is None or row.id != payload["agent_id"]:
        raise errors.ScimNotFound("no agent has this id", id=payload["agent_id"])
    require_match(payload.get("if_match"), row.version, "agent")
    return row


def _change(
    session: Session, key: AgentKey, fields: ScimAgentFields, version: int, current: Any
) -> Applied:
    params = {**_params(key, fields, version), "id": current.id}
    row = session.execute(_CHANGE, params).one_or_none()
    return upserted(row, current, version, ScimAgentWriteOut)


def check_same_key(agent: ScimAgent, key: AgentKey, owner: str) -> None:
    """Refuse a `name` or `owners` naming another key than `key`, whose owner has the id
    `owner`: an agent's key is its identity in idmirror, and never changes."""
    try:
        same = named_key(agent.name, key.user_slug) == key and owner_id(agent) in (None, owner)
    except errors.InvalidValue:
        same = False
    if not same:
        raise errors.Mutability(
            f"an agent's name (its key, {key.path!r}) and owner cannot change", name=agent.name
        )


def replace_agent(
    session: Session, key: AgentKey, payload: dict[str, Any], version: int, actor: Actor
) -> Applied:
    """Replace a live agent's SCIM attributes; ScimNotFound when it is gone."""
    current = _current(session, key, payload, actor)
    fields = ScimAgentFields.model_validate(payload["fields"])
    return _change(session, key, fields, version, current)


def patch_agent(
    session: Session, key: AgentKey, payload: dict[str, Any], version: int, actor: Actor
) -> Applied:
    """Apply PATCH operations to the agent as it is now."""
    current = _current(session, key, payload, actor)
    agent = patched(ScimAgent, to_scim(current, ""), payload["operations"], "strict")
    check_same_key(agent, key, str(current.user_id))
    return _change(session, key, fields_of(agent), version, current)


def scim_delete_agent(
    session: Session, key: AgentKey, payload: dict[str, Any], version: int, actor: Actor
) -> Applied:
    """Delete the live agent of this id; nothing (`unchanged`) when it is gone."""
    try:
        _current(session, key, payload, actor)
    except errors.ScimNotFound:
        return Applied("unchanged", DeleteOut(outcome="unchanged").model_dump(mode="json"))
    return delete_agent(session, key, version, actor)
