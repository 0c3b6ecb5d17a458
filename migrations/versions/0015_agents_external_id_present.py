"""agents_external_id holds only agents that have an external id.

Its predicate was `deleted_at IS NULL` alone, the condition of every query that reads live
agents, so the planner could read the index whole and filter each entry in place of probing
a key's index entry. A plan kept from a moment `agents` was nearly empty did that: during a
first load, each lookup of a backfill's known lines read every live agent for every line and
stalled the upload (seconds to a minute a part). The SCIM filters that use the index compare
the external id with strict operators (=, LIKE, IS NOT NULL), which imply the new predicate.
Agents without one, most of them, no longer take an index entry either. The new index is
built beside the old one (CONCURRENTLY), so upgrading a large `agents` table blocks neither its
reads nor its writes.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _swap("external_id IS NOT NULL AND deleted_at IS NULL")


def downgrade() -> None:
    _swap("deleted_at IS NULL")


def _swap(predicate: str) -> None:
    """Replace agents_external_id with one on `predicate`, built beside it without blocking
    writes to `agents` (CONCURRENTLY, outside a transaction). Each step may run again after a
    crash: a half-built index from an earlier attempt is dropped first."""
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS agents_external_id_new")
        op.execute(
            "CREATE INDEX CONCURRENTLY agents_external_id_new ON agents (external_id) "
            f"WHERE {predicate}"
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS agents_external_id")
        op.execute("ALTER INDEX agents_external_id_new RENAME TO agents_external_id")
