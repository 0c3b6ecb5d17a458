"""The upserts benchmark's requests: the users and agents it creates, the update bodies each
client sends, and the headers of a request in either mode."""

import json
import secrets
import uuid
from typing import Any

from bench.load import RequestFactory
from bench.stack import TOKEN
from bench.upserts.runs import AGENTS, HOT, HOT_KEYS, USERS, is_users


def headers(respond_async: bool, token: str = TOKEN) -> dict[str, str]:
    """The bearer token (the bootstrap one unless given) and JSON content type, with
    `Prefer: respond-async` when asked."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if respond_async:
        headers["Prefer"] = "respond-async"
    return headers


class Workload:
    """The keys and bodies: USERS users, AGENTS agents spread over them, HOT_KEYS hot agents."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        prefix = "b" + secrets.token_hex(3)  # fresh keys even on a shared, external database
        self.users = [(uuid.uuid4(), f"{prefix}-u{j}") for j in range(USERS)]
        self.agents = [f"a{i}@{self.users[i % USERS][1]}" for i in range(AGENTS)]
        self.hot = self.agents[:HOT_KEYS]

    def user_puts(self) -> RequestFactory:
        """One PUT per user, spread over the clients."""

        def make(c: int, n: int) -> tuple[str, bytes] | None:
            i = c + n * self.concurrency
            if i >= len(self.users):
                return None
            return self._user_put(i, {"i": i})

        return make

    def user_updates(self, tag: str) -> RequestFactory:
        """Client c cycles over its own slice of the users (none when there are more clients
        than users); every body is new."""

        def make(c: int, n: int) -> tuple[str, bytes] | None:
            mine = range(c, len(self.users), self.concurrency)
            if not mine:
                return None
            return self._user_put(mine[n % len(mine)], {"tag": tag, "c": c, "n": n})

        return make

    def agent_creates(self) -> RequestFactory:
        """One PUT per agent, spread over the clients."""

        def make(c: int, n: int) -> tuple[str, bytes] | None:
            i = c + n * self.concurrency
            if i >= len(self.agents):
                return None
            return self._agent_put(self.agents[i], f"create {i}", {"i": i})

        return make

    def updates(self, tag: str, *, hot: bool) -> RequestFactory:
        """Client c cycles over its own slice of the keys (or its hot key); every body is new."""
        keys = self.hot if hot else self.agents

        def make(c: int, n: int) -> tuple[str, bytes] | None:
            if hot:
                key = keys[c % len(keys)]
            else:
                mine = range(c, len(keys), self.concurrency)
                key = keys[mine[n % len(mine)]]
            return self._agent_put(key, f"{tag} c{c} n{n}", {"tag": tag, "c": c, "n": n})

        return make

    def _user_put(self, i: int, metadata: dict[str, Any]) -> tuple[str, bytes]:
        user_id, slug = self.users[i]
        body = {"email": f"{slug}@bench.idmirror.dev", "slug": slug, "metadata": metadata}
        return f"/v1/internal/users/{user_id}", json.dumps(body).encode()

    def updates_for(self, mode: str, tag: str) -> tuple[RequestFactory, int]:
        """A measured mode's updates, and the number of keys they cycle over."""
        if is_users(mode):
            return self.user_updates(tag), USERS
        if mode == HOT:
            return self.updates(tag, hot=True), HOT_KEYS
        return self.updates(tag, hot=False), AGENTS

    @staticmethod
    def _agent_put(key: str, name: str, metadata: dict[str, Any]) -> tuple[str, bytes]:
        body = {"display_name": f"agent {name}", "metadata": metadata}
        return f"/v1/internal/agents/{key}", json.dumps(body).encode()
