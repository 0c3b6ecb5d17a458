"""Applying one stored chunk with set-based SQL, in the transaction that marks it done.

Each chunk is one statement: expand the stored items, classify each against the stored row
(the same rules as a single PUT: not older than what is stored, a deleted key stays deleted
unless the item is newer than its tombstone, nothing written when nothing differs), then
`INSERT ... ON CONFLICT DO UPDATE ... WHERE <changed and not older>` for the rest. Before it, the
chunk takes the per-key advisory locks that live writes take, in one global order, so a live
delete can never fall between its tombstone check and its write.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity import counters
from identity.access import Actor
from identity.agents import new_agent_ids
from identity.appliers import apply_upsert
from identity.backfill.flow import (
    RUN_COLUMNS,
    Work,
    advance,
    is_head,
    runnable,
    stop_early_agents,
    unqueue,
    users_pending,
)
from identity.backfill.items import stored_key
from identity.backfill.slots import take_slot
from identity.backfill.sql import CHUNK, FAILURES, KEYS, LOCK_KEYS, LOG_ITEMS, STATEMENTS
from identity.db import commit_without_waiting_for_disk
from identity.errors import IdmirrorError, OwnedByAnotherIntegrator, SlugTaken, UserNotFound

OUTCOMES = ("created", "updated", "unchanged", "superseded", "failed")


@dataclass
class ItemResult:
    line: int
    key: str
    outcome: str  # one of OUTCOMES
    error: dict[str, Any] | None = None
    user_id: str | None = None  # users only: for the users a mirror run covers
    slug: str | None = None
    primary: bool = True  # false for an item a later one of the same key replaced


@dataclass
class Outcomes:
    """A chunk's outcome counts, its failed items, and (when asked) the users it covers."""

    counts: Counter[str] = field(default_factory=Counter)
    failed: list[ItemResult] = field(default_factory=list)
    covered: list[ItemResult] = field(default_factory=list)
    applied: list[ItemResult] = field(default_factory=list)  # one by one only

    def add(self, result: ItemResult, *, cover: bool) -> None:
        self.counts[result.outcome] += 1
        if result.error is not None:
            self.failed.append(result)
        else:
            self.applied.append(result)
        if cover and result.user_id is not None:
            self.covered.append(result)


def _error(outcome: str, slug: str) -> dict[str, Any]:
    if outcome == "owned_by_another_integrator":
        return OwnedByAnotherIntegrator(
            "this identity belongs to another integrator", user_slug=slug
        ).envelope()
    if outcome == "slug_taken":
        return SlugTaken(f"slug {slug!r} belongs to another user", slug=slug).envelope()
    return UserNotFound(
        f"no user has slug {slug!r}; upsert the user first", user_slug=slug
    ).envelope()


def _set_based(
    session: Session, kind: str, run: Any, seq: int, size: int, *, dry: bool, cover: bool
) -> Outcomes:
    params: dict[str, Any] = {
        "backfill_id": str(run.id),
        "seq": seq,
        "integrator": run.integrator,
        "admin": run.admin,
    }
    if kind == "agent" and not dry:
        params["ids"] = ",".join(new_agent_ids(size))
    rows = session.execute(STATEMENTS[(kind, dry)], params).all()
    out = Outcomes()
    if kind == "agent":  # counts by outcome, and the failed items one by one
        for outcome, items, line, key, slug in rows:
            if outcome in FAILURES:
                out.counts["failed"] += 1
                out.failed.append(ItemResult(line, key, "failed", _error(outcome, slug)))
            else:
                out.counts[outcome] += items
        return out
    for line, key, user_id, slug, primary, outcome in rows:
        failed = outcome in FAILURES
        result = ItemResult(
            line,
            key,
            "failed" if failed else outcome,
            _error(outcome, slug) if failed else None,
            user_id,
            slug,
            primary,
        )
        out.add(result, cover=cover)
    return out


def _one_by_one(session: Session, kind: str, run: Any, seq: int, *, cover: bool) -> Outcomes:
    """Each item as a single PUT would apply it, in line order: node types always, and chunks
    whose items collide with each other (a slug handed from one user to another inside it)."""
    items = session.execute(
        text(f"SELECT c.items {CHUNK}"), _chunk_params(str(run.id), seq)
    ).scalar_one()
    actor = Actor(run.integrator, None, run.admin)
    out = Outcomes()
    for item in sorted(items, key=lambda i: i["l"]):
        typed_key = stored_key(kind, item)
        key = str(typed_key)
        if kind == "agent":
            body = item["d"]
            payload = {f: body[f] for f in ("display_name", "webhook_url", "metadata") if f in body}
        else:
            payload = {f: v for f, v in item.items() if f not in ("l", "v", "h", "id")}
        try:
            with session.begin_nested():
                applied = apply_upsert(session, typed_key, payload, item["v"], actor)
        except IdmirrorError as exc:
            out.add(ItemResult(item["l"], key, "failed", exc.envelope()), cover=False)
            continue
        user_id = item["id"] if kind == "user" else None
        slug = item["slug"] if kind == "user" else None
        out.add(ItemResult(item["l"], key, applied.outcome, None, user_id, slug), cover=cover)
    _log_items(session, str(run.id), out.applied)
    return out


def _log_items(session: Session, backfill_id: str, applied: list[ItemResult]) -> None:
    """Record items applied one by one for their keys' histories, as the set-based statements
    record theirs (LOG_ITEMS keeps those that wrote or were superseded)."""
    if not applied:
        return
    session.execute(
        text(
            LOG_ITEMS.format(
                rows="unnest(CAST(:keys AS text[]), CAST(:lines AS bigint[]), "
                "CAST(:outcomes AS text[])) AS i(key, l, outcome)"
            )
        ),
        {
            "backfill_id": backfill_id,
            "keys": [r.key for r in applied],
            "lines": [r.line for r in applied],
            "outcomes": [r.outcome for r in applied],
        },
    )


def _chunk_params(backfill_id: str, seq: int) -> dict[str, Any]:
    return {"backfill_id": backfill_id, "seq": seq}


def _record_failures(
    session: Session, kind: str, backfill_id: str, seq: int, failed: list[ItemResult]
) -> None:
    if not failed:
        return
    session.execute(
        text(
            """
            INSERT INTO backfill_failures (backfill_id, line, kind, key, error, item)
            SELECT c.backfill_id, f.line, :kind, f.key, CAST(f.error AS jsonb), e
            FROM backfill_chunks c
            CROSS JOIN LATERAL jsonb_array_elements(c.items) AS e
            JOIN unnest(CAST(:lines AS bigint[]), CAST(:keys AS text[]),
                        CAST(:errors AS text[])) AS f(line, key, error)
              ON f.line = (e ->> 'l')::bigint
            WHERE c.backfill_id = :backfill_id AND c.seq = :seq
            ON CONFLICT (backfill_id, line) DO UPDATE
                SET key = excluded.key, error = excluded.error, item = excluded.item
            """
        ),
        {
            "backfill_id": backfill_id,
            "seq": seq,
            "kind": kind,
            "lines": [r.line for r in failed],
            "keys": [r.key for r in failed],
            "errors": [json.dumps(r.error) for r in failed],
        },
    )


def _record_covered_users(session: Session, backfill_id: str, results: list[ItemResult]) -> None:
    """Mirror runs and dry runs remember the users the input covers (and how they fared)."""
    latest: dict[str, ItemResult] = {}
    for r in sorted(results, key=lambda r: (r.primary, r.line)):
        if r.user_id is not None:
            latest[r.user_id] = r
    rows = list(latest.values())
    if not rows:
        return
    session.execute(
        text(
            """
            INSERT INTO backfill_users (backfill_id, user_id, slug, outcome)
            SELECT :backfill_id, u.user_id, u.slug, u.outcome
            FROM unnest(CAST(:ids AS uuid[]), CAST(:slugs AS text[]), CAST(:outcomes AS text[]))
                 AS u(user_id, slug, outcome)
            ON CONFLICT (backfill_id, user_id) DO UPDATE
                SET slug = excluded.slug, outcome = excluded.outcome
            """
        ),
        {
            "backfill_id": backfill_id,
            "ids": [r.user_id for r in rows],
            "slugs": [r.slug for r in rows],
            "outcomes": [r.outcome for r in rows],
        },
    )


def _lock_keys(session: Session, kind: str, backfill_id: str, seq: int) -> None:
    """The advisory locks live writes take on these keys, in one global order (no deadlock),
    once the chunk has an apply slot (slots.py)."""
    take_slot(session, seq)
    session.execute(text(LOCK_KEYS.format(key=KEYS[kind])), _chunk_params(backfill_id, seq))


def _node_types_dry(session: Session, backfill_id: str, seq: int) -> Outcomes:
    rows = session.execute(
        text(
            """
            SELECT (e ->> 'l')::bigint AS line, 'node_type:' || (e ->> 'id') AS key,
                CASE WHEN t.id IS NULL THEN 'created'
                     WHEN t.version > (e ->> 'v')::bigint THEN 'superseded'
                     WHEN (t.name, t.description, t.params_schema) IS NOT DISTINCT FROM
                          (e ->> 'name', e ->> 'description', e -> 'params_schema')
                          THEN 'unchanged'
                     ELSE 'updated' END AS outcome
            FROM backfill_chunks c CROSS JOIN LATERAL jsonb_array_elements(c.items) AS e
            LEFT JOIN node_types t ON t.id = (e ->> 'id')::uuid
            WHERE c.backfill_id = :backfill_id AND c.seq = :seq
            """
        ),
        _chunk_params(backfill_id, seq),
    ).all()
    return Outcomes(counts=Counter(row.outcome for row in rows))


def apply_chunk(session: Session, backfill_id: str, seq: int) -> list[Work]:
    """Apply chunk `seq` unless it is done, being applied, or not its turn; return what to queue."""
    commit_without_waiting_for_disk(session)  # a lost chunk is applied again
    chunk = session.execute(
        text(
            "SELECT kind, bucket, status, size FROM backfill_chunks "
            "WHERE backfill_id = :backfill_id AND seq = :seq FOR UPDATE SKIP LOCKED"
        ),
        _chunk_params(backfill_id, seq),
    ).one_or_none()
    if chunk is None or chunk.status != "pending":
        return []
    run = session.execute(
        text(f"SELECT {RUN_COLUMNS} FROM backfills WHERE id = :id"), {"id": backfill_id}
    ).one()
    if run.status not in ("receiving", "running"):
        return []
    early_agents = run.phase == "receiving" and chunk.kind == "agent"
    if (
        not runnable(run, chunk.kind)
        or not is_head(session, backfill_id, chunk.kind, chunk.bucket, seq)
        or (early_agents and users_pending(session, backfill_id))
    ):
        unqueue(session, backfill_id, seq)
        return []
    if not early_agents:
        outcomes = _apply(session, run, chunk, backfill_id, seq)
        return finish_chunk(session, backfill_id, seq, chunk.kind, chunk.bucket, outcomes)
    try:
        with session.begin_nested():
            outcomes = _apply(session, run, chunk, backfill_id, seq)
            if outcomes.failed:
                raise _OwnerMaybeLater
    except _OwnerMaybeLater:
        # The missing owner may be a user line further on: this chunk and every agent chunk
        # still pending wait for the end of the input, as if nothing had been applied early.
        stop_early_agents(session, backfill_id)
        unqueue(session, backfill_id, seq)
        return []
    return finish_chunk(session, backfill_id, seq, chunk.kind, chunk.bucket, outcomes)


class _OwnerMaybeLater(Exception):
    """An agent chunk applied early found an item whose user does not exist (yet)."""


def _apply(session: Session, run: Any, chunk: Any, backfill_id: str, seq: int) -> Outcomes:
    cover = chunk.kind == "user" and (run.mode == "mirror" or run.dry_run)
    if run.dry_run and chunk.kind == "node_type":
        return _node_types_dry(session, backfill_id, seq)
    if chunk.kind == "node_type":
        _lock_keys(session, chunk.kind, backfill_id, seq)
        return _one_by_one(session, chunk.kind, run, seq, cover=False)
    if not run.dry_run:
        _lock_keys(session, chunk.kind, backfill_id, seq)
    try:
        with session.begin_nested():
            return _set_based(
                session, chunk.kind, run, seq, chunk.size, dry=run.dry_run, cover=cover
            )
    except IntegrityError:
        return _one_by_one(session, chunk.kind, run, seq, cover=cover)


def finish_chunk(
    session: Session,
    backfill_id: str,
    seq: int,
    kind: str,
    bucket: int,
    outcomes: Outcomes,
) -> list[Work]:
    """Record outcomes and failures, mark the chunk done, count it, and move the run on."""
    _record_failures(session, kind, backfill_id, seq, outcomes.failed)
    _record_covered_users(session, backfill_id, outcomes.covered)
    session.execute(
        text(
            "UPDATE backfill_chunks SET status = 'done', finished_at = clock_timestamp() "
            "WHERE backfill_id = :backfill_id AND seq = :seq"
        ),
        _chunk_params(backfill_id, seq),
    )
    counts = outcomes.counts
    # The row lock taken here orders chunk completions: the last one sees no chunk left.
    row = session.execute(
        text(
            f"""
            UPDATE backfills SET created = created + :created, updated = updated + :updated,
                unchanged = unchanged + :unchanged, superseded = superseded + :superseded,
                failed = failed + :failed, touched_at = clock_timestamp()
            WHERE id = :id
            RETURNING {RUN_COLUMNS}
            """
        ),
        {"id": backfill_id, **{o: counts.get(o, 0) for o in OUTCOMES}},
    ).one()
    counters.record_backfill_items(session, kind, counts)
    if row.status not in ("receiving", "running"):
        return []
    return advance(session, row, kind=kind, bucket=bucket)


def fail_chunk(session: Session, backfill_id: str, seq: int, error: dict[str, Any]) -> list[Work]:
    """A chunk that cannot be applied fails all its items, so that the run still finishes."""
    chunk = session.execute(
        text(
            "SELECT kind, bucket, status FROM backfill_chunks "
            "WHERE backfill_id = :backfill_id AND seq = :seq FOR UPDATE"
        ),
        _chunk_params(backfill_id, seq),
    ).one_or_none()
    if chunk is None or chunk.status != "pending":
        return []
    items = session.execute(
        text(
            f"SELECT (e ->> 'l')::bigint AS line, {KEYS[chunk.kind]} AS key "
            "FROM backfill_chunks c, jsonb_array_elements(c.items) AS e "
            "WHERE c.backfill_id = :backfill_id AND c.seq = :seq"
        ),
        _chunk_params(backfill_id, seq),
    ).all()
    outcomes = Outcomes()
    for item in items:
        outcomes.add(ItemResult(item.line, item.key, "failed", error), cover=False)
    return finish_chunk(session, backfill_id, seq, chunk.kind, chunk.bucket, outcomes)
