"""The version at which a key was last deleted, kept in key_heads so stale writes stay stale."""

from sqlalchemy import text
from sqlalchemy.orm import Session


def tombstone_version(session: Session, key: str) -> int | None:
    return session.execute(
        text("SELECT tombstone_version FROM key_heads WHERE key = :key"), {"key": key}
    ).scalar_one_or_none()


def set_tombstone(session: Session, key: str, version: int) -> None:
    session.execute(
        text(
            "INSERT INTO key_heads (key, last_seq, last_version, tombstone_version) "
            "VALUES (:key, 0, :version, :version) ON CONFLICT (key) DO UPDATE SET "
            "tombstone_version = greatest(key_heads.tombstone_version, excluded.tombstone_version)"
        ),
        {"key": key, "version": version},
    )
