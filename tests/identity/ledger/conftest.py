"""Fixtures of the ledger's tests."""

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from identity.db import sqlalchemy_url
from tests.stack import database_url_for


@pytest.fixture
def session(postgres_server: str) -> Iterator[Session]:
    """A session on a database of its own, migrated and empty."""
    url = database_url_for(postgres_server, f"idmirror_ledger_{uuid.uuid4().hex[:10]}")
    engine = create_engine(sqlalchemy_url(url))
    with Session(engine) as opened:
        yield opened
    engine.dispose()
