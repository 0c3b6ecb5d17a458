"""Integrators and their tokens for tests, made through the admin API with the bootstrap token."""

import uuid
from typing import Any

import httpx

from identity.access import SCOPES
from tests.stack import Stack

WRITES = ["users:write", "agents:write", "graphs:write", "node_types:write", "backfills:write"]
EVERYTHING_BUT_ADMIN = [scope for scope in SCOPES if scope != "admin"]


def new_integrator(admin: httpx.Client, *, per_second: float = 10_000, burst: int = 20_000) -> str:
    """A fresh integrator, with a rate limit no test meets unless it asks for a lower one."""
    name = f"int-{uuid.uuid4().hex[:10]}"
    answer = admin.post(
        "/v1/admin/integrators",
        json={
            "name": name,
            "display_name": name.upper(),
            "rate_limit": {"per_second": per_second, "burst": burst},
        },
    )
    assert answer.status_code == 201, answer.text
    return name


def new_token(
    admin: httpx.Client, integrator: str, scopes: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A token of `integrator` (every scope but admin unless given): the create answer."""
    body = {"integrator": integrator, "scopes": scopes or EVERYTHING_BUT_ADMIN, **extra}
    answer = admin.post("/v1/admin/tokens", json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def client_for(stack: Stack, token: str, **kwargs: Any) -> httpx.Client:
    """A client of `stack` carrying `token` instead of the bootstrap one."""
    return httpx.Client(
        base_url=stack.base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kwargs,
    )


def integrator_client(stack: Stack, admin: httpx.Client, **limits: Any) -> httpx.Client:
    """A client acting for a fresh integrator, with every scope but admin."""
    return client_for(stack, new_token(admin, new_integrator(admin, **limits))["token"])
