"""Reading backfill lines without the models, when they plainly pass every rule.

Agents and users are most of a backfill, and the models cost more than the rules they check.
A line is read here with msgspec's JSON decoder and the same rules in a few lines of code;
whatever this reading cannot plainly accept (a missing or odd field, an escape, a non-finite
number, deep nesting, a value at a limit) returns None and goes through the models, which decide
and write the error. So nothing is accepted here that the models refuse, and what is accepted is
stored exactly as the models' path stores it (tests/identity/backfill/test_items.py holds both to
that).
"""

import re
import uuid
from functools import lru_cache
from typing import Any

import msgspec
from pydantic import AwareDatetime, EmailStr, TypeAdapter, ValidationError

from identity.errors import ValidationFailed
from identity.keys import AGENT_KEY_PREFIX, SLUG_RE, USER_KEY_PREFIX
from identity.schemas import (
    MAX_AGENT_METADATA_BYTES,
    MAX_USER_METADATA_BYTES,
    AgentUpsert,
    UserUpsert,
    check_metadata_size,
    check_not_ahead,
    to_version,
)

_SLUG = SLUG_RE.pattern.removeprefix("^").removesuffix("$")
_USER_SLUG = re.compile(_SLUG)
_AGENT_KEY = re.compile(f"{_SLUG}@{_SLUG}")
_FIELDS = {
    "agent": frozenset(AgentUpsert.model_fields) | {"type", "key"},
    "user": frozenset(UserUpsert.model_fields) | {"type", "id"},
}
_AWARE: TypeAdapter[Any] = TypeAdapter(AwareDatetime)
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)
# What the decoder could read differently from validation: escapes (a NUL, a lone surrogate),
# non-finite numbers, NUL bytes. The decoder itself refuses a number that overflows a float,
# invalid UTF-8 and control characters in strings, as validation does; it keeps integers of any
# size exact and, as validation, the last of repeated keys.
_UNSURE = re.compile(rb"\\u|NaN|Infinity|\x00")
# Email addresses whose local part is a plain dot-atom of common characters and whose domain is
# plain ASCII: the validator keeps such a local part as it is and only normalises the domain, so
# the domain's verdict can be cached (validating an address costs more than the rest of a line).
_PLAIN_EMAIL = re.compile(r"([A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)@([A-Za-z0-9.-]+)")
_MAX_LOCAL, _MAX_ADDRESS = 64, 254
# Validation refuses JSON nested deeper than about 128 levels; the decoder does not.
_MAX_NESTING = 64
# Re-serialised, a JSON value is at most 8 times its text long (a float: 1e5 is 100000.0), so
# only a line longer than a limit / 8 can hold metadata over that limit.
_GROWTH = 8


def plain_object(raw: bytes) -> dict[str, Any] | None:
    """The line's object, if it is an agent or a user line the decoder reads as validation would."""
    if _UNSURE.search(raw) or raw.count(b"{") + raw.count(b"[") > _MAX_NESTING:
        return None
    try:
        obj = _decode(raw)
    except ValueError:  # msgspec.DecodeError is one
        return None
    if type(obj) is not dict or type(kind := obj.get("type")) is not str:
        return None
    fields = _FIELDS.get(kind)
    return obj if fields is not None and obj.keys() <= fields else None


# About a quarter of json.loads's cost per line (a first load reads every line here).
_decode = msgspec.json.Decoder().decode


def _plain_email(email: str) -> str | None:
    """A plain ASCII address as the email validator normalises it (the domain lower-cased), with
    the domain judged once by the validator itself; None for anything else."""
    match = _PLAIN_EMAIL.fullmatch(email)
    if match is None or len(match.group(1)) > _MAX_LOCAL or len(email) > _MAX_ADDRESS:
        return None
    if "xn--" in match.group(2).lower():
        return None  # normalised to Unicode, which the address's length limits count in bytes
    domain = _email_domain(match.group(2))
    return None if domain is None else f"{match.group(1)}@{domain}"


@lru_cache(maxsize=4096)
def _email_domain(domain: str) -> str | None:
    try:
        return _EMAIL.validate_python(f"x@{domain}").partition("@")[2]
    except ValidationError:
        return None


def _metadata_fits(raw: bytes, metadata: Any, limit: int) -> bool:
    if type(metadata) is not dict:
        return False
    if len(raw) * _GROWTH <= limit or not metadata:
        return True
    try:
        check_metadata_size(metadata, limit)
    except ValueError:
        return False
    return True


def _text(value: Any, most: int, *, optional: bool = False) -> bool:
    if value is None:
        return optional
    return type(value) is str and len(value) <= most


def version_of(obj: dict[str, Any], default: int) -> int | None:
    """The item's version: its source_updated_at, else `default`; None if that is not plain."""
    stamp = obj.get("source_updated_at")
    if stamp is None:
        return default
    if type(stamp) is not str:
        return None
    try:
        version = to_version(_AWARE.validate_python(stamp))
        check_not_ahead(version, "source_updated_at")
    except (ValidationError, ValidationFailed):
        return None
    return version


def plain_agent(raw: bytes, obj: dict[str, Any]) -> tuple[str, str | None] | None:
    """The ledger key and webhook_url of a plain agent line (the webhook rule is the caller's).

    The key is checked by AgentKey's own slug pattern and written as `str(AgentKey(...))`
    would write it, without the object: a million lines would pay half a second for it."""
    key, name, url = obj.get("key"), obj.get("display_name"), obj.get("webhook_url")
    if (
        type(key) is not str
        or not _text(name, 255)
        or not name
        or not _text(url, 2048, optional=True)
        or not _metadata_fits(raw, obj.get("metadata", {}), MAX_AGENT_METADATA_BYTES)
        or not _AGENT_KEY.fullmatch(key)
    ):
        return None
    return AGENT_KEY_PREFIX + key, url


def plain_user(raw: bytes, obj: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A plain user line's ledger key, and its fields as the models' path stores them (email
    normalised)."""
    user_id, email, slug = obj.get("id"), obj.get("email"), obj.get("slug")
    plan, owner = obj.get("plan", "free"), obj.get("external_owner")
    metadata = obj.get("metadata", {})
    if (
        type(user_id) is not str
        or type(email) is not str
        or type(slug) is not str
        or not _USER_SLUG.fullmatch(slug)
        or not _text(plan, 64)
        or not plan
        or not _text(owner, 64, optional=True)
        or not _metadata_fits(raw, metadata, MAX_USER_METADATA_BYTES)
    ):
        return None
    try:
        canonical_id = str(uuid.UUID(user_id))
        email = _plain_email(email) or _EMAIL.validate_python(email)
    except (ValueError, ValidationError):
        return None
    return USER_KEY_PREFIX + canonical_id, {
        "id": canonical_id,
        "email": email,
        "slug": slug,
        "plan": plan,
        "metadata": metadata,
        "external_owner": owner,
    }
