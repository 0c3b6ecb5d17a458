"""Identity keys as value objects: the ledger's unit of order and locking."""

import re
import uuid
from dataclasses import dataclass

from identity.errors import (
    InvalidAgentKey,
    InvalidAgentRef,
    InvalidKey,
    InvalidNodeTypeId,
    InvalidUserId,
)

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
AGENT_ID_RE = re.compile(r"^agt_[A-Za-z0-9]{12}$")


USER_KEY_PREFIX, AGENT_KEY_PREFIX = "user:", "agent:"


def is_slug(value: str) -> bool:
    return bool(SLUG_RE.fullmatch(value))


@dataclass(frozen=True)
class UserKey:
    """`user:<uuid>`: the integrator's own UUID for a user."""

    user_id: uuid.UUID

    @classmethod
    def parse(cls, raw: str) -> "UserKey":
        try:
            return cls(uuid.UUID(raw))
        except (ValueError, AttributeError, TypeError):
            raise InvalidUserId(f"{raw!r} is not a UUID", user_id=raw) from None

    def __str__(self) -> str:
        return f"{USER_KEY_PREFIX}{self.user_id}"


@dataclass(frozen=True)
class AgentKey:
    """`agent:<slug>@<user_slug>`: an agent addressed by its slug and its owner's slug."""

    slug: str
    user_slug: str

    @classmethod
    def parse(cls, raw: str) -> "AgentKey":
        parts = raw.split("@")
        if len(parts) != 2 or not all(is_slug(p) for p in parts):
            raise InvalidAgentKey(
                "an agent key is {slug}@{user_slug}: exactly one '@' between two valid slugs",
                key=raw,
            )
        return cls(parts[0], parts[1])

    @property
    def path(self) -> str:
        return f"{self.slug}@{self.user_slug}"

    def __str__(self) -> str:
        return f"{AGENT_KEY_PREFIX}{self.path}"


@dataclass(frozen=True)
class NodeTypeKey:
    """`node_type:<uuid>`: a node type of the catalog, by the integrator's UUID."""

    node_type_id: uuid.UUID

    @classmethod
    def parse(cls, raw: str) -> "NodeTypeKey":
        try:
            return cls(uuid.UUID(raw))
        except (ValueError, AttributeError, TypeError):
            raise InvalidNodeTypeId(f"{raw!r} is not a UUID", node_type_id=raw) from None

    def __str__(self) -> str:
        return f"node_type:{self.node_type_id}"


LedgerKey = UserKey | AgentKey | NodeTypeKey


def parse_ledger_key(raw: str) -> LedgerKey:
    """Parse the string form the ledger stores and tasks receive (`user:<uuid>`, ...)."""
    kind, _, rest = raw.partition(":")
    match kind:
        case "user":
            return UserKey.parse(rest)
        case "agent":
            return AgentKey.parse(rest)
        case "node_type":
            return NodeTypeKey.parse(rest)
    raise ValueError(f"unknown ledger key {raw!r}")


def searched_keys(raw: str) -> list[str]:
    """The ledger keys a search names: a ledger key as it is, a bare `slug@user_slug` as the
    agent's key, a bare UUID as the user's key and the node type's (ids of both are the
    integrator's UUIDs, so one UUID may name either)."""
    term = raw.strip()
    kind, colon, _ = term.partition(":")
    if colon and kind in ("user", "agent", "node_type"):
        return [str(parse_ledger_key(term.lower() if kind == "agent" else term))]
    if "@" in term:
        return [str(AgentKey.parse(term.lower()))]
    try:
        some_id = uuid.UUID(term)
    except ValueError:
        raise InvalidKey(
            "a key is agent:{slug}@{user_slug}, user:<uuid> or node_type:<uuid>, with or "
            "without its prefix",
            key=raw,
        ) from None
    return [str(UserKey(some_id)), str(NodeTypeKey(some_id))]


@dataclass(frozen=True)
class AgentRef:
    """How read routes name an agent: its opaque id or its key."""

    agent_id: str | None = None
    key: AgentKey | None = None

    @classmethod
    def parse(cls, raw: str) -> "AgentRef":
        if AGENT_ID_RE.fullmatch(raw):
            return cls(agent_id=raw)
        if "@" in raw:
            return cls(key=AgentKey.parse(raw))
        raise InvalidAgentRef(
            "an agent ref is an id (agt_ and 12 letters or digits) or {slug}@{user_slug}",
            ref=raw,
        )
