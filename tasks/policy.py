"""The retry policy every task that touches the database takes: transient errors only, with
backoff and jitter; validation and domain errors never retry."""

from typing import Any

from identity.db import TRANSIENT_ERRORS

RETRY_POLICY: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 10,
}
