"""Request bodies. Validated at the edge; stored in the ledger as their JSON form."""

import json
import time
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.networks import validate_email

from identity.errors import ValidationFailed
from identity.keys import SLUG_RE
from identity.settings import get_settings

MAX_AGENT_METADATA_BYTES = 16 * 1024
MAX_USER_METADATA_BYTES = 64 * 1024


def to_version(moment: datetime) -> int:
    """A version is a moment in whole microseconds since the epoch."""
    return int(moment.timestamp() * 1_000_000)


def check_not_ahead(version: int, loc: str) -> None:
    """Refuse a time further ahead of this server's clock than IDMIRROR_MAX_CLOCK_SKEW_SECONDS.

    Stored as a version, such a time would make every later write of the key that carries no
    time of its own, deletes included, `superseded` until the clock caught up with it."""
    limit = get_settings().max_clock_skew_seconds
    if version / 1_000_000 - time.time() > limit:
        name = loc.rpartition(".")[2]
        raise ValidationFailed(
            f"{name} is more than {limit:g} seconds ahead of this server's clock",
            errors=[{"loc": loc, "message": "too far in the future", "type": "too_far_ahead"}],
        )


def check_metadata_size(
    value: dict[str, Any], limit: int, name: str = "metadata"
) -> dict[str, Any]:
    """Refuse an object larger than `limit` bytes as compact JSON."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise ValueError(f"{name} is {size} bytes serialised; the limit is {limit}")
    return value


def find_nul(value: Any, path: str = "body") -> str | None:
    """Where a NUL character hides in a JSON value; PostgreSQL text and jsonb cannot store it."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_nul(key, path) or find_nul(item, f"{path}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}[{index}]")
            if found:
                return found
    return None


def reject_nul(data: Any) -> Any:
    where = find_nul(data)
    if where is not None:
        raise ValueError(f"text must not contain the NUL character (found in {where})")
    return data


@lru_cache(maxsize=4096)
def normalized_email(value: str) -> str:
    """pydantic's EmailStr: the address normalised, or a validation error. Remembered for the
    4,096 addresses last seen (errors are not): a user's updates carry the address it has, and
    checking one costs more than the rest of the body. A key is at most 2,048 characters
    (longer values are errors, as are addresses of more than 254)."""
    return validate_email(value)[1]


# EmailStr, with its JSON schema, through normalized_email.
Email = Annotated[
    str, AfterValidator(normalized_email), WithJsonSchema({"type": "string", "format": "email"})
]


class StrictBody(BaseModel):
    """A JSON request body: no field it does not declare, no NUL character in any text (no
    text column can store one)."""

    model_config = ConfigDict(extra="forbid")

    _no_nul = model_validator(mode="before")(reject_nul)


class Body(StrictBody):
    model_config = ConfigDict(str_strip_whitespace=False)

    source_updated_at: AwareDatetime | None = None

    def explicit_version(self) -> int | None:
        """The body's source_updated_at as a version; refused if it is too far ahead."""
        if self.source_updated_at is None:
            return None
        version = to_version(self.source_updated_at)
        check_not_ahead(version, "body.source_updated_at")
        return version


class UserUpsert(Body):
    """PUT /v1/internal/users/{user_id}."""

    email: Email
    slug: str = Field(pattern=SLUG_RE.pattern, max_length=64)
    plan: str = Field("free", min_length=1, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)
    external_owner: str | None = Field(None, max_length=64)

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_metadata_size(value, MAX_USER_METADATA_BYTES)


class AgentUpsert(Body):
    """PUT /v1/internal/agents/{slug}@{user_slug}."""

    display_name: str = Field(min_length=1, max_length=255)
    webhook_url: str | None = Field(None, max_length=2048)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_metadata_size(value, MAX_AGENT_METADATA_BYTES)
