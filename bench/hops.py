"""How many project modules one write crosses: `python -m bench.hops [--verbose]`.

A module is crossed by a write when at least one of its functions starts or resumes (a profile
"call" event) while the write is in flight, in the API's threads or in the worker's. A hop is a
distinct caller -> callee pair of different project modules: the callee is the module of the
called function, the caller the module of the nearest project frame below it on the same
thread's stack (library frames in between, such as FastAPI or SQLAlchemy, are looked through).

Everything runs in this one process: embedded Postgres and Redis, the API under uvicorn in a
thread, and a thread standing in for the Celery worker that takes each drain message off the
Redis queue and calls the task function of `identity.drain_key`. A warm-up write of each kind
goes first and is not counted; the sweeper never runs. Project modules are found by name
(`frame.f_globals["__name__"]`), so the same file measures any revision of the tree.
"""

import argparse
import base64
import importlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import redis

from cli.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

PROJECT = ("identity", "api", "tasks", "worker", "cli", "celeryconfig")
DRAIN_TASK = "identity.drain_key"
QUEUE = "celery"  # kombu's Redis list for the default queue
TOKEN = "hops-" + uuid.uuid4().hex
SIDES = ("api", "worker")


def project_module(name: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in PROJECT)


def _caller_module(frame: FrameType | None) -> str | None:
    """The module of the nearest project frame at or below `frame`."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if project_module(name):
            return str(name)
        frame = frame.f_back
    return None


@dataclass
class Trace:
    """What one write touched: modules and edges, per side."""

    modules: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SIDES})
    edges: dict[str, set[tuple[str, str]]] = field(
        default_factory=lambda: {s: set() for s in SIDES}
    )
    direct: set[tuple[str, str]] = field(default_factory=set)  # the caller's frame is the parent

    def all_modules(self) -> set[str]:
        return set().union(*self.modules.values())

    def all_edges(self) -> set[tuple[str, str]]:
        return set().union(*self.edges.values())


class Tracer:
    """A profile function in every thread, recording only between start() and stop()."""

    def __init__(self) -> None:
        self.worker_threads: set[int] = set()
        self._main = threading.get_ident()
        self._trace: Trace | None = None

    def install(self) -> None:
        """Before any thread starts: threads started later inherit the profile function."""
        threading.setprofile(self._profile)

    def start(self) -> None:
        self._trace = Trace()

    def stop(self) -> Trace:
        trace, self._trace = self._trace, None
        assert trace is not None
        return trace

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        trace = self._trace
        if trace is None or event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not project_module(module):
            return
        thread = threading.get_ident()
        if thread == self._main:  # the HTTP client, not the service
            return
        side = "worker" if thread in self.worker_threads else "api"
        trace.modules[side].add(module)
        parent = frame.f_back
        caller = _caller_module(parent)
        if caller is not None and caller != module:
            trace.edges[side].add((caller, module))
            if parent is not None and parent.f_globals.get("__name__") == caller:
                trace.direct.add((caller, module))


def find_tasks() -> dict[str, Any]:
    """The Celery tasks of tasks.drain by name (a task object's `.name`)."""
    module = importlib.import_module("tasks.drain")
    found: dict[str, Any] = {}
    for value in vars(module).values():
        name = getattr(value, "name", None)
        if isinstance(name, str) and callable(getattr(value, "run", None)):
            found[name] = value
    if DRAIN_TASK not in found:
        raise RuntimeError(f"no task named {DRAIN_TASK} in tasks.drain")
    return found


class Worker:
    """Plays the Celery worker: takes drain messages off Redis and runs the task in a thread."""

    def __init__(self, redis_url: str, tracer: Tracer) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._tasks = find_tasks()
        self._tracer = tracer
        self._busy = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker", daemon=True)
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until the queue is empty and no drain runs, three looks in a row."""
        deadline, quiet = time.monotonic() + timeout, 0
        while quiet < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("the drains did not finish")
            idle = not self._busy and self._redis.llen(QUEUE) == 0
            quiet = quiet + 1 if idle else 0
            time.sleep(0.05)

    def _loop(self) -> None:
        self._tracer.worker_threads.add(threading.get_ident())
        while not self._stop.is_set():
            self._busy = False
            item = self._redis.brpop([QUEUE], timeout=0.2)
            if item is None:
                continue
            self._busy = True
            message = json.loads(item[1])
            name = message["headers"]["task"]
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            self._tasks[name].run(*args, **kwargs)
            self.runs += 1


class Api:
    """create_app() under uvicorn in a thread of this process."""

    def __init__(self) -> None:
        import uvicorn

        from api.app import create_app

        self.port = free_port()
        config = uvicorn.Config(
            create_app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )


def _ok(response: httpx.Response) -> dict[str, Any]:
    """The body of a write that was applied before it answered (200), or an error."""
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


def put_user(client: httpx.Client) -> str:
    slug = f"u-{uuid.uuid4().hex[:12]}"
    body = {"email": "someone@example.com", "slug": slug}
    _ok(client.put(f"/v1/internal/users/{uuid.uuid4()}", json=body))
    return slug


def put_agent(client: httpx.Client, user_slug: str) -> httpx.Response:
    return client.put(f"/v1/internal/agents/bot@{user_slug}", json={"display_name": "Bot"})


def put_node_type(client: httpx.Client) -> str:
    node_type_id = str(uuid.uuid4())
    body = {"name": "step", "params_schema": {"type": "object"}}
    _ok(client.put(f"/v1/internal/node-types/{node_type_id}", json=body))
    return node_type_id


def update_graph(client: httpx.Client, agent_id: str, node_type_id: str) -> httpx.Response:
    """Three new nodes in a chain: create_node x3, create_connection x2."""
    names = ["in", "step", "out"]
    operations: list[dict[str, Any]] = [
        {"op": "create_node", "node_type_id": node_type_id, "temp_ref_id": n} for n in names
    ]
    operations += [
        {"op": "create_connection", "source_temp_ref_id": s, "target_temp_ref_id": t}
        for s, t in zip(names, names[1:], strict=False)
    ]
    return client.post(f"/v1/agents/{agent_id}/update", json={"operations": operations})


def measure(worker: Worker, tracer: Tracer, write: Callable[[], httpx.Response]) -> Trace:
    """Trace one write, from its request until its drain and the API are done with it."""
    worker.wait_idle()
    tracer.start()
    try:
        response = write()
        worker.wait_idle()
        time.sleep(0.3)  # whatever the API does after answering
    finally:
        trace = tracer.stop()
    _ok(response)
    return trace


def run_writes(api: Api, worker: Worker, tracer: Tracer) -> dict[str, Trace]:
    """One warm-up write of each kind, then the measured one."""
    traces: dict[str, Trace] = {}
    with api.client() as client:
        _ok(put_agent(client, put_user(client)))
        user_slug = put_user(client)
        traces["sync-wait agent PUT"] = measure(
            worker, tracer, lambda: put_agent(client, user_slug)
        )
        node_type_id = put_node_type(client)
        warm, measured = (_ok(put_agent(client, put_user(client)))["id"] for _ in range(2))
        _ok(update_graph(client, warm, node_type_id))
        traces["graph update"] = measure(
            worker, tracer, lambda: update_graph(client, measured, node_type_id)
        )
    return traces


def report(traces: dict[str, Trace], verbose: bool) -> None:
    print(f"{'write':<22}{'api':>6}{'worker':>8}{'total':>7}{'edges':>7}{'direct':>8}")
    for name, trace in traces.items():
        api, worker = (len(trace.modules[side]) for side in SIDES)
        total, edges = len(trace.all_modules()), len(trace.all_edges())
        print(f"{name:<22}{api:>6}{worker:>8}{total:>7}{edges:>7}{len(trace.direct):>8}")
    if not verbose:
        return
    for name, trace in traces.items():
        print(f"\n{name}")
        for side in SIDES:
            print(f"  {side} modules ({len(trace.modules[side])}):")
            for module in sorted(trace.modules[side]):
                print(f"    {module}")
        print(f"  edges ({len(trace.all_edges())}; the sides that made the call, * direct):")
        for edge in sorted(trace.all_edges()):
            sides = "+".join(s for s in SIDES if edge in trace.edges[s])
            mark = "*" if edge in trace.direct else " "
            print(f"   {mark}{edge[0]} -> {edge[1]}  [{sides}]")


def _configure(database_url: str, redis_url: str, home: Path) -> None:
    """Environment for the project's settings; set before anything imports them."""
    os.environ.update(
        {
            "IDMIRROR_DATABASE_URL": database_url,
            "IDMIRROR_REDIS_URL": redis_url,
            "IDMIRROR_INTERNAL_TOKEN": TOKEN,
            "IDMIRROR_HOME": str(home),
            "IDMIRROR_SWEEP_INTERVAL_SECONDS": "1000000000",
            "IDMIRROR_LOG_LEVEL": "WARNING",
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="list the modules and edges")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="idmirror-hops-"))
    postgres, redis_server = EmbeddedPostgres(home / "postgres"), EmbeddedRedis(home / "redis")
    tracer = Tracer()
    tracer.install()
    try:
        database_url = postgres.start("idmirror_hops")
        _configure(database_url, redis_server.start(), home)
        from cli.main import run_migrations

        run_migrations(database_url)
        identity = importlib.import_module("identity")
        print(f"measuring the tree of {identity.__file__}", file=sys.stderr)
        api, worker = Api(), Worker(os.environ["IDMIRROR_REDIS_URL"], tracer)
        api.start()
        worker.start()
        try:
            traces = run_writes(api, worker, tracer)
        finally:
            api.stop()
            worker.stop()
    finally:
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)
    report(traces, args.verbose)


if __name__ == "__main__":
    main()
