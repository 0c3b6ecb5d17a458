"""What a request may cost: the token is checked before any body is read, JSON bodies have a
size and a time limit, and nothing over them is buffered."""

import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.stack import TOKEN, Stack


def raw_request(stack: Stack, head: str, body: bytes = b"", *, pace: float = 0.0) -> bytes:
    """Send `head` and `body` (a byte every `pace` seconds if given) on a socket of its own;
    the first bytes of the answer, or b"" if the server closed without one."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as conn:
        conn.sendall(head.encode())
        try:
            if pace:
                for byte in body:
                    conn.sendall(bytes([byte]))
                    if select.select([conn], [], [], pace)[0]:
                        break  # answered before the body was complete
            elif body:
                conn.sendall(body)
        except OSError:  # the server answered and closed while the body was on its way
            pass
        return read_answer(conn)


def read_answer(conn: socket.socket) -> bytes:
    """One whole HTTP answer (headers and a Content-Length body), or what came before a close."""
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            if not (part := conn.recv(65536)):
                return answer
            answer += part
        headers, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in headers.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        while len(body) < length and (part := conn.recv(65536)):
            body += part
        return headers + b"\r\n\r\n" + body
    except OSError:
        return answer


def head(method: str, path: str, length: int, token: str | None = TOKEN) -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: idmirror\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )


def status_and_code(answer: bytes) -> tuple[int, str]:
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body)["error"]["code"]


def test_a_request_without_the_token_is_refused_before_its_body_is_read(stack: Stack) -> None:
    api = psutil.Process(stack.processes["api"].pid)
    before = api.memory_info().rss
    path = f"/v1/internal/users/{uuid.uuid4()}"

    def unauthenticated_upload(_: int) -> bytes:
        # Announces 200 MB, sends 8 MB: without the early refusal the answer would wait for
        # the rest, and the server would buffer what came.
        return raw_request(stack, head("PUT", path, 200_000_000, token="wrong"), b"x" * 8_000_000)

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(unauthenticated_upload, range(4)))
    assert time.monotonic() - started < 20
    assert [status_and_code(a) for a in answers] == [(401, "invalid_token")] * 4
    assert b"www-authenticate: Bearer" in answers[0].lower().replace(b"bearer", b"Bearer")
    assert api.memory_info().rss - before < 50_000_000


def test_a_json_body_over_the_limit_is_413_from_its_length_alone(stack: Stack) -> None:
    answer = raw_request(stack, head("PUT", f"/v1/internal/users/{uuid.uuid4()}", 2 << 20))
    assert status_and_code(answer) == (413, "payload_too_large")


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(client: httpx.Client) -> None:
    user_id = uuid.uuid4()

    def chunks() -> Iterator[bytes]:
        yield b'{"email": "big@example.com", "slug": "big", "metadata": {"pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    response = client.put(
        f"/v1/internal/users/{user_id}",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert client.get(f"/v1/internal/users/{user_id}").status_code == 404


def test_graph_updates_have_a_larger_limit_of_their_own(client: httpx.Client) -> None:
    operations = [{"op": "create_node", "node_type_id": str(uuid.uuid4())}] * 30_000  # ~1.7 MB
    response = client.post("/v1/agents/nobody@nowhere/update", json={"operations": operations})
    assert response.status_code != 413
    assert len(response.request.content) > 1 << 20


@pytest.fixture
def impatient(database_url: str, redis_url: str, tmp_home: Path) -> Iterator[Stack]:
    """An API that waits one second for a body."""
    stack = Stack(database_url, redis_url, tmp_home, body_timeout_seconds="1")
    try:
        stack.start("api")
        yield stack
    finally:
        stack.stop()


def test_a_body_that_trickles_in_is_408_after_the_body_timeout(impatient: Stack) -> None:
    body = json.dumps({"email": "slow@example.com", "slug": "slow"}).encode()
    started = time.monotonic()
    answer = raw_request(
        impatient, head("PUT", f"/v1/internal/users/{uuid.uuid4()}", len(body)), body, pace=0.5
    )
    assert status_and_code(answer) == (408, "request_timeout")
    assert time.monotonic() - started < 5
