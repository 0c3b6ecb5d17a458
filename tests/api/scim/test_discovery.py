"""Discovery tells the truth: what the Users and Agents endpoints really do, and schemas that
describe what they answer."""

import httpx


def test_service_provider_config_says_what_is_supported(scim: httpx.Client) -> None:
    config = scim.get("ServiceProviderConfig")
    assert config.status_code == 200 and config.headers["content-type"].startswith(
        "application/scim+json"
    )
    body = config.json()
    assert body["patch"]["supported"] is True and body["etag"]["supported"] is True
    assert body["filter"] == {"supported": True, "maxResults": 1000}
    assert body["bulk"] == {"supported": True, "maxOperations": 100, "maxPayloadSize": 1048576}
    assert body["sort"]["supported"] is False
    assert body["changePassword"]["supported"] is False
    assert body["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    assert body["agentExtension"] == {
        "supported": True,
        "agentsSupported": True,
        "agenticApplicationsSupported": False,
    }


def test_resource_types_and_schemas_describe_users_and_agents(scim: httpx.Client) -> None:
    types = scim.get("ResourceTypes").json()
    assert [t["endpoint"] for t in types["Resources"]] == ["/Users", "/Agents"]
    assert scim.get("ResourceTypes/User").json()["schema"] == (
        "urn:ietf:params:scim:schemas:core:2.0:User"
    )
    schemas = scim.get("Schemas").json()
    ids = {schema["id"] for schema in schemas["Resources"]}
    assert ids == {
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "urn:ietf:params:scim:schemas:core:2.0:Agent",
        "urn:idmirror:params:scim:schemas:extension:idmirror:2.0:Agent",
    }
    agent_type = scim.get("ResourceTypes/Agent").json()
    assert agent_type["schema"] == "urn:ietf:params:scim:schemas:core:2.0:Agent"
    agent = scim.get("Schemas/urn:ietf:params:scim:schemas:core:2.0:Agent").json()
    name = next(a for a in agent["attributes"] if a["name"] == "name")
    assert name["required"] is True and name["uniqueness"] == "server"
    user = scim.get("Schemas/urn:ietf:params:scim:schemas:core:2.0:User").json()
    assert "userName" in {attribute["name"] for attribute in user["attributes"]}
    assert scim.get("Schemas/urn:nope").status_code == 404
