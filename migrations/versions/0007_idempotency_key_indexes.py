"""Idempotency keys are found by their job and by their age without a scan.

Deleting a job (the ledger's retention) deletes its idempotency key by cascade, which looks the
key up by job_id; the sweeper forgets expired keys by created_at. Without these indexes each
was a scan of the whole table: per deleted job, and per sweep.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX idempotency_keys_by_job ON idempotency_keys (job_id)")
    op.execute("CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at)")


def downgrade() -> None:
    op.execute("DROP INDEX idempotency_keys_by_age")
    op.execute("DROP INDEX idempotency_keys_by_job")
