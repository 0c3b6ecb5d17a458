"""POST/GET /v1/internal/backfills: bulk upserts from an NDJSON upload or an upstream source."""

import asyncio
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from api.auth import PrincipalDep
from api.contract import BODY_ERRORS, answers, scope
from api.deps import Paging, read_session
from api.params import BackfillId
from api.writes import origin_of
from identity.access import Actor
from identity.audit import Origin
from identity.backfill import runs as backfill
from identity.backfill import sources
from identity.backfill.drift import run_step
from identity.backfill.flow import Work, interrupt_upload
from identity.backfill.items import validation_envelope
from identity.backfill.runs import BackfillFailureOut, BackfillOut, DriftedAgentOut
from identity.backfill.store import InputLost, ReceiveStopped
from identity.backfill.upload import UploadReceiver
from identity.db import transaction
from identity.errors import (
    BackfillNotFound,
    BackfillNotRetryable,
    InsufficientScope,
    InvalidBackfill,
    InvalidCursor,
    PruneThresholdExceeded,
    SourceBusy,
    SourceNotFound,
    UnsupportedMediaType,
    ValidationFailed,
)
from identity.pagination import Page
from identity.schemas import to_version
from identity.settings import get_settings
from worker.producer import get_producer

router = APIRouter(prefix="/v1/internal/backfills", tags=["backfills"])
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
# An upload is validated in the thread pool a piece at a time. The first piece is small, so that
# the first lines are read (and the first user chunks queued) soon after the upload starts; the
# pieces then double, because each ends with a lookup of known lines that nothing overlaps.
FIRST_PIECE_BYTES = 512 << 10
MAX_PIECE_BYTES = 4 << 20  # about 24,000 lines of a typical upload
MAX_JSON_BODY = 64 * 1024

LOCATION = {
    "description": "The backfill, to follow: `/v1/internal/backfills/{id}`",
    "required": True,
    "schema": {"type": "string"},
}
_LINES = (
    '{"type": "user", "id": "6f1c2a52-3d1e-4c8a-9a4b-2f4f0c9d7e11", '
    '"email": "govind@example.com", "slug": "govind"}\n'
    '{"type": "agent", "key": "scout@govind", "display_name": "Scout"}\n'
)
# The body is read by hand (streamed when it is NDJSON), so the document is told what it is.
REQUEST_BODY = {
    "required": True,
    "content": {
        "application/x-ndjson": {
            "schema": {
                "type": "string",
                "description": "One item per line: a user (`type`, `id`), an agent (`type`, "
                "`key`) or a node type (`type`, `id`), each with its PUT body's fields",
            },
            "example": _LINES,
        },
        "application/json": {
            "schema": sources.SourceTrigger.model_json_schema(),
            "example": {"source": "crm"},
        },
    },
}


class RunOptions:
    """Query parameters: how to run the backfill."""

    def __init__(
        self,
        mode: Literal["upsert", "mirror"] | None = Query(None),
        prune: bool | None = Query(None),
        dry_run: bool = Query(False),
        snapshot_at: AwareDatetime | None = Query(None),
    ) -> None:
        self.mode, self.prune, self.dry_run, self.snapshot_at = mode, prune, dry_run, snapshot_at

    def for_upload(self) -> backfill.BackfillOptions:
        options = backfill.BackfillOptions(
            mode=self.mode or "upsert",
            prune=bool(self.prune),
            dry_run=self.dry_run,
            snapshot_at=self.snapshot_at,
        )
        options.check()
        return options


def _send(work: list[Work]) -> None:
    get_producer().send_work(work)


def _create(options: backfill.BackfillOptions, actor: Actor, origin: Origin) -> BackfillOut:
    with transaction() as session:
        return backfill.create(session, options, now=datetime.now(UTC), actor=actor, origin=origin)


def _get(backfill_id: str) -> BackfillOut:
    with transaction() as session:
        return backfill.get_backfill(session, backfill_id)


class _Feeder:
    """Feeds an upload's pieces to its receiver on a worker thread, one at a time, while the
    event loop reads the next piece: the client sends on while the piece before is validated
    (about a tenth of a re-sent upload's time was spent reading between pieces)."""

    def __init__(self, receiver: UploadReceiver) -> None:
        self._receiver = receiver
        self._feeding: asyncio.Task[None] | None = None

    async def feed(self, piece: bytes) -> None:
        """Start feeding `piece` once the piece before is fed. Raises the error of the piece
        before."""
        await self.settle()
        self._feeding = asyncio.create_task(run_in_threadpool(_feed, self._receiver, piece))

    async def settle(self) -> None:
        """Wait until the piece on its way, if any, is fed; raise its error."""
        feeding, self._feeding = self._feeding, None
        if feeding is not None:
            await feeding


def _feed(receiver: UploadReceiver, piece: bytes) -> None:
    """Feed a piece, then queue at once what it made runnable (user chunks that may run already),
    not when the next piece has come: a client may pause between pieces."""
    receiver.feed(piece)
    if early := receiver.take_work():
        _send(early)


def _interrupted(backfill_id: str) -> None:
    with transaction() as session:
        interrupt_upload(session, backfill_id)


async def _receive(
    request: Request, options: backfill.BackfillOptions, actor: Actor
) -> BackfillOut:
    """Stream the body through the receiver: only a piece of it is ever held in memory."""
    run = await run_in_threadpool(_create, options, actor, origin_of(request))
    run_id = str(run.id)
    known_lines = actor if backfill.reads_known(run.mode, dry_run=run.dry_run) else None
    receiver = UploadReceiver(
        run_id, to_version(run.snapshot_at), get_settings(), transaction, known_lines=known_lines
    )
    feeder = _Feeder(receiver)
    try:
        try:
            pending, piece = bytearray(), FIRST_PIECE_BYTES
            async for data in request.stream():
                pending += data
                if len(pending) >= piece:
                    await feeder.feed(bytes(pending))
                    pending.clear()
                    piece = min(2 * piece, MAX_PIECE_BYTES)
        finally:
            await feeder.settle()  # whatever ended the reading, the receiver is idle after it
        await run_in_threadpool(receiver.feed, bytes(pending))
        work = await run_in_threadpool(_finish, receiver)
    except ReceiveStopped:  # cancelled while uploading
        work = receiver.take_work()
    except ClientDisconnect:
        await run_in_threadpool(_interrupted, run_id)
        work = receiver.take_work()
    finally:
        await run_in_threadpool(receiver.close)
    await run_in_threadpool(_send, work)
    run = await run_in_threadpool(_get, run_id)
    error = run.error or {}
    if error.get("code") == PruneThresholdExceeded.code:
        raise PruneThresholdExceeded(error["message"], **error["details"], backfill_id=run_id)
    return run


def _finish(receiver: UploadReceiver) -> list[Work]:
    """End of input. A pruning run checks its threshold now, so that a refusal is the answer."""
    work = receiver.finish()
    if Work("step", receiver.backfill_id) in work:
        settings = get_settings()
        with transaction() as session:
            work = run_step(
                session,
                receiver.backfill_id,
                max_fraction=settings.prune_max_fraction,
                batch=settings.backfill_chunk_size,
            )
    return work


def _start_pull(options: RunOptions, name: str) -> BackfillOut:
    with transaction() as session:
        run, work = sources.start(
            session,
            get_settings(),
            name,
            mode=options.mode,
            prune=options.prune,
            dry_run=options.dry_run,
        )
    _send(work)
    return run


async def _trigger(request: Request, options: RunOptions) -> BackfillOut:
    body = bytearray()
    async for data in request.stream():
        body += data
        if len(body) > MAX_JSON_BODY:
            raise ValidationFailed(f"a JSON body is at most {MAX_JSON_BODY} bytes")
    try:
        trigger = sources.SourceTrigger.model_validate_json(bytes(body))
    except ValidationError as exc:
        envelope = validation_envelope(exc)
        raise ValidationFailed(envelope["message"], **envelope["details"]) from None
    if options.snapshot_at is not None:
        raise ValidationFailed(
            "snapshot_at is set by the pull itself",
            errors=[{"loc": "query.snapshot_at", "message": "not allowed with a source"}],
        )
    return await run_in_threadpool(_start_pull, options, trigger.source)


@router.post(
    "",
    status_code=202,
    operation_id="createBackfill",
    dependencies=[scope("backfills:write")],
    responses=answers(
        InvalidBackfill,
        SourceNotFound,
        SourceBusy,
        PruneThresholdExceeded,
        ValidationFailed,
        InputLost,
        *BODY_ERRORS,
    )
    | {202: {"headers": {"Location": LOCATION}}},
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def create_backfill(
    request: Request, response: Response, principal: PrincipalDep, options: RunOptions = Depends()
) -> BackfillOut:
    """Start a backfill from an NDJSON body, or from a configured source (`{"source": name}`,
    with the admin scope: a source's identities are the operator's)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in NDJSON_TYPES:
        run = await _receive(request, options.for_upload(), principal.actor)
    elif media == "application/json":
        if not principal.allows("admin"):
            raise InsufficientScope(
                "pulling from a source needs the admin scope", required=["admin"]
            )
        run = await _trigger(request, options)
    else:
        raise UnsupportedMediaType(
            "send NDJSON (Content-Type: application/x-ndjson), or application/json "
            'with {"source": "<name>"}',
            content_type=media or None,
        )
    response.headers["Location"] = f"/v1/internal/backfills/{run.id}"
    return run


@router.get(
    "",
    operation_id="listBackfills",
    dependencies=[scope("read")],
    responses=answers(InvalidCursor, ValidationFailed),
)
def list_backfills(
    principal: PrincipalDep,
    status: Literal["receiving", "running", "completed", "failed", "cancelled"] | None = None,
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[BackfillOut]:
    """A page of backfills, newest first."""
    return backfill.list_backfills(
        session, limit=paging.limit, cursor=paging.cursor, status=status, sees=principal.actor.sees
    )


@router.get(
    "/{backfill_id}",
    operation_id="getBackfill",
    dependencies=[scope("read")],
    responses=answers(BackfillNotFound),
)
def get_backfill(
    backfill_id: BackfillId, principal: PrincipalDep, session: Session = Depends(read_session)
) -> BackfillOut:
    """The backfill: its status, counts and drift."""
    return backfill.get_backfill(session, backfill_id, sees=principal.actor.sees)


@router.get(
    "/{backfill_id}/failures",
    operation_id="listBackfillFailures",
    dependencies=[scope("read")],
    responses=answers(BackfillNotFound, InvalidCursor, ValidationFailed),
)
def list_failures(
    backfill_id: BackfillId,
    principal: PrincipalDep,
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[BackfillFailureOut]:
    """A page of the backfill's failed items, in line order."""
    return backfill.list_failures(
        session, backfill_id, limit=paging.limit, cursor=paging.cursor, sees=principal.actor.sees
    )


@router.get(
    "/{backfill_id}/drift",
    operation_id="listBackfillDrift",
    dependencies=[scope("read")],
    responses=answers(BackfillNotFound, InvalidCursor, ValidationFailed),
)
def list_drift(
    backfill_id: BackfillId,
    principal: PrincipalDep,
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[DriftedAgentOut]:
    """A page of the agents a mirror backfill found its input no longer has."""
    return backfill.list_drift(
        session, backfill_id, limit=paging.limit, cursor=paging.cursor, sees=principal.actor.sees
    )


def retry_run(backfill_id: str, sees: str | None) -> BackfillOut:
    """Apply a completed run's failed items again, and send the chunks' messages."""
    settings = get_settings()
    with transaction() as session:
        run, work = backfill.retry(
            session,
            backfill_id,
            chunk_size=settings.backfill_chunk_size,
            buckets=settings.backfill_buckets,
            sees=sees,
        )
    _send(work)
    return run


@router.post(
    "/{backfill_id}/retry",
    status_code=202,
    operation_id="retryBackfill",
    dependencies=[scope("backfills:write")],
    responses=answers(BackfillNotFound, BackfillNotRetryable),
)
async def retry_backfill(backfill_id: BackfillId, principal: PrincipalDep) -> BackfillOut:
    """Apply a completed backfill's failed items again."""
    return await run_in_threadpool(retry_run, backfill_id, principal.actor.sees)


def cancel_run(backfill_id: str, sees: str | None) -> BackfillOut:
    with transaction() as session:
        return backfill.cancel(session, backfill_id, sees=sees)


@router.post(
    "/{backfill_id}/cancel",
    operation_id="cancelBackfill",
    dependencies=[scope("backfills:write")],
    responses=answers(BackfillNotFound),
)
async def cancel_backfill(backfill_id: BackfillId, principal: PrincipalDep) -> BackfillOut:
    """Stop a backfill: chunks not applied yet never will be."""
    return await run_in_threadpool(cancel_run, backfill_id, principal.actor.sees)
