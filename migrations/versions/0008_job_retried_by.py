"""A failed job remembers the job that retried it, so it is retried at most once.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN retried_by uuid")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN retried_by")
