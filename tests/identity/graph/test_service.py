"""Agent graphs: node types, the five operations, their errors, atomicity and layout."""

import uuid

import pytest

from tests.conftest import put_agent, put_node_type


def update(client, ref, operations=None, **fields):
    body = dict(fields)
    if operations is not None:
        body["operations"] = operations
    return client.post(f"/v1/agents/{ref}/update", json=body)


def graph_of(client, ref):
    return client.get(f"/v1/agents/{ref}/graph").json()


def error_of(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return error


@pytest.fixture
def agent(client):
    return put_agent(client)


@pytest.fixture
def node_type(client):
    return put_node_type(
        client,
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer"},
                "b": {"type": "string"},
                "nested": {"type": "object"},
            },
            "additionalProperties": False,
        },
    )


def build(client, agent, node_type, names, edges):
    """Create nodes named by temp refs and connect them; returns {name: node_id}."""
    operations = [{"op": "create_node", "node_type_id": node_type, "temp_ref_id": n} for n in names]
    operations += [
        {"op": "create_connection", "source_temp_ref_id": s, "target_temp_ref_id": t}
        for s, t in edges
    ]
    response = update(client, agent["id"], operations)
    assert response.status_code == 200, response.text
    return {c["temp_ref_id"]: c["agent_node_id"] for c in response.json()["created_nodes"]}


# --- node types --------------------------------------------------------------------------------


def test_node_type_put_is_idempotent_and_readable(client):
    node_type_id = str(uuid.uuid4())
    body = {"name": "http", "description": "calls a URL", "params_schema": {"type": "object"}}
    first = client.put(f"/v1/internal/node-types/{node_type_id}", json=body).json()
    again = client.put(f"/v1/internal/node-types/{node_type_id}", json=body).json()
    assert first["outcome"] == "created" and again["outcome"] == "unchanged"
    assert again["updated_at"] == first["updated_at"]
    assert client.get(f"/v1/node-types/{node_type_id}").json()["name"] == "http"
    listed = client.get("/v1/node-types", params={"limit": 500}).json()["items"]
    assert node_type_id in {t["id"] for t in listed}


def test_invalid_params_schema_is_422_and_not_stored(client):
    node_type_id = str(uuid.uuid4())
    response = client.put(
        f"/v1/internal/node-types/{node_type_id}",
        json={"name": "bad", "params_schema": {"type": "not-a-type"}},
    )
    error_of(response, 422, "invalid_params_schema")
    error_of(client.get(f"/v1/node-types/{node_type_id}"), 404, "node_type_not_found")
    error_of(client.get("/v1/node-types/nope"), 400, "invalid_node_type_id")


# --- operations --------------------------------------------------------------------------------


def test_create_nodes_and_connections_with_temp_refs(client, agent, node_type):
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


def test_layout_is_layered_by_longest_path_and_stable(client, agent, node_type):
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


def test_update_node_merges_params_and_null_removes_a_key(client, agent, node_type):
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


def test_delete_node_removes_its_connections_and_nothing_else(client, agent, node_type):
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


def test_rewire_with_delete_then_create_in_one_request(client, agent, node_type):
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


def test_name_description_and_visibility(client, agent):
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


# --- errors ------------------------------------------------------------------------------------


def test_cycle_is_refused(client, agent, node_type):
    ids = build(client, agent, node_type, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    response = update(
        client,
        agent["id"],
        [
            {
                "op": "create_connection",
                "source_agent_node_id": ids["c"],
                "target_agent_node_id": ids["a"],
            }
        ],
    )
    assert error_of(response, 422, "graph_cycle")["details"]["op_index"] == 0


@pytest.mark.parametrize(
    "make_ops, status, code, op_index",
    [
        (
            lambda ids, t: [
                {
                    "op": "create_connection",
                    "source_agent_node_id": ids["a"],
                    "target_agent_node_id": ids["a"],
                }
            ],
            422,
            "self_loop",
            0,
        ),
        (
            lambda ids, t: [
                {
                    "op": "create_connection",
                    "source_agent_node_id": ids["a"],
                    "target_agent_node_id": ids["b"],
                }
            ],
            409,
            "connection_exists",
            0,
        ),
        (
            lambda ids, t: [
                {
                    "op": "delete_connection",
                    "source_agent_node_id": ids["b"],
                    "target_agent_node_id": ids["a"],
                }
            ],
            404,
            "connection_not_found",
            0,
        ),
        (
            lambda ids, t: [
                {"op": "delete_node", "agent_node_id": ids["a"]},
                {"op": "update_node", "agent_node_id": ids["a"], "params_used": {}},
            ],
            404,
            "node_not_found",
            1,
        ),
        (
            lambda ids, t: [{"op": "create_node", "node_type_id": str(uuid.uuid4())}],
            422,
            "unknown_node_type",
            0,
        ),
        (
            lambda ids, t: [
                {"op": "update_node", "agent_node_id": ids["a"], "params_used": {"a": "text"}}
            ],
            422,
            "invalid_params",
            0,
        ),
        (
            lambda ids, t: [{"op": "create_node", "node_type_id": t, "params_used": {"zzz": 1}}],
            422,
            "invalid_params",
            0,
        ),
    ],
)
def test_operation_errors_name_the_failing_operation(
    client, agent, node_type, make_ops, status, code, op_index
):
    ids = build(client, agent, node_type, ["a", "b"], [("a", "b")])
    before = graph_of(client, agent["id"])
    error = error_of(update(client, agent["id"], make_ops(ids, node_type)), status, code)
    assert error["details"]["op_index"] == op_index
    assert graph_of(client, agent["id"]) == before


def test_invalid_params_names_the_json_path(client, agent, node_type):
    response = update(
        client,
        agent["id"],
        [{"op": "create_node", "node_type_id": node_type, "params_used": {"a": "one"}}],
    )
    assert error_of(response, 422, "invalid_params")["details"]["path"] == "$.a"


def test_nodes_of_another_agent_cannot_be_touched(client, node_type):
    mine, theirs = put_agent(client), put_agent(client)
    their_ids = build(client, theirs, node_type, ["x", "y"], [])
    my_ids = build(client, mine, node_type, ["m"], [])
    before = graph_of(client, theirs["id"])
    for op in (
        {"op": "update_node", "agent_node_id": their_ids["x"], "params_used": {"a": 2}},
        {"op": "delete_node", "agent_node_id": their_ids["x"]},
        {
            "op": "create_connection",
            "source_agent_node_id": my_ids["m"],
            "target_agent_node_id": their_ids["y"],
        },
    ):
        error_of(update(client, mine["id"], [op]), 404, "node_not_found")
    assert graph_of(client, theirs["id"]) == before


def test_error_in_the_last_of_fifty_operations_changes_nothing(client, agent, node_type):
    ids = build(client, agent, node_type, ["a", "b"], [("a", "b")])
    update(client, agent["id"], name="before", description="kept")
    agent_before = client.get(f"/v1/agents/{agent['id']}").json()
    graph_before = graph_of(client, agent["id"])
    operations = [
        {"op": "create_node", "node_type_id": node_type, "temp_ref_id": f"n{i}"} for i in range(30)
    ]
    operations += [
        {
            "op": "create_connection",
            "source_temp_ref_id": f"n{i}",
            "target_temp_ref_id": f"n{i + 1}",
        }
        for i in range(18)
    ]
    operations.append(
        {"op": "update_node", "agent_node_id": ids["a"], "params_used": {"b": "changed"}}
    )
    operations.append(
        {
            "op": "create_connection",
            "source_agent_node_id": ids["b"],
            "target_agent_node_id": ids["a"],
        }
    )
    assert len(operations) == 50
    response = update(client, agent["id"], operations, name="after", visibility="public")
    assert error_of(response, 422, "graph_cycle")["details"]["op_index"] == 49
    assert graph_of(client, agent["id"]) == graph_before
    assert client.get(f"/v1/agents/{agent['id']}").json() == agent_before


@pytest.mark.parametrize(
    "operations, message_part",
    [
        (
            [
                {
                    "op": "create_connection",
                    "source_temp_ref_id": "later",
                    "target_temp_ref_id": "later",
                },
                {"op": "create_node", "node_type_id": str(uuid.uuid4()), "temp_ref_id": "later"},
            ],
            "before",
        ),
        (
            [
                {"op": "create_node", "node_type_id": str(uuid.uuid4()), "temp_ref_id": "t"},
                {"op": "create_node", "node_type_id": str(uuid.uuid4()), "temp_ref_id": "t"},
            ],
            "twice",
        ),
        ([{"op": "create_connection", "source_agent_node_id": str(uuid.uuid4())}], "target"),
        (
            [
                {
                    "op": "create_connection",
                    "source_agent_node_id": str(uuid.uuid4()),
                    "source_temp_ref_id": "x",
                    "target_agent_node_id": str(uuid.uuid4()),
                }
            ],
            "source",
        ),
        ([{"op": "explode"}], "tag"),
        ([{"op": "create_node"}], "node_type_id"),
        ([{"op": "delete_node", "agent_node_id": "not-a-uuid"}], "UUID"),
    ],
)
def test_malformed_operations_fail_before_they_are_queued(
    client, db, agent, operations, message_part
):
    jobs_before = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    response = update(client, agent["id"], operations)
    error = error_of(response, 422, "invalid_operation")
    assert message_part.lower() in str(error).lower()
    assert "Idmirror-Job-Id" not in response.headers
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == jobs_before


def test_empty_update_and_too_many_operations(client, agent, node_type):
    error_of(update(client, agent["id"]), 422, "empty_update")
    too_many = [{"op": "create_node", "node_type_id": node_type}] * 1001
    error_of(update(client, agent["id"], too_many), 422, "validation_error")
    error_of(update(client, agent["id"], name=""), 422, "validation_error")
    error_of(update(client, agent["id"], visibility="secret"), 422, "validation_error")


def test_update_of_unknown_or_deleted_agent_is_404(client, agent):
    error_of(update(client, "agt_000000000000", name="x"), 404, "agent_not_found")
    client.delete(f"/v1/internal/agents/bot@{agent['user_slug']}")
    error_of(update(client, f"bot@{agent['user_slug']}", name="x"), 404, "agent_not_found")
    error_of(update(client, agent["id"], name="x"), 404, "agent_not_found")


def test_patch_is_the_same_as_post(client, agent):
    response = client.patch(f"/v1/agents/{agent['id']}/update", json={"name": "patched"})
    assert response.status_code == 200 and response.json()["agent"]["name"] == "patched"


def test_a_schema_reference_that_cannot_resolve_fails_its_job_only(client, agent):
    top = str(uuid.uuid4())
    refused = client.put(
        f"/v1/internal/node-types/{top}", json={"name": "t", "params_schema": {"$ref": "#/nope"}}
    )
    error_of(refused, 422, "invalid_params_schema")
    nested = put_node_type(
        client, {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    )
    response = update(
        client,
        agent["id"],
        [{"op": "create_node", "node_type_id": nested, "params_used": {"a": 1}}],
    )
    assert error_of(response, 422, "invalid_params")["details"]["op_index"] == 0
    other = put_agent(client)  # the drain goes on for everyone else
    assert other["outcome"] == "created"


def test_an_update_that_changes_nothing_rewrites_nothing(client, agent):
    error_of(update(client, agent["id"], []), 422, "empty_update")
    first = update(client, agent["id"], name="same")
    again = update(client, agent["id"], name="same")
    assert again.status_code == 200
    assert again.json()["agent"]["updated_at"] == first.json()["agent"]["updated_at"]
    job = client.get(f"/v1/jobs/{again.headers['Idmirror-Job-Id']}").json()
    assert job["outcome"] == "unchanged"
