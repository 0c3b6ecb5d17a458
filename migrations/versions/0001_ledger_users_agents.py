"""Job ledger, users and agents.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id uuid PRIMARY KEY,
            email text NOT NULL,
            slug text NOT NULL UNIQUE,
            plan text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}',
            external_owner text,
            version bigint NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        );

        CREATE TABLE agents (
            id text PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            slug text NOT NULL,
            display_name text NOT NULL,
            webhook_url text,
            metadata jsonb NOT NULL DEFAULT '{}',
            name text,
            description text,
            visibility text NOT NULL DEFAULT 'private'
                CHECK (visibility IN ('public', 'private')),
            version bigint NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            deleted_at timestamptz
        );
        CREATE UNIQUE INDEX agents_live_key ON agents (user_id, slug) WHERE deleted_at IS NULL;
        CREATE INDEX agents_by_key ON agents (user_id, slug, version);

        CREATE TABLE key_heads (
            key text PRIMARY KEY,
            last_seq bigint NOT NULL,
            last_version bigint NOT NULL,
            tombstone_version bigint
        );

        CREATE TABLE jobs (
            id uuid PRIMARY KEY,
            key text NOT NULL,
            seq bigint NOT NULL,
            kind text NOT NULL,
            payload jsonb NOT NULL,
            payload_hash text NOT NULL,
            version bigint NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'applied', 'failed')),
            outcome text,
            attempts integer NOT NULL DEFAULT 0,
            accepted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at timestamptz,
            result json,
            error json,
            CONSTRAINT jobs_key_seq UNIQUE (key, seq)
        );
        CREATE INDEX jobs_pending_by_key ON jobs (key, seq) WHERE status = 'pending';
        CREATE INDEX jobs_pending_by_age ON jobs (accepted_at) WHERE status = 'pending';
        CREATE INDEX jobs_by_accepted ON jobs (accepted_at, id);

        CREATE TABLE idempotency_keys (
            key text PRIMARY KEY,
            request_hash text NOT NULL,
            job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE metric_counters (
            name text NOT NULL,
            labels text NOT NULL,
            value double precision NOT NULL,
            PRIMARY KEY (name, labels)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE metric_counters, idempotency_keys, jobs, key_heads, agents, users CASCADE"
    )
