"""While the input still arrives: a cancel stops the run; agent chunks are applied only once every
user before them is in place, and never at the cost of an agent whose user line comes later."""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import psycopg

from api.routes.backfills import FIRST_PIECE_BYTES, MAX_PIECE_BYTES
from tests.conftest import OwnStack
from tests.identity.backfill.uploads import (
    NDJSON,
    agent_item,
    failures,
    ndjson,
    post_ndjson,
    prefix,
    user_item,
    wait_done,
)
from tests.stack import wait_until


def upload_in_two_parts(
    client: httpx.Client, first: bytes, second: bytes
) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
    """Start an upload that sends `first` and holds `second` back. Returns the run (receiving)
    and a function that sends the rest and returns the answer."""
    gate = threading.Event()

    def body() -> Iterator[bytes]:
        yield first
        gate.wait(60)
        yield second

    result: dict[str, httpx.Response] = {}
    upload = threading.Thread(
        target=lambda: result.setdefault(
            "r", client.post("/v1/internal/backfills", content=body(), headers=NDJSON)
        )
    )
    upload.start()
    run = wait_until(
        lambda: next(
            iter(client.get("/v1/internal/backfills?status=receiving").json()["items"]), None
        )
    )

    def answer() -> dict[str, Any]:
        gate.set()
        upload.join(60)
        assert result["r"].status_code == 202, result["r"].text
        answered: dict[str, Any] = result["r"].json()
        return answered

    return run, answer


def test_cancel_while_receiving_stops_the_run_and_applies_nothing_more(
    client: httpx.Client,
) -> None:
    p = prefix()
    owner = user_item(f"{p}-u")
    agents = [agent_item(f"a{i}@{p}-u") for i in range(5_000)]
    run, answer = upload_in_two_parts(client, ndjson([owner]), ndjson(agents))
    cancelled = client.post(f"/v1/internal/backfills/{run['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert answer()["status"] == "cancelled"
    time.sleep(1)
    assert client.get(f"/v1/internal/users/{owner['id']}").status_code == 404
    assert client.get(f"/v1/agents?user_slug={p}-u").json()["items"] == []
    # Cancelling a finished run changes nothing.
    again = client.post(f"/v1/internal/backfills/{run['id']}/cancel").json()
    assert (
        again["status"] == "cancelled" and again["finished_at"] == cancelled.json()["finished_at"]
    )


def test_agents_after_their_users_are_applied_while_the_input_still_arrives(
    own_stack: OwnStack,
) -> None:
    """No beat runs, so no sweeper: only the upload itself can queue the chunks applied while
    the rest of the input is held back."""
    with own_stack("api", "worker").client() as client:
        p = prefix()
        users = [user_item(f"{p}-u{i}") for i in range(20)]
        agents = [agent_item(f"a{i}@{p}-u{i % 20}") for i in range(15_000)]
        run, answer = upload_in_two_parts(
            client, ndjson(users + agents), ndjson([agent_item(f"last@{p}-u0")])
        )

        def applied_early() -> dict[str, Any] | None:
            now = client.get(f"/v1/internal/backfills/{run['id']}").json()
            return now if now["counts"]["created"] >= 20 + 5_000 else None

        during = wait_until(applied_early, timeout=60)
        assert during["status"] == "receiving"
        answer()
        done = wait_done(client, run["id"])
        assert done["status"] == "completed"
        assert done["counts"]["created"] == 15_021 and done["counts"]["failed"] == 0
        assert client.get(f"/v1/agents/last@{p}-u0").status_code == 200


def test_an_agent_whose_user_line_comes_later_is_not_failed(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    owners = [user_item(f"{p}-u{i}") for i in range(20)]
    late = user_item(f"{p}-late")
    agents = [
        agent_item(f"x{i}@{p}-late") if i % 100 == 0 else agent_item(f"a{i}@{p}-u{i % 20}")
        for i in range(15_000)
    ]
    run, answer = upload_in_two_parts(
        client, ndjson(owners + agents), ndjson([late, agent_item(f"y@{p}-late")])
    )

    def stopped() -> bool:
        row = db.execute(
            "SELECT status, early_agents FROM backfills WHERE id = %s", (run["id"],)
        ).fetchone()
        assert row is not None and row[0] == "receiving"
        return row[1] is False

    # An agent chunk applied early met x0@...-late before its user: agents wait from now on.
    wait_until(stopped, timeout=60)
    answer()
    done = wait_done(client, run["id"])
    assert done["status"] == "completed", done
    assert done["counts"]["failed"] == 0, failures(client, run["id"])
    assert done["counts"]["created"] == 15_022
    assert client.get(f"/v1/agents/x0@{p}-late").status_code == 200
    assert client.get(f"/v1/agents/y@{p}-late").status_code == 200


def test_agents_of_a_user_that_never_comes_fail_once_the_input_has_ended(
    client: httpx.Client,
) -> None:
    p = prefix()
    owners = [user_item(f"{p}-u{i}") for i in range(20)]
    agents = [agent_item(f"a{i}@{p}-u{i % 20}") for i in range(15_000)]
    orphans = [agent_item(f"o{i}@{p}-nobody") for i in range(3)]
    run, answer = upload_in_two_parts(client, ndjson(owners + orphans + agents), b"")
    answer()
    done = wait_done(client, run["id"])
    assert done["counts"]["created"] == 15_020 and done["counts"]["failed"] == 3
    found = failures(client, run["id"])
    assert {f["error"]["code"] for f in found} == {"user_not_found"}
    assert all(f["retryable"] for f in found)


def test_an_upload_whose_stored_chunks_were_lost_fails_with_a_clear_error(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """Stores commit without waiting for the disk. If PostgreSQL loses the last of them in a
    crash and comes back while the upload goes on, the next store finds the run's counts short
    and fails the upload rather than complete it without those lines."""
    p = prefix()
    users = [user_item(f"{p}-u{i}", metadata={"pad": "x" * 60}) for i in range(6_000)]
    gate = threading.Event()

    def body() -> Iterator[bytes]:
        yield ndjson([*users, agent_item(f"a@{p}-u0")])  # the agent line stores the users
        # Blank lines (skipped) fill the receiver's largest piece: what came before is read.
        yield (b" " * 1023 + b"\n") * (MAX_PIECE_BYTES // 1024)
        gate.wait(60)
        yield ndjson([agent_item(f"b@{p}-u1")])

    result: dict[str, httpx.Response] = {}
    upload = threading.Thread(
        target=lambda: result.setdefault(
            "r", client.post("/v1/internal/backfills", content=body(), headers=NDJSON)
        )
    )
    upload.start()

    def stored() -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = db.execute(
            "SELECT id::text, chunks FROM backfills WHERE status = 'receiving' AND chunks > 0 "
            "ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        return row

    backfill_id, _ = wait_until(stored, timeout=60)
    # As if the last store's commit had not reached the disk before a crash.
    db.execute(
        "UPDATE backfills SET chunks = chunks - 1, received = received - 1 WHERE id = %s",
        (backfill_id,),
    )
    gate.set()
    upload.join(60)
    answer = result["r"]
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "backfill_input_lost"
    run = client.get(f"/v1/internal/backfills/{backfill_id}").json()
    assert run["status"] == "failed" and run["error"]["code"] == "backfill_input_lost"


def test_an_upload_whose_client_goes_away_fails_as_interrupted_and_frees_its_receiver(
    client: httpx.Client,
) -> None:
    """The client leaves while a piece is being validated and the next one is being read: the
    run fails as interrupted once the piece is fed, and nothing after the cut is applied."""
    p = prefix()
    users = [user_item(f"{p}-u{i}") for i in range(50)]
    agents = [agent_item(f"a{i}@{p}-u{i % 50}") for i in range(12_000)]
    body = ndjson(users + agents)  # the first agent line stores the users: received counts
    sent = body[: FIRST_PIECE_BYTES + 64 * 1024]  # a piece to feed, and some of the next
    assert len(sent) < len(body)
    receiving = "/v1/internal/backfills?status=receiving&limit=100"
    before = {run["id"] for run in client.get(receiving).json()["items"]}
    url = client.base_url
    with socket.create_connection((url.host, url.port), timeout=30) as connection:
        head = (
            "POST /v1/internal/backfills HTTP/1.1\r\n"
            f"Host: {url.host}\r\n"
            f"Authorization: {client.headers['Authorization']}\r\n"
            "Content-Type: application/x-ndjson\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        connection.sendall(head.encode() + b"%x\r\n" % len(sent) + sent + b"\r\n")

        def received() -> dict[str, Any] | None:
            for run in client.get(receiving).json()["items"]:
                if run["id"] not in before and run["counts"]["received"] > 0:
                    return cast(dict[str, Any], run)
            return None

        run = wait_until(received)  # the first piece is stored: gone, mid-upload
    done = wait_done(client, run["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "upload_interrupted"
    assert client.get(f"/v1/agents/{agents[-1]['key']}").status_code == 404
    # Its receiver let go of everything: the whole input goes through.
    again = post_ndjson(client, body)
    assert wait_done(client, again["id"])["status"] == "completed"
