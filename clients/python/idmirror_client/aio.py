"""`AsyncClient`: the API from asyncio code, one method per operation (as `Client`)."""

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypedDict, TypeVar, cast
from uuid import UUID

import httpx
from typing_extensions import Unpack

from idmirror_client import calls, ndjson
from idmirror_client import models as m
from idmirror_client.calls import Call
from idmirror_client.errors import JobTimeout
from idmirror_client.transport import (
    Followed,
    RetryPolicy,
    connection_failed,
    headers_for,
    job_result,
    read_answer,
    retry_delay,
)

T = TypeVar("T")
Progress = Callable[[m.Backfill], None]


class Write(TypedDict, total=False):
    """How a write is sent: `respond_async` answers its Job at once; `idempotency_key` names
    the write (one is made per call otherwise); `wait` is how long the server may wait for it."""

    respond_async: bool
    idempotency_key: str | None
    wait: float | None


class AsyncClient:
    """`AsyncClient(base_url="http://127.0.0.1:8000", token="...")`; use it in an `async with`
    block or `await close()` it. Writes wait for their job and answer its result; with
    `respond_async=True` they answer their `Job` at once (follow it with `wait_for_job`)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, read=max(timeout, 60))
        )
        self._http.base_url = httpx.URL(base_url)
        self._http.headers["Authorization"] = f"Bearer {token}"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(
        self,
        call: Call[Any],
        headers: dict[str, str],
        content: Callable[[], Any] | None = None,
        retries: bool = True,
    ) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.body if content is None else None,
                    content=content() if content is not None else None,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                delay = retry_delay(self.retry, attempt, None) if retries else None
                if delay is None:
                    raise connection_failed(str(self._http.base_url), exc) from exc
            else:
                delay = retry_delay(self.retry, attempt, response) if retries else None
                if delay is None:
                    return response
            await asyncio.sleep(delay)
            attempt += 1

    async def _run(
        self,
        call: Call[T],
        *,
        respond_async: bool = False,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> T | m.Job:
        headers = headers_for(
            call, respond_async=respond_async, wait=wait, idempotency_key=idempotency_key
        )
        answer = read_answer(call, await self._send(call, headers), respond_async=respond_async)
        if not isinstance(answer, Followed):
            return answer
        if respond_async:
            return await self.get_job(answer.job_id)
        return job_result(call, await self.wait_for_job(answer.job_id))

    async def _get(self, call: Call[T]) -> T:
        """A call that is no write: its answer is the call's own (never a job to follow)."""
        assert not call.write
        return cast(T, await self._run(call))

    # Users

    async def upsert_user(
        self, user_id: UUID | str, body: m.UserUpsert, **write: Unpack[Write]
    ) -> m.UserWrite | m.Superseded | m.Job:
        """Create or replace a user by the integrator's UUID."""
        return await self._run(calls.upsert_user(user_id, body), **write)

    async def delete_user(self, user_id: UUID | str, **write: Unpack[Write]) -> m.Deleted | m.Job:
        return await self._run(calls.delete_user(user_id), **write)

    async def get_user(self, user_id: UUID | str) -> m.User:
        return await self._get(calls.get_user(user_id))

    async def list_users(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> m.Page[m.User]:
        return await self._get(calls.list_users(limit, cursor))

    # Agents and their graphs

    async def upsert_agent(
        self, agent_key: str, body: m.AgentUpsert, **write: Unpack[Write]
    ) -> m.AgentWrite | m.Superseded | m.Job:
        """Create or replace the agent `{slug}@{user_slug}`."""
        return await self._run(calls.upsert_agent(agent_key, body), **write)

    async def delete_agent(self, agent_key: str, **write: Unpack[Write]) -> m.Deleted | m.Job:
        return await self._run(calls.delete_agent(agent_key), **write)

    async def get_agent(self, ref: str, *, include_deleted: bool = False) -> m.Agent:
        """By `{slug}@{user_slug}` or by id (`agt_...`)."""
        return await self._get(calls.get_agent(ref, include_deleted))

    async def list_agents(
        self,
        *,
        user_slug: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> m.Page[m.Agent]:
        return await self._get(calls.list_agents(user_slug, include_deleted, limit, cursor))

    async def update_agent_graph(
        self, ref: str, body: m.AgentGraphUpdate, **write: Unpack[Write]
    ) -> m.GraphUpdate | m.Job:
        """Apply graph operations (and agent fields) atomically, in order."""
        return await self._run(calls.update_agent_graph(ref, body, patch=False), **write)

    async def patch_agent_graph(
        self, ref: str, body: m.AgentGraphUpdate, **write: Unpack[Write]
    ) -> m.GraphUpdate | m.Job:
        """The same update, sent as PATCH."""
        return await self._run(calls.update_agent_graph(ref, body, patch=True), **write)

    async def get_agent_graph(self, ref: str) -> m.Graph:
        return await self._get(calls.get_agent_graph(ref))

    # Node types

    async def upsert_node_type(
        self, node_type_id: UUID | str, body: m.NodeTypeUpsert, **write: Unpack[Write]
    ) -> m.NodeTypeWrite | m.Job:
        return await self._run(calls.upsert_node_type(node_type_id, body), **write)

    async def get_node_type(self, node_type_id: UUID | str) -> m.NodeType:
        return await self._get(calls.get_node_type(node_type_id))

    async def list_node_types(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> m.Page[m.NodeType]:
        return await self._get(calls.list_node_types(limit, cursor))

    # Jobs

    async def get_job(self, job_id: UUID | str) -> m.Job:
        return await self._get(calls.get_job(job_id))

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        key: str | None = None,
        kind: str | None = None,
        order: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> m.Page[m.Job]:
        """Newest first, or `order="oldest"`; `key` with or without its prefix."""
        return await self._get(calls.list_jobs(status, key, kind, order, limit, cursor))

    async def retry_job(self, job_id: UUID | str, **write: Unpack[Write]) -> dict[str, Any] | m.Job:
        """Retry a failed job once; the answer is the retried write's (a dict)."""
        return await self._run(calls.retry_job(job_id), **write)

    async def retry_jobs(
        self,
        *,
        kind: str | None = None,
        key: str | None = None,
        code: str | None = None,
        limit: int | None = None,
    ) -> m.Retries:
        return await self._get(calls.retry_jobs(kind, key, code, limit))

    async def discard_job(self, job_id: UUID | str) -> m.Job:
        """Let a failed job go: it leaves the dead-letter view and bulk retries."""
        return await self._get(calls.discard_job(job_id))

    async def discard_jobs(
        self,
        *,
        kind: str | None = None,
        key: str | None = None,
        code: str | None = None,
        limit: int | None = None,
    ) -> m.Discarded:
        return await self._get(calls.discard_jobs(kind, key, code, limit))

    async def get_history(self, key: str, *, limit: int | None = None) -> m.History:
        """A key's jobs and backfill items, newest first."""
        return await self._get(calls.get_history(key, limit))

    async def wait_for_job(self, job_id: UUID | str, *, timeout: float = 60.0) -> m.Job:
        """The job once it is applied or failed; JobTimeout if still pending after `timeout`."""
        deadline, pause = time.monotonic() + timeout, 0.05
        while (job := await self.get_job(job_id)).status == "pending":
            if time.monotonic() + pause > deadline:
                raise JobTimeout(f"job {job_id} is still pending", job_id=str(job_id))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        return job

    # Backfills

    async def backfill(
        self,
        source: ndjson.Source,
        *,
        mode: str = "upsert",
        prune: bool = False,
        dry_run: bool = False,
        snapshot_at: str | None = None,
        progress: Progress | None = None,
        uploaded: Callable[[int], None] | None = None,
        poll: float = 0.5,
    ) -> m.Backfill:
        """Stream `source` (a path, a file object, or an iterable of dicts) as one backfill and
        follow it to its end; `progress(backfill)` is called as it goes, `uploaded(n)` as each
        piece of n bytes is sent."""
        call = calls.create_backfill(mode, prune, dry_run, snapshot_at, None)
        headers = {"Content-Type": "application/x-ndjson"}
        retries = ndjson.replayable(source)  # a stream once read cannot be sent again
        response = await self._send(
            call, headers, lambda: ndjson.achunks(source, uploaded), retries
        )
        run = read_answer(call, response, respond_async=False)
        assert isinstance(run, m.Backfill)
        return await self.follow_backfill(run, progress=progress, poll=poll)

    async def follow_backfill(
        self, run: m.Backfill, *, progress: Progress | None = None, poll: float = 0.5
    ) -> m.Backfill:
        while True:
            if progress is not None:
                progress(run)
            if run.finished:
                return run
            await asyncio.sleep(poll)
            run = await self.get_backfill(run.id)

    async def pull_backfill(self, source: str, *, dry_run: bool = False) -> m.Backfill:
        """Start a configured source's pull now, as its schedule would (not followed)."""
        return await self._get(calls.create_backfill(None, None, dry_run, None, source))

    async def get_backfill(self, backfill_id: UUID | str) -> m.Backfill:
        return await self._get(calls.get_backfill(backfill_id))

    async def list_backfills(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> m.Page[m.Backfill]:
        return await self._get(calls.list_backfills(status, limit, cursor))

    async def list_backfill_failures(
        self, backfill_id: UUID | str, *, limit: int | None = None, cursor: str | None = None
    ) -> m.Page[m.BackfillFailure]:
        return await self._get(calls.list_backfill_failures(backfill_id, limit, cursor))

    async def list_backfill_drift(
        self, backfill_id: UUID | str, *, limit: int | None = None, cursor: str | None = None
    ) -> m.Page[m.DriftedAgent]:
        return await self._get(calls.list_backfill_drift(backfill_id, limit, cursor))

    async def retry_backfill(self, backfill_id: UUID | str) -> m.Backfill:
        return await self._get(calls.retry_backfill(backfill_id))

    async def cancel_backfill(self, backfill_id: UUID | str) -> m.Backfill:
        return await self._get(calls.cancel_backfill(backfill_id))

    # Operations

    async def get_health(self) -> m.Health:
        return await self._get(calls.get_health())

    async def get_readiness(self) -> m.Readiness:
        return await self._get(calls.get_readiness())

    async def get_stall(self) -> m.Progress:
        return await self._get(calls.get_stall())

    async def get_metrics(self) -> str:
        return await self._get(calls.get_metrics())

    # Integrators, tokens and the audit trail (an admin token's)

    async def create_integrator(
        self,
        name: str,
        display_name: str,
        *,
        per_second: float | None = None,
        burst: int | None = None,
    ) -> m.Integrator:
        return await self._get(calls.create_integrator(name, display_name, per_second, burst))

    async def list_integrators(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> m.Page[m.Integrator]:
        return await self._get(calls.list_integrators(limit, cursor))

    async def get_integrator(self, name: str) -> m.Integrator:
        return await self._get(calls.get_integrator(name))

    async def update_integrator(
        self,
        name: str,
        *,
        display_name: str | None = None,
        disabled: bool | None = None,
        per_second: float | None = None,
        burst: int | None = None,
    ) -> m.Integrator:
        call = calls.update_integrator(name, display_name, disabled, per_second, burst)
        return await self._get(call)

    async def create_token(
        self,
        integrator: str,
        scopes: list[str],
        *,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> m.TokenCreated:
        return await self._get(calls.create_token(integrator, scopes, name, expires_at))

    async def list_tokens(
        self, *, integrator: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> m.Page[m.Token]:
        return await self._get(calls.list_tokens(integrator, limit, cursor))

    async def revoke_token(self, token_id: UUID | str) -> None:
        await self._get(calls.revoke_token(token_id))

    async def move_user(self, user_id: UUID | str, integrator: str | None) -> m.Owner:
        return await self._get(calls.move_user(user_id, integrator))

    async def list_audit(
        self,
        *,
        integrator: str | None = None,
        key: str | None = None,
        token_id: UUID | str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> m.Page[m.AuditEntry]:
        return await self._get(calls.list_audit(integrator, key, token_id, since, limit, cursor))
