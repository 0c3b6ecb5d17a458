"""Peak resident memory of the service's process groups while a benchmark runs."""

import contextlib
import threading
from collections.abc import Callable, Mapping

import psutil


class RssSampler:
    """Peak resident memory of process groups (a root pid and its descendants), in MiB.

    `roots` names each group's root pid; it is called at every sample, so a group whose process
    is killed and started again is followed."""

    def __init__(
        self, roots: Callable[[], Mapping[str, int]], interval: float = 0.2, name: str = "rss"
    ) -> None:
        self.roots = roots
        self.interval = interval
        self.baseline = {name: self._rss(pid) for name, pid in roots().items()}
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

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
            for name, pid in self.roots().items():
                self.peak[name] = max(self.peak[name], self._rss(pid))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def growth(self) -> dict[str, float]:
        """Peak above the level at the start, in MiB, per group."""
        return {name: self.peak[name] - self.baseline[name] for name in self.baseline}
