"""POST /scim/v2/.search: one SearchRequest over users and agents, paged across both."""

import uuid

import httpx

from tests.api.scim.conftest import create_agent


def test_root_search_finds_users_and_agents(scim: httpx.Client) -> None:
    shared = f"ext-{uuid.uuid4().hex}"
    agent, slug = create_agent(scim, externalId=shared)
    user = scim.get(agent["owners"][0]["$ref"]).json()
    assert scim.put(f"Users/{user['id']}", json={**user, "externalId": shared}).is_success
    query = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}
    both = scim.post(".search", json={**query, "filter": f'externalId eq "{shared}"'}).json()
    assert both["totalResults"] == 2
    assert [r["id"] for r in both["Resources"]] == [user["id"], agent["id"]]
    paged = {**query, "filter": f'externalId eq "{shared}"', "startIndex": 2, "count": 1}
    assert [r["id"] for r in scim.post(".search", json=paged).json()["Resources"]] == [agent["id"]]
    named = scim.post(".search", json={**query, "filter": f'name eq "scout@{slug}"'}).json()
    assert [r["id"] for r in named["Resources"]] == [agent["id"]]
    second = scim.post(
        ".search", json={**query, "filter": f'name eq "scout@{slug}"', "startIndex": 2}
    ).json()
    assert second["totalResults"] == 1 and second["Resources"] == []
    users = scim.post(".search", json={**query, "filter": f'userName eq "{user["userName"]}"'})
    assert [r["id"] for r in users.json()["Resources"]] == [user["id"]]
    bad = scim.post(".search", json={**query, "filter": 'nothing eq "x"'})
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidFilter"
