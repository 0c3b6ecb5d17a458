"""The Python client, made against the shared stack."""

from collections.abc import Iterator

import pytest
from idmirror_client import Client

from tests.stack import TOKEN, Stack


@pytest.fixture
def api(stack: Stack) -> Iterator[Client]:
    with Client(stack.base_url, TOKEN) as client:
        yield client
