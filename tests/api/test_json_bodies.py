"""Live writes refuse the JSON jsonb cannot store or the service cannot bound, on every path,
with 422 and nothing recorded."""

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import put_agent, put_node_type, put_user
from tests.stack import scalar

HOSTILE = {
    "nan": (b'{"n": NaN}', "json_not_finite"),
    "infinity": (b'{"n": -Infinity}', "json_not_finite"),
    "overflow": (b'{"n": 1e400}', "json_not_finite"),
    "surrogate": (b'{"t": "\\ud800"}', "json_lone_surrogate"),
    "deep-256": (b'{"a":' * 256 + b"1" + b"}" * 256, "json_too_deep"),
    "deep-990": (b'{"a":' * 990 + b"1" + b"}" * 990, "json_too_deep"),
}


def jobs(db: psycopg.Connection[Any]) -> int:
    count: int = scalar(db, "SELECT count(*) FROM jobs")
    return count


def refused(response: httpx.Response, kind: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [e["type"] for e in error["details"]["errors"]] == [kind]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_metadata_is_refused_on_user_and_agent_writes(
    client: httpx.Client, db: psycopg.Connection[Any], case: str
) -> None:
    value, kind = HOSTILE[case]
    user = put_user(client)
    before = jobs(db)
    user_body = b'{"email": "h@example.com", "slug": "h-%s", "metadata": %s}' % (
        uuid.uuid4().hex[:8].encode(),
        value,
    )
    refused(client.put(f"/v1/internal/users/{uuid.uuid4()}", content=user_body), kind)
    agent_body = b'{"display_name": "H", "metadata": %s}' % value
    refused(client.put(f"/v1/internal/agents/h@{user['slug']}", content=agent_body), kind)
    assert jobs(db) == before


@pytest.mark.parametrize("case", ["nan", "overflow", "surrogate", "deep-990"])
def test_hostile_params_are_refused_on_graph_updates(
    client: httpx.Client, db: psycopg.Connection[Any], case: str
) -> None:
    value, kind = HOSTILE[case]
    agent, node_type = put_agent(client), put_node_type(client)
    before = jobs(db)
    body = b'{"operations": [{"op": "create_node", "node_type_id": "%s", "params_used": %s}]}' % (
        node_type.encode(),
        value,
    )
    refused(client.post(f"/v1/agents/{agent['id']}/update", content=body), kind)
    assert jobs(db) == before
    assert client.get(f"/v1/agents/{agent['id']}/graph").json()["nodes"] == []
