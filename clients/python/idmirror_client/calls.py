"""The operations of the API, one builder each: the request to make and how to read its answer.

`OPERATIONS` names every operation by the server's operationId, with its method and path;
tests compare it with the server's OpenAPI document. Both clients (sync.py, aio.py) send these
calls the same way, through transport.py.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote
from uuid import UUID

from pydantic import BaseModel

from idmirror_client import models as m

T = TypeVar("T")

OPERATIONS: dict[str, tuple[str, str]] = {
    "upsertUser": ("PUT", "/v1/internal/users/{user_id}"),
    "deleteUser": ("DELETE", "/v1/internal/users/{user_id}"),
    "getUser": ("GET", "/v1/internal/users/{user_id}"),
    "listUsers": ("GET", "/v1/internal/users"),
    "upsertAgent": ("PUT", "/v1/internal/agents/{agent_key}"),
    "deleteAgent": ("DELETE", "/v1/internal/agents/{agent_key}"),
    "getAgent": ("GET", "/v1/agents/{ref}"),
    "listAgents": ("GET", "/v1/agents"),
    "updateAgentGraph": ("POST", "/v1/agents/{ref}/update"),
    "patchAgentGraph": ("PATCH", "/v1/agents/{ref}/update"),
    "getAgentGraph": ("GET", "/v1/agents/{ref}/graph"),
    "upsertNodeType": ("PUT", "/v1/internal/node-types/{node_type_id}"),
    "getNodeType": ("GET", "/v1/node-types/{node_type_id}"),
    "listNodeTypes": ("GET", "/v1/node-types"),
    "getJob": ("GET", "/v1/jobs/{job_id}"),
    "listJobs": ("GET", "/v1/jobs"),
    "retryJob": ("POST", "/v1/jobs/{job_id}/retry"),
    "retryJobs": ("POST", "/v1/jobs/retry"),
    "discardJob": ("POST", "/v1/jobs/{job_id}/discard"),
    "discardJobs": ("POST", "/v1/jobs/discard"),
    "getHistory": ("GET", "/v1/history"),
    "createBackfill": ("POST", "/v1/internal/backfills"),
    "listBackfills": ("GET", "/v1/internal/backfills"),
    "getBackfill": ("GET", "/v1/internal/backfills/{backfill_id}"),
    "listBackfillFailures": ("GET", "/v1/internal/backfills/{backfill_id}/failures"),
    "listBackfillDrift": ("GET", "/v1/internal/backfills/{backfill_id}/drift"),
    "retryBackfill": ("POST", "/v1/internal/backfills/{backfill_id}/retry"),
    "cancelBackfill": ("POST", "/v1/internal/backfills/{backfill_id}/cancel"),
    "getHealth": ("GET", "/healthz"),
    "getReadiness": ("GET", "/readyz"),
    "getStall": ("GET", "/healthz/stall"),
    "getMetrics": ("GET", "/metrics"),
    "createIntegrator": ("POST", "/v1/admin/integrators"),
    "listIntegrators": ("GET", "/v1/admin/integrators"),
    "getIntegrator": ("GET", "/v1/admin/integrators/{name}"),
    "updateIntegrator": ("PATCH", "/v1/admin/integrators/{name}"),
    "createToken": ("POST", "/v1/admin/tokens"),
    "listTokens": ("GET", "/v1/admin/tokens"),
    "revokeToken": ("DELETE", "/v1/admin/tokens/{token_id}"),
    "moveUser": ("PUT", "/v1/admin/users/{user_id}/owner"),
    "listAudit": ("GET", "/v1/audit"),
}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: which operation, its path, query and body, and how to read a 200."""

    operation: str
    path: str
    read: Callable[[Any], T]
    params: dict[str, Any] | None = None
    body: Any = None
    write: bool = False  # recorded as a job: Idempotency-Key, Prefer, and a 202 to follow

    @property
    def method(self) -> str:
        return OPERATIONS[self.operation][0]


def _call(operation: str, read: Callable[[Any], T], /, **kw: Any) -> Call[T]:
    """A call of `operation`, its path parameters (those named in its path) filled in."""
    path = OPERATIONS[operation][1]
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    values = {name: quote(str(kw.pop(name)), safe="@") for name in names}
    params = {k: v for k, v in (kw.pop("params", None) or {}).items() if v is not None}
    return Call(operation, path.format(**values), read, params or None, **kw)


def _model(cls: type[BaseModel]) -> Callable[[Any], Any]:
    return cls.model_validate


def _first_fit(*classes: type[BaseModel]) -> Callable[[Any], Any]:
    """Read with the first model whose required fields are all present."""

    def read(data: Any) -> Any:
        for cls in classes[:-1]:
            required = [n for n, f in cls.model_fields.items() if f.is_required()]
            if isinstance(data, dict) and all(n in data for n in required):
                return cls.model_validate(data)
        return classes[-1].model_validate(data)

    return read


def _page(cls: type[BaseModel]) -> Callable[[Any], Any]:
    return m.Page[cls].model_validate  # type: ignore[valid-type]


def _dump(body: BaseModel) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude_unset=True)


def _paging(limit: int | None, cursor: str | None, **more: Any) -> dict[str, Any]:
    return {"limit": limit, "cursor": cursor, **more}


def upsert_user(user_id: UUID | str, body: m.UserUpsert) -> Call[m.UserWrite | m.Superseded]:
    read = _first_fit(m.UserWrite, m.Superseded)
    return _call("upsertUser", read, user_id=user_id, body=_dump(body), write=True)


def delete_user(user_id: UUID | str) -> Call[m.Deleted]:
    return _call("deleteUser", _model(m.Deleted), user_id=user_id, write=True)


def get_user(user_id: UUID | str) -> Call[m.User]:
    return _call("getUser", _model(m.User), user_id=user_id)


def list_users(limit: int | None, cursor: str | None) -> Call[m.Page[m.User]]:
    return _call("listUsers", _page(m.User), params=_paging(limit, cursor))


def upsert_agent(agent_key: str, body: m.AgentUpsert) -> Call[m.AgentWrite | m.Superseded]:
    read = _first_fit(m.AgentWrite, m.Superseded)
    return _call("upsertAgent", read, agent_key=agent_key, body=_dump(body), write=True)


def delete_agent(agent_key: str) -> Call[m.Deleted]:
    return _call("deleteAgent", _model(m.Deleted), agent_key=agent_key, write=True)


def get_agent(ref: str, include_deleted: bool) -> Call[m.Agent]:
    params = {"include_deleted": str(include_deleted).lower()}
    return _call("getAgent", _model(m.Agent), ref=ref, params=params)


def list_agents(
    user_slug: str | None, include_deleted: bool, limit: int | None, cursor: str | None
) -> Call[m.Page[m.Agent]]:
    params = _paging(
        limit, cursor, user_slug=user_slug, include_deleted=str(include_deleted).lower()
    )
    return _call("listAgents", _page(m.Agent), params=params)


def update_agent_graph(ref: str, body: m.AgentGraphUpdate, *, patch: bool) -> Call[m.GraphUpdate]:
    operation = "patchAgentGraph" if patch else "updateAgentGraph"
    return _call(operation, _model(m.GraphUpdate), ref=ref, body=_dump(body), write=True)


def get_agent_graph(ref: str) -> Call[m.Graph]:
    return _call("getAgentGraph", _model(m.Graph), ref=ref)


def upsert_node_type(node_type_id: UUID | str, body: m.NodeTypeUpsert) -> Call[m.NodeTypeWrite]:
    read = _model(m.NodeTypeWrite)
    return _call("upsertNodeType", read, node_type_id=node_type_id, body=_dump(body), write=True)


def get_node_type(node_type_id: UUID | str) -> Call[m.NodeType]:
    return _call("getNodeType", _model(m.NodeType), node_type_id=node_type_id)


def list_node_types(limit: int | None, cursor: str | None) -> Call[m.Page[m.NodeType]]:
    return _call("listNodeTypes", _page(m.NodeType), params=_paging(limit, cursor))


def get_job(job_id: UUID | str) -> Call[m.Job]:
    return _call("getJob", _model(m.Job), job_id=job_id)


def list_jobs(
    status: str | None,
    key: str | None,
    kind: str | None,
    order: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[m.Page[m.Job]]:
    params = _paging(limit, cursor, status=status, key=key, kind=kind, order=order)
    return _call("listJobs", _page(m.Job), params=params)


def retry_job(job_id: UUID | str) -> Call[dict[str, Any]]:
    """The retry's answer is the retried write's: a dict, read as its kind's model by the caller."""
    return _call("retryJob", dict, job_id=job_id, write=True)


def retry_jobs(
    kind: str | None, key: str | None, code: str | None, limit: int | None
) -> Call[m.Retries]:
    params = {"kind": kind, "key": key, "code": code, "limit": limit}
    return _call("retryJobs", _model(m.Retries), params=params)


def discard_job(job_id: UUID | str) -> Call[m.Job]:
    return _call("discardJob", _model(m.Job), job_id=job_id)


def discard_jobs(
    kind: str | None, key: str | None, code: str | None, limit: int | None
) -> Call[m.Discarded]:
    params = {"kind": kind, "key": key, "code": code, "limit": limit}
    return _call("discardJobs", _model(m.Discarded), params=params)


def get_history(key: str, limit: int | None) -> Call[m.History]:
    return _call("getHistory", _model(m.History), params={"key": key, "limit": limit})


def list_backfills(
    status: str | None, limit: int | None, cursor: str | None
) -> Call[m.Page[m.Backfill]]:
    return _call("listBackfills", _page(m.Backfill), params=_paging(limit, cursor, status=status))


def get_backfill(backfill_id: UUID | str) -> Call[m.Backfill]:
    return _call("getBackfill", _model(m.Backfill), backfill_id=backfill_id)


def list_backfill_failures(
    backfill_id: UUID | str, limit: int | None, cursor: str | None
) -> Call[m.Page[m.BackfillFailure]]:
    read, params = _page(m.BackfillFailure), _paging(limit, cursor)
    return _call("listBackfillFailures", read, backfill_id=backfill_id, params=params)


def list_backfill_drift(
    backfill_id: UUID | str, limit: int | None, cursor: str | None
) -> Call[m.Page[m.DriftedAgent]]:
    read, params = _page(m.DriftedAgent), _paging(limit, cursor)
    return _call("listBackfillDrift", read, backfill_id=backfill_id, params=params)


def retry_backfill(backfill_id: UUID | str) -> Call[m.Backfill]:
    return _call("retryBackfill", _model(m.Backfill), backfill_id=backfill_id)


def cancel_backfill(backfill_id: UUID | str) -> Call[m.Backfill]:
    return _call("cancelBackfill", _model(m.Backfill), backfill_id=backfill_id)


def create_backfill(
    mode: str | None,
    prune: bool | None,
    dry_run: bool,
    snapshot_at: str | None,
    source: str | None,
) -> Call[m.Backfill]:
    """A backfill of an upload (the body is streamed by the client), or of `source`, pulled
    (its mode and prune then default to the source's own)."""
    params = {
        "mode": mode,
        "prune": None if prune is None else str(prune).lower(),
        "dry_run": str(dry_run).lower(),
        "snapshot_at": snapshot_at,
    }
    body = {"source": source} if source is not None else None
    return _call("createBackfill", _model(m.Backfill), params=params, body=body)


def get_health() -> Call[m.Health]:
    return _call("getHealth", _model(m.Health))


def get_readiness() -> Call[m.Readiness]:
    return _call("getReadiness", _model(m.Readiness))


def get_stall() -> Call[m.Progress]:
    """200 while pending work moves; a stall is answered 503 (ServiceUnavailable)."""
    return _call("getStall", _model(m.Progress))


def get_metrics() -> Call[str]:
    return _call("getMetrics", str)


# Integrators, tokens and the audit trail (an admin token's)


def _rate(per_second: float | None, burst: int | None) -> dict[str, Any] | None:
    if per_second is None and burst is None:
        return None
    return {"per_second": per_second, "burst": burst}


def create_integrator(
    name: str, display_name: str, per_second: float | None, burst: int | None
) -> Call[m.Integrator]:
    body = {"name": name, "display_name": display_name, "rate_limit": _rate(per_second, burst)}
    return _call("createIntegrator", _model(m.Integrator), body=body)


def list_integrators(limit: int | None, cursor: str | None) -> Call[m.Page[m.Integrator]]:
    return _call("listIntegrators", _page(m.Integrator), params=_paging(limit, cursor))


def get_integrator(name: str) -> Call[m.Integrator]:
    return _call("getIntegrator", _model(m.Integrator), name=name)


def update_integrator(
    name: str,
    display_name: str | None,
    disabled: bool | None,
    per_second: float | None,
    burst: int | None,
) -> Call[m.Integrator]:
    """Only what is given changes (a rate limit needs both of its fields)."""
    given = {"display_name": display_name, "disabled": disabled}
    changes: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if (rate := _rate(per_second, burst)) is not None:
        changes["rate_limit"] = rate
    return _call("updateIntegrator", _model(m.Integrator), name=name, body=changes)


def create_token(
    integrator: str, scopes: list[str], name: str | None, expires_at: datetime | None
) -> Call[m.TokenCreated]:
    body = {
        "integrator": integrator,
        "scopes": scopes,
        "name": name,
        "expires_at": expires_at.isoformat() if expires_at is not None else None,
    }
    return _call("createToken", _model(m.TokenCreated), body=body)


def list_tokens(
    integrator: str | None, limit: int | None, cursor: str | None
) -> Call[m.Page[m.Token]]:
    params = _paging(limit, cursor, integrator=integrator)
    return _call("listTokens", _page(m.Token), params=params)


def revoke_token(token_id: UUID | str) -> Call[None]:
    return _call("revokeToken", lambda _: None, token_id=token_id)


def move_user(user_id: UUID | str, integrator: str | None) -> Call[m.Owner]:
    body = {"integrator": integrator}
    return _call("moveUser", _model(m.Owner), user_id=user_id, body=body)


def list_audit(
    integrator: str | None,
    key: str | None,
    token_id: UUID | str | None,
    since: datetime | None,
    limit: int | None,
    cursor: str | None,
) -> Call[m.Page[m.AuditEntry]]:
    filters = {"integrator": integrator, "key": key, "token_id": token_id}
    filters["since"] = since.isoformat() if since is not None else None
    return _call("listAudit", _page(m.AuditEntry), params=_paging(limit, cursor, **filters))
