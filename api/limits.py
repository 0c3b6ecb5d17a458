"""The edge every request passes first: its request id, who is asking (api/guard.py: the
token, the rate limit), then what it may cost before it is read, an answer in the error
envelope for whatever fails unexpectedly behind it, and its access log record (api/access.py)
once answered. One wrapper of the answer adds the request id and the rate limit's headers.

This is the one place the bearer token is checked: every route under `/v1` and `/scim/` is
behind it. Under `/scim/` the refusals are in SCIM's error schema.

A pure ASGI middleware, so it acts before FastAPI reads a body: a request to `/v1` without a
valid token is answered 401 from its headers alone, one over its integrator's rate limit 429;
a JSON body whose Content-Length is over its limit is answered 413 unread; a body that keeps
arriving past the limit (chunked) or past IDMIRROR_BODY_TIMEOUT_SECONDS is cut off with 413 or
408. A JSON body that arrived whole is
checked by identity.json_input (depth, non-finite numbers, lone surrogates) before the app
reads it. NDJSON uploads (backfills) stream without a size limit, but each of their reads must
arrive within the same timeout.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import access
from api.errors import answer_error
from api.guard import Guard
from identity import json_input
from identity.errors import IdmirrorError, InternalError, PayloadTooLarge, RequestTimeout

log = logging.getLogger(__name__)
NDJSON = b"application/x-ndjson"


@dataclass(frozen=True)
class Limits:
    """The limits, from settings."""

    max_body_bytes: int
    max_graph_body_bytes: int
    body_timeout_seconds: float


class Edge:
    """Log each request, and refuse what it may not cost, as early as its headers allow.

    An unexpected exception behind it is answered with the 500 envelope and the request ends
    there: Starlette's own catch-all handler answers, then raises again, and uvicorn closes the
    connection on that, so a client's next request on its keep-alive connection would fail."""

    def __init__(self, app: ASGIApp, limits: Limits, guard: Guard | None = None) -> None:
        self.app = app
        self.limits = limits
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = access.request_id(headers.get(access.REQUEST_ID))
        scope[access.SCOPE_REQUEST_ID] = request_id.decode("ascii")
        added = [(access.REQUEST_ID, request_id)]  # and the rate limit's, once admitted
        status, job = 0, b""

        async def answer(message: Message) -> None:
            nonlocal status, job
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = message.get("headers", ())
                job = access.job_id(sent)
                message = {**message, "headers": [*sent, *added]}
            await send(message)

        try:
            await self._limited(scope, receive, answer, headers, added)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if status:
                raise  # part of an answer is out: nothing else can be said on this connection
            response = answer_error(
                scope.get("path", ""), InternalError("the server failed to handle this request")
            )
            await response(scope, receive, answer)
        finally:
            access.record(scope, status or 500, time.perf_counter() - started, job, request_id)

    async def _limited(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        added: list[tuple[bytes, bytes]],
    ) -> None:
        path: str = scope["path"]
        if self.guard is not None and self.guard.guards(path):
            admitted = await self.guard.admit(scope, receive, send, headers.get(b"authorization"))
            if admitted is None:
                return  # refused
            added += admitted
        streamed = headers.get(b"content-type", b"").split(b";")[0].strip() == NDJSON
        if streamed:
            ended = self.guard.upload_ended(scope) if self.guard is not None else None
            body = _Body(
                receive, None, self.limits.body_timeout_seconds, per_read=True, ended=ended
            )
            await self.app(scope, body.receive, send)
            return
        limit = self._size_limit(path)
        declared = _declared_length(headers.get(b"content-length"))
        try:
            if declared is not None and declared > limit:
                raise _too_large(limit)
            data = await _Body(receive, limit, self.limits.body_timeout_seconds).read()
            if data and _is_json(headers.get(b"content-type")):
                json_input.check(data)
        except IdmirrorError as refused:
            await answer_error(path, refused)(scope, receive, send)
            return
        await self.app(scope, _replay(data, receive), send)

    def _size_limit(self, path: str) -> int:
        if path.startswith("/v1/agents/") and path.endswith("/update"):
            return self.limits.max_graph_body_bytes
        return self.limits.max_body_bytes


class _Body:
    """The request's `receive`, counting bytes and time as they are read."""

    def __init__(
        self,
        receive: Receive,
        limit: int | None,
        timeout: float,
        *,
        per_read: bool = False,
        ended: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._receive = receive
        self._ended = ended  # called with the size once the whole body has arrived
        self._limit = limit
        self._timeout = timeout
        self._per_read = per_read
        self._deadline: float | None = None
        self.received = 0

    async def receive(self) -> Message:
        loop = asyncio.get_running_loop()
        if self._deadline is None or self._per_read:
            self._deadline = loop.time() + self._timeout
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self._timeout:g} seconds"
            ) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self._limit is not None and self.received > self._limit:
                raise _too_large(self._limit)
            if not message.get("more_body", False) and self._ended is not None:
                ended, self._ended = self._ended, None
                await ended(self.received)
        return message

    async def read(self) -> bytes:
        """The whole body, within the limits."""
        parts: list[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                return b"".join(parts)  # the client went away; the app sees an empty body
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)


def _replay(data: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body read already, then waits as the server's does."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # http.disconnect, when the client goes
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    return replay


def _is_json(content_type: bytes | None) -> bool:
    """Whether FastAPI reads this body as JSON (it does when no content type is given)."""
    if content_type is None:
        return True
    media = content_type.split(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is over {limit} bytes", limit=limit)


def _declared_length(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
