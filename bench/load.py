"""A closed-loop HTTP load generator on aiohttp: N clients, each sending its next request as
soon as the previous one is answered, until a deadline or a request budget, whichever is first.

Only 127.0.0.1 is ever targeted.
"""

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

# (path, body) for client `c`'s `n`-th request, or None when that client has no more to send.
RequestFactory = Callable[[int, int], tuple[str, bytes] | None]
_OUTCOME = re.compile(rb'"outcome":"([a-z]+)"')


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, of every answered request
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        """The q-quantile (0..1) latency in milliseconds, nearest rank."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
        return 1000.0 * ordered[index]


async def _run(
    base_url: str,
    concurrency: int,
    make_request: RequestFactory,
    headers: dict[str, str],
    duration: float,
    max_requests: int,
    method: str,
) -> LoadResult:
    result = LoadResult()
    issued = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        base_url, connector=connector, timeout=timeout, headers=headers
    ) as session:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + duration

        async def client(c: int) -> None:
            nonlocal issued
            n = 0
            while loop.time() < deadline and issued < max_requests:
                request = make_request(c, n)
                if request is None:
                    return
                issued += 1
                n += 1
                path, body = request
                sent = time.perf_counter()
                try:
                    async with session.request(method, path, data=body) as response:
                        payload = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                result.latencies.append(time.perf_counter() - sent)
                result.statuses[status] += 1
                match = _OUTCOME.search(payload)
                result.outcomes[match.group(1).decode() if match else "none"] += 1

        await asyncio.gather(*(client(c) for c in range(concurrency)))
        result.elapsed = loop.time() - started
    return result


def run(
    base_url: str,
    concurrency: int,
    make_request: RequestFactory,
    *,
    headers: dict[str, str],
    duration: float,
    max_requests: int,
    method: str = "PUT",
) -> LoadResult:
    """Drive `method` requests for `duration` seconds or `max_requests` requests."""
    if urlsplit(base_url).hostname != "127.0.0.1":
        raise ValueError("benchmarks only send requests to 127.0.0.1")
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(
            _run(base_url, concurrency, make_request, headers, duration, max_requests, method)
        )
