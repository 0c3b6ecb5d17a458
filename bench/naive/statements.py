"""The naive comparator's upserts: one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` each,
answering the row as written and whether it was inserted (`xmax = 0`)."""

import uuid

from sqlalchemy import Boolean, Executable, Text, func, literal, literal_column, select
from sqlalchemy.dialects.postgresql import insert

from bench.naive.tables import agents, users
from identity.schemas import AgentUpsert, UserUpsert

# A row the statement inserted has no deleting transaction yet; an updated one has.
_CREATED = literal_column("xmax = 0", Boolean).label("created")


def upsert_user(user_id: uuid.UUID, body: UserUpsert) -> Executable:
    """Create or replace the user with this id."""
    statement = insert(users).values(
        id=user_id,
        email=body.email,
        slug=body.slug,
        plan=body.plan,
        metadata=body.metadata,
        external_owner=body.external_owner,
    )
    written = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[users.c.id],
        set_={
            "email": written.email,
            "slug": written.slug,
            "plan": written.plan,
            "metadata": written.metadata,
            "external_owner": written.external_owner,
            "updated_at": func.now(),
        },
    ).returning(*users.c, _CREATED)


def upsert_agent(slug: str, user_slug: str, body: AgentUpsert) -> Executable:
    """Create or replace the agent `slug` of the user whose slug is `user_slug`; the statement
    returns no row when there is no such user."""
    owner = select(
        users.c.id,
        literal(slug, Text),
        literal(body.display_name, Text),
        literal(body.webhook_url, Text),
        literal(body.metadata, agents.c.metadata.type),
    ).where(users.c.slug == user_slug)
    statement = insert(agents).from_select(
        ["user_id", "slug", "display_name", "webhook_url", "metadata"], owner
    )
    written = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[agents.c.user_id, agents.c.slug],
        set_={
            "display_name": written.display_name,
            "webhook_url": written.webhook_url,
            "metadata": written.metadata,
            "updated_at": func.now(),
        },
    ).returning(*agents.c, _CREATED)
