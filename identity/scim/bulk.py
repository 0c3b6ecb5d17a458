"""SCIM Bulk (RFC 7644 §3.7): a BulkRequest read and bounded, each operation made into the
WriteRequest a route would make of it, with its `bulkId:` references resolved to the ids the
operations before it created, and each outcome in the form of a BulkResponse operation.

Operations run in the order they are sent, one job after the other: a reference to a `bulkId`
that no earlier operation created (a later one, a failed one, or none) fails that operation.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from identity.scim.errors import InvalidSyntax, InvalidValue, TooManyOperations, UnresolvedBulkId
from identity.scim.requests import SUBMISSIONS, WriteRequest

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
MAX_OPERATIONS = 100  # the most operations one request may carry
_PREFIX = "bulkId:"


class BulkOperation(BaseModel):
    """One operation of a BulkRequest, as sent."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    method: Literal["POST", "PUT", "PATCH", "DELETE"]
    bulk_id: str | None = Field(None, alias="bulkId", min_length=1, max_length=255)
    version: str | None = Field(None, max_length=255)
    path: str = Field(min_length=2, max_length=2048)
    data: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _method_in_capitals(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("method"), str):
            return {**value, "method": value["method"].upper()}
        return value

    @model_validator(mode="after")
    def _required(self) -> "BulkOperation":
        if self.method == "POST" and self.bulk_id is None:
            raise ValueError("a POST operation needs a bulkId")
        if self.method != "DELETE" and self.data is None:
            raise ValueError(f"a {self.method} operation needs data")
        return self


@dataclass(frozen=True)
class BulkRequest:
    """A BulkRequest's operations (still unread, so that a bad one fails alone) and how many
    errors end it."""

    operations: list[Any]
    fail_on_errors: int | None


def parse_bulk(body: dict[str, Any]) -> BulkRequest:
    """A BulkRequest body, bounded by MAX_OPERATIONS."""
    if BULK_REQUEST not in (body.get("schemas") or []):
        raise InvalidSyntax(f"a BulkRequest names the schema {BULK_REQUEST}")
    operations, fail_on_errors = body.get("Operations"), body.get("failOnErrors")
    if not isinstance(operations, list):
        raise InvalidSyntax("a BulkRequest carries its Operations as a list")
    if fail_on_errors is not None and (
        not isinstance(fail_on_errors, int)
        or isinstance(fail_on_errors, bool)
        or fail_on_errors < 1
    ):
        raise InvalidValue("failOnErrors is a positive integer", failOnErrors=fail_on_errors)
    if len(operations) > MAX_OPERATIONS:
        raise TooManyOperations(
            f"{len(operations)} operations; a BulkRequest carries at most {MAX_OPERATIONS}",
            maxOperations=MAX_OPERATIONS,
        )
    return BulkRequest(operations, fail_on_errors)


@dataclass
class BulkIds:
    """The ids the operations of one request created, by their bulkId."""

    created: dict[str, str] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        """`value` with every `bulkId:<id>` string replaced by the id that bulkId created."""
        if isinstance(value, str) and value.startswith(_PREFIX):
            bulk_id = value.removeprefix(_PREFIX)
            if bulk_id not in self.created:
                raise UnresolvedBulkId(
                    f"{value} names no resource an earlier operation created", bulkId=bulk_id
                )
            return self.created[bulk_id]
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value


def operation_of(raw: Any) -> BulkOperation:
    """One operation checked; invalidValue when it is not one."""
    try:
        return BulkOperation.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidValue(f"{where}: {first['msg']}" if where else first["msg"]) from None


def write_request(
    operation: BulkOperation, ids: BulkIds, sees: str | None
) -> tuple[str, WriteRequest]:
    """The endpoint an operation writes to, and the write it stands for (by a token that sees
    the integrator `sees`' identities)."""
    endpoint, _, resource_id = operation.path.strip("/").partition("/")
    if endpoint not in SUBMISSIONS or "/" in resource_id:
        raise InvalidValue(f"{operation.path} is no resource or endpoint of this service")
    if (operation.method == "POST") == bool(resource_id):
        raise InvalidValue(f"{operation.method} {operation.path}: not an operation of SCIM")
    write = WriteRequest(
        operation.method,
        ids.resolve(resource_id) or None,
        ids.resolve(operation.data or {}),
        if_match=operation.version,
        sees=sees,
    )
    return endpoint, write


def result_of(
    operation: BulkOperation | None,
    raw: Any,
    status: int,
    body: dict[str, Any] | None,
    location: str | None,
) -> dict[str, Any]:
    """A BulkResponse operation: its method, bulkId, the resource's `location` and version,
    its status, and the error, as `response`, if it failed."""
    sent = raw if isinstance(raw, dict) else {}
    method = operation.method if operation else str(sent.get("method", ""))
    result: dict[str, Any] = {"method": method}
    bulk_id = operation.bulk_id if operation else sent.get("bulkId")
    if bulk_id is not None:
        result["bulkId"] = bulk_id
    meta = (body or {}).get("meta") or {}
    location = meta.get("location") or location
    if location is not None:
        result["location"] = location
    if status < 300 and "version" in meta:
        result["version"] = meta["version"]
    result["status"] = str(status)
    if status >= 400 and body is not None:
        result["response"] = body
    return result
