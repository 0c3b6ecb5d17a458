"""The invariants under a stream of mixed writes while one fault strikes: a worker or the API
killed, Redis flushed or restarted, PostgreSQL restarted (fast and immediate), every database
connection terminated.

Each scenario runs its own PostgreSQL, Redis, API, worker and beat (bench/chaos/services.py),
writes for a few seconds before and after the fault, then checks from the ledger and the tables
(bench/chaos/verify.py) that every acknowledged write has one job and one effect, that each key
ends as its last applied job left it, that no stale write won, and that nothing stays pending.
`python -m bench chaos` runs the same scenarios longer and writes docs/reliability.md.
"""

from pathlib import Path

import pytest

from bench.chaos.faults import FAULTS, Fault
from bench.chaos.scenario import Timing, run_scenario
from bench.chaos.services import Services

pytestmark = pytest.mark.slow

# Recovery is bounded by a sweep: the sweeper sends a drain for stray jobs whatever the queued
# flag says, after IDMIRROR_SWEEP_AFTER_SECONDS (two here) and one sweep interval; a worker
# that exits on its own is started again within seconds.
RECOVERY_BOUND = 15.0
TIMING = Timing(before=2.0, after=3.0, settle=60.0, clients=6)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
def test_acknowledged_writes_survive_the_fault_once_each_and_in_order(
    fault: Fault, tmp_home: Path
) -> None:
    with Services(tmp_home) as services:
        result = run_scenario(services, fault, TIMING)
    verdict = result.verdict

    assert verdict.acknowledged >= 100, result.answers  # the stream ran through the fault
    assert result.exited == {}, "a process the fault did not kill ended on its own"
    assert verdict.problems() == []
    assert verdict.acknowledged == verdict.applied + verdict.failed
    assert result.drained is not None, "jobs still pending a minute after the stream stopped"
    assert result.recovery is not None and result.recovery <= RECOVERY_BOUND, result.recovery
