"""`python -m bench.backfill.soak [--runs N] [--users N --agents N] [--gap S] [--log PATH]`:
first loads of the backfill benchmark's input, each on a fresh stack, watched for stalls.

A stall that comes once in several runs (a plan PostgreSQL keeps from the moment a table was
empty, a lock) does not show in one benchmark run. Each run here starts a new stack, uploads the
input and follows it to its end, as `python -m bench.backfill` does, while a watcher reads the
run's `received` count every second; when no store has landed for `--gap` seconds it writes to
the log what each backend of the database is doing (`pg_stat_activity`), the locks waited for,
and the Python stacks of the API and worker processes (if `py-spy` is installed). Statements that
ran for `--gap` seconds or more are in the log too, with their plans (`auto_explain`, loaded into
every session of the stack's embedded database). Exits 1 if any run failed or stalled.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import psycopg

from bench.backfill.inputs import write_input
from bench.backfill.runs import run_once
from bench.stack import Stack, StackConfig

_ACTIVITY = """
    SELECT pid, state, wait_event_type, wait_event, now() - xact_start, now() - query_start,
           left(regexp_replace(query, '\\s+', ' ', 'g'), 200)
    FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
_WAITING = "SELECT pid, locktype, relation::regclass, mode FROM pg_locks WHERE NOT granted"


class Watcher(threading.Thread):
    """Writes a report to `log` every `gap` seconds that the newest backfill receives but has
    stored nothing for `gap` seconds or more; `stalls` counts the reports."""

    def __init__(self, stack: Stack, log: Path, gap: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.log, self.gap = stack, log, gap
        self.stalls = 0
        self.done = threading.Event()

    def run(self) -> None:
        last, since, reported = None, time.monotonic(), 0.0
        with self.stack.pg_connect() as conn:
            conn.autocommit = True
            while not self.done.wait(1.0):
                row = conn.execute(
                    "SELECT received, status FROM backfills ORDER BY created DESC LIMIT 1"
                ).fetchone()
                now = time.monotonic()
                if row is None or row[1] != "receiving" or row[0] != last:
                    last, since = (row[0] if row else None), now
                elif now - since >= self.gap and now - reported >= self.gap:
                    self.stalls += 1
                    reported = now
                    self._report(conn, f"no store for {now - since:.0f} s, {last:,} received")

    def _report(self, conn: psycopg.Connection, what: str) -> None:
        lines = [f"--- {time.strftime('%H:%M:%S')} {what}"]
        lines += ["  backend " + " | ".join(map(str, r)) for r in conn.execute(_ACTIVITY)]
        lines += ["  waits for " + " | ".join(map(str, r)) for r in conn.execute(_WAITING)]
        lines += _stacks(self.stack)
        with self.log.open("a") as out:
            out.write("\n".join(lines) + "\n")


def _stacks(stack: Stack) -> list[str]:
    """py-spy's dump of the API's and the worker's processes, if py-spy is installed."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        return ["  (no py-spy: Python stacks left out)"]
    pids = [stack.processes["api"].pid]
    worker = psutil.Process(stack.processes["worker"].pid)
    pids += [worker.pid] + [child.pid for child in worker.children(recursive=True)]
    return [f"  stacks {pid}:\n{_dump(spy, pid)}" for pid in pids]


def _dump(spy: str, pid: int) -> str:
    try:
        dump = subprocess.run(
            [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "  (py-spy did not answer in 20 s)\n"
    return dump.stdout + dump.stderr


def _slow_statements(stack: Stack) -> str:
    """The entries auto_explain wrote to the embedded Postgres's log (each entry starts with its
    timestamp, 20..-..-..)."""
    log = stack.home / "postgres" / "log"
    if not log.is_file():
        return ""
    entries = log.read_text(errors="replace").split("\n20")
    return "\n".join("20" + entry for entry in entries if "duration:" in entry)


def soak(runs: int, users: int, agents: int, gap: float, log: Path) -> int:
    """The runs, one line each on stdout; returns how many failed or stalled."""
    work = Path(tempfile.mkdtemp(prefix="idmirror-soak-"))
    path = work / "input.ndjson"
    write_input(path, users, agents)
    explain = {  # on the stack's own embedded server only
        "session_preload_libraries": "auto_explain",
        "auto_explain.log_min_duration": f"{int(gap * 1000)}ms",
    }
    settings = {} if os.environ.get("IDMIRROR_DATABASE_URL") else explain
    bad = 0
    try:
        for n in range(1, runs + 1):
            with Stack(StackConfig(), database_settings=settings) as stack:
                watcher = Watcher(stack, log, gap)
                watcher.start()
                try:
                    run = run_once(stack, path, f"first load {n}")
                    verdict = f"{run.seconds:.1f} s (upload {run.upload_seconds:.1f} s)"
                except (httpx.HTTPError, RuntimeError) as exc:
                    verdict = f"failed: {exc!r}"
                finally:
                    watcher.done.set()
                    watcher.join()
                if watcher.stalls or verdict.startswith("failed"):
                    bad += 1
                with log.open("a") as out:
                    out.write(f"run {n}: {verdict}, {watcher.stalls} stall reports\n")
                    out.write(_slow_statements(stack) + "\n")
                print(f"run {n}: {verdict}, {watcher.stalls} stall reports", flush=True)
    finally:
        path.unlink()
        work.rmdir()
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill.soak", description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--gap", type=float, default=3.0, help="seconds without a store")
    parser.add_argument("--log", type=Path, default=Path("soak.log"))
    args = parser.parse_args()
    bad = soak(args.runs, args.users, args.agents, args.gap, args.log)
    print(f"{bad} of {args.runs} runs failed or stalled; reports in {args.log}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
