"""The processes `idmirror up` runs, as one family: each started with its output lines prefixed
by its name, all watched until a signal or one of them exiting, and each stopped once.

Each child runs in a process group of its own, so a Ctrl-C in the terminal reaches `up` alone
and every child gets exactly one SIGTERM from it: a Celery worker that got the terminal's
SIGINT as well as one passed on would take the second for a cold shutdown.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 15.0


class Children:
    """`python -m cli <name>` processes sharing one environment and `up`'s standard output."""

    def __init__(self, env: dict[str, str], names: Sequence[str]) -> None:
        self.env = env
        self.width = max(len(name) for name in names)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.output = threading.Lock()  # whole lines, from the relays and from `up`
        self.stopping = False
        self.failed: str | None = None  # the process that exited on its own, if one did
        self._relays: dict[str, threading.Thread] = {}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._stop)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def start(self, name: str) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", name],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        assert process.stdout is not None
        self.processes[name] = process
        relay = threading.Thread(target=self._relay, args=(name, process.stdout), daemon=True)
        relay.start()
        self._relays[name] = relay

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        prefix = f"{name:<{self.width}} | ".encode()
        for line in stream:
            with self.output:
                sys.stdout.buffer.write(prefix + line.rstrip(b"\n") + b"\n")
                sys.stdout.buffer.flush()

    def say(self, text: str) -> None:
        """A line of `up`'s own, between whole lines of the processes'."""
        with self.output:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def _one_exited(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                self.say(f"{name} exited with {process.returncode}; stopping")
                self.stopping = True
                self.failed = name
                return True
        return False

    def wait_for(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Poll `ready` until it holds; False if asked to stop, a process ended or time ran out."""
        deadline = time.monotonic() + timeout
        while not self.stopping and not self._one_exited():
            if ready():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return False

    def watch(self) -> None:
        """Return once asked to stop or when a process has exited."""
        while not self.stopping and not self._one_exited():
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop beat first, so that it sends nothing to a stopping worker, then the others
        together; each gets one SIGTERM, and its group is killed if it is not gone in 15 s."""
        beat = [name for name in self.processes if name == "beat"]
        for names in (beat, [name for name in self.processes if name != "beat"]):
            for name in names:
                if self.processes[name].poll() is None:
                    self.processes[name].terminate()
            for name in names:
                self._reap(name)

    def _reap(self, name: str) -> None:
        process = self.processes[name]
        try:
            process.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._relays[name].join(5)  # its last lines come before the line that says it stopped
        self.say(f"{name} stopped")
