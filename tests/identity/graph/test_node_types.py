"""Node types: idempotent puts, schemas that are refused, and a reference no schema can resolve."""

import uuid
from typing import Any

import httpx

from tests.conftest import put_agent, put_node_type
from tests.identity.graph.updates import error_of, update


def test_node_type_put_is_idempotent_and_readable(client: httpx.Client) -> None:
    node_type_id = str(uuid.uuid4())
    body = {"name": "http", "description": "calls a URL", "params_schema": {"type": "object"}}
    first = client.put(f"/v1/internal/node-types/{node_type_id}", json=body).json()
    again = client.put(f"/v1/internal/node-types/{node_type_id}", json=body).json()
    assert first["outcome"] == "created" and again["outcome"] == "unchanged"
    assert again["updated_at"] == first["updated_at"]
    assert client.get(f"/v1/node-types/{node_type_id}").json()["name"] == "http"
    listed = client.get("/v1/node-types", params={"limit": 500}).json()["items"]
    assert node_type_id in {t["id"] for t in listed}


def test_invalid_params_schema_is_422_and_not_stored(client: httpx.Client) -> None:
    node_type_id = str(uuid.uuid4())
    response = client.put(
        f"/v1/internal/node-types/{node_type_id}",
        json={"name": "bad", "params_schema": {"type": "not-a-type"}},
    )
    error_of(response, 422, "invalid_params_schema")
    error_of(client.get(f"/v1/node-types/{node_type_id}"), 404, "node_type_not_found")
    error_of(client.get("/v1/node-types/nope"), 400, "invalid_node_type_id")


def test_a_schema_reference_that_cannot_resolve_fails_its_job_only(
    client: httpx.Client, agent: dict[str, Any]
) -> None:
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
