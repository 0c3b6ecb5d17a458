"""What a chaos scenario checks once its stream and its fault are over, from the ledger (`jobs`)
and the tables (`users`, `agents`, `agent_nodes`, `key_tombstones`), against what the clients
were answered.

- Every acknowledged write has exactly one job, final, and its effect (a graph update's nodes).
- No write has two effects: two jobs (its marker in two payloads, two job ids in its answers, more
  DELETE jobs on a key than DELETEs sent to it) or a graph update's nodes created twice.
- Per-key order: a client's acknowledged writes of a key have increasing `seq`, and each key's
  stored state is the body of its last applied, not superseded, job by `seq`.
- Stale never wins: every stale PUT is `superseded`, and no stored row carries one's body.
- No answer was a 5xx without a job id for a write the ledger had already recorded.
"""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.chaos.workload import NODES_PER_UPDATE, Write

DELETES = ("user.delete", "agent.delete")
UPSERTS = ("user.upsert", "agent.upsert")


@dataclass
class Job:
    id: str
    key: str
    seq: int
    kind: str
    status: str
    outcome: str | None
    version: int
    accepted_at: float  # epoch seconds
    marker: str | None


@dataclass
class Stored:
    """The tables as the scenario left them."""

    jobs: dict[str, Job]
    live: dict[str, str | None]  # ledger key of each live user and agent -> its marker
    nodes: Counter[str]  # marker -> nodes carrying it
    tombstones: dict[str, int]


@dataclass
class Verdict:
    acknowledged: int = 0
    applied: int = 0
    failed: int = 0
    duplicated: int = 0
    lost: int = 0
    pending: int = 0
    misordered: int = 0
    stale_won: int = 0
    refused_after_recording: int = 0  # 5xx answers without a job id to recorded writes
    details: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Each broken invariant, with up to five examples; empty when all held."""
        counts = {
            "duplicated": self.duplicated,
            "lost": self.lost,
            "pending": self.pending,
            "misordered": self.misordered,
            "stale_won": self.stale_won,
            "refused_after_recording": self.refused_after_recording,
        }
        broken = [f"{name}={n}" for name, n in counts.items() if n]
        return broken + self.details[:5] if broken else []


def _marker(kind: str, payload: dict[str, Any]) -> str | None:
    if kind in UPSERTS:
        return (payload.get("metadata") or {}).get("w")
    if kind == "agent.update":
        operations = payload.get("operations") or [{}]
        return (operations[0].get("params_used") or {}).get("w")
    return None


def load(database_url: str) -> Stored:
    with psycopg.connect(database_url) as conn:
        jobs = {}
        for row in conn.execute(
            "SELECT id::text, key, seq, kind, status, outcome, version, "
            "extract(epoch FROM accepted_at), payload FROM jobs"
        ):
            job_id, key, seq, kind, status, outcome, version, accepted, payload = row
            marker = _marker(kind, payload)
            jobs[job_id] = Job(
                job_id, key, seq, kind, status, outcome, version, float(accepted), marker
            )
        live: dict[str, str | None] = {
            f"user:{row[0]}": row[1]
            for row in conn.execute("SELECT id::text, metadata->>'w' FROM users")
        }
        live.update(
            (f"agent:{row[0]}@{row[1]}", row[2])
            for row in conn.execute(
                "SELECT a.slug, u.slug, a.metadata->>'w' FROM agents a "
                "JOIN users u ON u.id = a.user_id WHERE a.deleted_at IS NULL"
            )
        )
        nodes: Counter[str] = Counter(
            dict(
                conn.execute(
                    "SELECT params_used->>'w', count(*) FROM agent_nodes "
                    "WHERE params_used ? 'w' GROUP BY 1"
                ).fetchall()
            )
        )
        tombstones: dict[str, int] = dict(
            conn.execute("SELECT key, version FROM key_tombstones").fetchall()
        )
    return Stored(jobs, live, nodes, tombstones)


def verify(database_url: str, writes: list[Write]) -> Verdict:
    stored = load(database_url)
    verdict = Verdict(pending=sum(j.status == "pending" for j in stored.jobs.values()))
    by_marker: dict[str, list[Job]] = defaultdict(list)
    for job in stored.jobs.values():
        if job.marker:
            by_marker[job.marker].append(job)
    for write in writes:
        _check_write(verdict, stored, write, by_marker.get(write.wid, []))
    _check_deletes(verdict, stored, writes)
    _check_order(verdict, stored, writes)
    return verdict


def _check_write(verdict: Verdict, stored: Stored, write: Write, marked: list[Job]) -> None:
    nodes = stored.nodes.get(write.wid, 0)
    extra = max(len(write.job_ids) - 1, len(marked) - 1, 0)
    if write.kind == "agent.update":
        extra = max(extra, math.ceil(nodes / NODES_PER_UPDATE) - 1)
    if extra:
        verdict.duplicated += extra
        verdict.details.append(f"{write.kind} {write.wid}: {extra} extra effect(s)")
    _check_answers(
        verdict, write, marked or [stored.jobs[i] for i in write.job_ids if i in stored.jobs]
    )
    if not write.acknowledged:
        return
    verdict.acknowledged += 1
    job = next((stored.jobs[i] for i in sorted(write.job_ids) if i in stored.jobs), None)
    if job is None or job.status == "pending":
        verdict.lost += 1
        verdict.details.append(
            f"{write.kind} {write.wid}: acknowledged, job {job and job.id} not final"
        )
    elif job.status == "failed":
        verdict.failed += 1
        if nodes:
            verdict.duplicated += 1
            verdict.details.append(f"graph update {write.wid} failed yet left {nodes} nodes")
    else:
        verdict.applied += 1
        if write.kind == "agent.update" and nodes == 0:
            verdict.lost += 1
            verdict.details.append(f"graph update {write.wid} applied, no node created")
    if write.stale and job is not None and job.status == "applied" and job.outcome != "superseded":
        verdict.stale_won += 1
        verdict.details.append(f"stale write {write.wid} was {job.outcome}")


def _check_answers(verdict: Verdict, write: Write, jobs: list[Job]) -> None:
    """A 5xx without a job id from the request that recorded the write's job."""
    if not jobs:
        return
    recorded = min(job.accepted_at for job in jobs)
    for attempt in write.attempts:
        failed = attempt.status is not None and attempt.status >= 500 and not attempt.job_id
        if failed and attempt.sent_wall <= recorded <= attempt.answered_wall:
            verdict.refused_after_recording += 1
            verdict.details.append(
                f"{write.kind} {write.wid}: answered {attempt.status} after job {jobs[0].id} "
                "was recorded"
            )
            return


def _check_deletes(verdict: Verdict, stored: Stored, writes: list[Write]) -> None:
    """A DELETE has no body to mark: a key may not have more DELETE jobs than DELETEs sent."""
    sent = Counter((w.key, w.kind) for w in writes if w.kind in DELETES)
    jobs = Counter((j.key, j.kind) for j in stored.jobs.values() if j.kind in DELETES)
    for (key, kind), count in jobs.items():
        if count > sent[(key, kind)]:
            verdict.duplicated += count - sent[(key, kind)]
            verdict.details.append(f"{key}: {count} {kind} jobs for {sent[(key, kind)]} sent")


def _check_order(verdict: Verdict, stored: Stored, writes: list[Write]) -> None:
    by_key: dict[str, list[Job]] = defaultdict(list)
    for job in stored.jobs.values():
        by_key[job.key].append(job)
    stale = {w.wid for w in writes if w.stale}
    for key in sorted({w.key for w in writes}):
        seqs = [
            stored.jobs[i].seq
            for w in writes
            if w.key == key and w.acknowledged
            for i in sorted(w.job_ids)[:1]
            if i in stored.jobs
        ]
        if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
            verdict.misordered += 1
            verdict.details.append(f"{key}: acknowledged writes took seqs {seqs}")
        _check_state(verdict, stored, key, sorted(by_key[key], key=lambda j: j.seq), stale)


def _check_state(
    verdict: Verdict, stored: Stored, key: str, jobs: list[Job], stale: set[str]
) -> None:
    effective = [
        j
        for j in jobs
        if j.status == "applied" and j.kind in UPSERTS + DELETES and j.outcome != "superseded"
    ]
    last = effective[-1] if effective else None
    present, marker = key in stored.live, stored.live.get(key)
    if last is None or last.kind in DELETES:
        expected_ok = not present
        if last is not None and last.outcome == "deleted":
            expected_ok = expected_ok and stored.tombstones.get(key, -1) >= last.version
    else:
        expected_ok = present and marker == last.marker
    if not expected_ok:
        verdict.misordered += 1
        verdict.details.append(
            f"{key}: stored {'marker ' + str(marker) if present else 'nothing'}, last applied "
            f"job {last and (last.seq, last.kind, last.marker)}"
        )
    if marker in stale:
        verdict.stale_won += 1
        verdict.details.append(f"{key}: stores the stale write {marker}")
