"""agents_external_id holds only agents that have an external id.

Its predicate was `deleted_at IS NULL` alone, the condition of every query that reads live
agents, so the planner could read the index whole and filter each entry in place of probing
a key's index entry. A plan kept from a moment `agents` was nearly empty did that: during a
first load, each lookup of a backfill's known lines read every live agent for every line and
stalled the upload (seconds to a minute a part). The SCIM filters that use the index compare
the external id with strict operators (=, LIKE, IS NOT NULL), which imply the new predicate.
Agents without one, most of them, no longer take an index entry either.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DROP INDEX agents_external_id;
        CREATE INDEX agents_external_id ON agents (external_id)
            WHERE external_id IS NOT NULL AND deleted_at IS NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX agents_external_id;
        CREATE INDEX agents_external_id ON agents (external_id) WHERE deleted_at IS NULL;
        """
    )
