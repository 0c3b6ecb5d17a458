"""A real upstream source for the backfill pull tests: an HTTP server on 127.0.0.1 speaking the
source protocol (GET /users and /agents, `limit` and `cursor`, `{"items", "next_cursor"}`), with
faults to order: error statuses, 429 with Retry-After, answers slower than the client waits."""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    at: float  # time.monotonic()
    path: str
    cursor: str | None
    limit: int | None
    authorization: str | None
    status: int


@dataclass
class Upstream:
    users: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    token: str | None = None
    delay: float = 0.0  # seconds before every answer
    # Per path, faults served before the real pages: an int status, ("retry_after", seconds)
    # or ("hang", seconds) for an answer later than the client's timeout.
    faults: dict[str, list[Any]] = field(default_factory=lambda: {"/users": [], "/agents": []})
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
                upstream._answer(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def pages(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path and s.status == 200]

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, body: Any, **headers: str
    ) -> None:
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name.replace("_", "-"), value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting, as a timeout test wants

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        cursor = query.get("cursor", [None])[0]
        limit = int(query["limit"][0]) if "limit" in query else None
        authorization = handler.headers.get("Authorization")

        def seen(status: int) -> None:
            self.seen.append(
                Seen(time.monotonic(), parts.path, cursor, limit, authorization, status)
            )

        if self.delay:
            time.sleep(self.delay)
        if parts.path not in ("/users", "/agents"):
            seen(404)
            return self._send(handler, 404, {"error": "no such collection"})
        if self.token is not None and authorization != f"Bearer {self.token}":
            seen(401)
            return self._send(handler, 401, {"error": "bad token"})
        faults = self.faults.setdefault(parts.path, [])
        if faults:
            fault = faults.pop(0)
            if isinstance(fault, int):
                seen(fault)
                return self._send(handler, fault, {"error": "injected"})
            kind, seconds = fault
            if kind == "retry_after":
                seen(429)
                return self._send(handler, 429, {"error": "slow down"}, Retry_After=str(seconds))
            seen(0)  # hung: the answer comes after the client stopped waiting
            time.sleep(seconds)
        items = self.users if parts.path == "/users" else self.agents
        start = int(cursor or 0)
        size = limit or 100
        page = items[start : start + size]
        more = start + size < len(items)
        seen(200)
        self._send(
            handler, 200, {"items": page, "next_cursor": str(start + size) if more else None}
        )
