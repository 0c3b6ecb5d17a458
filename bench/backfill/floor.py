"""The raw database floor of the backfill benchmark: the same rows loaded with COPY into staging
tables and merged with one INSERT ... ON CONFLICT per table into copies of the real tables."""

import time
from pathlib import Path
from typing import Any

from bench.backfill.runs import cpu_sampler, cpu_seconds
from bench.stack import Stack

_MERGE_USERS = """
INSERT INTO floor.users AS u (id, email, slug, plan, metadata, external_owner,
                              version, created_at, updated_at)
SELECT id, email, slug, plan, metadata, external_owner, %s,
       clock_timestamp(), clock_timestamp() FROM stage_users
ON CONFLICT (id) DO UPDATE SET email = excluded.email, slug = excluded.slug,
    plan = excluded.plan, metadata = excluded.metadata,
    external_owner = excluded.external_owner, version = excluded.version,
    updated_at = clock_timestamp()
WHERE u.version <= excluded.version
  AND (u.email, u.slug, u.plan, u.metadata, u.external_owner) IS DISTINCT FROM
      (excluded.email, excluded.slug, excluded.plan, excluded.metadata,
       excluded.external_owner)
"""
_MERGE_AGENTS = """
INSERT INTO floor.agents AS a (id, user_id, slug, display_name, webhook_url,
                               metadata, version, created_at, updated_at)
SELECT s.id, u.id, s.slug, s.display_name, s.webhook_url, s.metadata, %s,
       clock_timestamp(), clock_timestamp()
FROM stage_agents s JOIN floor.users u ON u.slug = s.user_slug
ON CONFLICT (user_id, slug) WHERE deleted_at IS NULL DO UPDATE
    SET display_name = excluded.display_name, webhook_url = excluded.webhook_url,
        metadata = excluded.metadata, version = excluded.version,
        updated_at = clock_timestamp()
WHERE a.version <= excluded.version
  AND (a.display_name, a.webhook_url, a.metadata) IS DISTINCT FROM
      (excluded.display_name, excluded.webhook_url, excluded.metadata)
"""


def _copy(conn: Any, sql: str, path: Path) -> None:
    with conn.cursor().copy(sql) as copy, path.open("rb") as source:
        while block := source.read(1 << 20):
            copy.write(block)


def measure_floor(stack: Stack, users: Path, agents: Path) -> tuple[float, dict[str, float]]:
    """COPY into staging tables, then one merge per table into copies of the real tables: the
    seconds it took and the CPU-seconds each process group used."""
    with stack.pg_connect() as conn, cpu_sampler(stack) as sampler:
        conn.execute("DROP SCHEMA IF EXISTS floor CASCADE")
        conn.execute("CREATE SCHEMA floor")
        conn.execute("CREATE TABLE floor.users (LIKE public.users INCLUDING ALL)")
        conn.execute("CREATE TABLE floor.agents (LIKE public.agents INCLUDING ALL)")
        version = int(time.time() * 1_000_000)
        started = time.monotonic()
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE stage_users (id uuid, email text, slug text, plan text, "
                "metadata jsonb, external_owner text) ON COMMIT DROP"
            )
            _copy(conn, "COPY stage_users FROM STDIN", users)
            conn.execute(_MERGE_USERS, (version,))
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE stage_agents (id text, user_slug text, slug text, "
                "display_name text, webhook_url text, metadata jsonb) ON COMMIT DROP"
            )
            _copy(conn, "COPY stage_agents FROM STDIN", agents)
            conn.execute(_MERGE_AGENTS, (version,))
        seconds = time.monotonic() - started
    with stack.pg_connect() as conn:
        conn.execute("DROP SCHEMA floor CASCADE")
        conn.execute("CHECKPOINT")
    return seconds, cpu_seconds(sampler)
