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


class InvalidUserId(IdmirrorError):
    code, status = "invalid_user_id", 400


class InvalidAgentKey(IdmirrorError):
    code, status = "invalid_agent_key", 400


class InvalidAgentRef(IdmirrorError):
    code, status = "invalid_agent_ref", 400


class InvalidCursor(IdmirrorError):
    code, status = "invalid_cursor", 400


class InvalidPrefer(IdmirrorError):
    code, status = "invalid_prefer", 400


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


class SlugTaken(IdmirrorError):
    code, status = "slug_taken", 409


class NotFound(IdmirrorError):
    code, status = "not_found", 404


class MethodNotAllowed(IdmirrorError):
    code, status = "method_not_allowed", 405


class ServiceUnavailable(IdmirrorError):
    code, status = "service_unavailable", 503


ERRORS_BY_CODE: dict[str, type[IdmirrorError]] = {
    cls.code: cls for cls in IdmirrorError.__subclasses__()
}
