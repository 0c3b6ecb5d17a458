"""Integrators, their tokens (stored as hashes), ownership of identities and an audit trail.

Users and node types name the integrator that owns them (NULL: written with the bootstrap token,
owned by no integrator); agents and graphs belong to their user's owner. Jobs and backfills name
the integrator and token that sent them, so each integrator sees its own. Audit entries are
appended and never changed, except that a write's entry is given its job's outcome once, when
the job finishes; a trigger refuses anything else.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE integrators (
            name text PRIMARY KEY,
            display_name text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            disabled boolean NOT NULL DEFAULT false,
            rate_per_second double precision CHECK (rate_per_second > 0),
            rate_burst integer CHECK (rate_burst >= 1)
        );

        CREATE TABLE tokens (
            id uuid PRIMARY KEY,
            integrator text NOT NULL REFERENCES integrators (name),
            -- SHA-256 of the secret: the secret itself is shown once and kept nowhere.
            secret_hash bytea NOT NULL UNIQUE,
            scopes text[] NOT NULL,
            name text,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            expires_at timestamptz,
            revoked_at timestamptz,
            last_used_at timestamptz
        );
        CREATE INDEX tokens_by_integrator ON tokens (integrator, created_at);

        ALTER TABLE users ADD COLUMN owner text;
        CREATE INDEX users_by_owner ON users (owner, id);
        ALTER TABLE node_types ADD COLUMN owner text;

        -- Jobs accepted before this revision came with the one internal token: an admin's.
        ALTER TABLE jobs ADD COLUMN integrator text, ADD COLUMN token_id uuid,
            ADD COLUMN admin boolean NOT NULL DEFAULT true;
        ALTER TABLE jobs ALTER COLUMN admin SET DEFAULT false;
        CREATE INDEX jobs_by_integrator ON jobs (integrator, accepted_at, id);

        ALTER TABLE backfills ADD COLUMN integrator text,
            ADD COLUMN admin boolean NOT NULL DEFAULT true;
        ALTER TABLE backfills ALTER COLUMN admin SET DEFAULT false;

        CREATE TABLE audit (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT clock_timestamp(),
            integrator text,
            token_id uuid,
            action text NOT NULL,
            key text,
            job_id uuid,
            outcome text,
            request_id text,
            client text,
            details jsonb
        ) WITH (fillfactor = 90);  -- room on the page for the outcome, filled in later (HOT)
        -- Every accepted write adds a row: few indexes. Entries are appended in time order,
        -- so a BRIN index serves `since` and retention.
        CREATE INDEX audit_by_at ON audit USING brin (at);
        CREATE INDEX audit_by_integrator ON audit (integrator, id);
        CREATE INDEX audit_by_key ON audit (key, id);
        CREATE INDEX audit_by_job ON audit (job_id) WHERE job_id IS NOT NULL;

        CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit entries are append-only (only a missing outcome is filled in)';
        END $$;
        -- Fires only for a change other than filling in the outcome a write's entry lacks.
        CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit FOR EACH ROW
            WHEN (OLD.outcome IS NOT NULL
                  OR (OLD.id, OLD.at, OLD.integrator, OLD.token_id, OLD.action, OLD.key,
                      OLD.job_id, OLD.request_id, OLD.client, OLD.details)
                     IS DISTINCT FROM
                     (NEW.id, NEW.at, NEW.integrator, NEW.token_id, NEW.action, NEW.key,
                      NEW.job_id, NEW.request_id, NEW.client, NEW.details))
            EXECUTE FUNCTION audit_refuse_change();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE audit;
        DROP FUNCTION audit_refuse_change();
        ALTER TABLE backfills DROP COLUMN integrator, DROP COLUMN admin;
        ALTER TABLE jobs DROP COLUMN integrator, DROP COLUMN token_id, DROP COLUMN admin;
        ALTER TABLE node_types DROP COLUMN owner;
        ALTER TABLE users DROP COLUMN owner;
        DROP TABLE tokens, integrators;
        """
    )
