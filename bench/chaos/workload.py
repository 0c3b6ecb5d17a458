"""The write stream a chaos scenario runs while a fault is injected.

Each client thread owns its keys (a few plain users, and agents of an owner user no one deletes)
and writes them one request at a time, so its own order of acknowledged writes is the order the
ledger must give them. A write is a user or agent PUT, a graph update, a user or agent DELETE,
or a stale user PUT (its `source_updated_at` years old). Some wait for their job (sync), some
ask `Prefer: respond-async`; some carry an `Idempotency-Key`, and only those are retried, with the
same key, after a connection error, a timeout or a 5xx. Every body carries a marker `w` (the
write's id) in its metadata or node params, so the ledger and the tables can be searched for the
write's jobs and effects.
"""

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

STALE_SINCE = "2001-01-01T00:00:00Z"
NODES_PER_UPDATE = 2
# Share of each kind of write, in this order.
MIX = (
    ("user.upsert", 28),
    ("agent.upsert", 28),
    ("agent.update", 20),
    ("user.delete", 8),
    ("agent.delete", 6),
    ("user.stale", 10),
)


@dataclass
class Attempt:
    """One HTTP request of a write: when, and what came back (status None: no answer)."""

    sent: float
    answered: float
    sent_wall: float  # time.time() of both, to compare with the job's accepted_at
    answered_wall: float
    status: int | None
    job_id: str | None
    error: str | None = None


@dataclass
class Write:
    """One logical write and every attempt made to get it acknowledged."""

    wid: str
    client: int
    kind: str  # the job kind; a stale PUT is a "user.upsert" with `stale` set
    key: str  # the ledger key
    method: str
    path: str
    body: dict[str, Any] | None
    keyed: bool
    sync: bool
    stale: bool = False
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        """Answered 202, or 200/4xx naming its job."""
        return any(
            a.status == 202 or (a.status is not None and a.status < 500 and a.job_id)
            for a in self.attempts
        )

    @property
    def job_ids(self) -> set[str]:
        return {a.job_id for a in self.attempts if a.job_id}


@dataclass(frozen=True)
class Keys:
    """What one client owns."""

    owner: str  # user slug of the agents
    users: tuple[tuple[str, str], ...]  # (user id, slug) of users this client may delete
    agents: tuple[str, ...]  # agent slugs under `owner`


class Workload:
    """Client threads writing until `stop()`; `writes` holds every write, in sending order."""

    def __init__(
        self, base_url: str, token: str, clients: int, *, seed: int = 7, think: float = 0.01
    ) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.clients = clients
        self.seed = seed
        self.think = think
        self.retry_for = 90.0  # seconds a keyed write keeps trying after its first attempt
        self.timeout = 20.0  # above the API's 10 s sync wait
        self.node_type = str(uuid.uuid4())
        tag = uuid.uuid4().hex[:6]
        self.keys = [
            Keys(
                owner=f"o{c}-{tag}",
                users=tuple((str(uuid.uuid4()), f"p{c}x{i}-{tag}") for i in range(3)),
                agents=tuple(f"a{j}" for j in range(3)),
            )
            for c in range(clients)
        ]
        self.writes: list[Write] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def setup(self) -> None:
        """The node type, each client's owner and agents: the stream's starting state."""
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30) as client:
            schema = {"name": "step", "params_schema": {"type": "object"}}
            _ok(client.put(f"/v1/internal/node-types/{self.node_type}", json=schema))
            for keys in self.keys:
                body = {"email": "owner@example.com", "slug": keys.owner}
                _ok(client.put(f"/v1/internal/users/{uuid.uuid4()}", json=body))
                for slug in keys.agents:
                    path = f"/v1/internal/agents/{slug}@{keys.owner}"
                    _ok(client.put(path, json={"display_name": "start"}))

    def start(self) -> None:
        for c in range(self.clients):
            thread = threading.Thread(target=self._run, args=(c,), name=f"chaos-client-{c}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Send no new write; wait for the writes in flight (and their retries) to end."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, c: int) -> None:
        rng = random.Random(self.seed * 1000 + c)
        acked: set[str] = set()
        with httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout
        ) as client:
            while not self._stop.is_set():
                write = self._next(c, rng, acked)
                self._send(client, write)
                if write.acknowledged:
                    acked.add(write.key)
                with self._lock:
                    self.writes.append(write)
                time.sleep(self.think)

    def _next(self, c: int, rng: random.Random, acked: set[str]) -> Write:
        keys = self.keys[c]
        kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        wid = uuid.uuid4().hex[:16]
        keyed, sync = rng.random() < 0.5, rng.random() < 0.7
        user_id, user_slug = rng.choice(keys.users)
        agent = rng.choice(keys.agents)
        agent_path = f"/v1/internal/agents/{agent}@{keys.owner}"
        agent_key = f"agent:{agent}@{keys.owner}"
        user_path, user_key = f"/v1/internal/users/{user_id}", f"user:{user_id}"
        if kind == "user.stale" and user_key not in acked:
            kind = "user.upsert"  # a stale write needs something fresher before it
        user_body = {"email": "u@example.com", "slug": user_slug, "metadata": {"w": wid}}
        match kind:
            case "user.upsert":
                return Write(wid, c, kind, user_key, "PUT", user_path, user_body, keyed, sync)
            case "user.stale":
                body = {**user_body, "source_updated_at": STALE_SINCE}
                return Write(
                    wid, c, "user.upsert", user_key, "PUT", user_path, body, keyed, sync, True
                )
            case "user.delete":
                return Write(wid, c, kind, user_key, "DELETE", user_path, None, keyed, sync)
            case "agent.upsert":
                body = {"display_name": f"d-{wid}", "metadata": {"w": wid}}
                return Write(wid, c, kind, agent_key, "PUT", agent_path, body, keyed, sync)
            case "agent.delete":
                return Write(wid, c, kind, agent_key, "DELETE", agent_path, None, keyed, sync)
            case _:
                path = f"/v1/agents/{agent}@{keys.owner}/update"
                return Write(wid, c, kind, agent_key, "POST", path, self._graph(wid), keyed, sync)

    def _graph(self, wid: str) -> dict[str, Any]:
        nodes = [
            {
                "op": "create_node",
                "node_type_id": self.node_type,
                "temp_ref_id": f"n{i}",
                "params_used": {"w": wid, "i": i},
            }
            for i in range(NODES_PER_UPDATE)
        ]
        link = {"op": "create_connection", "source_temp_ref_id": "n0", "target_temp_ref_id": "n1"}
        return {"operations": [*nodes, link]}

    def _send(self, client: httpx.Client, write: Write) -> None:
        headers = {} if write.sync else {"Prefer": "respond-async"}
        if write.keyed:
            headers["Idempotency-Key"] = f"chaos-{write.wid}"
        first = time.monotonic()
        while True:
            attempt = _attempt(client, write, headers)
            write.attempts.append(attempt)
            if not write.keyed or write.acknowledged:
                return
            if attempt.status is not None and attempt.status < 500:
                return  # refused without a job (a 4xx): sending it again changes nothing
            if time.monotonic() - first > self.retry_for:
                return
            time.sleep(0.2 + random.random() * 0.3)


def _attempt(client: httpx.Client, write: Write, headers: dict[str, str]) -> Attempt:
    sent, sent_wall = time.monotonic(), time.time()
    try:
        response = client.request(write.method, write.path, json=write.body, headers=headers)
    except httpx.HTTPError as exc:  # connection refused or reset, timeout
        error = type(exc).__name__
        return Attempt(sent, time.monotonic(), sent_wall, time.time(), None, None, error)
    job_id = response.headers.get("Idmirror-Job-Id")
    return Attempt(sent, time.monotonic(), sent_wall, time.time(), response.status_code, job_id)


def _ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"setup write answered {response.status_code}: {response.text}")
