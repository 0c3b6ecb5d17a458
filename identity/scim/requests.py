"""A SCIM write as it arrives (its method, resource id, body, If-Match, Idempotency-Key and
User-Agent) made into its ledger Submission: what is checked before the job is recorded, the
one path a route and an operation of /Bulk share.

A user's id is its key; an agent's key is read from its live row (or, on create, from its
`name` and owner) when the request arrives.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from scim2_models import Context
from sqlalchemy.orm import Session

from identity import users as rest_users
from identity.keys import AgentKey, UserKey
from identity.ledger.jobs import Submission
from identity.scim import agent_writes, queries, writes
from identity.scim.agents import ScimAgent, named_key, owner_id
from identity.scim.agents import fields_of as agent_fields
from identity.scim.payloads import Dialect, patch_operations, validated
from identity.scim.resources import require_match
from identity.scim.users import ScimUser
from identity.scim.users import fields_of as user_fields

Method = Literal["POST", "PUT", "PATCH", "DELETE"]
# Microsoft Entra's User-Agent, or a PATCH with capitalised ops ("Replace"), which only Entra
# sends: their PATCH is read as Entra means it (see docs/scim.md, "Provider quirks").
_ENTRA_AGENTS = ("azure active directory", "microsoft entra", "aad scim")
_AGENT_CHANGES = {"PUT": "agent.scim_replace", "PATCH": "agent.scim_patch"}
_AGENT_CHANGES["DELETE"] = "agent.scim_delete"


@dataclass(frozen=True)
class WriteRequest:
    """One SCIM write: `resource_id` is None for a create, `body` empty for a delete; `sees`
    the integrator whose identities its token sees (None: an admin's, who sees all)."""

    method: Method
    resource_id: str | None
    body: dict[str, Any]
    if_match: str | None = None
    idempotency_key: str | None = None
    user_agent: str = ""
    sees: str | None = None


def dialect_of(user_agent: str, body: dict[str, Any]) -> Dialect:
    """How a PATCH is read: as Microsoft Entra means it, or as RFC 7644 says."""
    operations = body.get("Operations")
    capitalised = isinstance(operations, list) and any(
        isinstance(op, dict) and str(op.get("op", ""))[:1].isupper() for op in operations
    )
    agent = user_agent.lower()
    return "entra" if capitalised or any(name in agent for name in _ENTRA_AGENTS) else "strict"


def user_submission(session: Session, request: WriteRequest) -> Submission:
    """The job of a write to /Users."""
    idempotency_key, if_match = request.idempotency_key, request.if_match
    if request.method == "POST":
        user = validated(ScimUser, request.body, Context.RESOURCE_CREATION_REQUEST)
        return writes.create_submission(user_fields(user), idempotency_key)
    key = UserKey(queries.parse_id(request.resource_id or ""))
    match request.method:
        case "PUT":
            user = validated(ScimUser, request.body, Context.RESOURCE_REPLACEMENT_REQUEST)
            return writes.replace_submission(key, user_fields(user), if_match, idempotency_key)
        case "PATCH":
            dialect = dialect_of(request.user_agent, request.body)
            operations, patch = patch_operations(ScimUser, request.body, dialect)
            return writes.patch_submission(
                key, operations, dialect, if_match, idempotency_key, patch
            )
    row = queries.get_user(session, str(key.user_id), request.sees)
    require_match(if_match, row.version, "user")
    return rest_users.delete_submission(str(key.user_id), idempotency_key)


def agent_submission(session: Session, request: WriteRequest) -> Submission:
    """The job of a write to /Agents."""
    if request.method == "POST":
        agent = validated(ScimAgent, request.body, Context.RESOURCE_CREATION_REQUEST)
        owner = owner_id(agent)
        owner_slug = queries.owner_slug(session, owner, request.sees) if owner else None
        key = named_key(agent.name, owner_slug)
        return agent_writes.create_submission(key, agent_fields(agent), request.idempotency_key)
    agent_id = request.resource_id or ""
    row = queries.get_agent(session, agent_id, request.sees)
    key = AgentKey(row.slug, row.user_slug)
    payload: dict[str, Any] = {"if_match": request.if_match}
    match request.method:
        case "PUT":
            agent = validated(ScimAgent, request.body, Context.RESOURCE_REPLACEMENT_REQUEST)
            agent_writes.check_same_key(agent, key, str(row.user_id))
            payload["fields"] = agent_fields(agent).model_dump(mode="json")
        case "PATCH":
            payload["operations"] = patch_operations(ScimAgent, request.body, "strict")[0]
    kind = _AGENT_CHANGES[request.method]
    return agent_writes.change_submission(kind, key, agent_id, request.idempotency_key, **payload)


# How each resource type's writes become jobs, by the endpoint that serves it.
SUBMISSIONS: dict[str, Callable[[Session, WriteRequest], Submission]] = {
    "Users": user_submission,
    "Agents": agent_submission,
}
