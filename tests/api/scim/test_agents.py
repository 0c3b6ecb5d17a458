"""/scim/v2/Agents: draft-abbey-scim-agent-extension's Agent over idmirror's agents, each write
a job on the agent's key, and the same agent read through /v1 and written through it."""

import uuid

import httpx

from tests.api.scim.conftest import AGENT_SCHEMA, IDMIRROR, agent_body, create_agent, owner, patch
from tests.conftest import put_agent


def test_create_answers_201_and_rest_reads_the_agent(
    scim: httpx.Client, client: httpx.Client
) -> None:
    user, slug = owner(scim)
    body = agent_body(
        "scout",
        user["id"],
        displayName="Scout",
        agentType="Assistant",
        externalId="okta-agent-1",
        protocols=[{"type": "A2A", "specificationUrl": "https://a.example.com/card.json"}],
        schemas=[AGENT_SCHEMA, IDMIRROR],
        **{IDMIRROR: {"webhookUrl": "https://hooks.example.com/scout"}},
    )
    response = scim.post("Agents", json=body)
    assert response.status_code == 201, response.text
    agent = response.json()
    assert agent["id"].startswith("agt_") and agent["name"] == f"scout@{slug}"
    assert agent["owners"][0]["value"] == user["id"]
    assert agent["owners"][0]["display"] == user["userName"]
    assert agent["agentType"] == "Assistant" and agent["protocols"][0]["type"] == "A2A"
    assert agent[IDMIRROR]["webhookUrl"] == "https://hooks.example.com/scout"
    assert response.headers["Location"] == agent["meta"]["location"]
    assert response.headers["ETag"] == agent["meta"]["version"]
    assert response.headers["Idmirror-Job-Id"]
    rest = client.get(f"/v1/agents/{agent['id']}").json()
    assert (rest["slug"], rest["user_slug"], rest["display_name"]) == ("scout", slug, "Scout")
    assert rest["webhook_url"] == "https://hooks.example.com/scout"
    assert str(rest["version"]) in agent["meta"]["version"]


def test_a_rest_agent_is_a_scim_agent_and_rest_writes_keep_scim_attributes(
    scim: httpx.Client, client: httpx.Client
) -> None:
    rest = put_agent(client)
    agent = scim.get(f"Agents/{rest['id']}").json()
    assert agent["name"] == f"bot@{rest['user_slug']}" and agent["displayName"] == "Bot"
    assert agent["active"] is True and agent["owners"][0]["value"] == rest["user_id"]
    found = scim.get("Agents", params={"filter": f'name eq "BOT@{rest["user_slug"]}"'}).json()
    assert [a["id"] for a in found["Resources"]] == [rest["id"]]
    replaced = scim.put(
        f"Agents/{rest['id']}", json=agent_body(agent["name"], active=False, agentType="Bot")
    )
    assert replaced.status_code == 200, replaced.text
    again = client.put(f"/v1/internal/agents/{agent['name']}", json={"display_name": "Bot 2"})
    assert again.json()["id"] == rest["id"]
    after = scim.get(f"Agents/{rest['id']}").json()
    assert (after["displayName"], after["active"], after["agentType"]) == ("Bot 2", False, "Bot")


def test_name_and_owners_must_name_one_key(scim: httpx.Client) -> None:
    user, slug = owner(scim)
    by_name = scim.post("Agents", json=agent_body(f"Helper@{slug.upper()}"))
    assert by_name.status_code == 201 and by_name.json()["name"] == f"helper@{slug}"
    assert by_name.json()["displayName"] == "helper"
    refusals = [
        agent_body("other@someone-else", user["id"]),
        agent_body("loose"),
        agent_body("Helpdesk bot", user["id"]),
        agent_body("ghost", str(uuid.uuid4())),
        agent_body(
            "x",
            user["id"],
            **{
                "schemas": [AGENT_SCHEMA, IDMIRROR],
                IDMIRROR: {"webhookUrl": "http://127.0.0.1/hook"},
            },
        ),
    ]
    for body in refusals:
        refused = scim.post("Agents", json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["scimType"] == "invalidValue"
    taken = scim.post("Agents", json=agent_body("helper", user["id"]))
    assert taken.status_code == 409 and taken.json()["scimType"] == "uniqueness"


def test_put_patch_and_versions(scim: httpx.Client, client: httpx.Client) -> None:
    agent, slug = create_agent(scim, displayName="Scout")
    path = f"Agents/{agent['id']}"
    etag = agent["meta"]["version"]
    assert scim.get(path, headers={"If-None-Match": etag}).status_code == 304
    stale = scim.put(path, json=agent_body(agent["name"]), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412, stale.text
    patched = scim.patch(
        path,
        json=patch(
            [
                {"op": "replace", "path": "displayName", "value": "Scout II"},
                {"op": "add", "path": "agentType", "value": "Researcher"},
            ]
        ),
        headers={"If-Match": etag},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["agentType"] == "Researcher"
    assert patched.headers["ETag"] != etag
    assert client.get(f"/v1/agents/{agent['id']}").json()["display_name"] == "Scout II"
    for operation in (
        {"op": "replace", "path": "name", "value": f"other@{slug}"},
        {"op": "replace", "path": "owners", "value": [{"value": str(uuid.uuid4())}]},
    ):
        renamed = scim.patch(path, json=patch([operation]))
        assert renamed.status_code == 400 and renamed.json()["scimType"] == "mutability"
    moved = scim.put(path, json=agent_body(f"scout@{slug}-x"))
    assert moved.status_code == 400 and moved.json()["scimType"] == "mutability"


def test_delete_is_204_then_404_and_the_key_can_start_over(
    scim: httpx.Client, client: httpx.Client
) -> None:
    agent, _ = create_agent(scim)
    deleted = scim.delete(f"Agents/{agent['id']}")
    assert deleted.status_code == 204 and deleted.headers["Idmirror-Job-Id"]
    assert scim.get(f"Agents/{agent['id']}").status_code == 404
    assert scim.delete(f"Agents/{agent['id']}").status_code == 404
    assert scim.put(f"Agents/{agent['id']}", json=agent_body(agent["name"])).status_code == 404
    assert client.get(f"/v1/agents/{agent['id']}").status_code == 404
    again = client.put(f"/v1/internal/agents/{agent['name']}", json={"display_name": "New"})
    assert again.status_code == 200 and again.json()["id"] != agent["id"]
    assert scim.get(f"Agents/{again.json()['id']}").json()["name"] == agent["name"]


def test_filters_and_paging_on_agents(scim: httpx.Client) -> None:
    user, slug = owner(scim)
    ids = []
    for name in ("alpha", "beta", "gamma"):
        body = agent_body(name, user["id"], externalId=f"ext-{name}-{slug}")
        ids.append(scim.post("Agents", json=body).json()["id"])
    mine = f'owners.value eq "{user["id"]}"'
    first = scim.get("Agents", params={"filter": mine, "count": "2"}).json()
    second = scim.get("Agents", params={"filter": mine, "count": "2", "startIndex": "3"}).json()
    assert first["totalResults"] == 3 and second["totalResults"] == 3
    assert [a["id"] for a in first["Resources"] + second["Resources"]] == sorted(ids)
    cases = {
        f'name sw "b" and {mine}': 1,
        f'name ew "@{slug}" and not (name eq "alpha@{slug}")': 2,
        f'externalId eq "ext-gamma-{slug}"': 1,
        f'{mine} and not (active eq false) and meta.lastModified gt "2000-01-01T00:00:00Z"': 3,
        f'urn:ietf:params:scim:schemas:core:2.0:Agent:name co "amm" and {mine}': 1,
    }
    for expression, total in cases.items():
        found = scim.post("Agents/.search", json={"filter": expression}).json()
        assert found["totalResults"] == total, expression
    bad = scim.get("Agents", params={"filter": 'userName eq "x"'})
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidFilter"
