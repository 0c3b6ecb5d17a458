"""SCIM under integrators' tokens: the `scim` scope, each integrator seeing and writing only
the users it created and their agents, and the rest of the API seeing them as its own."""

import uuid

import httpx

from tests.api.scim.conftest import SCIM_JSON, agent_body, slug_of, user_body
from tests.integrators import client_for, new_integrator, new_token
from tests.stack import Stack


def scim_client(stack: Stack, admin: httpx.Client, scopes: list[str]) -> httpx.Client:
    token = new_token(admin, new_integrator(admin), scopes)["token"]
    client = client_for(stack, token)
    client.base_url = httpx.URL(f"{stack.base_url}/scim/v2/")
    client.headers["Content-Type"] = SCIM_JSON
    return client


def test_each_integrator_sees_and_writes_only_its_own(stack: Stack, client: httpx.Client) -> None:
    with (
        scim_client(stack, client, ["scim", "read"]) as mine,
        scim_client(stack, client, ["scim"]) as theirs,
    ):
        user = mine.post("Users", json=user_body()).json()
        agent = mine.post("Agents", json=agent_body("scout", user["id"]))
        assert agent.status_code == 201, agent.text
        with httpx.Client(base_url=stack.base_url, headers=dict(mine.headers)) as rest:
            assert rest.get(f"/v1/agents/{agent.json()['id']}").status_code == 200
        for path in (f"Users/{user['id']}", f"Agents/{agent.json()['id']}"):
            assert theirs.get(path).status_code == 404
            assert theirs.delete(path).status_code == 404
        assert theirs.put(f"Users/{user['id']}", json=user_body()).status_code == 404
        unseen = theirs.get("Users", params={"filter": f'userName eq "{user["userName"]}"'})
        assert unseen.json()["totalResults"] == 0
        assert (
            mine.get("Users", params={"filter": f'id eq "{user["id"]}"'}).json()["totalResults"]
            == 1
        )
        slug = slug_of(user["userName"])
        borrowed = theirs.post("Agents", json=agent_body(f"spy@{slug}"))
        assert borrowed.status_code == 404, borrowed.text
        by_owner = theirs.post("Agents", json=agent_body("spy", user["id"]))
        assert by_owner.status_code == 400 and by_owner.json()["scimType"] == "invalidValue"


def test_a_token_without_the_scim_scope_is_refused_in_scims_schema(
    stack: Stack, client: httpx.Client
) -> None:
    with scim_client(stack, client, ["read", "users:write"]) as other:
        refused = other.get(f"Users/{uuid.uuid4()}")
        assert refused.status_code == 403, refused.text
        assert refused.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
