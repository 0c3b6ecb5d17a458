"""The SCIM User and idmirror's user: where each attribute is stored, the slug a `userName`
gives, and the SCIM form of a users row.

A user's `id` is its idmirror UUID. `userName`, `externalId` and `active` have columns of their
own (`user_name`, `external_id`, `active`); every other attribute a provider sends (name,
emails, the enterprise extension, ...) is kept as it came in the `scim` column, except the
password, which is never stored. The `email` column holds the primary email. A user written
only through /v1 has no `user_name`: its slug is its `userName`.
"""

import hashlib
import re
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter
from scim2_models import Context, Email, EnterpriseUser, User

from identity.scim.payloads import SETS
from identity.scim.resources import as_time, columns, dump, etag, meta_of
from identity.users import USER_COLUMNS

ScimUser = User[EnterpriseUser]
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCIM_USER_COLUMNS = f"{USER_COLUMNS}, active, user_name, external_id, scim"
USERS_PATH = "/scim/v2/Users"
# What the `scim` column does not keep: attributes with columns of their own, what the server
# assigns, and what it never stores or returns.
_OWN_PLACE = {"schemas", "id", "meta", "userName", "externalId", "active", "password", "groups"}
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
MAX_SLUG = 64


class ScimUserFields(BaseModel):
    """What a SCIM write of a user stores, as its job carries it."""

    user_name: str = Field(min_length=1, max_length=255)
    external_id: str | None = Field(None, max_length=255)
    active: bool | None = None  # None: never said (a user is active unless `false`)
    profile: dict[str, Any] = Field(default_factory=dict)

    def email(self) -> str:
        """The primary email, else the first one, else the userName when it is an address."""
        emails = [e for e in self.profile.get("emails", []) if isinstance(e, dict)]
        chosen = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
        if chosen and isinstance(chosen.get("value"), str):
            return str(chosen["value"])
        return self.user_name if "@" in self.user_name else ""


def fields_of(user: ScimUser) -> ScimUserFields:
    """What to store of a SCIM User a provider sent."""
    dumped = user.model_dump(scim_ctx=Context.DEFAULT)
    profile = {name: value for name, value in dumped.items() if name not in _OWN_PLACE}
    if not profile.get(ENTERPRISE_SCHEMA):
        profile.pop(ENTERPRISE_SCHEMA, None)
    return ScimUserFields(
        user_name=user.user_name or "",
        external_id=user.external_id,
        active=user.active,
        profile=profile,
    )


# The User's single-valued string attributes with no constraint of their own (displayName,
# nickName, title, userType, preferredLanguage, locale, timezone), kept in the `scim` column,
# by their name in lower case: SCIM attribute names are case-insensitive.
_PLAIN = {
    str(field.serialization_alias).lower(): str(field.serialization_alias)
    for field in ScimUser.model_fields.values()
    if field.annotation == (str | None) and not field.metadata
}


def plainly_patched(row: Any, operations: list[dict[str, Any]]) -> ScimUserFields | None:
    """What a PATCH whose every operation sets one of the plain attributes above to a string
    (the common Okta and Entra PATCH: `replace` of `displayName`, `title`, ...) stores for a
    users row: what `fields_of` gives of the row as a User patched by scim2-models, without
    building one (a test holds the two equal). None for any other PATCH."""
    names = []
    for op in operations:
        name = _PLAIN.get(str(op.get("path")).lower())
        if op.get("op") not in SETS or name is None or not isinstance(op.get("value"), str):
            return None
        names.append(name)
    data = columns(row)
    profile: dict[str, Any] = dict(data.get("scim") or {})
    if "emails" not in profile and data.get("email"):
        email = Email(value=data["email"], primary=True)
        profile["emails"] = [email.model_dump(scim_ctx=Context.DEFAULT)]
    for name, op in zip(names, operations, strict=True):
        profile[name] = op["value"]
    return ScimUserFields(
        user_name=data.get("user_name") or data["slug"],
        external_id=data.get("external_id"),
        active=data.get("active"),
        profile=profile,
    )


def slug_for(user_name: str, user_id: uuid.UUID, *, suffixed: bool = False) -> str:
    """The slug a SCIM user is created with: its userName lowercased, each run of other
    characters a hyphen (`Ada.Lovelace@Example.com` -> `ada-lovelace-example-com`). `suffixed`
    (when another user has that slug) ends it with 8 hex digits of the user's id. A user keeps
    its slug when its userName changes: agents are addressed by it."""
    base = _NOT_SLUG.sub("-", user_name.lower()).strip("-") or "user"
    if not suffixed:
        return base[:MAX_SLUG].rstrip("-")
    tail = hashlib.sha256(user_id.bytes).hexdigest()[:8]
    return f"{base[: MAX_SLUG - 9].rstrip('-')}-{tail}"


def to_scim(row: Any, base_url: str) -> ScimUser:
    """A users row (or a SCIM write's result) as a SCIM User; `base_url` is where /scim/v2 is
    served, for `meta.location`."""
    data = columns(row)
    profile: dict[str, Any] = dict(data.get("scim") or {})
    if "emails" not in profile and data.get("email"):
        profile["emails"] = [{"value": data["email"], "primary": True}]
    schemas = [USER_SCHEMA, *([ENTERPRISE_SCHEMA] if ENTERPRISE_SCHEMA in profile else [])]
    user = ScimUser.model_validate(
        {**profile, "schemas": schemas, "userName": data.get("user_name") or data["slug"]}
    )
    user.id = str(data["id"])
    user.external_id = data.get("external_id")
    user.active = data.get("active")
    user.meta = meta_of(data, "User", f"{base_url}{USERS_PATH}/{data['id']}")
    return user


_TIME = TypeAdapter(datetime)


def _time(value: Any) -> Any:
    return _TIME.dump_python(as_time(value), mode="json")


def answered(row: Any, base_url: str) -> dict[str, Any]:
    """A users row (or a SCIM write's result) as answered in full, when no `attributes` are
    asked for: what `dump(to_scim(row, base_url))` gives.

    The `scim` column holds what scim2-models made of a validated User, so it is assembled
    here rather than validated again, which would cost a SCIM write about a tenth of its CPU.
    A user whose emails come from its `email` column (written through /v1) goes the long
    way: that address was never read as a SCIM email."""
    data = columns(row)
    profile: dict[str, Any] = data.get("scim") or {}
    if "emails" not in profile and data.get("email"):
        return dump(to_scim(row, base_url))
    location = f"{base_url}{USERS_PATH}/{data['id']}"
    answer: dict[str, Any] = {
        "schemas": [USER_SCHEMA, *([ENTERPRISE_SCHEMA] if ENTERPRISE_SCHEMA in profile else [])],
        "id": str(data["id"]),
    }
    if data.get("external_id") is not None:
        answer["externalId"] = data["external_id"]
    answer["meta"] = {
        "resourceType": "User",
        "created": _time(data["created_at"]),
        "lastModified": _time(data["updated_at"]),
        "location": location,
        "version": etag(int(data["version"])),
    }
    answer["userName"] = data.get("user_name") or data["slug"]
    answer.update(profile)
    if data.get("active") is not None:
        answer["active"] = data["active"]
    return answer
