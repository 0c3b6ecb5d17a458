"""Which domain function applies each kind of job: its key and body parsed once, typed."""

import uuid
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from identity.access import Actor
from identity.agents import delete_agent, upsert_agent, upsert_agents
from identity.answers import Applied
from identity.errors import IdmirrorError
from identity.graph.operations import GraphUpdateJob
from identity.graph.service import update_agent_graph
from identity.keys import AgentKey, LedgerKey, NodeTypeKey, UserKey, parse_ledger_key
from identity.ledger.apply import BatchApplier, Finished, PendingJob, apply_accepted
from identity.ledger.jobs import Submission
from identity.node_types import NodeTypeUpsert, upsert_node_type
from identity.schemas import AgentUpsert, UserUpsert
from identity.scim import agent_writes as scim_agents
from identity.scim import writes as scim_writes
from identity.settings import get_settings
from identity.users import delete_user, upsert_user, upsert_users


def apply_upsert(
    session: Session, key: LedgerKey, payload: dict[str, Any], version: int, actor: Actor
) -> Applied:
    """Create or replace the identity `key` names with `payload` at `version`, for `actor`."""
    match key:
        case UserKey():
            return upsert_user(session, key, UserUpsert.model_validate(payload), version, actor)
        case AgentKey():
            return upsert_agent(session, key, AgentUpsert.model_validate(payload), version, actor)
        case NodeTypeKey():
            body = NodeTypeUpsert.model_validate(payload)
            return upsert_node_type(session, key, body, version, actor)


# The SCIM writes: each applies a job's payload to its key at its version, for its actor.
_SCIM_USERS = {
    "user.scim_create": scim_writes.create_user,
    "user.scim_replace": scim_writes.replace_user,
    "user.scim_patch": scim_writes.patch_user,
}
_SCIM_AGENTS = {
    "agent.scim_create": scim_agents.create_agent,
    "agent.scim_replace": scim_agents.replace_agent,
    "agent.scim_patch": scim_agents.patch_agent,
    "agent.scim_delete": scim_agents.scim_delete_agent,
}


def apply_job(session: Session, job: PendingJob) -> Applied:
    """Apply one job of any kind."""
    key = parse_ledger_key(job.key)
    match job.kind, key:
        case (("user.upsert" | "agent.upsert" | "node_type.upsert"), _):
            return apply_upsert(session, key, job.payload, job.version, job.actor)
        case "user.delete", UserKey():
            return delete_user(session, key, job.version, job.actor)
        case kind, UserKey() if kind in _SCIM_USERS:
            return _SCIM_USERS[kind](session, key, job.payload, job.version, job.actor)
        case kind, AgentKey() if kind in _SCIM_AGENTS:
            return _SCIM_AGENTS[kind](session, key, job.payload, job.version, job.actor)
        case "agent.delete", AgentKey():
            return delete_agent(session, key, job.version, job.actor)
        case "agent.update", AgentKey():
            update = GraphUpdateJob.model_validate(job.payload)
            max_nodes = get_settings().max_nodes
            return update_agent_graph(session, key, update, max_nodes=max_nodes, actor=job.actor)
    raise ValueError(f"no applier for a {job.kind} job on {job.key}")


KeyT = TypeVar("KeyT", UserKey, AgentKey)
BodyT = TypeVar("BodyT", UserUpsert, AgentUpsert)


def _upserts(
    jobs: list[PendingJob], key_type: type[KeyT], body_type: type[BodyT]
) -> list[tuple[KeyT, BodyT, int]]:
    """Upsert jobs as their keys, bodies and versions, each parsed once: a job applied where
    it was accepted takes the body its request validated, whose stored form is its payload."""
    writes = []
    for job in jobs:
        key = parse_ledger_key(job.key)
        assert isinstance(key, key_type), f"{job.kind} jobs are addressed to {key_type.__name__}s"
        body = job.checked
        if not isinstance(body, body_type):
            body = body_type.model_validate(job.payload)
        writes.append((key, body, job.version))
    return writes


def apply_user_upserts(session: Session, jobs: list[PendingJob]) -> list[Applied | IdmirrorError]:
    """User upserts of distinct keys, applied together."""
    writes = _upserts(jobs, UserKey, UserUpsert)
    return upsert_users(session, writes, [job.actor for job in jobs])


def apply_agent_upserts(session: Session, jobs: list[PendingJob]) -> list[Applied | IdmirrorError]:
    """Agent upserts of distinct keys, applied together."""
    writes = _upserts(jobs, AgentKey, AgentUpsert)
    return upsert_agents(session, writes, [job.actor for job in jobs])


# Kinds whose jobs of distinct keys can be applied together, far cheaper than one by one.
BATCH_APPLIERS: dict[str, BatchApplier] = {
    "user.upsert": apply_user_upserts,
    "agent.upsert": apply_agent_upserts,
    "user.scim_create": scim_writes.create_users,
    "user.scim_replace": scim_writes.replace_users,
    "user.scim_patch": scim_writes.patch_users,
}


# Kinds applied in the transaction that accepts them when their key is idle (the API's accept
# path). A graph update is left to the workers: one can take a large part of a second of CPU,
# which the API's event loop would spend on it instead of answering other requests.
APPLIED_ON_ACCEPT = frozenset(
    {
        "user.upsert",
        "user.delete",
        "agent.upsert",
        "agent.delete",
        "node_type.upsert",
        "user.scim_create",
        "user.scim_replace",
        "user.scim_patch",
        "agent.scim_create",
        "agent.scim_replace",
        "agent.scim_patch",
        "agent.scim_delete",
    }
)


def apply_on_accept(
    session: Session, accepted: list[tuple[Submission, Any]]
) -> dict[uuid.UUID, Finished]:
    """Apply the writes being accepted whose kinds allow it, where their keys are idle. A key
    with a write of another kind among them is not: that write is left pending."""
    left = {sub.key for sub, _ in accepted if sub.kind not in APPLIED_ON_ACCEPT}
    chosen = [
        pair for pair in accepted if pair[0].kind in APPLIED_ON_ACCEPT and pair[0].key not in left
    ]
    return apply_accepted(session, chosen, apply_job, BATCH_APPLIERS) if chosen else {}
