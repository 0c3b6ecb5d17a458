"""The sweeper, run by beat in its own process: a thread that calls the sweep every
IDMIRROR_SWEEP_INTERVAL_SECONDS.

Sent through the queue, the sweep would run on the workers it watches: with them stopped, it
would stop too, and nothing would re-send drains, count stray jobs or write its heartbeat. Here
it needs only PostgreSQL and, to send drains, Redis. A sweep that fails (the database away) is
logged, and the next one comes at its time.
"""

import logging
import threading

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    """Sweeps at once, then every `interval` seconds, until stopped."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="idmirror-sweeper", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        from tasks.sweep import sweep

        while not self.stopped.is_set():
            try:
                sweep()
            except Exception:  # the database or Redis away: the next sweep tries again
                log.warning("sweep failed; the next one is in %g s", self.interval, exc_info=True)
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()
