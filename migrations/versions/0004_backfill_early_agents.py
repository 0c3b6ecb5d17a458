"""Backfills: whether agent chunks may be applied while the input is still arriving.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the input has not reached its agents yet; true: agent chunks may be applied while
    # receiving; false: not before the input has ended (a user line came after agent lines).
    op.execute("ALTER TABLE backfills ADD COLUMN early_agents boolean")


def downgrade() -> None:
    op.execute("ALTER TABLE backfills DROP COLUMN early_agents")
