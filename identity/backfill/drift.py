"""Mirror mode: agents idmirror has that the input no longer has, and pruning them.

The users a mirror run covers are those with a user line in the input. Their live agents that
the input does not name (a failed line that names its key still counts as naming it) and that
are not newer than the snapshot are the drift. With `prune=true` they are soft-deleted at the
snapshot's version, under the same per-key locks as live deletes; with more of them than
IDMIRROR_PRUNE_MAX_FRACTION of those users' live agents, the prune is refused and, because the
check runs before anything is applied, the run changes nothing.
"""

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.backfill.flow import RUN_COLUMNS, Work, advance, complete, step
from identity.backfill.slots import take_slot
from identity.errors import PruneThresholdExceeded

SAMPLE = 20

# The input's agents, as (user_slug, slug): stored items, and failed lines that name a key.
_PRESENT = """
    present AS (
        SELECT split_part(k, '@', 2) AS user_slug, split_part(k, '@', 1) AS slug FROM (
            SELECT e -> 'd' ->> 'key' AS k
            FROM backfill_chunks c, jsonb_array_elements(c.items) AS e
            WHERE c.backfill_id = :backfill_id AND c.kind = 'agent'
            UNION ALL
            SELECT substr(f.key, 7) FROM backfill_failures f
            WHERE f.backfill_id = :backfill_id AND f.key LIKE 'agent:%'
        ) AS keys
    )
"""
# Before anything is applied: the users named by the input's user lines.
_COVERED_BY_INPUT = """
    covered AS (
        SELECT DISTINCT ON (i.id) i.id AS user_id, i.slug
        FROM backfill_chunks c, jsonb_to_recordset(c.items) AS i(l bigint, id uuid, slug text)
        WHERE c.backfill_id = :backfill_id AND c.kind = 'user'
          -- Another integrator's users are not the uploader's to mirror: their lines fail.
          AND NOT EXISTS (SELECT 1 FROM users o WHERE o.id = i.id AND NOT :admin
                          AND o.owner IS DISTINCT FROM CAST(:integrator AS text))
        ORDER BY i.id, i.l DESC
    )
"""
# After the users are applied (or classified, in a dry run): those whose line did not fail.
_COVERED_APPLIED = """
    covered AS (
        SELECT user_id, slug FROM backfill_users
        WHERE backfill_id = :backfill_id AND outcome <> 'failed'
    )
"""
_LIVE = """
    live AS (
        SELECT a.id, a.slug, a.version, cu.slug AS input_user_slug, u.slug AS user_slug
        FROM covered cu
        JOIN agents a ON a.user_id = cu.user_id AND a.deleted_at IS NULL
        JOIN users u ON u.id = a.user_id
    ),
    drift AS (
        SELECT l.id, 'agent:' || l.slug || '@' || l.user_slug AS key FROM live l
        WHERE l.version <= :snapshot
          AND NOT EXISTS (SELECT 1 FROM present p
                          WHERE p.user_slug = l.input_user_slug AND p.slug = l.slug)
    )
"""


def _measure(session: Session, run: Any, covered: str, *, record: bool) -> tuple[int, int]:
    """(drift, live agents of the covered users); with `record`, store the drift rows."""
    ctes = f"WITH {covered}, {_PRESENT}, {_LIVE}"
    params = {
        "backfill_id": run.id,
        "snapshot": run.snapshot_version,
        "integrator": run.integrator,
        "admin": run.admin,
    }
    live = session.execute(text(f"{ctes} SELECT count(*) FROM live"), params).scalar_one()
    if record:
        drift = session.execute(
            text(
                f"{ctes}, stored AS (INSERT INTO backfill_drift (backfill_id, agent_id, key) "
                "SELECT :backfill_id, id, key FROM drift ON CONFLICT DO NOTHING RETURNING 1) "
                "SELECT count(*) FROM drift"
            ),
            params,
        ).scalar_one()
    else:
        drift = session.execute(text(f"{ctes} SELECT count(*) FROM drift"), params).scalar_one()
    return int(drift), int(live)


def _summary(run: Any, drift: int, live: int, max_fraction: float) -> dict[str, Any]:
    fraction = drift / live if live else 0.0
    exceeded = fraction > max_fraction
    if not run.prune:
        prune = "not_requested"
    elif run.dry_run:
        prune = "would_be_refused" if exceeded else "would_prune"
    else:
        prune = "refused" if exceeded else "pruning"
    return {
        "agents": drift,
        "live_agents": live,
        "fraction": round(fraction, 6),
        "max_fraction": max_fraction,
        "prune": prune,
        "pruned": 0,
    }


def _refusal(summary: dict[str, Any], *, applied: bool) -> dict[str, Any]:
    consequence = (
        "the upserts were applied and no agent was pruned" if applied else "nothing was changed"
    )
    return PruneThresholdExceeded(
        f"pruning {summary['agents']} of {summary['live_agents']} live agents "
        f"({summary['fraction']:.1%}) is more than the limit of {summary['max_fraction']:.1%}; "
        + consequence,
        drift=summary["agents"],
        live_agents=summary["live_agents"],
        fraction=summary["fraction"],
        max_fraction=summary["max_fraction"],
    ).envelope()


def _save_drift(session: Session, backfill_id: Any, summary: dict[str, Any]) -> None:
    session.execute(
        text("UPDATE backfills SET drift = CAST(:drift AS jsonb) WHERE id = :id"),
        {"id": backfill_id, "drift": json.dumps(summary)},
    )


def _plan(session: Session, run: Any, max_fraction: float) -> list[Work]:
    """Before applying a pruning run: refuse it now if its prune would be refused."""
    drift, live = _measure(session, run, _COVERED_BY_INPUT, record=False)
    summary = _summary(run, drift, live, max_fraction)
    if summary["prune"] == "refused":
        _save_drift(session, run.id, summary)
        complete(session, run.id, status="failed", error=_refusal(summary, applied=False))
        return []
    run = session.execute(
        text(
            "UPDATE backfills SET phase = 'users', touched_at = clock_timestamp() "
            f"WHERE id = :id RETURNING {RUN_COLUMNS}"
        ),
        {"id": run.id},
    ).one()
    return advance(session, run)


def _drift(session: Session, run: Any, max_fraction: float, batch: int) -> list[Work]:
    if run.drift is None:
        drift, live = _measure(session, run, _COVERED_APPLIED, record=True)
        summary = _summary(run, drift, live, max_fraction)
        _save_drift(session, run.id, summary)
        if summary["prune"] == "refused":
            complete(session, run.id, status="failed", error=_refusal(summary, applied=True))
            return []
        if summary["prune"] != "pruning":
            complete(session, run.id)
            return []
        return [step(session, run.id)]
    return _prune_batch(session, run, batch)


def _lock_keys(session: Session, keys: list[str]) -> None:
    """The live-delete locks of `keys`, in one global order, once the step has an apply slot
    (slots.py)."""
    take_slot(session, 0)
    session.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT "
            "hashtextextended(k, 0) AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS o"
        ),
        {"keys": keys},
    )


def _prune_batch(session: Session, run: Any, batch: int) -> list[Work]:
    rows = session.execute(
        text(
            "SELECT agent_id, key FROM backfill_drift WHERE backfill_id = :id AND state = 'found' "
            "ORDER BY agent_id LIMIT :n"
        ),
        {"id": run.id, "n": batch},
    ).all()
    if not rows:
        summary = {**run.drift, "prune": "done"}
        _save_drift(session, run.id, summary)
        complete(session, run.id)
        return []
    ids, keys = [r.agent_id for r in rows], [r.key for r in rows]
    _lock_keys(session, keys)  # then nothing newer than the snapshot goes
    pruned = set(
        session.execute(
            text(
                "UPDATE agents SET deleted_at = clock_timestamp(), updated_at = clock_timestamp(), "
                "version = :v WHERE id = ANY(:ids) AND deleted_at IS NULL AND version <= :v "
                "RETURNING id"
            ),
            {"ids": ids, "v": run.snapshot_version},
        ).scalars()
    )
    session.execute(
        text(
            """
            INSERT INTO key_tombstones AS t (key, version)
            SELECT k, :v FROM unnest(CAST(:keys AS text[])) AS k
            ON CONFLICT (key) DO UPDATE SET version = greatest(t.version, excluded.version)
            """
        ),
        {
            "keys": [k for i, k in zip(ids, keys, strict=True) if i in pruned],
            "v": run.snapshot_version,
        },
    )
    session.execute(
        text(
            "UPDATE backfill_drift SET state = CASE WHEN agent_id = ANY(:pruned) "
            "THEN 'pruned' ELSE 'kept' END WHERE backfill_id = :id AND agent_id = ANY(:ids)"
        ),
        {"id": run.id, "ids": ids, "pruned": list(pruned)},
    )
    session.execute(
        text(
            "UPDATE backfills SET touched_at = clock_timestamp(), drift = jsonb_set(drift, "
            "'{pruned}', to_jsonb((drift ->> 'pruned')::bigint + :n)) WHERE id = :id"
        ),
        {"id": run.id, "n": len(pruned)},
    )
    return [step(session, run.id)]


def run_step(session: Session, backfill_id: Any, *, max_fraction: float, batch: int) -> list[Work]:
    """One step of a run's plan or drift phase, under its row lock."""
    run = session.execute(
        text(
            f"SELECT {RUN_COLUMNS}, snapshot_version, drift FROM backfills "
            "WHERE id = :id FOR UPDATE"
        ),
        {"id": backfill_id},
    ).one_or_none()
    if run is None or run.status != "running":
        return []
    if run.phase == "plan":
        return _plan(session, run, max_fraction)
    if run.phase == "drift":
        return _drift(session, run, max_fraction, batch)
    return []
