"""Node types and agent graphs.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE node_types (
            id uuid PRIMARY KEY,
            name text NOT NULL,
            description text,
            params_schema jsonb NOT NULL DEFAULT '{}',
            version bigint NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        );

        CREATE TABLE agent_nodes (
            id uuid PRIMARY KEY,
            agent_id text NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
            node_type_id uuid NOT NULL REFERENCES node_types (id),
            params_used jsonb NOT NULL DEFAULT '{}',
            -- Positions are not stored: they are derived from the graph whenever it is read.
            created_seq bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            CONSTRAINT agent_nodes_agent_id_id UNIQUE (agent_id, id)
        );
        CREATE INDEX agent_nodes_by_agent ON agent_nodes (agent_id, created_seq);

        -- Both ends must be nodes of the same agent: the foreign keys carry agent_id.
        CREATE TABLE agent_connections (
            agent_id text NOT NULL,
            source_node_id uuid NOT NULL,
            target_node_id uuid NOT NULL,
            PRIMARY KEY (agent_id, source_node_id, target_node_id),
            CONSTRAINT agent_connections_no_self_loop CHECK (source_node_id <> target_node_id),
            FOREIGN KEY (agent_id, source_node_id)
                REFERENCES agent_nodes (agent_id, id) ON DELETE CASCADE,
            FOREIGN KEY (agent_id, target_node_id)
                REFERENCES agent_nodes (agent_id, id) ON DELETE CASCADE
        );
        CREATE INDEX agent_connections_by_target ON agent_connections (agent_id, target_node_id);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE agent_connections, agent_nodes, node_types")
