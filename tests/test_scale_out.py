"""Two API processes and two worker processes on one key space keep the five invariants.

The API and the workers are stateless, and every decision about order is taken in PostgreSQL
(a key's sequence in key_heads, its advisory lock for applying): so a write may be accepted by
either API process, applied by it on accept or by either worker, and the ledger still gives each
key its writes once each, in order. Two streams run at once: the chaos harness's mixed writes
(each client owning its keys, sync and async, graph updates, deletes, stale writes, retries with
Idempotency-Keys), and clients that all write the same few users, which makes the API processes
and the workers contend for the same keys. The access log's pids show both API processes took
writes.
"""

import random
import re
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from bench.chaos.faults import Fault
from bench.chaos.scenario import Timing, run_scenario
from bench.chaos.services import Services

pytestmark = pytest.mark.slow

HOT_USERS = [uuid.uuid4() for _ in range(4)]
HOT_CLIENTS, HOT_WRITES = 6, 40  # each client's writes, spread over the hot users
WORKER_LOGS = ("worker.log", "worker-2.log")
# An access line of a write answered 200 or 202, with the pid of the API process that took it.
WRITE_TAKEN = re.compile(r"INFO \[(\d+)\] api\.access: PUT /v1/internal/\S+ 20[02] ", re.M)


def write_hot_users(base_url: str, token: str, client: int, acknowledged: list[str]) -> None:
    """PUT the hot users in a random order, half waiting for the result, half not; each body
    carries its write's marker. The markers of acknowledged writes go to `acknowledged`."""
    chooser = random.Random(client)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        for n in range(HOT_WRITES):
            user = chooser.choice(HOT_USERS)
            marker = f"c{client}-{n}"
            body = {"email": f"{user.hex[:8]}@example.com", "slug": f"hot-{user.hex[:8]}"}
            prefer = {"Prefer": "respond-async"} if n % 2 else {}
            response = http.put(
                f"/v1/internal/users/{user}",
                json={**body, "metadata": {"w": marker}},
                headers=prefer,
            )
            assert response.status_code in (200, 202), response.text
            acknowledged.append(marker)


def hot_keys_end_as_their_last_job_left_them(database_url: str) -> list[str]:
    """Each hot user's jobs: sequence numbers without a gap, all applied, and the row holds
    the body of the last one. The problems found; empty when none."""
    problems = []
    with psycopg.connect(database_url) as conn:
        for user in HOT_USERS:
            jobs = conn.execute(
                "SELECT seq, status, payload -> 'metadata' ->> 'w' FROM jobs "
                "WHERE key = %s ORDER BY seq",
                (f"user:{user}",),
            ).fetchall()
            row = conn.execute("SELECT metadata ->> 'w' FROM users WHERE id = %s", (user,))
            stored = row.fetchone()
            if [job[0] for job in jobs] != list(range(1, len(jobs) + 1)):
                problems.append(f"user:{user}: sequence {[job[0] for job in jobs]}")
            if {job[1] for job in jobs} != {"applied"}:
                problems.append(f"user:{user}: statuses {sorted({job[1] for job in jobs})}")
            if jobs and (stored is None or stored[0] != jobs[-1][2]):
                problems.append(f"user:{user}: holds {stored}, last job wrote {jobs[-1][2]}")
    return problems


def test_two_api_processes_and_two_workers_keep_the_invariants(tmp_home: Path) -> None:
    acknowledged: list[str] = []

    def contend(services: Services) -> float:
        """The scenario's "fault": clients that all write the hot users, while the mixed
        stream goes on; over when every one of their writes is answered."""
        hot = [
            threading.Thread(
                target=write_hot_users,
                args=(services.stack.base_url, services.token, client, acknowledged),
            )
            for client in range(HOT_CLIENTS)
        ]
        for thread in hot:
            thread.start()
        for thread in hot:
            thread.join()
        return time.monotonic()

    fault = Fault("contend", "clients writing the same users", contend)
    with Services(tmp_home, api_workers=2, workers=2, log_level="INFO") as services:
        result = run_scenario(services, fault, Timing(before=3.0, after=3.0, clients=6))
        hot_problems = hot_keys_end_as_their_last_job_left_them(services.stack.database_url)
        logs = services.home / "stack"
        api_log = (logs / "api.log").read_text()
        drains = [(logs / name).read_text().count("succeeded in") for name in WORKER_LOGS]

    verdict = result.verdict
    assert verdict.acknowledged >= 40, result.answers  # the stream ran (slowly on a busy host)
    assert verdict.problems() == []
    assert verdict.acknowledged == verdict.applied + verdict.failed
    assert result.drained is not None, "jobs still pending a minute after the streams stopped"
    assert len(acknowledged) == HOT_CLIENTS * HOT_WRITES
    assert hot_problems == []
    assert api_log.count("Started server process") == 2
    assert len(set(WRITE_TAKEN.findall(api_log))) == 2  # both API processes took writes
    assert all(n > 0 for n in drains), drains  # both workers applied jobs
