"""What a benchmark records besides latency: CPU per process group, Postgres commits, Redis
commands, and the machine it ran on.

CPU is sampled from a background thread. A group is a root pid and all its descendants (prefork
children, Postgres backends), so a child that starts during the window counts from zero.
Postgres flushes its statistics from busy backends about once a second, so commit rates are
taken from the interior of the window, between samples, never from its two edges alone.
"""

import hashlib
import os
import platform
import re
import subprocess
import threading
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import redis


def _group_times(root: int) -> dict[int, float]:
    """user + system seconds of `root` and each of its descendants, by pid.

    A negative root means the process -root alone: the benchmark's own process is the parent of
    the services it started, which have groups of their own.
    """
    try:
        parent = psutil.Process(abs(root))
        members = [parent, *parent.children(recursive=True)] if root > 0 else [parent]
    except psutil.Error:
        return {}
    times = {}
    for process in members:
        try:
            cpu = process.cpu_times()
        except psutil.Error:
            continue
        times[process.pid] = cpu.user + cpu.system
    return times


def _machine_times() -> tuple[float, float, float]:
    """(busy, steal, total) seconds over all CPUs."""
    t = psutil.cpu_times()
    total = sum(t)
    steal = getattr(t, "steal", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle - steal, steal, total


@dataclass
class Usage:
    """What one window used. CPU is in percent of one core (200 = two cores busy)."""

    seconds: float
    cpu: dict[str, float]
    machine_busy: float  # percent of all cores
    steal: float  # percent of all cores
    other: float  # percent of one core used by processes outside the sampled groups
    commits_per_s: float | None
    rollbacks_per_s: float | None
    pending_series: list[tuple[float, int]] = field(default_factory=list)
    # Mean number of the service's Postgres backends in each state/wait event ("CPU" = running).
    backends: dict[str, float] = field(default_factory=dict)

    def top_waits(self, n: int = 3) -> str:
        ranked = sorted(self.backends.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {mean:.1f}" for name, mean in ranked if mean >= 0.05)


class Sampler:
    """Samples CPU of process groups, Postgres commit counters and the pending-job count."""

    def __init__(self, roots: dict[str, list[int]], conninfo: str, interval: float = 0.5) -> None:
        self._roots = roots
        self._conninfo = conninfo
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base: dict[str, dict[int, float]] = {}
        self._last: dict[str, dict[int, float]] = {}
        self._machine_start = (0.0, 0.0, 0.0)
        self._started = 0.0
        self._pg_series: list[tuple[float, int, int]] = []
        self._pending: list[tuple[float, int]] = []
        self._waits: dict[str, int] = {}
        self._wait_samples = 0
        self._lock = threading.Lock()

    def _sample_cpu(self) -> None:
        with self._lock:
            for name, pids in self._roots.items():
                last = self._last.setdefault(name, {})
                for root in pids:
                    last.update(_group_times(root))

    def _sample_pg(self, conn: psycopg.Connection) -> None:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, "
            "(SELECT count(*) FROM jobs WHERE status = 'pending') "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        if row is not None:
            now = time.monotonic() - self._started
            self._pg_series.append((now, int(row[0]), int(row[1])))
            self._pending.append((now, int(row[2])))
        # What the active backends (other than this one) are doing right now.
        active = conn.execute(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*) "
            "FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
            "AND pid <> pg_backend_pid() GROUP BY 1"
        ).fetchall()
        self._wait_samples += 1
        for name, count in active:
            self._waits[name] = self._waits.get(name, 0) + int(count)

    def __enter__(self) -> "Sampler":
        self._started = time.monotonic()
        self._machine_start = _machine_times()
        for name, pids in self._roots.items():
            base: dict[int, float] = {}
            for root in pids:
                base.update(_group_times(root))
            self._base[name] = base
            self._last[name] = dict(base)
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            while not self._stop.is_set():
                self._sample_cpu()
                self._sample_pg(conn)
                self._stop.wait(self._interval)
            self._sample_pg(conn)
        finally:
            conn.close()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._sample_cpu()
        self.usage = self._usage()

    def _usage(self) -> Usage:
        seconds = time.monotonic() - self._started
        busy0, steal0, total0 = self._machine_start
        busy1, steal1, total1 = _machine_times()
        cores = os.cpu_count() or 1
        span = max(total1 - total0, 1e-9)  # CPU-seconds over all cores
        cpu = {}
        for name in self._roots:
            base, last = self._base.get(name, {}), self._last.get(name, {})
            used = sum(t - base.get(pid, 0.0) for pid, t in last.items())
            cpu[name] = 100.0 * used / seconds
        machine_busy = 100.0 * (busy1 - busy0) / span
        other = max(0.0, machine_busy * cores - sum(cpu.values()))
        commits = rollbacks = None
        interior = [s for s in self._pg_series if 1.5 <= s[0] <= seconds - 1.5]
        if len(interior) >= 2:
            dt = interior[-1][0] - interior[0][0]
            commits = (interior[-1][1] - interior[0][1]) / dt
            rollbacks = (interior[-1][2] - interior[0][2]) / dt
        return Usage(
            seconds=seconds,
            cpu=cpu,
            machine_busy=machine_busy,
            steal=100.0 * (steal1 - steal0) / span,
            other=other,
            commits_per_s=commits,
            rollbacks_per_s=rollbacks,
            pending_series=list(self._pending),
            backends={k: v / max(self._wait_samples, 1) for k, v in self._waits.items()},
        )


def redis_command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per Redis command so far (INFO commandstats)."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


SERVICE_TREE = ("identity", "api", "tasks", "worker", "cli", "celeryconfig.py", "migrations")


def code_revision() -> str:
    """The commit measured, and a fingerprint of uncommitted changes to the service code."""
    revision = _git("rev-parse", "--short", "HEAD") or "unknown"
    diff = _git("diff", "HEAD", "--", *SERVICE_TREE)
    untracked = _git("ls-files", "--others", "--exclude-standard", "--", *SERVICE_TREE)
    if diff or untracked:
        digest = hashlib.sha256((diff + untracked).encode()).hexdigest()[:8]
        revision += f" with uncommitted service changes (diff {digest})"
    return revision


def note_core_speed_at_end(facts: dict[str, str]) -> None:
    """Add the core's speed at the end of a run to the one `machine()` read at its start: a
    host shared with other machines can change speed in the middle of a run."""
    facts["core_speed"] += f" at the start and {core_speed_ms():.1f} ms at the end"


def core_speed_ms() -> float:
    """Milliseconds this Python takes for sum(range(10**6)), best of 5: one core's speed, to
    compare runs on machines of the same kind (their hosts are not equally busy)."""
    return min(timeit.repeat("sum(range(10**6))", number=10, repeat=5)) / 10 * 1000


def machine(conn: psycopg.Connection) -> dict[str, str]:
    """The facts a reader needs to compare figures across machines and code versions."""
    settings: dict[str, str] = dict(
        conn.execute(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'commit_delay')"
        ).fetchall()
    )
    server_version = conn.execute("SHOW server_version").fetchone()
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    return {
        "date": date,
        "cpus": str(os.cpu_count()),
        "cpu_model": _cpu_model(),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "postgres": server_version[0] if server_version else "unknown",
        "postgres_settings": ", ".join(f"{k}={v}" for k, v in sorted(settings.items())),
        "kernel": platform.release(),
        "revision": code_revision(),
        "load_before": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "core_speed": f"{core_speed_ms():.1f} ms",
    }
