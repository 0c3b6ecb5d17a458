"""metric_counters in shards: each counter is a few rows, one per shard, so that transactions
adding to it at the same time (two API processes' accepts, a drain beside them) do not wait for
each other's row lock until the other's commit is flushed. A transaction adds to the shard of
its connection; /metrics sums the shards.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE metric_counters ADD COLUMN shard smallint NOT NULL DEFAULT 0;
        ALTER TABLE metric_counters DROP CONSTRAINT metric_counters_pkey,
            ADD PRIMARY KEY (name, labels, shard);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE TEMPORARY TABLE summed ON COMMIT DROP AS
            SELECT name, labels, sum(value) AS value FROM metric_counters GROUP BY name, labels;
        DELETE FROM metric_counters;
        ALTER TABLE metric_counters DROP CONSTRAINT metric_counters_pkey, DROP COLUMN shard,
            ADD PRIMARY KEY (name, labels);
        INSERT INTO metric_counters (name, labels, value) SELECT name, labels, value FROM summed;
        """
    )
