"""Backfills: runs, their stored chunks, failed items, covered users and drift.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE backfills (
            id uuid PRIMARY KEY,
            status text NOT NULL DEFAULT 'receiving'
                CHECK (status IN ('receiving', 'running', 'completed', 'failed', 'cancelled')),
            phase text NOT NULL DEFAULT 'receiving'
                CHECK (phase IN ('receiving', 'plan', 'users', 'agents', 'drift', 'done')),
            mode text NOT NULL CHECK (mode IN ('upsert', 'mirror')),
            prune boolean NOT NULL DEFAULT false,
            dry_run boolean NOT NULL DEFAULT false,
            apply_early boolean NOT NULL DEFAULT false,
            rerun boolean NOT NULL DEFAULT false,
            source text,
            source_state jsonb,
            snapshot_at timestamptz NOT NULL,
            snapshot_version bigint NOT NULL,
            received bigint NOT NULL DEFAULT 0,
            created bigint NOT NULL DEFAULT 0,
            updated bigint NOT NULL DEFAULT 0,
            unchanged bigint NOT NULL DEFAULT 0,
            superseded bigint NOT NULL DEFAULT 0,
            failed bigint NOT NULL DEFAULT 0,
            chunks integer NOT NULL DEFAULT 0,
            retries integer NOT NULL DEFAULT 0,
            drift jsonb,
            error jsonb,
            started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at timestamptz,
            touched_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            step_queued_at timestamptz
        );
        -- One pull at a time per upstream source.
        CREATE UNIQUE INDEX backfills_one_run_per_source ON backfills (source)
            WHERE source IS NOT NULL AND status IN ('receiving', 'running');
        CREATE INDEX backfills_active ON backfills (touched_at)
            WHERE status IN ('receiving', 'running');
        CREATE INDEX backfills_by_started ON backfills (started_at, id);

        CREATE TABLE backfill_chunks (
            backfill_id uuid NOT NULL REFERENCES backfills (id) ON DELETE CASCADE,
            seq integer NOT NULL,
            kind text NOT NULL CHECK (kind IN ('node_type', 'user', 'agent')),
            bucket smallint NOT NULL,
            status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
            size integer NOT NULL,
            items jsonb NOT NULL,
            queued_at timestamptz,
            finished_at timestamptz,
            PRIMARY KEY (backfill_id, seq)
        );
        -- Chunks are written once and read once: compressing them costs more than it saves.
        ALTER TABLE backfill_chunks ALTER COLUMN items SET STORAGE EXTERNAL;
        CREATE INDEX backfill_chunks_pending ON backfill_chunks (backfill_id, kind, bucket, seq)
            WHERE status = 'pending';

        CREATE TABLE backfill_failures (
            backfill_id uuid NOT NULL REFERENCES backfills (id) ON DELETE CASCADE,
            line bigint NOT NULL,
            kind text,
            key text,
            error jsonb NOT NULL,
            item jsonb,
            PRIMARY KEY (backfill_id, line)
        );

        CREATE TABLE backfill_users (
            backfill_id uuid NOT NULL REFERENCES backfills (id) ON DELETE CASCADE,
            user_id uuid NOT NULL,
            slug text NOT NULL,
            outcome text NOT NULL,
            PRIMARY KEY (backfill_id, user_id)
        );
        CREATE INDEX backfill_users_by_slug ON backfill_users (backfill_id, slug);

        CREATE TABLE backfill_drift (
            backfill_id uuid NOT NULL REFERENCES backfills (id) ON DELETE CASCADE,
            agent_id text NOT NULL,
            key text NOT NULL,
            state text NOT NULL DEFAULT 'found' CHECK (state IN ('found', 'pruned', 'kept')),
            PRIMARY KEY (backfill_id, agent_id)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE backfill_drift, backfill_users, backfill_failures, backfill_chunks, backfills"
    )
