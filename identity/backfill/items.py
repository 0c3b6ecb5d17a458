"""Backfill items: one NDJSON line validated into the element a chunk stores, or a failure.

Lines are validated with the same models as the PUT bodies (plus `type` and `id` / `key`), or,
for agent and user lines that plainly pass, with the same rules without them (plain.py). A
chunk stores users and node types normalised (validation normalises `email`) and agents as the
line's own JSON object next to its line number and version: the bulk of a backfill is agents,
and their common path re-serialises nothing.
"""

import json
import math
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from identity import json_input
from identity.backfill.digests import line_digest
from identity.backfill.plain import plain_agent, plain_object, plain_user, version_of
from identity.errors import IdmirrorError, InvalidWebhookUrl, ValidationFailed
from identity.keys import AgentKey, LedgerKey, NodeTypeKey, UserKey
from identity.node_types import NodeTypeUpsert, check_schema
from identity.schemas import AgentUpsert, UserUpsert, check_not_ahead, find_nul, to_version
from identity.webhooks import check_webhook_url


def _nul_checked_by_parser(data: Any) -> Any:
    return data


class UserItem(UserUpsert):
    """`{"type": "user", "id": "<uuid>", ...user body}`."""

    type: Literal["user"]
    id: str
    # The bodies' NUL check walks every value; ItemParser runs it only on the lines that can
    # hold a NUL at all (those with a \u0000 escape), which is the same check for far less.
    _no_nul = model_validator(mode="before")(_nul_checked_by_parser)


class AgentItem(AgentUpsert):
    """`{"type": "agent", "key": "slug@user_slug", ...agent body}`."""

    type: Literal["agent"]
    key: str
    _no_nul = model_validator(mode="before")(_nul_checked_by_parser)


class NodeTypeItem(NodeTypeUpsert):
    """`{"type": "node_type", "id": "<uuid>", ...node type body}`."""

    type: Literal["node_type"]
    id: str
    _no_nul = model_validator(mode="before")(_nul_checked_by_parser)


_ITEM: TypeAdapter[UserItem | AgentItem | NodeTypeItem] = TypeAdapter(
    Annotated[UserItem | AgentItem | NodeTypeItem, Field(discriminator="type")]
)


@dataclass(slots=True)
class Parsed:
    kind: str  # "node_type" | "user" | "agent"
    key: str  # the ledger key: node_type:<uuid>, user:<uuid> or agent:<slug>@<user_slug>
    stored: bytes  # the JSON element the chunk stores
    slug: str | None = None  # users: their slug


@dataclass(slots=True)
class Failure:
    line: int
    kind: str | None
    key: str | None
    error: dict[str, Any]


def stored_key(kind: str, element: dict[str, Any]) -> LedgerKey:
    """The key of an element as a chunk stores it (its key was valid when it was received)."""
    match kind:
        case "agent":
            return AgentKey.parse(element["d"]["key"])
        case "user":
            return UserKey.parse(element["id"])
        case "node_type":
            return NodeTypeKey.parse(element["id"])
    raise ValueError(f"no stored element is of kind {kind!r}")


def bucket_of(key: str, buckets: int) -> int:
    """Every item of one key lands in the same bucket, whose chunks are applied in order."""
    return zlib.crc32(key.encode()) % buckets


def _loc(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("user", "agent", "node_type"):
        parts = parts[1:]  # the discriminator's tag, not a field
    return ".".join(str(p) for p in parts)


def validation_envelope(exc: ValidationError) -> dict[str, Any]:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if errors and errors[0]["type"] == "json_invalid":
        return ValidationFailed(f"the line is not valid JSON: {errors[0]['msg']}").envelope()
    listed = [{"loc": _loc(e["loc"]), "message": e["msg"], "type": e["type"]} for e in errors]
    return ValidationFailed("the item is not valid", errors=listed).envelope()


def _guess_identity(raw: bytes) -> tuple[str | None, str | None]:
    """The kind and key a rejected line names, when it names them at all."""
    try:
        obj = json_input.loads(raw, "line")
    except (ValueError, IdmirrorError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    kind = obj.get("type") if obj.get("type") in ("user", "agent", "node_type") else None
    name = obj.get("id") if kind in ("user", "node_type") else obj.get("key")
    if kind is None or not isinstance(name, str):
        return kind, None
    try:
        if kind == "user":
            return kind, str(UserKey.parse(name))
        if kind == "node_type":
            return kind, str(NodeTypeKey.parse(name))
    except IdmirrorError:
        pass
    return kind, f"{kind}:{name}"  # not a valid key: the failure names what the line said


@lru_cache(maxsize=4096)
def _webhook_verdict(origin: str, allow_private: bool) -> tuple[str, dict[str, Any]] | None:
    """The webhook rule depends only on scheme, credentials and host, so it is cached by those."""
    try:
        check_webhook_url(origin, allow_private=allow_private)
    except InvalidWebhookUrl as exc:
        return exc.message, exc.details
    return None


_ORIGIN = re.compile(r".*?://[^/?#]*", re.DOTALL)


def _origin(url: str) -> str:
    """The URL up to its path, query or fragment: all the webhook rule looks at."""
    match = _ORIGIN.match(url)
    return match.group() if match else url


def check_webhook(url: str, allow_private: bool) -> None:
    verdict = _webhook_verdict(_origin(url), allow_private)
    if verdict is not None:
        message, details = verdict
        raise InvalidWebhookUrl(message, **{**details, "url": url})


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def _storable(raw: bytes, item: UserItem | AgentItem | NodeTypeItem) -> None:
    """Refuse what validation lets through but PostgreSQL's jsonb cannot hold."""
    if (b"NaN" in raw or b"Infinity" in raw) and _has_non_finite(item.model_dump()):
        raise ValidationFailed("numbers must be finite: NaN and Infinity are not JSON")


class ItemParser:
    """Turns lines into stored elements; item versions default to the snapshot's."""

    def __init__(self, snapshot_version: int, *, allow_private_webhooks: bool) -> None:
        self.snapshot_version = snapshot_version
        self.allow_private = allow_private_webhooks

    def parse(self, line: int, raw: bytes) -> Parsed | Failure:
        return self.parse_plain(line, raw) or self.parse_with_models(line, raw)

    def parse_plain(self, line: int, raw: bytes) -> Parsed | None:
        """An agent or user line that plainly passes every rule, read without the models (the
        same verdict and stored element in less time); else None."""
        obj = plain_object(raw)
        version = None if obj is None else version_of(obj, self.snapshot_version)
        if obj is None or version is None:
            return None
        if obj["type"] == "user":
            user = plain_user(raw, obj)
            if user is None:
                return None
            user_key, fields = user
            stored = _user_element(line, version, self._digest(raw, user_key), fields)
            return Parsed("user", user_key, stored, fields["slug"])
        agent = plain_agent(raw, obj)
        if agent is None:
            return None
        key, url = agent
        if url is not None and _webhook_verdict(_origin(url), self.allow_private):
            return None
        return Parsed("agent", key, self._agent_element(line, version, raw, key))

    def parse_with_models(self, line: int, raw: bytes) -> Parsed | Failure:
        """Any line, validated by the models of the PUT bodies."""
        try:
            json_input.check(raw, "line")
        except ValidationFailed as exc:
            return Failure(line, None, None, exc.envelope())
        try:
            item = _ITEM.validate_json(raw)
        except ValidationError as exc:
            kind, key = _guess_identity(raw)
            return Failure(line, kind, key, validation_envelope(exc))
        if b"\\u0000" in raw and (where := find_nul(json.loads(raw))) is not None:
            kind, key = _guess_identity(raw)
            error = ValidationFailed(
                f"text must not contain the NUL character (found in {where})",
                errors=[{"loc": where.removeprefix("body."), "message": "NUL character"}],
            )
            return Failure(line, kind, key, error.envelope())
        version = self.snapshot_version
        if item.source_updated_at is not None:
            version = to_version(item.source_updated_at)
            try:
                check_not_ahead(version, "source_updated_at")
            except ValidationFailed as exc:
                kind, key = _guess_identity(raw)
                return Failure(line, kind, key, exc.envelope())
        match item:
            case AgentItem():
                return self._agent(line, raw, item, version)
            case UserItem():
                return self._user(line, raw, item, version)
            case NodeTypeItem():
                return self._node_type(line, raw, item, version)

    def _node_type(
        self, line: int, raw: bytes, item: NodeTypeItem, version: int
    ) -> Parsed | Failure:
        try:
            key = NodeTypeKey.parse(item.id)
            check_schema(item.params_schema)
            _storable(raw, item)
            stored = json.dumps(
                {
                    "l": line,
                    "v": version,
                    "id": str(key.node_type_id),
                    "name": item.name,
                    "description": item.description,
                    "params_schema": item.params_schema,
                },
                separators=(",", ":"),
                allow_nan=False,
            ).encode()
        except IdmirrorError as exc:
            return Failure(line, "node_type", f"node_type:{item.id}", exc.envelope())
        except ValueError as exc:
            return Failure(line, "node_type", None, ValidationFailed(str(exc)).envelope())
        return Parsed("node_type", str(key), stored)

    def _user(self, line: int, raw: bytes, item: UserItem, version: int) -> Parsed | Failure:
        try:
            key = UserKey.parse(item.id)
            _storable(raw, item)
            fields = {
                "id": str(key.user_id),
                "email": item.email,
                "slug": item.slug,
                "plan": item.plan,
                "metadata": item.metadata,
                "external_owner": item.external_owner,
            }
            stored = _user_element(line, version, self._digest(raw, str(key)), fields)
        except IdmirrorError as exc:
            return Failure(line, "user", _guess_identity(raw)[1], exc.envelope())
        except ValueError as exc:  # an integer or float json cannot write back
            return Failure(line, "user", None, ValidationFailed(str(exc)).envelope())
        return Parsed("user", str(key), stored, item.slug)

    def _agent(self, line: int, raw: bytes, item: AgentItem, version: int) -> Parsed | Failure:
        try:
            key = AgentKey.parse(item.key)
            if item.webhook_url is not None:
                check_webhook(item.webhook_url, self.allow_private)
            _storable(raw, item)
        except IdmirrorError as exc:
            return Failure(line, "agent", f"agent:{item.key}", exc.envelope())
        return Parsed("agent", str(key), self._agent_element(line, version, raw, str(key)))

    def _digest(self, raw: bytes, key: str) -> str:
        return line_digest(raw, key, allow_private_webhooks=self.allow_private)

    def _agent_element(self, line: int, version: int, raw: bytes, key: str) -> bytes:
        """An agent as a chunk stores it: the line itself, after its number, version and digest."""
        digest = self._digest(raw, key)
        return b'{"l":%d,"v":%d,"h":"%s","d":%s}' % (line, version, digest.encode(), raw)


def _user_element(line: int, version: int, digest: str, fields: dict[str, Any]) -> bytes:
    """A user as a chunk stores it: normalised, with its line number, version and digest."""
    return json.dumps(
        {"l": line, "v": version, "h": digest, **fields}, separators=(",", ":"), allow_nan=False
    ).encode()
