"""Who is asking: the actor a request or a job acts for, the scopes a token may carry, and the
ownership rule every read and write of an identity follows.

An integrator's token acts for that integrator: it reads and writes only what the integrator
owns (users it created, their agents and graphs, its jobs and backfills), and creates what it
writes. An admin (the bootstrap IDMIRROR_INTERNAL_TOKEN, or a token with the `admin` scope)
reads and writes everything; what it creates belongs to its token's integrator, or to no
integrator for the bootstrap token.
"""

import uuid
from dataclasses import dataclass

from identity.errors import OwnedByAnotherIntegrator

SCOPES = (
    "users:write",
    "agents:write",
    "graphs:write",
    "node_types:write",
    "backfills:write",
    "read",
    "jobs:read",
    "scim",
    "metrics",
    "admin",
)


# The scope a job of each kind needs: a retry of a failed job is a write of its kind.
KIND_SCOPES = {
    "user.upsert": "users:write",
    "user.delete": "users:write",
    "agent.upsert": "agents:write",
    "agent.delete": "agents:write",
    "agent.update": "graphs:write",
    "node_type.upsert": "node_types:write",
    "user.scim_create": "scim",
    "user.scim_replace": "scim",
    "user.scim_patch": "scim",
    "agent.scim_create": "scim",
    "agent.scim_replace": "scim",
    "agent.scim_patch": "scim",
    "agent.scim_delete": "scim",
}


@dataclass(frozen=True)
class Actor:
    """The integrator a request or a job acts for, the token it came with, and whether it may
    act on everything (admin)."""

    integrator: str | None = None
    token_id: uuid.UUID | None = None
    admin: bool = True

    @property
    def sees(self) -> str | None:
        """The owner a read is limited to: None for an admin, who sees everything."""
        return None if self.admin else self.integrator


# The bootstrap token's actor, and that of code paths that act for the operator.
OPERATOR = Actor()


def check_owner(actor: Actor, owner: str | None, what: str, **details: object) -> None:
    """Refuse a write by `actor` to something `owner` owns, unless it is its own (or an admin)."""
    if actor.admin or owner == actor.integrator:
        return
    raise OwnedByAnotherIntegrator(f"this {what} belongs to another integrator", **details)


def may_write(actor: Actor, owner: str | None) -> bool:
    return actor.admin or owner == actor.integrator
