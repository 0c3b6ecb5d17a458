"""Refused graph updates: each error names its operation and the whole update changes nothing."""

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import put_agent
from tests.identity.graph.updates import build, error_of, graph_of, update
from tests.stack import scalar

MakeOps = Callable[[dict[str, str], str], list[dict[str, Any]]]


def test_cycle_is_refused(client: httpx.Client, agent: dict[str, Any], node_type: str) -> None:
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
    client: httpx.Client,
    agent: dict[str, Any],
    node_type: str,
    make_ops: MakeOps,
    status: int,
    code: str,
    op_index: int,
) -> None:
    ids = build(client, agent, node_type, ["a", "b"], [("a", "b")])
    before = graph_of(client, agent["id"])
    error = error_of(update(client, agent["id"], make_ops(ids, node_type)), status, code)
    assert error["details"]["op_index"] == op_index
    assert graph_of(client, agent["id"]) == before


def test_invalid_params_names_the_json_path(
    client: httpx.Client, agent: dict[str, Any], node_type: str
) -> None:
    response = update(
        client,
        agent["id"],
        [{"op": "create_node", "node_type_id": node_type, "params_used": {"a": "one"}}],
    )
    assert error_of(response, 422, "invalid_params")["details"]["path"] == "$.a"


def test_nodes_of_another_agent_cannot_be_touched(client: httpx.Client, node_type: str) -> None:
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


def test_error_in_the_last_of_fifty_operations_changes_nothing(
    client: httpx.Client, agent: dict[str, Any], node_type: str
) -> None:
    ids = build(client, agent, node_type, ["a", "b"], [("a", "b")])
    update(client, agent["id"], name="before", description="kept")
    agent_before = client.get(f"/v1/agents/{agent['id']}").json()
    graph_before = graph_of(client, agent["id"])
    operations: list[dict[str, Any]] = [
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
    client: httpx.Client,
    db: psycopg.Connection[Any],
    agent: dict[str, Any],
    operations: list[dict[str, Any]],
    message_part: str,
) -> None:
    jobs_before = scalar(db, "SELECT count(*) FROM jobs")
    response = update(client, agent["id"], operations)
    error = error_of(response, 422, "invalid_operation")
    assert message_part.lower() in str(error).lower()
    assert "Idmirror-Job-Id" not in response.headers
    assert scalar(db, "SELECT count(*) FROM jobs") == jobs_before


def test_empty_update_and_too_many_operations(
    client: httpx.Client, agent: dict[str, Any], node_type: str
) -> None:
    error_of(update(client, agent["id"]), 422, "empty_update")
    too_many = [{"op": "create_node", "node_type_id": node_type}] * 1001
    error_of(update(client, agent["id"], too_many), 422, "validation_error")
    error_of(update(client, agent["id"], name=""), 422, "validation_error")
    error_of(update(client, agent["id"], visibility="secret"), 422, "validation_error")


def test_update_of_unknown_or_deleted_agent_is_404(
    client: httpx.Client, agent: dict[str, Any]
) -> None:
    error_of(update(client, "agt_000000000000", name="x"), 404, "agent_not_found")
    client.delete(f"/v1/internal/agents/bot@{agent['user_slug']}")
    error_of(update(client, f"bot@{agent['user_slug']}", name="x"), 404, "agent_not_found")
    error_of(update(client, agent["id"], name="x"), 404, "agent_not_found")
