"""What the API takes and answers, as pydantic models.

Each answer model names the schema of the server's OpenAPI document it mirrors (`schema_name`);
tests compare the two, field by field. Answers allow fields this client does not know yet, so a
newer server does not break an older client.
"""

from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Answer(BaseModel):
    """An answer of the API."""

    model_config = ConfigDict(extra="allow")
    schema_name: ClassVar[str]


class Body(BaseModel):
    """A request body: unknown fields are refused here, as the server refuses them."""

    model_config = ConfigDict(extra="forbid")
    schema_name: ClassVar[str]

    source_updated_at: datetime | None = None


# Request bodies


class UserUpsert(Body):
    schema_name = "UserUpsert"
    email: str
    slug: str
    plan: str = "free"
    metadata: dict[str, Any] = Field(default_factory=dict)
    external_owner: str | None = None


class AgentUpsert(Body):
    schema_name = "AgentUpsert"
    display_name: str
    webhook_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class NodeTypeUpsert(Body):
    schema_name = "NodeTypeUpsert"
    name: str
    description: str | None = None
    params_schema: dict[str, Any] = Field(default_factory=dict)


class AgentGraphUpdate(BaseModel):
    """Agent fields to change and graph operations, applied together in order. Operations are
    dicts as the API documents them (`{"op": "create_node", "node_type_id": ..., ...}`)."""

    model_config = ConfigDict(extra="forbid")
    schema_name: ClassVar[str] = "AgentGraphUpdate"

    name: str | None = None
    description: str | None = None
    visibility: Literal["public", "private"] | None = None
    operations: list[dict[str, Any]] | None = None


# Answers


class User(Answer):
    schema_name = "UserOut"
    id: UUID
    email: str
    slug: str
    plan: str
    metadata: dict[str, Any]
    external_owner: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class UserWrite(User):
    """A user as a write left it, and what the write did."""

    schema_name = "UserWriteOut"
    created: bool
    outcome: Literal["created", "updated", "unchanged", "superseded"]


class Agent(Answer):
    schema_name = "AgentOut"
    id: str
    slug: str
    user_id: UUID
    user_slug: str
    display_name: str
    webhook_url: str | None
    metadata: dict[str, Any]
    name: str | None
    description: str | None
    visibility: Literal["public", "private"]
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class AgentWrite(Agent):
    schema_name = "AgentWriteOut"
    created: bool
    outcome: Literal["created", "updated", "unchanged", "superseded"]


class Superseded(Answer):
    """An upsert a newer delete superseded, with no row left to show."""

    schema_name = "SupersededOut"
    id: str | None = None
    created: bool | None = None
    outcome: Literal["superseded"] = "superseded"


class Deleted(Answer):
    schema_name = "DeleteOut"
    id: str | None = None
    outcome: Literal["deleted", "unchanged", "superseded"]


class NodeType(Answer):
    schema_name = "NodeTypeOut"
    id: UUID
    name: str
    description: str | None
    params_schema: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


class NodeTypeWrite(NodeType):
    schema_name = "NodeTypeWriteOut"
    created: bool
    outcome: Literal["created", "updated", "unchanged", "superseded"]


class Position(Answer):
    schema_name = "Position"
    x: int
    y: int


class GraphNode(Answer):
    schema_name = "GraphNodeOut"
    agent_node_id: str
    node_type_id: str
    params_used: dict[str, Any]
    position: Position


class Connection(Answer):
    schema_name = "ConnectionOut"
    source_agent_node_id: str
    target_agent_node_id: str


class Graph(Answer):
    schema_name = "GraphOut"
    nodes: list[GraphNode]
    connections: list[Connection]


class CreatedNode(Answer):
    schema_name = "CreatedNodeOut"
    temp_ref_id: str | None
    agent_node_id: str


class GraphUpdate(Answer):
    """The answer to a graph update: the agent, the nodes it created (by temp_ref_id) and the
    graph as it then stood."""

    schema_name = "GraphUpdateOut"
    agent: Agent
    created_nodes: list[CreatedNode]
    graph: Graph


class Job(Answer):
    """A write as the ledger keeps it; `result` is the answer it had, `error` its envelope."""

    schema_name = "JobOut"
    id: UUID
    key: str
    seq: int
    kind: str
    status: Literal["pending", "applied", "failed"]
    outcome: str | None
    attempts: int
    accepted_at: datetime
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    retried_by: UUID | None = None
    discarded_at: datetime | None = None


class Discarded(Answer):
    schema_name = "DiscardedOut"
    discarded: list[UUID]


class HistoryEntry(Answer):
    """A write of a key: a job, or a backfill item (`line` of run `backfill_id`)."""

    schema_name = "HistoryEntry"
    at: datetime
    key: str
    source: Literal["job", "backfill"]
    kind: str
    status: str
    outcome: str | None
    code: str | None
    job_id: UUID | None
    backfill_id: UUID | None
    line: int | None
    retried_by: UUID | None
    discarded: bool


class History(Answer):
    schema_name = "HistoryOut"
    keys: list[str]
    items: list[HistoryEntry]


class Retry(Answer):
    schema_name = "RetryOut"
    job_id: str
    retry_job_id: str


class Retries(Answer):
    schema_name = "RetriesOut"
    retried: list[Retry]
    already_retried: list[Retry]


class BackfillCounts(Answer):
    schema_name = "BackfillCounts"
    received: int
    created: int
    updated: int
    unchanged: int
    superseded: int
    failed: int


class Backfill(Answer):
    schema_name = "BackfillOut"
    id: UUID
    status: Literal["receiving", "running", "completed", "failed", "cancelled"]
    phase: str
    mode: Literal["upsert", "mirror"]
    prune: bool
    dry_run: bool
    source: str | None
    snapshot_at: datetime
    counts: BackfillCounts
    drift: dict[str, Any] | None
    error: dict[str, Any] | None
    retries: int
    started_at: datetime
    finished_at: datetime | None
    items_per_second: float

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


class BackfillFailure(Answer):
    schema_name = "BackfillFailureOut"
    line: int
    kind: str | None
    key: str | None
    error: dict[str, Any]
    retryable: bool


class DriftedAgent(Answer):
    schema_name = "DriftedAgentOut"
    agent_id: str
    key: str
    state: str


class Health(Answer):
    schema_name = "HealthOut"
    status: str


class Checks(Answer):
    schema_name = "Checks"
    database: str
    broker: str


class Readiness(Answer):
    schema_name = "ReadyOut"
    status: str
    checks: Checks


# Integrators, tokens and the audit trail (admin)


class RateLimit(Answer):
    schema_name = "RateLimit"
    per_second: float
    burst: int


class Integrator(Answer):
    schema_name = "IntegratorOut"
    name: str
    display_name: str
    created_at: datetime
    disabled: bool
    rate_limit: RateLimit


class Token(Answer):
    """A token as listed: never its secret."""

    schema_name = "TokenOut"
    id: UUID
    integrator: str
    scopes: list[str]
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(Token):
    """The answer to a create: the only time the secret (`token`) is shown."""

    schema_name = "TokenCreatedOut"
    token: str


class Owner(Answer):
    schema_name = "OwnerOut"
    id: UUID
    owner: str | None


class AuditEntry(Answer):
    schema_name = "AuditEntryOut"
    id: int
    at: datetime
    integrator: str | None
    token_id: UUID | None
    action: str
    key: str | None
    job_id: UUID | None
    outcome: str | None
    request_id: str | None
    client: str | None
    details: dict[str, Any] | None


class Progress(Answer):
    """Pending work, and whether it moves."""

    schema_name = "ProgressOut"
    status: str
    pending: int
    oldest_pending_age_seconds: float
    drain_heartbeat_age_seconds: float | None
    sweeper_heartbeat_age_seconds: float | None
    stall_after_seconds: float
    workers_alive: int | None


class Page(Answer, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next, until it is None."""

    schema_name = "Page"
    items: list[T]
    next_cursor: str | None
