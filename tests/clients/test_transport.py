"""Retries: a write whose answer was lost is sent again with the same Idempotency-Key and
recorded once (through a real proxy in front of the live API); 429 and 503 are tried again
after their Retry-After."""

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from idmirror_client import Client, RetryPolicy, Unavailable, UserUpsert, UserWrite

from tests.conftest import new_slug
from tests.stack import TOKEN, Stack


class DroppingProxy:
    """Forwards connections to `upstream`; of the first, it lets the request through and
    throws the answer away, closing the connection once the answer has begun."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            drop = self.connections == 1
            threading.Thread(target=self._serve, args=(conn, drop), daemon=True).start()

    def _serve(self, conn: socket.socket, drop: bool) -> None:
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=_pipe, args=(conn, upstream), daemon=True).start()
        if drop:
            upstream.recv(65536)  # the answer began: the write was recorded and answered
            conn.close()
            upstream.close()
            return
        _pipe(upstream, conn)

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(stack: Stack) -> Iterator[DroppingProxy]:
    front = DroppingProxy(("127.0.0.1", stack.port))
    yield front
    front.close()


def test_a_write_whose_answer_was_lost_is_retried_and_recorded_once(
    proxy: DroppingProxy, api: Client
) -> None:
    user_id = uuid.uuid4()
    quick = RetryPolicy(retries=3, backoff=0.05)
    with Client(f"http://127.0.0.1:{proxy.port}", TOKEN, retry=quick) as client:
        written = client.upsert_user(user_id, UserUpsert(email="r@example.com", slug=new_slug("r")))
    assert proxy.connections == 2  # the first answer was lost, the retry got one
    assert isinstance(written, UserWrite) and written.outcome == "created"
    assert len(api.list_jobs(key=f"user:{user_id}").items) == 1  # recorded once


def scripted(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.Client(transport=httpx.MockTransport(answer))


def test_429_and_503_are_retried_after_their_retry_after_with_one_idempotency_key() -> None:
    envelope = {"error": {"code": "overloaded", "message": "later", "status": 503}}
    user: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "email": "a@example.com",
        "slug": "a",
        "plan": "free",
        "metadata": {},
        "external_owner": None,
        "version": 1,
        "created": True,
        "outcome": "created",
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(503, json=envelope, headers={"Retry-After": "0.3"}),
        httpx.Response(429, json=envelope, headers={"Retry-After": "0.3"}),
        httpx.Response(200, json=user, headers={"Idmirror-Job-Id": str(uuid.uuid4())}),
    ]
    client = Client("http://idmirror.test", "t", http=scripted(answers, seen))
    started = time.monotonic()
    written = client.upsert_user(user["id"], UserUpsert(email="a@example.com", slug="a"))
    assert isinstance(written, UserWrite) and time.monotonic() - started >= 0.6
    keys = {request.headers["Idempotency-Key"] for request in seen}
    assert len(seen) == 3 and len(keys) == 1

    seen.clear()
    answers[:] = [httpx.Response(503, json=envelope) for _ in range(3)]
    quick = Client("http://idmirror.test", "t", http=scripted(answers, seen))
    quick.retry = RetryPolicy(retries=2, backoff=0.01)
    with pytest.raises(Unavailable) as unavailable:
        quick.get_health()
    assert len(seen) == 3 and unavailable.value.code == "overloaded"
