"""What both clients do around a call: the headers, when to try again and after how long, and
what an answer means. The clients only send and sleep (sync.py with httpx.Client, aio.py with
httpx.AsyncClient).

A write carries an `Idempotency-Key` made once per call and sent again on each retry, so a retry
of a write whose first answer was lost is answered from the first job, not recorded twice.
Tried again: a connection that failed, a `429` and a `503`, after `Retry-After` when the answer
gives one, else after an exponential backoff with full jitter.
"""

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from idmirror_client import errors
from idmirror_client.calls import Call
from idmirror_client.models import Job

T = TypeVar("T")
RETRIED_STATUSES = (429, 503)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is tried again."""

    retries: int = 5
    backoff: float = 0.2  # seconds before the first retry, doubled each time (before jitter)
    max_backoff: float = 10.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before try `attempt + 1` (0 is the first retry)."""
        if (told := _seconds(retry_after)) is not None:
            return min(told, self.max_backoff * 3)
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))


def _seconds(retry_after: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class Followed:
    """A write whose answer is its job's to give: still pending (202) while the caller asked
    for its result, or finished (200) while the caller asked for the job."""

    job_id: str


def headers_for(
    call: Call[Any], *, respond_async: bool, wait: float | None, idempotency_key: str | None
) -> dict[str, str]:
    """The per-call headers: for a write its Idempotency-Key (made here unless given) and how
    long the server should wait for the job."""
    if not call.write:
        return {}
    headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    if respond_async:
        headers["Prefer"] = "respond-async"
    elif wait is not None:
        headers["Prefer"] = f"wait={wait:g}"
    return headers


def retry_delay(policy: RetryPolicy, attempt: int, response: httpx.Response | None) -> float | None:
    """Seconds before the next try, or None if this outcome is final. `response` is None when
    the connection failed."""
    if attempt >= policy.retries:
        return None
    if response is None:
        return policy.delay(attempt)
    if response.status_code in RETRIED_STATUSES:
        return policy.delay(attempt, response.headers.get("Retry-After"))
    return None


def read_answer(
    call: Call[T], response: httpx.Response, *, respond_async: bool
) -> T | Job | Followed:
    """The call's result, the job of a write asked to answer at once, or Followed; raises the
    envelope's exception for an error."""
    job_id = response.headers.get("Idmirror-Job-Id")
    if response.status_code >= 400:
        raise errors.from_envelope(
            response.status_code,
            _json(response),
            job_id=job_id,
            request_id=response.headers.get("X-Request-Id"),
        )
    if call.read is str:
        return response.text  # type: ignore[return-value]
    body = _json(response)
    if call.write and job_id is not None and (response.status_code == 202) != respond_async:
        return Followed(job_id)
    if call.write and respond_async:
        return Job.model_validate(body)
    return call.read(body)


def job_result(call: Call[T], job: Job) -> T:
    """A finished job's result read as the call's answer; its error raised."""
    if job.status == "failed":
        error = job.error or {}
        raise errors.from_envelope(
            int(error.get("status", 500)), {"error": error}, job_id=str(job.id)
        )
    return call.read(job.result)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def connection_failed(url: str, exc: Exception) -> errors.ConnectionFailed:
    return errors.ConnectionFailed(f"could not reach {url}: {exc}", code="connection_failed")
