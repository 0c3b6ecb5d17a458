"""What the SCIM service says about itself (RFC 7644 §4): its ServiceProviderConfig, which
tells only what is true (PATCH, bulk with its limits, filters with their maxResults, ETags,
agents; no sorting or password change), its resource types and their schemas, all built from
scim2-models."""

from typing import Any

from scim2_models import Context, EnterpriseUser, ResourceType, Schema, ServiceProviderConfig, User

from identity.scim.agents import Agent, IdmirrorAgent, ScimAgent
from identity.scim.bulk import MAX_OPERATIONS
from identity.scim.users import ScimUser
from identity.settings import get_settings

MAX_RESULTS = 1000  # the most resources one list answers
BASE = "/scim/v2"


def _meta(resource_type: str, location: str) -> dict[str, Any]:
    return {"resourceType": resource_type, "location": location}


def service_provider_config(base_url: str) -> dict[str, Any]:
    """The ServiceProviderConfig document."""
    config = ServiceProviderConfig.model_validate(
        {
            "documentationUri": "https://github.com/idmirror/idmirror/blob/main/docs/scim.md",
            "patch": {"supported": True},
            "bulk": {
                "supported": True,
                "maxOperations": MAX_OPERATIONS,
                "maxPayloadSize": get_settings().max_body_bytes,
            },
            "filter": {"supported": True, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": True},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": "Authorization: Bearer <token>, the token of the /v1 API",
                    "primary": True,
                }
            ],
        }
    )
    body = config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    location = f"{base_url}{BASE}/ServiceProviderConfig"
    # draft-abbey-scim-agent-extension-00 §4.1: what of the agent extension is served.
    agents = {"supported": True, "agentsSupported": True, "agenticApplicationsSupported": False}
    return {**body, "agentExtension": agents, "meta": _meta("ServiceProviderConfig", location)}


def resource_types(base_url: str) -> list[dict[str, Any]]:
    """Every resource type served."""
    found = []
    for model, description in ((ScimUser, "User accounts"), (ScimAgent, "Agent identities")):
        resource_type = ResourceType.from_resource(model)
        resource_type.description = description
        body = resource_type.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        location = f"{base_url}{BASE}/ResourceTypes/{resource_type.id}"
        found.append({**body, "meta": _meta("ResourceType", location)})
    return found


def schemas(base_url: str) -> list[dict[str, Any]]:
    """The schema of every resource and extension served."""
    found = []
    for model in (User, EnterpriseUser, Agent, IdmirrorAgent):
        schema: Schema = model.to_schema()
        body = schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        found.append({**body, "meta": _meta("Schema", f"{base_url}{BASE}/Schemas/{schema.id}")})
    return found
