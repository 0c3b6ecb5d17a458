"""The access log: one record per request with its method, path, status, duration, the job it
made (the answer's Idmirror-Job-Id) and its request id, written by the edge (api/limits.py) once
the answer has been sent, or the request failed.

The request id is the caller's X-Request-Id when it sent a usable one, else a new one; the
answer carries it back in X-Request-Id, so a caller's report and the log meet on it.
"""

import logging
import re
import uuid
from collections.abc import Iterable

from starlette.types import Scope

log = logging.getLogger(__name__)

REQUEST_ID = b"x-request-id"
SCOPE_REQUEST_ID = "idmirror.request_id"  # the request's id in its ASGI scope, for the audit trail
JOB_ID = b"idmirror-job-id"
# Printable ASCII without spaces, as a log line and a header can carry it unchanged.
_USABLE = re.compile(rb"[\x21-\x7e]{1,200}")


def request_id(sent: bytes | None) -> bytes:
    """The caller's X-Request-Id if it is usable, else a new id."""
    if sent is not None and _USABLE.fullmatch(sent):
        return bytes(sent)
    return uuid.uuid4().hex.encode()


def job_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The job an answer names in its Idmirror-Job-Id header, if any."""
    return next((value for name, value in headers if name.lower() == JOB_ID), b"")


def record(scope: Scope, status: int, seconds: float, job: bytes, request: bytes) -> None:
    """Log one request at INFO (nothing is formatted when INFO is off)."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields = {
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "job_id": job.decode() or None,
        "request_id": request.decode(),
    }
    shown = f" job={fields['job_id']}" if job else ""
    log.info(
        "%s %s %s %.1fms%s request=%s",
        fields["method"],
        fields["path"],
        status,
        fields["duration_ms"],
        shown,
        fields["request_id"],
        extra=fields,
    )
