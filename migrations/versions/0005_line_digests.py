"""Users and agents remember the backfill line that last wrote them, as a digest.

A backfill that meets the same line again, with nothing written to the row since, knows the item
is unchanged without validating, storing or applying it. Every other write clears the digest.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN line_digest bytea")
    op.execute("ALTER TABLE agents ADD COLUMN line_digest bytea")


def downgrade() -> None:
    op.execute("ALTER TABLE agents DROP COLUMN line_digest")
    op.execute("ALTER TABLE users DROP COLUMN line_digest")
