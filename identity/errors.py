"""Typed domain errors; each has a stable code and the HTTP status the API answers with."""

from typing import Any


class IdmirrorError(Exception):
    """Base of every error the API reports to clients."""

    code = "error"
    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def envelope(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "details": self.details,
        }


class InvalidToken(IdmirrorError):
    code, status = "invalid_token", 401


class InsufficientScope(IdmirrorError):
    """The token lacks a scope the route needs; `details.required` names it."""

    code, status = "insufficient_scope", 403


class RateLimited(IdmirrorError):
    """The integrator's bucket is empty; Retry-After says when a request fits again."""

    code, status = "rate_limited", 429


class OwnedByAnotherIntegrator(IdmirrorError):
    """A write to an identity another integrator owns (for a read, it does not exist)."""

    code, status = "owned_by_another_integrator", 409


class IntegratorNotFound(IdmirrorError):
    code, status = "integrator_not_found", 404


class IntegratorExists(IdmirrorError):
    code, status = "integrator_exists", 409


class TokenNotFound(IdmirrorError):
    code, status = "token_not_found", 404


class PayloadTooLarge(IdmirrorError):
    code, status = "payload_too_large", 413


class RequestTimeout(IdmirrorError):
    code, status = "request_timeout", 408


class InvalidUserId(IdmirrorError):
    code, status = "invalid_user_id", 400


class InvalidAgentKey(IdmirrorError):
    code, status = "invalid_agent_key", 400


class InvalidAgentRef(IdmirrorError):
    code, status = "invalid_agent_ref", 400


class InvalidKey(IdmirrorError):
    code, status = "invalid_key", 400


class InvalidCursor(IdmirrorError):
    code, status = "invalid_cursor", 400


class ValidationFailed(IdmirrorError):
    code, status = "validation_error", 422


class InvalidWebhookUrl(IdmirrorError):
    code, status = "invalid_webhook_url", 422


class IdempotencyKeyReused(IdmirrorError):
    code, status = "idempotency_key_reused", 422


class UserNotFound(IdmirrorError):
    code, status = "user_not_found", 404


class AgentNotFound(IdmirrorError):
    code, status = "agent_not_found", 404


class JobNotFound(IdmirrorError):
    code, status = "job_not_found", 404


class JobNotFailed(IdmirrorError):
    code, status = "job_not_failed", 409


class AlreadyRetried(IdmirrorError):
    """A failed job is retried once; `details.retry_job_id` names the job that retried it."""

    code, status = "already_retried", 409


class SlugTaken(IdmirrorError):
    code, status = "slug_taken", 409


class ServiceUnavailable(IdmirrorError):
    code, status = "service_unavailable", 503


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class NotReady(ServiceUnavailable):
    code = "not_ready"


class Stalled(ServiceUnavailable):
    """Pending work has not moved for longer than IDMIRROR_STALL_AFTER_SECONDS."""

    code = "stalled"


class Overloaded(ServiceUnavailable):
    """A write that could not be recorded in time (its queue full, the database stalled):
    nothing was recorded, and the same request may be sent again after Retry-After."""

    code = "overloaded"


class InternalError(IdmirrorError):
    """A failure the client did not cause (a bug, a poison payload): the message names its kind,
    never its text, which may carry data."""

    code, status = "internal_error", 500


class HttpError(IdmirrorError):
    """An error the web framework raised (unknown route, wrong method), under its own status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


# --- agent graphs ---------------------------------------------------------------------------


class NodeTypeNotFound(IdmirrorError):
    code, status = "node_type_not_found", 404


class InvalidNodeTypeId(IdmirrorError):
    code, status = "invalid_node_type_id", 400


class InvalidParamsSchema(IdmirrorError):
    code, status = "invalid_params_schema", 422


class EmptyUpdate(IdmirrorError):
    code, status = "empty_update", 422


class NodeNotFound(IdmirrorError):
    code, status = "node_not_found", 404


class UnknownNodeType(IdmirrorError):
    code, status = "unknown_node_type", 422


class InvalidOperation(IdmirrorError):
    code, status = "invalid_operation", 422


class InvalidParams(IdmirrorError):
    code, status = "invalid_params", 422


class SelfLoop(IdmirrorError):
    code, status = "self_loop", 422


class ConnectionExists(IdmirrorError):
    code, status = "connection_exists", 409


class ConnectionNotFound(IdmirrorError):
    code, status = "connection_not_found", 404


class GraphCycle(IdmirrorError):
    code, status = "graph_cycle", 422


class GraphTooLarge(IdmirrorError):
    code, status = "graph_too_large", 422


# --- backfills -------------------------------------------------------------------------------


class BackfillNotFound(IdmirrorError):
    code, status = "backfill_not_found", 404


class InvalidBackfill(IdmirrorError):
    code, status = "invalid_backfill", 400


class UnsupportedMediaType(IdmirrorError):
    code, status = "unsupported_media_type", 415


class PruneThresholdExceeded(IdmirrorError):
    code, status = "prune_threshold_exceeded", 409


class SourceNotFound(IdmirrorError):
    code, status = "source_not_found", 404


class SourceBusy(IdmirrorError):
    code, status = "source_busy", 409


class BackfillNotRetryable(IdmirrorError):
    code, status = "backfill_not_retryable", 409
