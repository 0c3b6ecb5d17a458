"""idmirror against the naive comparator (bench/naive) on the same updates: each mode's figures,
and idmirror's runs of a round over the naive app's run between them, against the targets."""

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.report import table
from bench.upserts.runs import COMPARED, Run, throughput
from bench.upserts.summary import span, verdict

RowMaker = Callable[[list[Run]], list[list[str]]]  # one stack's runs -> its rows
Trio = tuple[Run, ...]  # a round's sync-wait, respond-async and naive runs of one resource
NAIVE_RUN = 2


def _p99(run: Run) -> float:
    return run.load.percentile_ms(0.99)


@dataclass(frozen=True)
class Ratio:
    """A figure of one of idmirror's runs over the same figure of the naive app's run."""

    name: str
    mode: int  # idmirror's run: 0 sync-wait, 1 respond-async (their places in COMPARED)
    figure: Callable[[Run], float]
    target: float
    at_least: bool  # the target is a floor, else a ceiling

    def of(self, trio: Trio) -> float:
        return self.figure(trio[self.mode]) / self.figure(trio[NAIVE_RUN])

    def met(self, value: float) -> bool:
        return value >= self.target if self.at_least else value <= self.target

    @property
    def goal(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.target:g}"


RATIOS = (
    Ratio("sync-wait req/s / naive req/s", 0, throughput, 0.8, at_least=True),
    Ratio("sync-wait p99 / naive p99", 0, _p99, 1.5, at_least=False),
    Ratio("respond-async jobs/s applied / naive req/s", 1, throughput, 1.5, at_least=True),
)


def _trios(mine: list[Run], resource: str) -> list[Trio]:
    """The runs of each round that measured all three of the resource's compared modes."""
    by_round: dict[int, dict[str, Run]] = {}
    for run in mine:
        if run.round and run.mode in COMPARED[resource]:
            by_round.setdefault(run.round, {})[run.mode] = run
    modes = COMPARED[resource]
    return [
        tuple(runs[mode] for mode in modes)
        for _, runs in sorted(by_round.items())
        if len(runs) == len(modes)
    ]


def _by_stack(runs: list[Run], several_configs: bool, headers: list[str], rows_of: RowMaker) -> str:
    """A table of each stack's rows, led by the stack when there are several."""
    rows = []
    for config in dict.fromkeys(r.config for r in runs):
        for row in rows_of([r for r in runs if r.config == config]):
            rows.append([config.label, *row] if several_configs else row)
    return table(["Stack", *headers] if several_configs else headers, rows)


def _figures(mine: list[Run]) -> list[list[str]]:
    rows = []
    for mode in (mode for modes in COMPARED.values() for mode in modes):
        measured = [r for r in mine if r.mode == mode and r.round]
        if measured:
            rows.append(
                [
                    mode,
                    str(len(measured)),
                    span([r.load.rate for r in measured]),
                    span([r.load.percentile_ms(0.5) for r in measured]),
                    span([_p99(r) for r in measured]),
                    span([r.applied_rate for r in measured]),
                ]
            )
    return rows


def _ratios(mine: list[Run]) -> list[list[str]]:
    rows = []
    for resource in COMPARED:
        trios = _trios(mine, resource)
        for ratio in RATIOS if trios else ():
            values = [ratio.of(trio) for trio in trios]
            rows.append(
                [
                    resource,
                    ratio.name,
                    ", ".join(f"{v:.2f}" for v in values),
                    f"{statistics.median(values):.2f}",
                    ratio.goal,
                    verdict([ratio.met(v) for v in values]),
                ]
            )
    return rows


def figures_table(runs: list[Run], several_configs: bool) -> str:
    """Each compared mode's rate and latency over the rounds."""
    headers = ["Mode", "Rounds", "req/s", "p50 ms", "p99 ms", "applied/s"]
    return _by_stack(runs, several_configs, headers, _figures)


def ratios_table(runs: list[Run], several_configs: bool) -> str:
    """Each ratio in each round, its median, its target and in how many rounds it was met."""
    headers = ["Resource", "Ratio (idmirror / naive)", "Each round", "Median", "Target", "Verdict"]
    return _by_stack(runs, several_configs, headers, _ratios)
