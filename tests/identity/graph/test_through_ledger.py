"""Graph updates are not idempotent by nature: the ledger makes them exactly-once and ordered."""

import threading
from typing import Any

import httpx
import psycopg
import pytest
from celery import Celery

from identity.agents import get_agent
from identity.db import transaction
from identity.errors import GraphTooLarge
from identity.graph.operations import GraphUpdateJob
from identity.graph.service import update_agent_graph
from identity.keys import AgentKey, AgentRef
from tests.conftest import put_agent, put_node_type
from tests.stack import Stack, scalar, wait_until


def node_count(db: psycopg.Connection[Any], agent_id: str) -> int:
    count: int = scalar(db, "SELECT count(*) FROM agent_nodes WHERE agent_id = %s", (agent_id,))
    return count


def test_a_graph_job_delivered_three_times_creates_its_nodes_once(
    client: httpx.Client, db: psycopg.Connection[Any], domain: None, redis_url: str
) -> None:
    from tasks.drain import drain_key

    agent, node_type = put_agent(client), put_node_type(client)
    key = f"agent:bot@{agent['user_slug']}"
    operations = [{"op": "create_node", "node_type_id": node_type} for _ in range(5)]
    response = client.post(
        f"/v1/agents/{agent['id']}/update",
        json={"operations": operations},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202
    job_id = response.headers["Idmirror-Job-Id"]

    drain_key(key)  # delivered again, run right here
    broker = Celery("redeliver", broker=redis_url)
    for _ in range(2):  # and twice more through the broker, to the real worker
        broker.send_task("identity.drain_key", args=[key])
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "applied")
    wait_until(lambda: broker.connection().default_channel.client.llen("celery") == 0)

    assert node_count(db, agent["id"]) == 5
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["attempts"] == 1 and len(job["result"]["created_nodes"]) == 5
    assert len(client.get(f"/v1/agents/{agent['id']}/graph").json()["nodes"]) == 5


def test_concurrent_clients_both_apply_in_acceptance_order(
    client: httpx.Client, db: psycopg.Connection[Any], stack: Stack
) -> None:
    agent, node_type = put_agent(client), put_node_type(client)

    def send(name: str) -> None:
        with stack.client() as own:
            for n in range(15):
                op = {
                    "op": "create_node",
                    "node_type_id": node_type,
                    "params_used": {"by": name, "n": n},
                }
                response = own.post(f"/v1/agents/{agent['id']}/update", json={"operations": [op]})
                assert response.status_code == 200, response.text

    threads = [threading.Thread(target=send, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    jobs = db.execute(
        "SELECT result FROM jobs WHERE key = %s AND kind = 'agent.update' ORDER BY seq",
        (f"agent:bot@{agent['user_slug']}",),
    ).fetchall()
    by_acceptance = [row[0]["created_nodes"][0]["agent_node_id"] for row in jobs]
    stored = db.execute(
        "SELECT id::text, params_used FROM agent_nodes WHERE agent_id = %s ORDER BY created_seq",
        (agent["id"],),
    ).fetchall()
    assert [row[0] for row in stored] == by_acceptance
    for name in ("a", "b"):
        assert [p["n"] for _, p in stored if p["by"] == name] == list(range(15))


def test_graph_size_limit_is_checked_per_operation(client: httpx.Client, domain: None) -> None:
    agent, node_type = put_agent(client), put_node_type(client)
    key = AgentKey("bot", agent["user_slug"])
    payload = {"operations": [{"op": "create_node", "node_type_id": node_type}] * 3}
    with pytest.raises(GraphTooLarge) as raised, transaction() as session:
        update_agent_graph(session, key, GraphUpdateJob.model_validate(payload), max_nodes=2)
    assert raised.value.details["op_index"] == 2


def test_the_agent_an_update_answers_with_is_the_agent_as_stored(
    client: httpx.Client, domain: None
) -> None:
    agent, node_type = put_agent(client), put_node_type(client)
    key = AgentKey("bot", agent["user_slug"])
    update = GraphUpdateJob.model_validate(
        {
            "name": "renamed",
            "visibility": "private",
            "operations": [{"op": "create_node", "node_type_id": node_type}],
        }
    )
    with transaction() as session:
        applied = update_agent_graph(session, key, update, max_nodes=10)
        stored = get_agent(session, AgentRef(key=key)).model_dump(mode="json")
    assert applied.outcome == "updated"
    assert applied.result["agent"] == stored
    assert stored["name"] == "renamed" and stored["visibility"] == "private"
    assert stored["updated_at"] != agent["updated_at"]
