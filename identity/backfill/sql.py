"""The statements that apply a chunk: one per kind, each classifying every item of the chunk
against the stored state and writing the rest with INSERT ... ON CONFLICT DO UPDATE (agents
with no live row: a plain INSERT). A dry run uses the same classification with a SELECT in place
of the write.

The users statement returns, for every item: its line, its key, its outcome (created, updated,
unchanged, superseded, or the reason it failed), its id, slug, and whether the item is the one
applied among several of the same key. The agents statement, the bulk of a backfill, returns
the count of each outcome and only the failed items one by one. A statement that writes also
records each item that wrote its row or was superseded in `backfill_items`, for its key's
history (identity/ledger/history.py); failed items are recorded as failures.
"""

from sqlalchemy import text

from identity import agents, users

# What an item fails for, as the statements name it.
FAILURES = ("slug_taken", "user_not_found", "owned_by_another_integrator")
_FAILURES_SQL = "(" + ", ".join(f"'{reason}'" for reason in FAILURES) + ")"

CHUNK = "FROM backfill_chunks c WHERE c.backfill_id = :backfill_id AND c.seq = :seq"

LOCK_KEYS = """
    SELECT count(pg_advisory_xact_lock(h)) FROM (
        SELECT DISTINCT hashtextextended({key}, 0) AS h
        FROM backfill_chunks c, jsonb_array_elements(c.items) AS e
        WHERE c.backfill_id = :backfill_id AND c.seq = :seq
        ORDER BY 1
    ) AS ordered
"""
KEYS = {
    "node_type": "'node_type:' || (e ->> 'id')",
    "user": "'user:' || (e ->> 'id')",
    "agent": "'agent:' || (e -> 'd' ->> 'key')",
}

# --- users ----------------------------------------------------------------------------------

_USERS = """
    WITH items AS (
        SELECT i.l, i.v, i.id, i.email, i.slug, i.plan, i.metadata, i.external_owner,
               decode(i.h, 'hex') AS line_digest, 'user:' || i.id AS key,
               row_number() OVER (PARTITION BY i.id ORDER BY i.v DESC, i.l DESC) AS rn
        FROM backfill_chunks c,
             jsonb_to_recordset(c.items) AS i(l bigint, v bigint, h text, id uuid, email text,
                                              slug text, plan text, metadata jsonb,
                                              external_owner text)
        WHERE c.backfill_id = :backfill_id AND c.seq = :seq
    ),
    classified AS (
        SELECT i.*, u.id IS NOT NULL AS present,
            CASE
                WHEN u.id IS NOT NULL AND NOT :admin
                     AND u.owner IS DISTINCT FROM CAST(:integrator AS text)
                     THEN 'owned_by_another_integrator'
                WHEN i.rn > 1 THEN 'superseded'
                WHEN u.id IS NOT NULL AND u.version > i.v THEN 'superseded'
                WHEN u.id IS NOT NULL
                     AND (u.email, u.slug, u.plan, u.metadata, u.external_owner)
                         IS NOT DISTINCT FROM
                         (i.email, i.slug, i.plan, i.metadata, i.external_owner) THEN 'unchanged'
                WHEN u.id IS NULL AND coalesce(
                         (SELECT t.version FROM key_tombstones t WHERE t.key = i.key), -1
                     ) > i.v THEN 'superseded'
                WHEN EXISTS (SELECT 1 FROM users o WHERE o.slug = i.slug AND o.id <> i.id
                             AND NOT EXISTS (SELECT 1 FROM items x WHERE x.id = o.id))
                     THEN 'slug_taken'
                ELSE 'write'
            END AS action
        FROM items i LEFT JOIN users u ON u.id = i.id
    ),
    written AS ({written}),
    outcomes AS (
        SELECT c.l, c.key, c.id::text AS id, c.slug, c.rn = 1 AS primary_item,
               CASE WHEN c.action <> 'write' THEN c.action
                    WHEN w.id IS NULL THEN 'unchanged'
                    WHEN w.inserted THEN 'created'
                    ELSE 'updated' END AS outcome
        FROM classified c LEFT JOIN written w ON w.id = c.id AND c.action = 'write'
    ){logged}
    SELECT * FROM outcomes
"""
_USERS_WRITE = f"""
        INSERT INTO users AS u (id, email, slug, plan, metadata, external_owner, version,
                                line_digest, owner, created_at, updated_at)
        SELECT id, email, slug, plan, metadata, external_owner, v, line_digest,
               CAST(:integrator AS text), clock_timestamp(), clock_timestamp()
        FROM classified WHERE action = 'write'
        {users.ON_CONFLICT}
        RETURNING u.id, (xmax = 0) AS inserted
"""
_USERS_DRY = "SELECT id, NOT present AS inserted FROM classified WHERE action = 'write'"

# --- agents ---------------------------------------------------------------------------------

_AGENTS = """
    WITH items AS (
        SELECT i.l, i.v, decode(i.h, 'hex') AS line_digest, row_number() OVER () AS n,
               'agent:' || (i.d ->> 'key') AS key,
               split_part(i.d ->> 'key', '@', 1) AS slug,
               split_part(i.d ->> 'key', '@', 2) AS user_slug,
               i.d ->> 'display_name' AS display_name,
               i.d ->> 'webhook_url' AS webhook_url,
               coalesce(i.d -> 'metadata', '{{}}'::jsonb) AS metadata,
               row_number() OVER (PARTITION BY i.d ->> 'key' ORDER BY i.v DESC, i.l DESC) AS rn
        FROM backfill_chunks c,
             jsonb_to_recordset(c.items) AS i(l bigint, v bigint, h text, d jsonb)
        WHERE c.backfill_id = :backfill_id AND c.seq = :seq
    ),
    {owners}
    classified AS (
        SELECT i.*, o.id AS owner_id, a.id AS live_id,
            CASE
                WHEN o.id IS NULL THEN 'user_not_found'
                WHEN NOT :admin AND o.owner IS DISTINCT FROM CAST(:integrator AS text)
                     THEN 'owned_by_another_integrator'
                WHEN i.rn > 1 THEN 'superseded'
                WHEN a.id IS NOT NULL AND a.version > i.v THEN 'superseded'
                WHEN a.id IS NOT NULL
                     AND (a.display_name, a.webhook_url, a.metadata)
                         IS NOT DISTINCT FROM (i.display_name, i.webhook_url, i.metadata)
                     THEN 'unchanged'
                -- No live agent: neither the key's tombstone nor a deleted row of the key may
                -- be newer than the item.
                WHEN a.id IS NULL AND greatest(
                         (SELECT t.version FROM key_tombstones t WHERE t.key = i.key),
                         (SELECT max(d.version) FROM agents d
                          WHERE d.user_id = o.id AND d.slug = i.slug), -1
                     ) > i.v THEN 'superseded'
                ELSE 'write'
            END AS action
        FROM items i
        LEFT JOIN {owner_rows} o ON o.slug = i.user_slug
        LEFT JOIN agents a ON a.user_id = o.id AND a.slug = i.slug AND a.deleted_at IS NULL
    ),
    {written},
    outcomes AS (
        SELECT c.l, c.key, c.user_slug AS slug,
               CASE WHEN c.action <> 'write' THEN c.action
                    WHEN w.slug IS NULL THEN 'unchanged'
                    WHEN w.inserted THEN 'created'
                    ELSE 'updated' END AS outcome
        FROM classified c
        LEFT JOIN written w ON w.user_id = c.owner_id AND w.slug = c.slug AND c.action = 'write'
    ){logged}
    -- The bulk of a backfill: the items counted by outcome, and only the failed ones listed.
    SELECT outcome, count(*) AS items, NULL::bigint AS l, NULL::text AS key, NULL::text AS slug
    FROM outcomes WHERE outcome NOT IN {failures} GROUP BY outcome
    UNION ALL
    SELECT outcome, 1, l, key, slug FROM outcomes WHERE outcome IN {failures}
"""
# A dry run applied no user: an owner is the input's user with that slug, else the stored one
# (unless the input renames it).
_OWNERS_DRY = """
    owners AS MATERIALIZED (
        SELECT DISTINCT ON (slug) id, slug, owner FROM (
            SELECT bu.user_id AS id, bu.slug, CAST(:integrator AS text) AS owner, 0 AS preference
            FROM backfill_users bu
            WHERE bu.backfill_id = :backfill_id
              AND bu.outcome IN ('created', 'updated', 'unchanged')
              AND bu.slug IN (SELECT user_slug FROM items)
            UNION ALL
            SELECT u.id, u.slug, u.owner, 1 FROM users u
            WHERE u.slug IN (SELECT user_slug FROM items)
              AND NOT EXISTS (
                  SELECT 1 FROM backfill_users bu
                  WHERE bu.backfill_id = :backfill_id AND bu.user_id = u.id
                    AND bu.outcome IN ('created', 'updated', 'unchanged'))
        ) AS candidates
        ORDER BY slug, preference
    ),
"""
_AGENTS_INSERT = """
        INSERT INTO agents AS a (id, user_id, slug, display_name, webhook_url, metadata, version,
                                 line_digest, created_at, updated_at)
        SELECT ids.id, owner_id, slug, display_name, webhook_url, metadata, v,
               line_digest, clock_timestamp(), clock_timestamp()
        -- Fresh ids, comma-separated (a text array costs the client more to send), joined by
        -- position.
        FROM classified
        JOIN string_to_table(:ids, ',') WITH ORDINALITY AS ids (id, n) ON ids.n = classified.n
        WHERE action = 'write' AND live_id IS {live}"""
# An item whose key has no live agent is inserted plainly, without the speculative insertion
# ON CONFLICT costs (every row of a first load): the chunk holds the key's advisory lock, so no
# live write adds the agent meanwhile, and a writer that did would make the insert fail (a
# unique violation) and the chunk go one by one.
_AGENTS_WRITE = f"""
    fresh AS ({_AGENTS_INSERT.format(live="NULL")}
        RETURNING a.user_id, a.slug, true AS inserted
    ),
    changed AS ({_AGENTS_INSERT.format(live="NOT NULL")}
        {agents.ON_CONFLICT.strip()}
        RETURNING a.user_id, a.slug, (xmax = 0) AS inserted
    ),
    written AS (SELECT * FROM fresh UNION ALL SELECT * FROM changed)"""
_AGENTS_DRY = (
    "written AS (SELECT owner_id AS user_id, slug, live_id IS NULL AS inserted "
    "FROM classified WHERE action = 'write')"
)

# Items that wrote their row, or were refused as older than it, for their keys' histories: one
# more INSERT in the same statement. Unchanged items wrote nothing and are left out, so that a
# scheduled mirror run, most of whose items are unchanged, costs no more than before.
LOG_ITEMS = """
        INSERT INTO backfill_items (key, backfill_id, line, outcome)
        SELECT key, CAST(:backfill_id AS uuid), l, outcome FROM {rows}
        WHERE outcome IN ('created', 'updated', 'superseded')
"""
_LOGGED = f",\n    logged AS ({LOG_ITEMS.format(rows='outcomes')})"

STATEMENTS = {
    ("user", False): text(_USERS.format(written=_USERS_WRITE, logged=_LOGGED)),
    ("user", True): text(_USERS.format(written=_USERS_DRY, logged="")),
    ("agent", False): text(
        _AGENTS.format(
            owners="",
            owner_rows="users",
            written=_AGENTS_WRITE,
            logged=_LOGGED,
            failures=_FAILURES_SQL,
        )
    ),
    ("agent", True): text(
        _AGENTS.format(
            owners=_OWNERS_DRY,
            owner_rows="owners",
            written=_AGENTS_DRY,
            logged="",
            failures=_FAILURES_SQL,
        )
    ),
}
