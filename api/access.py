"""The access log: one record per request with its method, path, status, duration, the job it
made (the answer's Idmirror-Job-Id) and its request id.

The request id is the caller's X-Request-Id when it sent a usable one, else a new one; the
answer carries it back in X-Request-Id, so a caller's report and the log meet on it.
"""

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

REQUEST_ID = b"x-request-id"
SCOPE_REQUEST_ID = "idmirror.request_id"  # the request's id in its ASGI scope, for the audit trail
JOB_ID = b"idmirror-job-id"
# Printable ASCII without spaces, as a log line and a header can carry it unchanged.
_USABLE = re.compile(rb"[\x21-\x7e]{1,200}")


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == REQUEST_ID and _USABLE.fullmatch(value):
            return bytes(value)
    return uuid.uuid4().hex.encode()


class AccessLog:
    """Logs each HTTP request when its answer has been sent (or it failed), at INFO."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope[SCOPE_REQUEST_ID] = request_id.decode("ascii")
        status, job_id = 500, b""

        async def answer(message: Message) -> None:
            nonlocal status, job_id
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                job_id = next((v for k, v in headers if k.lower() == JOB_ID), b"")
                message = {**message, "headers": [*headers, (REQUEST_ID, request_id)]}
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            if log.isEnabledFor(logging.INFO):
                _record(scope, status, time.perf_counter() - started, job_id, request_id)


def _record(scope: Scope, status: int, seconds: float, job_id: bytes, request_id: bytes) -> None:
    fields = {
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "job_id": job_id.decode() or None,
        "request_id": request_id.decode(),
    }
    job = f" job={fields['job_id']}" if job_id else ""
    log.info(
        "%s %s %s %.1fms%s request=%s",
        fields["method"],
        fields["path"],
        status,
        fields["duration_ms"],
        job,
        fields["request_id"],
        extra=fields,
    )
