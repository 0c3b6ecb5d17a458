"""Agents as SCIM sees them (draft-abbey-scim-agent-extension's Agent): a stored `active` flag,
the provider's `externalId`, and the rest of the SCIM Agent as `scim`; an index for the
`externalId` lookups providers make before they create.

`active` may be NULL, for users too: a SCIM resource written without it (or with it removed)
has none to show. Only `false` is a deactivation; rows written through /v1 keep `true`.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE agents
            ADD COLUMN active boolean DEFAULT true,
            ADD COLUMN external_id text,
            ADD COLUMN scim jsonb NOT NULL DEFAULT '{}';
        CREATE INDEX agents_external_id ON agents (external_id) WHERE deleted_at IS NULL;
        ALTER TABLE users ALTER COLUMN active DROP NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        UPDATE users SET active = true WHERE active IS NULL;
        ALTER TABLE users ALTER COLUMN active SET NOT NULL;
        DROP INDEX agents_external_id;
        ALTER TABLE agents DROP COLUMN active, DROP COLUMN external_id, DROP COLUMN scim;
        """
    )
