"""Keeping a Celery worker running: `idmirror worker` starts it as a child process and starts
it again whenever it exits on its own.

A Celery worker can stop for good on an error it cannot recover from (one such is kombu's
restore of unacknowledged messages while Redis restarts), and its pending jobs would then wait
for whoever notices. The jobs are durable and a drain is safe to run again, so starting the
worker again is always right; SIGTERM and SIGINT are passed on to it and end the loop.
"""

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger("idmirror.worker")

FIRST_DELAY, LONGEST_DELAY, STEADY_SECONDS = 1.0, 30.0, 60.0


def run_worker(argv: list[str]) -> int:
    """Run `celery -A worker.app <argv>` until told to stop; its exit code then."""
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def pass_on(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    delay = FIRST_DELAY
    while True:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", *argv])
        code = child.wait()
        if stopping:
            return code
        # A worker that ran a while starts again at once; one that keeps dying, ever slower.
        delay = FIRST_DELAY if time.monotonic() - started > STEADY_SECONDS else delay
        log.warning("the worker exited with code %s; starting it again in %g s", code, delay)
        time.sleep(delay)
        if stopping:
            return code
        delay = min(delay * 2, LONGEST_DELAY)
