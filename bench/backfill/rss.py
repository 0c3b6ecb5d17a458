"""Peak resident memory of the service's process groups while a backfill runs."""

import contextlib
import threading

import psutil


class RssSampler:
    """Peak resident memory of process groups (a root pid and its descendants)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.2) -> None:
        self.roots = roots
        self.interval = interval
        self.baseline = {name: self._rss(pid) for name, pid in roots.items()}
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(root: int) -> float:
        try:
            process = psutil.Process(root)
            members = [process, *process.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for member in members:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, pid in self.roots.items():
                self.peak[name] = max(self.peak[name], self._rss(pid))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def growth(self) -> dict[str, float]:
        """Peak above the level at the start, in MiB, per group."""
        return {name: self.peak[name] - self.baseline[name] for name in self.roots}
