"""The naive comparator's FastAPI app: two sync routes, each one upsert in its own transaction
on a pooled engine; FastAPI runs them in its threadpool."""

import uuid
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path
from sqlalchemy import Row, create_engine

from bench.naive.statements import upsert_agent, upsert_user
from identity.db import sqlalchemy_url
from identity.keys import SLUG_RE
from identity.schemas import AgentUpsert, UserUpsert
from identity.settings import get_settings

# Connections per process: more than the 32 clients of a benchmark can keep busy on two cores,
# as many as idmirror's API keeps for its own writes.
POOL_SIZE = 20

Slug = Annotated[str, Path(pattern=SLUG_RE.pattern)]


def _answer(row: Row[Any], **extra: str) -> dict[str, Any]:
    """The row as written and what the write did, as idmirror answers an upsert."""
    return {**row._mapping, **extra, "outcome": "created" if row.created else "updated"}


def create_app() -> FastAPI:
    """The app, with an engine of its own in each uvicorn process."""
    engine = create_engine(
        sqlalchemy_url(get_settings().require_database_url()), pool_size=POOL_SIZE
    )
    app = FastAPI(title="naive upserts")

    @app.put("/v1/internal/users/{user_id}")
    def put_user(user_id: uuid.UUID, body: UserUpsert) -> dict[str, Any]:
        """Create or replace a user."""
        with engine.begin() as connection:
            row = connection.execute(upsert_user(user_id, body)).one()
        return _answer(row)

    @app.put("/v1/internal/agents/{slug}@{user_slug}")
    def put_agent(slug: Slug, user_slug: Slug, body: AgentUpsert) -> dict[str, Any]:
        """Create or replace an agent of an existing user."""
        with engine.begin() as connection:
            row = connection.execute(upsert_agent(slug, user_slug, body)).one_or_none()
        if row is None:
            raise HTTPException(404, f"no user has slug {user_slug!r}")
        return _answer(row, user_slug=user_slug)

    return app
