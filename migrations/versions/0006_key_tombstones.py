"""Tombstones get a table of their own, apart from the accept counters in key_heads.

A drain that applies a delete holds its tombstone row until it commits. Kept in key_heads, that
row is also the one every accept of the key locks, so writes accepted together with one of that
key would wait for the drain. In a table of their own, tombstones are locked only by drains and
prunes, which already hold the key's lock.

Stop the workers before this migration, as before any: a drain of the old code would look for the
column it removes. key_heads is locked first, so no tombstone written meanwhile is left behind.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        LOCK TABLE key_heads IN ACCESS EXCLUSIVE MODE;
        CREATE TABLE key_tombstones (
            key text PRIMARY KEY,
            version bigint NOT NULL
        );
        INSERT INTO key_tombstones (key, version)
        SELECT key, tombstone_version FROM key_heads WHERE tombstone_version IS NOT NULL;
        ALTER TABLE key_heads DROP COLUMN tombstone_version;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE key_heads ADD COLUMN tombstone_version bigint;
        INSERT INTO key_heads AS h (key, last_seq, last_version, tombstone_version)
        SELECT key, 0, version, version FROM key_tombstones
        ON CONFLICT (key) DO UPDATE SET tombstone_version = excluded.tombstone_version;
        DROP TABLE key_tombstones;
        """
    )
