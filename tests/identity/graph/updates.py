"""Graph updates through the API: send one, read a graph back, check a refusal, build a graph."""

from typing import Any

import httpx


def update(
    client: httpx.Client,
    ref: str,
    operations: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> httpx.Response:
    body = dict(fields)
    if operations is not None:
        body["operations"] = operations
    return client.post(f"/v1/agents/{ref}/update", json=body)


def graph_of(client: httpx.Client, ref: str) -> dict[str, Any]:
    graph: dict[str, Any] = client.get(f"/v1/agents/{ref}/graph").json()
    return graph


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


def build(
    client: httpx.Client,
    agent: dict[str, Any],
    node_type: str,
    names: list[str],
    edges: list[tuple[str, str]],
) -> dict[str, str]:
    """Create nodes named by temp refs and connect them; returns {name: node_id}."""
    operations = [{"op": "create_node", "node_type_id": node_type, "temp_ref_id": n} for n in names]
    operations += [
        {"op": "create_connection", "source_temp_ref_id": s, "target_temp_ref_id": t}
        for s, t in edges
    ]
    response = update(client, agent["id"], operations)
    assert response.status_code == 200, response.text
    return {c["temp_ref_id"]: c["agent_node_id"] for c in response.json()["created_nodes"]}
