"""The five graph operations and the agent fields an update sets, and the layout they produce."""

from typing import Any

import httpx

from tests.identity.graph.updates import build, error_of, graph_of, update


def test_create_nodes_and_connections_with_temp_refs(
    client: httpx.Client, agent: dict[str, Any], node_type: str
) -> None:
    response = update(
        client,
        agent["id"],
        [
            {
                "op": "create_node",
                "node_type_id": node_type,
                "temp_ref_id": "in",
                "params_used": {"a": 1},
            },
            {"op": "create_node", "node_type_id": node_type},
            {"op": "create_node", "node_type_id": node_type, "temp_ref_id": "out"},
            {"op": "create_connection", "source_temp_ref_id": "in", "target_temp_ref_id": "out"},
        ],
    )
    assert response.status_code == 200
    body = response.json()
    assert [c["temp_ref_id"] for c in body["created_nodes"]] == ["in", None, "out"]
    ids = [c["agent_node_id"] for c in body["created_nodes"]]
    assert [n["agent_node_id"] for n in body["graph"]["nodes"]] == ids
    assert body["graph"]["connections"] == [
        {"source_agent_node_id": ids[0], "target_agent_node_id": ids[2]}
    ]
    assert body["graph"]["nodes"][0]["params_used"] == {"a": 1}
    assert body["agent"]["id"] == agent["id"]
    assert graph_of(client, f"bot@{agent['user_slug']}") == body["graph"]


def test_layout_is_layered_by_longest_path_and_stable(
    client: httpx.Client, agent: dict[str, Any], node_type: str
) -> None:
    ids = build(
        client, agent, node_type, ["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "c")]
    )
    positions = {n["agent_node_id"]: n["position"] for n in graph_of(client, agent["id"])["nodes"]}
    assert positions[ids["a"]] == {"x": 0, "y": 0}
    assert positions[ids["d"]] == {"x": 0, "y": 1}
    assert positions[ids["b"]] == {"x": 1, "y": 0}
    assert positions[ids["c"]] == {"x": 2, "y": 0}, "c is two steps from a by its longest path"
    update(client, agent["id"], name="renamed")
    again = {n["agent_node_id"]: n["position"] for n in graph_of(client, agent["id"])["nodes"]}
    assert again == positions
    update(
        client,
        agent["id"],
        [
            {
                "op": "delete_connection",
                "source_agent_node_id": ids["b"],
                "target_agent_node_id": ids["c"],
            }
        ],
    )
    moved = {n["agent_node_id"]: n["position"] for n in graph_of(client, agent["id"])["nodes"]}
    assert moved[ids["c"]] == {"x": 1, "y": 1}, "layout is recomputed on every change"


def test_update_node_merges_params_and_null_removes_a_key(
    client: httpx.Client, agent: dict[str, Any], node_type: str
) -> None:
    response = update(
        client,
        agent["id"],
        [
            {
                "op": "create_node",
                "node_type_id": node_type,
                "params_used": {"a": 1, "b": "x", "nested": {"p": 1, "q": 2}},
            }
        ],
    )
    node_id = response.json()["created_nodes"][0]["agent_node_id"]
    patched = update(
        client,
        agent["id"],
        [
            {
                "op": "update_node",
                "agent_node_id": node_id,
                "params_used": {"a": None, "nested": {"q": None, "r": 3}},
            }
        ],
    )
    assert patched.status_code == 200
    assert patched.json()["graph"]["nodes"][0]["params_used"] == {
        "b": "x",
        "nested": {"p": 1, "r": 3},
    }


def test_delete_node_removes_its_connections_and_nothing_else(
    client: httpx.Client, agent: dict[str, Any], node_type: str
) -> None:
    ids = build(
        client,
        agent,
        node_type,
        ["a", "b", "c", "d"],
        [("a", "b"), ("b", "c"), ("a", "d"), ("c", "d")],
    )
    response = update(client, agent["id"], [{"op": "delete_node", "agent_node_id": ids["b"]}])
    graph = response.json()["graph"]
    assert {n["agent_node_id"] for n in graph["nodes"]} == {ids["a"], ids["c"], ids["d"]}
    assert {
        (c["source_agent_node_id"], c["target_agent_node_id"]) for c in graph["connections"]
    } == {
        (ids["a"], ids["d"]),
        (ids["c"], ids["d"]),
    }


def test_rewire_with_delete_then_create_in_one_request(
    client: httpx.Client, agent: dict[str, Any], node_type: str
) -> None:
    ids = build(client, agent, node_type, ["a", "b", "c"], [("a", "b")])
    response = update(
        client,
        agent["id"],
        [
            {
                "op": "delete_connection",
                "source_agent_node_id": ids["a"],
                "target_agent_node_id": ids["b"],
            },
            {
                "op": "create_connection",
                "source_agent_node_id": ids["a"],
                "target_agent_node_id": ids["c"],
            },
        ],
    )
    assert [
        (c["source_agent_node_id"], c["target_agent_node_id"])
        for c in response.json()["graph"]["connections"]
    ] == [(ids["a"], ids["c"])]


def test_name_description_and_visibility(client: httpx.Client, agent: dict[str, Any]) -> None:
    response = update(
        client,
        f"bot@{agent['user_slug']}",
        name="Scout",
        description="finds things",
        visibility="public",
    )
    assert response.status_code == 200
    stored = client.get(f"/v1/agents/{agent['id']}").json()
    assert (stored["name"], stored["description"], stored["visibility"]) == (
        "Scout",
        "finds things",
        "public",
    )


def test_patch_is_the_same_as_post(client: httpx.Client, agent: dict[str, Any]) -> None:
    response = client.patch(f"/v1/agents/{agent['id']}/update", json={"name": "patched"})
    assert response.status_code == 200 and response.json()["agent"]["name"] == "patched"


def test_an_update_that_changes_nothing_rewrites_nothing(
    client: httpx.Client, agent: dict[str, Any]
) -> None:
    error_of(update(client, agent["id"], []), 422, "empty_update")
    first = update(client, agent["id"], name="same")
    again = update(client, agent["id"], name="same")
    assert again.status_code == 200
    assert again.json()["agent"]["updated_at"] == first.json()["agent"]["updated_at"]
    job = client.get(f"/v1/jobs/{again.headers['Idmirror-Job-Id']}").json()
    assert job["outcome"] == "unchanged"
