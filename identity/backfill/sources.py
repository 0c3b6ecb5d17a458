"""Upstream sources: backfills that pull every user and agent from an integrator's HTTP API.

The protocol (docs/backfills.md): `GET {base_url}/users?limit=N[&cursor=C]`, then the same for
`/agents`, each answering `{"items": [...], "next_cursor": "..." | null}`, with
`Authorization: Bearer <token>` when the source names a token variable. Items are the NDJSON
lines' objects (their `type` may be left out). Transport errors, timeouts and 5xx answers are
retried with exponential backoff, 429 after its Retry-After; other 4xx answers fail the run.
A pull checkpoints its cursor with the chunks it stored, so a pull interrupted by a lost worker
resumes where the last checkpoint left it; a session lock keeps one pull per run at a time, and
a partial unique index one run per source.
"""

import logging
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import httpx
from pydantic import Field
from sqlalchemy import text

from identity.access import Actor
from identity.backfill.flow import Work, complete
from identity.backfill.known import Transaction
from identity.backfill.pull import PullReceiver
from identity.backfill.runs import BackfillOptions, BackfillOut, create, reads_known
from identity.backfill.store import ReceiveStopped
from identity.db import get_engine
from identity.errors import IdmirrorError, InvalidBackfill, ServiceUnavailable, SourceNotFound
from identity.schemas import StrictBody
from identity.settings import Settings, SourceSettings

log = logging.getLogger(__name__)

STAGES = ("users", "agents")
KINDS = {"users": "user", "agents": "agent"}
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 120.0


class SourceTrigger(StrictBody):
    """The JSON body of POST /v1/internal/backfills that starts a pull now."""

    source: str = Field(min_length=1, max_length=200)


class SourceFailed(Exception):
    """The source cannot be read; the run fails with this error."""

    def __init__(self, error: IdmirrorError) -> None:
        super().__init__(error.message)
        self.error = error


def source_config(settings: Settings, name: str) -> SourceSettings:
    config = settings.sources.get(name)
    if config is None:
        raise SourceNotFound(f"no source is configured with the name {name!r}", source=name)
    return config


def start(
    session: Any,
    settings: Settings,
    name: str,
    *,
    mode: str | None = None,
    prune: bool | None = None,
    dry_run: bool = False,
) -> tuple[BackfillOut, list[Work]]:
    """A new run pulling from source `name` (refused while one runs); queue its pull."""
    config = source_config(settings, name)
    options = BackfillOptions(
        mode=mode or config.mode,  # type: ignore[arg-type]
        prune=config.prune if prune is None else prune,
        dry_run=dry_run,
    )
    run = create(session, options, now=datetime.now(UTC), source=name)
    return run, [Work("pull", str(run.id))]


@lru_cache
def http_client() -> httpx.Client:
    """One client (one connection pool) per process."""
    return httpx.Client(follow_redirects=False, headers={"User-Agent": "idmirror-backfill"})


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def fetch_page(
    config: SourceSettings,
    name: str,
    stage: str,
    cursor: str | None,
    token: str | None,
    *,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Any], str | None]:
    """One page of `stage`, retried as the protocol says; raises SourceFailed."""
    url = f"{config.base_url.rstrip('/')}/{stage}"
    params: dict[str, Any] = {"limit": config.page_size}
    if cursor is not None:
        params["cursor"] = cursor
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    backoff = 0.5
    problem = ""
    for attempt in range(1, config.max_attempts + 1):
        wait = backoff * (1 + random.random() / 2)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        try:
            response = (client or http_client()).get(
                url, params=params, headers=headers, timeout=config.timeout_seconds
            )
        except httpx.TransportError as exc:  # timeouts, refused or reset connections
            problem = f"{type(exc).__name__} on GET {url}"
        else:
            status = response.status_code
            if status == 429:
                problem = f"429 Too Many Requests on GET {url}"
                wait = min(_retry_after(response) or wait, MAX_RETRY_AFTER_SECONDS)
            elif status >= 500:
                problem = f"{status} on GET {url}"
            elif status >= 400:
                raise SourceFailed(
                    InvalidBackfill(
                        f"source {name!r} answered {status} to GET {url}",
                        source=name,
                        status=status,
                    )
                )
            else:
                return _page(response, name, url)
        if attempt < config.max_attempts:
            log.warning("source %s: %s; attempt %d, again in %.1fs", name, problem, attempt, wait)
            sleep(wait)
    raise SourceFailed(
        ServiceUnavailable(
            f"source {name!r} failed {config.max_attempts} times: {problem}",
            source=name,
            attempts=config.max_attempts,
        )
    )


def _page(response: httpx.Response, name: str, url: str) -> tuple[list[Any], str | None]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("items"), list)
        or not isinstance(body.get("next_cursor"), str | int | type(None))
    ):
        raise SourceFailed(
            InvalidBackfill(
                f"source {name!r} answered GET {url} with something other than "
                '{"items": [...], "next_cursor": ...}',
                source=name,
            )
        )
    cursor = body["next_cursor"]
    return body["items"], None if cursor is None else str(cursor)


def _token(config: SourceSettings, name: str) -> str | None:
    if config.token_env is None:
        return None
    token = os.environ.get(config.token_env)
    if not token:
        raise SourceFailed(
            InvalidBackfill(
                f"source {name!r} takes its token from {config.token_env}, which is not set",
                source=name,
            )
        )
    return token


def pull(backfill_id: str, settings: Settings, transaction: Transaction) -> list[Work]:
    """Pull a run's source to its end (or resume an interrupted pull); returns what to queue."""
    lock = "SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"
    key = f"backfill-pull:{backfill_id}"
    with get_engine().connect() as conn:
        got = conn.execute(text(lock), {"k": key}).scalar()
        conn.commit()
        if not got:
            return []  # another worker is pulling this run
        try:
            return _pull(backfill_id, settings, transaction)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": key})
            conn.commit()


def _pull(backfill_id: str, settings: Settings, transaction: Transaction) -> list[Work]:
    with transaction() as session:
        run = session.execute(
            text(
                "SELECT status, source, snapshot_version, source_state, mode, dry_run, chunks, "
                "received, integrator, admin FROM backfills WHERE id = :id"
            ),
            {"id": backfill_id},
        ).one_or_none()
    if run is None or run.status != "receiving" or run.source is None:
        return []
    state = run.source_state or {"stage": STAGES[0], "cursor": None, "line": 0}
    receiver = PullReceiver(
        backfill_id,
        run.snapshot_version,
        settings,
        transaction,
        first_line=state["line"],
        stored=(run.chunks, run.received),
        known_lines=(
            Actor(run.integrator, None, run.admin)
            if reads_known(run.mode, dry_run=run.dry_run)
            else None
        ),
    )
    try:
        config = source_config(settings, run.source)
        token = _token(config, run.source)
        for index in range(STAGES.index(state["stage"]), len(STAGES)):
            stage = STAGES[index]
            cursor = state["cursor"] if stage == state["stage"] else None
            while True:
                items, next_cursor = fetch_page(config, run.source, stage, cursor, token)
                for record in items:
                    receiver.add_record(record, KINDS[stage])
                if next_cursor is None:
                    break
                if next_cursor == cursor:
                    raise SourceFailed(
                        InvalidBackfill(
                            f"source {run.source!r} answered the same cursor twice",
                            source=run.source,
                        )
                    )
                cursor = next_cursor
                receiver.page_done({"stage": stage, "cursor": cursor})
            if index + 1 < len(STAGES):
                receiver.checkpoint({"stage": STAGES[index + 1], "cursor": None})
        return receiver.finish()
    except ReceiveStopped:
        return receiver.take_work()
    except (SourceFailed, SourceNotFound) as exc:
        error = exc.error if isinstance(exc, SourceFailed) else exc
        log.warning("backfill %s from source %s failed: %s", backfill_id, run.source, error)
        with transaction() as session:
            complete(session, backfill_id, status="failed", error=error.envelope(), clean=False)
        return receiver.take_work()
