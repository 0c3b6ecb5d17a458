"""SCIM's own errors: each is a domain error (so a failed SCIM job keeps it in the ledger) with
the `scimType` RFC 7644 §3.12 gives it."""

from typing import Any

from scim2_models import SCIMException

from identity.errors import IdmirrorError


class ScimError(IdmirrorError):
    """An error with a SCIM `scimType`."""

    scim_type: str | None = None


class InvalidFilter(ScimError):
    code, status = "invalid_filter", 400
    scim_type = "invalidFilter"


class InvalidPath(ScimError):
    code, status = "invalid_path", 400
    scim_type = "invalidPath"


class NoTarget(ScimError):
    code, status = "no_target", 400
    scim_type = "noTarget"


class InvalidValue(ScimError):
    code, status = "invalid_value", 400
    scim_type = "invalidValue"


class InvalidSyntax(ScimError):
    code, status = "invalid_syntax", 400
    scim_type = "invalidSyntax"


class Mutability(ScimError):
    code, status = "mutability", 400
    scim_type = "mutability"


class TooMany(ScimError):
    code, status = "too_many", 400
    scim_type = "tooMany"


class TooManyOperations(ScimError):
    """A BulkRequest over maxOperations (RFC 7644 §3.7.4)."""

    code, status = "too_many_operations", 413
    scim_type = "tooMany"


class UnresolvedBulkId(ScimError):
    """A `bulkId:` reference to no resource an earlier operation of the request created."""

    code, status = "unresolved_bulk_id", 409
    scim_type = "invalidValue"


class UserNameTaken(ScimError):
    code, status = "user_name_taken", 409
    scim_type = "uniqueness"


class AgentNameTaken(ScimError):
    code, status = "agent_name_taken", 409
    scim_type = "uniqueness"


class PreconditionFailed(ScimError):
    code, status = "precondition_failed", 412


class ScimNotFound(ScimError):
    code, status = "scim_not_found", 404


_BY_SCIM_TYPE: dict[str, type[ScimError]] = {
    cls.scim_type: cls
    for cls in (InvalidFilter, InvalidPath, NoTarget, InvalidValue, InvalidSyntax, Mutability)
    if cls.scim_type is not None
}


def from_scim_type(scim_type: str | None, message: str, **details: Any) -> ScimError:
    """The error for a scimType a SCIM library reported (invalidValue when it named none)."""
    return _BY_SCIM_TYPE.get(scim_type or "", InvalidValue)(message, **details)


def from_exception(exc: SCIMException) -> ScimError:
    """The domain error of an exception scim2-models raised."""
    return from_scim_type(exc.scim_type, str(exc) or exc.detail)


def from_validation(errors: list[Any]) -> ScimError:
    """The domain error of a pydantic validation of a SCIM payload: the scimType scim2-models
    tagged the first error with, or invalidValue."""
    first = errors[0] if errors else {}
    kind = str(first.get("type", ""))
    scim_type = kind.removeprefix("scim_") if kind.startswith("scim_") else None
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "the payload is not valid"))
    return from_scim_type(scim_type, f"{where}: {message}" if where else message)
