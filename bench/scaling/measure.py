"""Measuring the scaling benchmark: sync-wait updates through `bench.upserts`' Bench, with
Postgres's commits, WAL bytes, WAL fsyncs and database size read around each run."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from bench.options import Options
from bench.upserts.cpu import cpu_ms
from bench.upserts.measure import Bench
from bench.upserts.runs import SYNC, USERS_SYNC, Run

MODES = {USERS_SYNC: "users", SYNC: "agents"}  # measured in turns, in this order
STATS_FLUSH_SECONDS = 1.5  # Postgres backends publish their counters about once a second


@dataclass(frozen=True)
class Totals:
    """Postgres's cumulative counters at one moment."""

    commits: int  # pg_stat_database.xact_commit, read-only transactions included
    wal_bytes: int  # pg_current_wal_lsn(), in bytes
    wal_fsyncs: int | None  # pg_stat_io's WAL fsyncs (PostgreSQL 16+)
    database_bytes: int  # pg_database_size()


def _totals(conn: psycopg.Connection) -> Totals:
    row = conn.execute(
        "SELECT xact_commit, pg_current_wal_lsn() - '0/0'::pg_lsn, "
        "pg_database_size(current_database()) "
        "FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return Totals(int(row[0]), int(row[1]), _wal_fsyncs(conn), int(row[2]))


def _wal_fsyncs(conn: psycopg.Connection) -> int | None:
    try:
        row = conn.execute("SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal'").fetchone()
    except psycopg.Error:  # before PostgreSQL 18, pg_stat_io has no WAL rows
        return None
    return int(row[0]) if row and row[0] is not None else None


@dataclass(frozen=True)
class Sample:
    """One measured run and what Postgres counted around it."""

    run: Run
    before: Totals
    after: Totals

    @property
    def processes(self) -> int:
        return self.run.config.api_workers

    @property
    def jobs(self) -> int:
        return self.run.load.answered

    def per_job(self, total: Callable[[Totals], int | None]) -> float | None:
        start, end = total(self.before), total(self.after)
        if start is None or end is None or not self.jobs:
            return None
        return (end - start) / self.jobs

    def cpu_ms(self, *groups: str) -> float:
        return cpu_ms(self.run, groups)


def measure(bench: Bench, mode: str, round_: int, duration: float) -> Sample:
    """One run of `mode`'s updates, with Postgres's counters read around it."""
    before = _totals(bench.conn)
    tag = f" x{bench.stack.config.api_workers}"  # new bodies for each API process count
    run = bench.measure_updates(mode, round_, duration, tag=tag)
    time.sleep(STATS_FLUSH_SECONDS)
    return Sample(run, before, _totals(bench.conn))


def with_processes(bench: Bench, processes: int, options: Options) -> list[Sample]:
    """Restart the API with `processes` uvicorn processes, warm it up, measure the rounds."""
    if bench.stack.config.api_workers != processes:
        bench.stack.restart_api(processes)
        bench.find_processes()
    print(f"-- {bench.stack.config.describe()}", flush=True)
    if options.warmup > 0:
        measure(bench, SYNC, 0, options.warmup)
    return [
        measure(bench, mode, round_, options.duration)
        for round_ in range(1, options.rounds + 1)
        for mode in MODES
    ]
