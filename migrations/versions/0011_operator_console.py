"""What the operator console reads and writes: discarded failed jobs, the link from a retry to
the job it retried, a key's backfill items, failed items by key, and heartbeats.

- `jobs.discarded_at`: an operator looked at a failed job and let it go; it leaves the
  dead-letter view (failed, neither retried nor discarded), which a partial index keeps small.
- `backfill_items`: one row per item a backfill chunk applied (its key, line and outcome), so a
  key's history shows backfill writes beside its jobs. No foreign key: the check would cost a
  lookup per item, and runs are never deleted; the sweeper forgets items with the jobs'
  retention, found through a BRIN index on the time (rows arrive in time order).
- `heartbeats`: the last time something happened, by name: `drain` (a drain finished jobs),
  `sweeper` (the sweeper ran). A stall is pending work whose drain heartbeat is old.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE jobs ADD COLUMN discarded_at timestamptz;
        CREATE INDEX jobs_by_retried_by ON jobs (retried_by) WHERE retried_by IS NOT NULL;
        CREATE INDEX jobs_failed_open ON jobs (accepted_at, id)
            WHERE status = 'failed' AND retried_by IS NULL AND discarded_at IS NULL;

        CREATE TABLE backfill_items (
            key text NOT NULL,
            backfill_id uuid NOT NULL,
            line bigint NOT NULL,
            outcome text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX backfill_items_by_key ON backfill_items (key, applied_at);
        CREATE INDEX backfill_items_by_time ON backfill_items USING brin (applied_at);
        CREATE INDEX backfill_failures_by_key ON backfill_failures (key) WHERE key IS NOT NULL;

        CREATE TABLE heartbeats (
            name text PRIMARY KEY,
            at timestamptz NOT NULL
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE heartbeats, backfill_items;
        DROP INDEX backfill_failures_by_key;
        DROP INDEX jobs_failed_open;
        DROP INDEX jobs_by_retried_by;
        ALTER TABLE jobs DROP COLUMN discarded_at;
        """
    )
