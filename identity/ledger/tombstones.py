"""The version at which a key was last deleted, kept in key_tombstones so stale writes stay stale.

A table of its own rather than a column of key_heads: a drain holds the tombstone row of a key it
deletes until it commits, and accepts, which lock key_heads rows, must not wait for that.
"""

import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session


def tombstone_version(session: Session, key: str) -> int | None:
    return session.execute(
        text("SELECT version FROM key_tombstones WHERE key = :key"), {"key": key}
    ).scalar_one_or_none()


def set_tombstone(session: Session, key: str, version: int) -> None:
    session.execute(
        text(
            "INSERT INTO key_tombstones AS t (key, version) VALUES (:key, :version) "
            "ON CONFLICT (key) DO UPDATE SET version = greatest(t.version, excluded.version)"
        ),
        {"key": key, "version": version},
    )


def set_agent_tombstones_of_user(session: Session, user_id: uuid.UUID, version: int) -> None:
    """Tombstone every agent key of a user about to be deleted, as a DELETE of each would.

    The agents' rows go with the user by cascade; their keys' tombstones must stay behind, or a
    stale write to `agent:<slug>@<user_slug>` would create the agent again."""
    session.execute(
        text(
            "INSERT INTO key_tombstones AS t (key, version) "
            "SELECT DISTINCT 'agent:' || a.slug || '@' || u.slug, CAST(:version AS bigint) "
            "FROM agents a JOIN users u ON u.id = a.user_id WHERE u.id = :user_id "
            "ORDER BY 1 "
            "ON CONFLICT (key) DO UPDATE SET version = greatest(t.version, excluded.version)"
        ),
        {"user_id": user_id, "version": version},
    )
