"""A SCIM client on the shared stack, and the payloads providers send."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.stack import Stack

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
AGENT_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Agent"
IDMIRROR = "urn:idmirror:params:scim:schemas:extension:idmirror:2.0:Agent"


@pytest.fixture
def scim(stack: Stack) -> Iterator[httpx.Client]:
    """A client of /scim/v2 that sends application/scim+json."""
    with stack.client() as client:
        client.base_url = httpx.URL(f"{stack.base_url}/scim/v2/")
        client.headers["Content-Type"] = SCIM_JSON
        yield client


def user_name(prefix: str = "user") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}@example.com"


def slug_of(user_name: str) -> str:
    """The slug a SCIM user of a generated userName gets."""
    return user_name.lower().replace(".", "-").replace("@", "-")


def user_body(name: str | None = None, **extra: Any) -> dict[str, Any]:
    """A core User as Okta sends it on create."""
    name = name or user_name()
    return {
        "schemas": [USER_SCHEMA],
        "userName": name,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"primary": True, "value": name, "type": "work"}],
        "displayName": "Ada Lovelace",
        "active": True,
        **extra,
    }


def create(scim: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = scim.post("Users", json=user_body(**extra))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def patch(operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": operations}


def agent_body(name: str, owner: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [AGENT_SCHEMA], "name": name, **extra}
    if owner is not None:
        body["owners"] = [{"value": owner}]
    return body


def owner(scim: httpx.Client) -> tuple[dict[str, Any], str]:
    """A SCIM user, and its slug (a userName lowercased, its other characters hyphens)."""
    user = create(scim)
    return user, slug_of(user["userName"])


def create_agent(scim: httpx.Client, **extra: Any) -> tuple[dict[str, Any], str]:
    user, slug = owner(scim)
    response = scim.post("Agents", json=agent_body("scout", user["id"], **extra))
    assert response.status_code == 201, response.text
    return response.json(), slug
