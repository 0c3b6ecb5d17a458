"""The scaling model: a mode's costs per job, the rate they predict on one machine, and the
rate they extrapolate to on more cores split across machines."""

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.scaling.measure import Sample
from identity.counters import SHARDS

FLUSH_MS = 1.0  # assumed: a round trip and one WAL flush of the shared Postgres (local NVMe)
RETENTION_HOURS = 168.0  # the default IDMIRROR_JOB_RETENTION_HOURS
STATELESS = ("api", "worker", "redis", "beat")  # scale out; Redis holds only messages


@dataclass(frozen=True)
class Costs:
    """Per job, the median over a mode's rounds at one API process count."""

    mode: str
    processes: int
    rate: float  # jobs/s measured
    cpu: dict[str, float]  # ms by process group
    other_cores: float  # cores the machine's other processes used meanwhile
    busy: float  # percent of the machine's cores busy
    commits: float | None
    wal_bytes: float | None
    wal_fsyncs: float | None
    database_bytes: float | None
    waits: str  # Postgres backends' commonest wait events

    @property
    def stateless_ms(self) -> float:
        return sum(self.cpu[g] for g in STATELESS)

    @property
    def service_ms(self) -> float:
        """CPU per job of the service: the stateless side and Postgres."""
        return self.stateless_ms + self.cpu["postgres"]

    @property
    def jobs_per_commit(self) -> float | None:
        return 1 / self.commits if self.commits else None

    @property
    def machine_ms(self) -> float:
        """CPU per job of everything the run put on this machine, the load generator included."""
        return self.service_ms + self.cpu["loadgen"]


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def costs(samples: list[Sample], mode: str, processes: int) -> Costs:
    mine = [s for s in samples if s.run.mode == mode and s.processes == processes and s.run.round]
    groups = (*STATELESS, "postgres", "loadgen")

    def med(value: Callable[[Sample], float]) -> float:
        return statistics.median(value(s) for s in mine)

    return Costs(
        mode=mode,
        processes=processes,
        rate=med(lambda s: s.run.load.rate),
        cpu={g: statistics.median(s.cpu_ms(g) for s in mine) for g in groups},
        other_cores=med(lambda s: s.run.usage.other / 100),
        busy=med(lambda s: s.run.usage.machine_busy),
        commits=_median([s.per_job(lambda t: t.commits) for s in mine]),
        wal_bytes=_median([s.per_job(lambda t: t.wal_bytes) for s in mine]),
        wal_fsyncs=_median([s.per_job(lambda t: t.wal_fsyncs) for s in mine]),
        database_bytes=_median([s.per_job(lambda t: t.database_bytes) for s in mine]),
        waits=mine[len(mine) // 2].run.usage.top_waits(),
    )


def predict(costs: Costs, processes: int, cores: float) -> tuple[float, str]:
    """Jobs/s on one machine of `cores` free cores with `processes` API processes, from one
    run's costs: the machine's cores over all CPU per job, or one core per API process over the
    API's CPU per job, whichever is lower; and which it was."""
    machine = 1000 * cores / costs.machine_ms
    api = 1000 * processes / costs.cpu["api"]
    return (machine, "machine CPU") if machine <= api else (api, "API processes")


@dataclass(frozen=True)
class Extrapolation:
    """`cores` split between stateless machines and Postgres's in proportion to their CPU per
    job; the load generator runs elsewhere."""

    costs: Costs
    cores: int

    @property
    def postgres_cores(self) -> float:
        return self.cores * self.costs.cpu["postgres"] / self.costs.service_ms

    @property
    def cpu_rate(self) -> float:
        return 1000 * self.cores / self.costs.service_ms

    @property
    def hot_row_rate(self) -> float | None:
        """Transactions that apply jobs add to metric_counters rows and hold them until their
        commit is flushed: at most one such commit per flush and counter shard, of the measured
        jobs each."""
        per_commit = self.costs.jobs_per_commit
        return None if per_commit is None else SHARDS * 1000 / FLUSH_MS * per_commit

    @property
    def rate(self) -> float:
        return min(self.cpu_rate, self.hot_row_rate or self.cpu_rate)


@dataclass(frozen=True)
class Check:
    """A measured case beside the prediction from the costs of the fewest API processes."""

    measured: Costs
    base: Costs  # whose costs predicted it
    free_cores: float
    predicted: float
    bound: str

    @property
    def fitted(self) -> bool:
        return self.base is self.measured

    @property
    def ratio(self) -> float:
        return self.measured.rate / self.predicted


def checks(all_costs: list[Costs], cpus: int) -> list[Check]:
    checks = []
    for c in all_costs:
        base = min((b for b in all_costs if b.mode == c.mode), key=lambda b: b.processes)
        free = cpus - c.other_cores
        checks.append(Check(c, base, free, *predict(base, c.processes, free)))
    return checks
