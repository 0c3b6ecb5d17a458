"""The SCIM Agent (draft-abbey-scim-agent-extension-00, schema
`urn:ietf:params:scim:schemas:core:2.0:Agent`) and idmirror's agent: the models, where each
attribute is stored, and the SCIM form of an agents row.

An agent's `id` is its `agt_` id and its `name` is its key, `slug@user_slug`; its one owner is
the user of that slug. `displayName`, `active`, `externalId` and the webhook (idmirror's
extension) have columns of their own; every other attribute a provider sends is kept as it
came in the `scim` column. `metadata` is the /v1 API's own: SCIM writes leave it as it is.
"""

from typing import Annotated, Any

from pydantic import BaseModel, Field
from scim2_models import (
    URN,
    AnyExtension,
    CaseExact,
    ComplexAttribute,
    Context,
    Entitlement,
    Extension,
    External,
    GroupMembership,
    Mutability,
    Reference,
    Required,
    Resource,
    Role,
    Uniqueness,
    User,
    X509Certificate,
)

from identity.keys import AgentKey, is_slug
from identity.scim.errors import InvalidValue
from identity.scim.resources import columns, dump, meta_of
from identity.scim.users import USERS_PATH
from identity.settings import get_settings
from identity.webhooks import check_webhook_url

AGENT_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Agent"
IDMIRROR_AGENT_SCHEMA = "urn:idmirror:params:scim:schemas:extension:idmirror:2.0:Agent"
AGENTS_PATH = "/scim/v2/Agents"
SCIM_AGENT_COLUMNS = (
    "a.id, a.slug, a.user_id, u.slug AS user_slug, coalesce(u.user_name, u.slug) AS owner_name, "
    "a.display_name, a.webhook_url, a.metadata, a.name, a.description, a.visibility, a.active, "
    "a.external_id, a.scim, a.version, a.created_at, a.updated_at, a.deleted_at"
)
# What the `scim` column does not keep: attributes with columns of their own, what the server
# assigns or derives, and what it does not serve.
_OWN_PLACE = {"schemas", "id", "meta", "name", "displayName", "active", "externalId"}
_OWN_PLACE |= {"owners", "groups", IDMIRROR_AGENT_SCHEMA}


# A `$ref` sub-attribute: not a name Python allows.
_REF: Any = Field(None, serialization_alias="$ref", validation_alias="$ref")


class AgentOwner(ComplexAttribute):
    value: Annotated[str | None, CaseExact.true] = None
    """The id of the User that owns the Agent."""

    ref: Reference[User[Any]] | None = _REF
    display: str | None = None


class AgentParent(ComplexAttribute):
    value: Annotated[str | None, CaseExact.true] = None
    ref: Reference[External] | None = _REF
    display: str | None = None


class AgentProtocol(ComplexAttribute):
    type: str | None = None
    """A2A, OpenAPI, MCP-Server, or another."""

    specification_url: Reference[External] | None = None


class AgentApplication(ComplexAttribute):
    value: str | None = None
    ref: Reference[External] | None = _REF
    display: str | None = None
    type: str | None = None


class Agent(Resource[AnyExtension]):
    __schema__ = URN(AGENT_SCHEMA)

    name: Annotated[str | None, Required.true, Uniqueness.server] = None
    """The agent's key, `slug@user_slug`."""

    display_name: str | None = None
    active: bool | None = None
    description: str | None = None
    agent_type: str | None = None
    entitlements: list[Entitlement] | None = None
    roles: list[Role] | None = None
    groups: Annotated[list[GroupMembership] | None, Mutability.read_only] = None
    applications: list[AgentApplication] | None = None
    subject: str | None = None
    x509_certificates: list[X509Certificate] | None = None
    protocols: list[AgentProtocol] | None = None
    parent: AgentParent | None = None
    owners: list[AgentOwner] | None = None


class IdmirrorAgent(Extension):
    __schema__ = URN(IDMIRROR_AGENT_SCHEMA)

    webhook_url: Reference[External] | None = None
    """Where idmirror delivers the agent's events."""


ScimAgent = Agent[IdmirrorAgent]


class ScimAgentFields(BaseModel):
    """What a SCIM write of an agent stores, as its job carries it."""

    display_name: str | None = Field(None, min_length=1, max_length=255)
    webhook_url: str | None = Field(None, max_length=2048)
    external_id: str | None = Field(None, max_length=255)
    active: bool | None = None  # None: never said (an agent is active unless `false`)
    profile: dict[str, Any] = Field(default_factory=dict)


def fields_of(agent: ScimAgent) -> ScimAgentFields:
    """What to store of a SCIM Agent a provider sent; its webhook checked as /v1 checks one."""
    dumped = agent.model_dump(scim_ctx=Context.DEFAULT)
    profile = {name: value for name, value in dumped.items() if name not in _OWN_PLACE}
    extension = agent[IdmirrorAgent] if IDMIRROR_AGENT_SCHEMA in dumped else None
    webhook_url = str(extension.webhook_url) if extension and extension.webhook_url else None
    if webhook_url is not None:
        check_webhook_url(webhook_url, allow_private=get_settings().allow_private_webhooks)
    return ScimAgentFields(
        display_name=agent.display_name,
        webhook_url=webhook_url,
        external_id=agent.external_id,
        active=agent.active,
        profile=profile,
    )


def named_key(name: str | None, owner_slug: str | None) -> AgentKey:
    """The key an Agent's `name` (`slug@user_slug`, or a bare slug) and its owner's slug give;
    invalidValue when they do not give one, or disagree."""
    slug, _, user_slug = (name or "").lower().partition("@")
    user_slug = user_slug or owner_slug or ""
    if owner_slug is not None and user_slug != owner_slug:
        raise InvalidValue(
            f"name {name!r} names another owner than owners does", name=name, owner=owner_slug
        )
    if not (is_slug(slug) and is_slug(user_slug)):
        raise InvalidValue(
            "an Agent's name is its key, slug@user_slug (or a slug, with the owner in owners):"
            " lowercase letters, digits and hyphens",
            name=name,
        )
    return AgentKey(slug, user_slug)


def owner_id(agent: ScimAgent) -> str | None:
    """The User id `owners` names, if any; invalidValue for more than one owner."""
    owners = [owner.value for owner in agent.owners or [] if owner.value]
    if len(owners) > 1:
        raise InvalidValue("an agent has one owner, the user of its key", owners=owners)
    return owners[0] if owners else None


def to_scim(row: Any, base_url: str) -> ScimAgent:
    """An agents row (with its owner's slug and userName) as a SCIM Agent; `base_url` is where
    /scim/v2 is served."""
    data = columns(row)
    schemas = [AGENT_SCHEMA, *([IDMIRROR_AGENT_SCHEMA] if data.get("webhook_url") else [])]
    body: dict[str, Any] = {
        **(data.get("scim") or {}),
        "schemas": schemas,
        "name": f"{data['slug']}@{data['user_slug']}",
        "displayName": data["display_name"],
        "owners": [
            {
                "value": str(data["user_id"]),
                "$ref": f"{base_url}{USERS_PATH}/{data['user_id']}",
                "display": data["owner_name"],
            }
        ],
    }
    if data.get("webhook_url"):
        body[IDMIRROR_AGENT_SCHEMA] = {"webhookUrl": data["webhook_url"]}
    agent = ScimAgent.model_validate(body)
    agent.id = data["id"]
    agent.external_id = data.get("external_id")
    agent.active = data.get("active")
    agent.meta = meta_of(data, "Agent", f"{base_url}{AGENTS_PATH}/{data['id']}")
    return agent


def answered(row: Any, base_url: str) -> dict[str, Any]:
    """An agents row (or a SCIM write's result) as answered in full."""
    return dump(to_scim(row, base_url))
