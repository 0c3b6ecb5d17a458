"""Users as SCIM sees them: a stored `active` flag (a deactivation is not a delete), the
provider's `userName` and `externalId`, the rest of the SCIM User as `scim`, and the indexes
SCIM filters run on.

`userName` falls back to the slug for users written only through /v1, so the lookups use
`lower(coalesce(user_name, slug))`; emails are matched through `scim_email_values`, the
lowercased primary email and every SCIM email of a user (`scim_email_text` for substrings).

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


# The lowercased primary email and SCIM emails of a user, distinct and sorted.
_EMAIL_VALUES = """
    SELECT coalesce(array_agg(DISTINCT v ORDER BY v), '{}')
    FROM (SELECT lower(email) AS v
          UNION ALL
          SELECT lower(e ->> 'value')
          FROM jsonb_array_elements(
              CASE jsonb_typeof(scim -> 'emails') WHEN 'array' THEN scim -> 'emails'
              ELSE '[]' END) AS e) AS s
    WHERE v IS NOT NULL AND v <> ''
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE EXTENSION IF NOT EXISTS pg_trgm;

        ALTER TABLE users
            ADD COLUMN active boolean NOT NULL DEFAULT true,
            ADD COLUMN user_name text,
            ADD COLUMN external_id text,
            ADD COLUMN scim jsonb NOT NULL DEFAULT '{}';

        CREATE FUNCTION scim_email_values(email text, scim jsonb) RETURNS text[]
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ {values} $$;

        -- The same values as one string, for trigram searches. (It repeats the query rather
        -- than call the function above: an index expression runs with only pg_catalog on
        -- the search_path.)
        CREATE FUNCTION scim_email_text(email text, scim jsonb) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT array_to_string(({values}), ' ')
        $$;

        CREATE UNIQUE INDEX users_user_name ON users (lower(user_name));
        CREATE INDEX users_scim_user_name ON users (lower(coalesce(user_name, slug)));
        CREATE INDEX users_scim_user_name_trgm
            ON users USING gin (lower(coalesce(user_name, slug)) gin_trgm_ops);
        CREATE INDEX users_external_id ON users (external_id);
        CREATE INDEX users_external_id_trgm ON users USING gin (external_id gin_trgm_ops);
        CREATE INDEX users_scim_emails ON users USING gin (scim_email_values(email, scim));
        CREATE INDEX users_scim_emails_trgm ON users
            USING gin (scim_email_text(email, scim) gin_trgm_ops);
        CREATE INDEX users_updated_at ON users (updated_at);
        CREATE INDEX users_created_at ON users (created_at);
        """.replace("{values}", _EMAIL_VALUES)
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX users_user_name, users_scim_user_name, users_scim_user_name_trgm,
            users_external_id, users_external_id_trgm, users_scim_emails, users_scim_emails_trgm,
            users_updated_at, users_created_at;
        ALTER TABLE users DROP COLUMN active, DROP COLUMN user_name, DROP COLUMN external_id,
            DROP COLUMN scim;
        DROP FUNCTION scim_email_text(text, jsonb);
        DROP FUNCTION scim_email_values(text, jsonb);
        """
    )
