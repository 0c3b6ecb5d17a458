"""`idmirror api` with several processes spreads the connections over them: each binds a
socket of its own to the port (cli/processes.py), where uvicorn's shared socket gave a burst of
keep-alive connections to whichever process woke first. A port it cannot have stops it with
uvicorn's failed-start code."""

import socket
import sys
from pathlib import Path

import psutil
import pytest

from cli.embedded import free_port
from tests.cli.test_main import idmirror
from tests.stack import Stack, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT spreads on Linux")

CONNECTIONS = 32


def connections_by_process(api: psutil.Process, port: int) -> dict[int, tuple[int, int]]:
    """Each process under `api` that listens on `port`: its listening and its established
    sockets on the port."""
    counts = {}
    for child in api.children(recursive=True):
        on_port = [c for c in child.net_connections(kind="tcp") if c.laddr.port == port]
        listening = sum(1 for c in on_port if c.status == psutil.CONN_LISTEN)
        if listening:
            established = sum(1 for c in on_port if c.status == psutil.CONN_ESTABLISHED)
            counts[child.pid] = (listening, established)
    return counts


def test_two_processes_each_take_a_share_of_a_burst_of_connections(
    database_url: str, redis_url: str, tmp_home: Path
) -> None:
    stack = Stack(database_url, redis_url, tmp_home, api_workers="2")
    clients: list[socket.socket] = []
    try:
        api = psutil.Process(stack.start("api").pid)
        wait_until(lambda: len(connections_by_process(api, stack.port)) == 2, timeout=60)
        # The connections are made before any is used: the kernel completes them all while
        # the processes wait, as a client pool opening at once does.
        for _ in range(CONNECTIONS):
            clients.append(socket.create_connection(("127.0.0.1", stack.port), timeout=10))
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: idmirror\r\n\r\n")
        for client in clients:
            assert client.recv(64).startswith(b"HTTP/1.1 200"), "a connection was not served"
        shares = connections_by_process(api, stack.port)
    finally:
        for client in clients:
            client.close()
        stack.stop()

    assert sorted(listening for listening, _ in shares.values()) == [1, 1]  # a socket each
    established = sorted(n for _, n in shares.values())
    assert sum(established) == CONNECTIONS
    # The kernel spreads by a hash of each connection's addresses: fewer than 5 of 32 on one
    # of two processes happens about twice in 100,000 runs; one socket shared gave 31 and 1.
    assert established[0] >= 5, established


def test_a_port_taken_stops_the_api_before_its_processes_start(tmp_home: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = idmirror(
            "api",
            "--workers",
            "2",
            IDMIRROR_HOME=str(tmp_home),
            IDMIRROR_HOST="127.0.0.1",
            IDMIRROR_PORT=str(port),
            IDMIRROR_DATABASE_URL="postgresql://127.0.0.1:1/none",
            IDMIRROR_REDIS_URL="redis://127.0.0.1:1/0",
        )
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1 port {port}" in result.stderr
    assert "Started server process" not in result.stderr
