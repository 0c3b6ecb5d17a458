"""A fresh agent and a node type with a small params schema, for each graph test."""

from typing import Any

import httpx
import pytest

from tests.conftest import put_agent, put_node_type


@pytest.fixture
def agent(client: httpx.Client) -> dict[str, Any]:
    return put_agent(client)


@pytest.fixture
def node_type(client: httpx.Client) -> str:
    return put_node_type(
        client,
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer"},
                "b": {"type": "string"},
                "nested": {"type": "object"},
            },
            "additionalProperties": False,
        },
    )
