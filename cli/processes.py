"""Serving the API in several processes that share the connections.

uvicorn's processes share one listening socket, and whichever is waiting in its event loop when
connections arrive takes all of them (asyncio accepts a backlog's worth at each wake-up): a
burst of keep-alive clients lands on one process while the others idle, for as long as the
connections last. Measured with 32 clients on two processes: 31 connections on one, 1 on the
other, in three tries of four. So on Linux each process binds a socket of its own to the
address with SO_REUSEPORT, and the kernel spreads new connections over the processes' sockets
by a hash of their addresses.

uvicorn's supervisor still starts, watches and restarts the processes. What it hands each of
them is not a socket but an `OwnSocket`, which the process, started by multiprocessing's spawn
and so given its arguments pickled, unpickles into a socket bound where it runs.
"""

import contextlib
import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("uvicorn.error")


def spreads(workers: int, port: int) -> bool:
    """Whether `workers` processes each bind their own socket: on Linux, to a fixed port."""
    return workers > 1 and port != 0 and sys.platform == "linux"


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to the address beside the other processes' (SO_REUSEPORT); the process
    ends as a failed start if it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.error("cannot listen on %s port %d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    return sock


class OwnSocket:
    """Stands in uvicorn's list of sockets for its processes: unpickled in a process, it is a
    socket of that process's own, bound to the address."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return bind, (self.host, self.port)


def serve_spread(config: uvicorn.Config) -> None:
    """Serve `config.workers` processes, each accepting on a socket of its own."""
    # A port taken by a socket that does not share it is found here, once, not by each process.
    # (A port held by sockets that do share it, another `idmirror api` of the same user, would
    # be shared with them: Linux allows it within one user.)
    bind(config.host, config.port).close()
    log.info(
        "serving on %s port %d in %d processes, each with a socket of its own",
        config.host,
        config.port,
        config.workers,
    )
    own: list[Any] = [OwnSocket(config.host, config.port)]
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=own).run()
