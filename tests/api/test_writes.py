"""Once a write is accepted, its answer comes from its job: whatever fails while the request
waits, the client gets 200/4xx with the result or 202 with the job, never a 5xx that invites a
second, duplicate write."""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.conftest import OwnStack
from tests.stack import Stack, scalar, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def isolated(own_stack: OwnStack) -> Stack:
    """A whole stack of its own: its connections are cut below."""
    return own_stack("worker", "beat", "api")


def cut_connections(database_url: str, stop: threading.Event) -> None:
    """Terminate every other connection to the database, again and again, until `stop`."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not stop.is_set():
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            time.sleep(0.3)


def test_sync_waits_cut_off_from_the_database_answer_from_their_jobs(isolated: Stack) -> None:
    stack = isolated
    with stack.client() as client:
        owner = f"o-{uuid.uuid4().hex[:8]}"
        assert client.put(
            f"/v1/internal/users/{uuid.uuid4()}", json={"email": "o@example.com", "slug": owner}
        ).is_success
        assert client.put(f"/v1/internal/agents/bot@{owner}", json={"display_name": "B"}).is_success
        node_type = str(uuid.uuid4())
        assert client.put(f"/v1/internal/node-types/{node_type}", json={"name": "n"}).is_success
    update = {"operations": [{"op": "create_node", "node_type_id": node_type}]}
    answers: list[httpx.Response] = []

    def create_one_node(client: httpx.Client) -> bool:
        """Send the update; as a client would, send it again while told 503. True if accepted."""
        for _ in range(20):
            answer = client.post(f"/v1/agents/bot@{owner}/update", json=update)
            answers.append(answer)
            if answer.status_code != 503:
                return True
            time.sleep(0.2)
        return False

    stop = threading.Event()
    cutter = threading.Thread(target=cut_connections, args=(stack.database_url, stop))
    cutter.start()
    try:
        with stack.client() as client, ThreadPoolExecutor(8) as pool:
            accepted = sum(pool.map(lambda _: create_one_node(client), range(60)))
    finally:
        stop.set()
        cutter.join()

    assert {a.status_code for a in answers} <= {200, 202, 503}
    for answer in answers:
        if answer.status_code != 503:
            assert "Idmirror-Job-Id" in answer.headers
        if answer.status_code == 202:
            assert answer.headers["Location"] == f"/v1/jobs/{answer.headers['Idmirror-Job-Id']}"
    assert accepted >= 30  # the cuts do not stop the service

    def nodes_once_drained() -> tuple[int] | None:
        with psycopg.connect(stack.database_url) as conn:
            pending: int = scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'pending'")
            created: int = scalar(conn, "SELECT count(*) FROM agent_nodes")
        return (created,) if pending == 0 else None

    # One node per accepted update: no 503 was ever sent for an update that was recorded.
    assert wait_until(nodes_once_drained, timeout=60) == (accepted,)
