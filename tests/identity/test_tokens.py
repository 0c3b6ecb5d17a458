"""Integrators' tokens: shown once, stored as a hash only, refused at once in every API process
when revoked, expired or their integrator disabled."""

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.integrators import client_for, new_integrator, new_token
from tests.stack import Stack, wait_until


def test_a_token_is_shown_once_and_lists_without_its_secret(client: httpx.Client) -> None:
    integrator = new_integrator(client)
    created = new_token(client, integrator, ["read"], name="crm sync")
    assert created["token"].startswith("idm_") and len(created["token"]) == 4 + 43
    assert created["scopes"] == ["read"] and created["last_used_at"] is None
    listed = client.get("/v1/admin/tokens", params={"integrator": integrator}).json()["items"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0] and created["token"] not in str(listed)


def test_a_dump_of_the_tokens_table_holds_no_secret(
    stack: Stack, client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    integrator = new_integrator(client)
    secrets = [new_token(client, integrator)["token"] for _ in range(3)]
    with client_for(stack, secrets[0]) as used:
        assert used.get("/v1/internal/users", params={"limit": 1}).status_code == 200
    # Every column of every row, as text and as raw bytes, as pg_dump would write them.
    rows = db.execute("SELECT t::text, row_to_json(t)::text FROM tokens t").fetchall()
    raw = db.execute("SELECT secret_hash FROM tokens").fetchall()
    dump = "\n".join(" ".join(row) for row in rows).encode() + b"".join(r[0] for r in raw)
    for secret in secrets:
        assert secret.encode() not in dump
        assert secret[4:].encode() not in dump and secret[4:20].encode() not in dump


def test_last_used_at_is_kept_without_a_write_per_request(
    stack: Stack, client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    created = new_token(client, new_integrator(client))
    with client_for(stack, created["token"]) as used:
        for _ in range(20):
            assert used.get("/v1/jobs", params={"limit": 1}).status_code == 200
    row = db.execute(
        "SELECT last_used_at, xmin::text::bigint FROM tokens WHERE id = %s", (created["id"],)
    ).fetchone()
    assert row is not None and row[0] is not None
    with client_for(stack, created["token"]) as used:
        for _ in range(20):
            time.sleep(0.1)  # past the cache: the token is read again, not written again
            assert used.get("/v1/jobs", params={"limit": 1}).status_code == 200
    again = db.execute(
        "SELECT last_used_at, xmin::text::bigint FROM tokens WHERE id = %s", (created["id"],)
    ).fetchone()
    assert again == row, "the token row was written again within the minute"


def test_unknown_and_malformed_tokens_are_refused(stack: Stack) -> None:
    for token in ("idm_" + "x" * 43, "idm_", "not-a-token", "idm_\\x00"):
        with client_for(stack, token) as anyone:
            answer = anyone.get("/v1/internal/users")
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_token"


def test_a_token_revoked_during_a_stream_of_its_requests_is_refused_within_a_second(
    stack: Stack, client: httpx.Client
) -> None:
    created = new_token(client, new_integrator(client))
    answers: list[tuple[float, int]] = []
    stop = threading.Event()

    def stream() -> None:
        with client_for(stack, created["token"]) as c:
            while not stop.is_set():
                sent = time.monotonic()
                answers.append((sent, c.get("/v1/jobs", params={"limit": 1}).status_code))

    streams = [threading.Thread(target=stream) for _ in range(3)]
    for thread in streams:
        thread.start()
    time.sleep(1.0)
    assert client.delete(f"/v1/admin/tokens/{created['id']}").status_code == 204
    revoked = time.monotonic()
    time.sleep(2.0)
    stop.set()
    for thread in streams:
        thread.join()
    before = [status for sent, status in answers if sent < revoked - 0.1]
    after = [status for sent, status in answers if sent > revoked + 1.0]
    assert before and set(before) == {200}
    assert after and set(after) == {401}, "a revoked token was served after a second"
    assert client.delete(f"/v1/admin/tokens/{created['id']}").status_code == 204  # again: no-op


def test_an_expired_token_is_refused(stack: Stack, client: httpx.Client) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    created = new_token(client, new_integrator(client), expires_at=expires.isoformat())
    with client_for(stack, created["token"]) as c:
        assert c.get("/v1/jobs").status_code == 200
        wait_until(lambda: c.get("/v1/jobs").status_code == 401, timeout=5, interval=0.2)
    assert datetime.now(UTC) >= expires


def test_disabling_an_integrator_refuses_its_tokens_until_it_is_enabled(
    stack: Stack, client: httpx.Client
) -> None:
    integrator = new_integrator(client)
    created = new_token(client, integrator)
    with client_for(stack, created["token"]) as c:
        assert c.get("/v1/jobs").status_code == 200
        patch = client.patch(f"/v1/admin/integrators/{integrator}", json={"disabled": True})
        assert patch.status_code == 200 and patch.json()["disabled"] is True
        started = time.monotonic()
        wait_until(lambda: c.get("/v1/jobs").status_code == 401, timeout=2, interval=0.05)
        assert time.monotonic() - started < 1.0
        client.patch(f"/v1/admin/integrators/{integrator}", json={"disabled": False})
        wait_until(lambda: c.get("/v1/jobs").status_code == 200, timeout=2, interval=0.05)


def test_bad_token_requests_are_refused_with_the_envelope(client: httpx.Client) -> None:
    integrator = new_integrator(client)
    for body, code in [
        ({"integrator": integrator, "scopes": ["superuser"]}, "validation_error"),
        ({"integrator": integrator, "scopes": []}, "validation_error"),
        (
            {"integrator": "nobody-" + uuid.uuid4().hex[:6], "scopes": ["read"]},
            "integrator_not_found",
        ),
        (
            {"integrator": integrator, "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
            "validation_error",
        ),
    ]:
        answer = client.post("/v1/admin/tokens", json=body)
        assert answer.json()["error"]["code"] == code, answer.text
    assert (
        client.delete(f"/v1/admin/tokens/{uuid.uuid4()}").json()["error"]["code"]
        == "token_not_found"
    )
    assert client.delete("/v1/admin/tokens/nope").status_code == 404
    duplicate = {"name": integrator, "display_name": "again"}
    assert client.post("/v1/admin/integrators", json=duplicate).status_code == 409
