"""Typed exceptions carrying the API's error envelope (`code`, `message`, `details`) and the
ids that help find what happened: the job's, when the write became one, and the request's."""

from typing import Any


class IdmirrorError(Exception):
    """An answer in the error envelope, or a request that could not be made at all."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        details: dict[str, Any] | None = None,
        job_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.message = message
        self.status = status
        self.code = code
        self.details = details or {}
        self.job_id = job_id
        self.request_id = request_id


class ConnectionFailed(IdmirrorError):
    """The API could not be reached (after the retries), at the URL named in the message."""


class JobTimeout(IdmirrorError):
    """A job was still pending when the wait for it ended; it goes on in the service."""


class BadRequest(IdmirrorError):
    """400: a malformed id, key or cursor."""


class Unauthorized(IdmirrorError):
    """401: a missing or wrong token."""


class Forbidden(IdmirrorError):
    """403: the token lacks the scope the operation needs (`details.required`)."""


class NotFound(IdmirrorError):
    """404: no such identity, job or backfill."""


class Conflict(IdmirrorError):
    """409: the stored state refuses the write (a slug taken, a missing user, a second retry)."""


class PayloadTooLarge(IdmirrorError):
    """413: the body is over the service's limit (`details.limit`)."""


class ValidationFailed(IdmirrorError):
    """422: the body or a parameter breaks a rule (`details.errors`)."""


class RateLimited(IdmirrorError):
    """429: over the integrator's rate limit, still after the retries."""


class ServerError(IdmirrorError):
    """5xx: the service failed; a write with its job id was recorded and goes on."""


class Unavailable(ServerError):
    """503: the database or the queue is overloaded or away, still after the retries."""


_BY_STATUS: dict[int, type[IdmirrorError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}


def from_envelope(
    status: int,
    body: Any,
    *,
    job_id: str | None = None,
    request_id: str | None = None,
) -> IdmirrorError:
    """The exception for an answer of `status` whose body is (or should be) the envelope."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": "http_error", "message": f"HTTP {status}: {str(body)[:200]}"}
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else IdmirrorError)
    return cls(
        str(error.get("message", "")),
        status=status,
        code=str(error.get("code", "error")),
        details=error.get("details") if isinstance(error.get("details"), dict) else None,
        job_id=job_id,
        request_id=request_id,
    )
