"""The naive comparator's tables: idmirror's user and agent columns that its PUTs write, with the
same keys (a user's id and unique slug, an agent's user and slug) and the agents' foreign key to
their user, and none of idmirror's versions, tombstones or lookup indexes."""

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    create_engine,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from identity.db import sqlalchemy_url

metadata = MetaData()

users = Table(
    "naive_users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", Text, nullable=False),
    Column("slug", Text, nullable=False, unique=True),
    Column("plan", Text, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("external_owner", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

agents = Table(
    "naive_agents",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
    Column("user_id", Uuid, ForeignKey("naive_users.id", ondelete="CASCADE"), nullable=False),
    Column("slug", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("webhook_url", Text),
    Column("metadata", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("user_id", "slug"),
)


def create_tables(database_url: str) -> None:
    """Create the tables unless they are there (a shared database keeps them between runs)."""
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
