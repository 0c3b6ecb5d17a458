"""What every SCIM resource served shares: its `meta` (with the weak ETag its version gives),
`If-Match` checked against that version, and its answered form."""

from datetime import datetime
from typing import Any

from scim2_models import Context, Meta, Resource, ResponseParameters

from identity.scim.errors import PreconditionFailed


def etag(version: int) -> str:
    """The weak entity tag of a version: `meta.version` and the ETag header."""
    return f'W/"{version}"'


def columns(row: Any) -> dict[str, Any]:
    """A row's columns by name; a write's result (already a dict) as it is."""
    return dict(row) if isinstance(row, dict) else dict(row._mapping)


def as_time(value: Any) -> datetime:
    """A row's timestamp, or a write's result's (ISO text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def meta_of(data: dict[str, Any], resource_type: str, location: str) -> Meta:
    """The `meta` of a row (or a write's result) with `created_at`, `updated_at`, `version`."""
    return Meta(
        resource_type=resource_type,
        created=as_time(data["created_at"]),
        last_modified=as_time(data["updated_at"]),
        version=etag(int(data["version"])),
        location=location,
    )


def if_match_holds(header: str | None, version: int) -> bool:
    """Whether an `If-Match` (or `If-None-Match`) list names this version (`*` names any).
    Tags are compared weakly: `W/"1"` and `"1"` are the same version."""
    if header is None:
        return True
    tags = [tag.strip() for tag in header.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == f'"{version}"' for tag in tags)


def require_match(header: str | None, version: int, noun: str) -> None:
    """PreconditionFailed unless `If-Match` names this version of the `noun`."""
    if not if_match_holds(header, version):
        raise PreconditionFailed(f"If-Match names another version of this {noun}", version=version)


def dump(
    resource: Resource[Any], parameters: ResponseParameters[Any] | None = None
) -> dict[str, Any]:
    """A resource as answered, with the attributes the request asked for."""
    return resource.model_dump(
        scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=parameters
    )
