"""What a backfill refuses: bad lines fail as items with their line numbers, a retry applies them
once their cause is fixed, and bad requests get the JSON error envelope."""

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from identity.pagination import encode_cursor
from tests.identity.backfill.uploads import (
    NDJSON,
    agent_item,
    failures,
    ndjson,
    post_ndjson,
    prefix,
    run_backfill,
    user_item,
    wait_done,
)


def test_bad_lines_become_failed_items_with_their_line_numbers_and_the_rest_applies(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    node_type = str(uuid.uuid4())
    lines: list[dict[str, Any] | str] = [
        user_item(f"{p}-u"),  # 1
        "",  # 2: blank lines are not items
        "{not json",  # 3
        {"type": "robot", "id": "x"},  # 4
        agent_item(f"bad@@{p}-u"),  # 5
        agent_item(f"hook@{p}-u", webhook_url="http://169.254.169.254/latest"),  # 6
        {"type": "user", "id": "not-a-uuid", "email": "x@example.com", "slug": f"{p}-x"},  # 7
        {"type": "agent", "key": f"nameless@{p}-u"},  # 8: display_name missing
        agent_item(f"orphan@{p}-nobody"),  # 9: no such user
        agent_item(f"ok@{p}-u", metadata={"big": "x" * 20_000}),  # 10: metadata over 16 KiB
        {
            "type": "node_type",
            "id": node_type,
            "name": "step",
            "params_schema": {"type": "object"},
        },  # 11
        agent_item(f"ok@{p}-u"),  # 12
        # 13 and 14: numbers that validation reads (as infinity, as NaN) but JSON cannot hold
        json.dumps(agent_item(f"huge@{p}-u", metadata={"n": 0})).replace('"n": 0', '"n": 1e999999'),
        json.dumps(agent_item(f"nan@{p}-u", metadata={"n": float("nan")})),
    ]
    run = run_backfill(client, lines)
    assert run["status"] == "completed"
    assert run["counts"] == {
        "received": 13,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "superseded": 0,
        "failed": 10,
    }
    found = {f["line"]: f for f in failures(client, run["id"])}
    assert {line: f["error"]["code"] for line, f in found.items()} == {
        3: "validation_error",
        4: "validation_error",
        5: "invalid_agent_key",
        6: "invalid_webhook_url",
        7: "invalid_user_id",
        8: "validation_error",
        9: "user_not_found",
        10: "validation_error",
        13: "validation_error",
        14: "validation_error",
    }
    assert found[8]["key"] == f"agent:nameless@{p}-u"
    assert found[8]["error"]["details"]["errors"][0]["loc"] == "display_name"
    assert found[9]["retryable"] is True and found[3]["retryable"] is False
    assert client.get(f"/v1/agents/ok@{p}-u").json()["display_name"] == "ok"
    assert client.get(f"/v1/node-types/{node_type}").json()["name"] == "step"


def test_retry_applies_failed_items_again_once_their_cause_is_fixed(client: httpx.Client) -> None:
    p = prefix()
    run = run_backfill(client, [agent_item(f"a{i}@{p}-late") for i in range(3)] + ["nope"])
    assert run["counts"]["failed"] == 4
    # While the owner is still missing, a retry fails the same items again.
    assert client.post(f"/v1/internal/backfills/{run['id']}/retry").status_code == 202
    run = wait_done(client, run["id"])
    assert run["counts"]["failed"] == 4 and run["retries"] == 1
    owner = user_item(f"{p}-late")
    client.put(
        f"/v1/internal/users/{owner['id']}", json={"email": owner["email"], "slug": owner["slug"]}
    )

    retried = client.post(f"/v1/internal/backfills/{run['id']}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "running"
    run = wait_done(client, run["id"])
    assert run["status"] == "completed" and run["retries"] == 2
    assert run["counts"] == {
        "received": 4,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "superseded": 0,
        "failed": 1,
    }
    assert [f["line"] for f in failures(client, run["id"])] == [4]
    assert client.get(f"/v1/agents/a2@{p}-late").status_code == 200

    again = client.post(f"/v1/internal/backfills/{run['id']}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "backfill_not_retryable"


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (
            {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"content": b"", "headers": NDJSON, "params": {"prune": "true"}}, 400, "invalid_backfill"),
        (
            {"content": b"", "headers": NDJSON, "params": {"mode": "everything"}},
            422,
            "validation_error",
        ),
        (
            {"content": b"", "headers": NDJSON, "params": {"snapshot_at": "2024-01-01T00:00:00"}},
            422,
            "validation_error",
        ),
        (
            {"content": b"", "headers": NDJSON, "params": {"snapshot_at": "2999-01-01T00:00:00Z"}},
            422,
            "validation_error",
        ),
        ({"json": {"source": "nowhere"}}, 404, "source_not_found"),
        ({"json": {"sauce": "x"}}, 422, "validation_error"),
        (
            {"content": b"[", "headers": {"Content-Type": "application/json"}},
            422,
            "validation_error",
        ),
    ],
)
def test_bad_backfill_requests_get_a_json_error_envelope(
    client: httpx.Client, request_: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/v1/internal/backfills", **request_)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_unknown_backfills_and_bad_cursors_are_json_errors(client: httpx.Client) -> None:
    for path in (
        "/v1/internal/backfills/not-a-uuid",
        f"/v1/internal/backfills/{uuid.uuid4()}",
        f"/v1/internal/backfills/{uuid.uuid4()}/failures",
    ):
        response = client.get(path)
        assert (
            response.status_code == 404 and response.json()["error"]["code"] == "backfill_not_found"
        )
    for action in ("retry", "cancel"):
        response = client.post(f"/v1/internal/backfills/{uuid.uuid4()}/{action}")
        assert response.status_code == 404
    assert (
        client.get("/v1/internal/backfills?cursor=bogus").json()["error"]["code"]
        == "invalid_cursor"
    )
    assert httpx.get(client.base_url.join("/v1/internal/backfills")).status_code == 401


def test_forged_cursors_of_a_backfill_are_400(client: httpx.Client) -> None:
    run = post_ndjson(client, ndjson([user_item(prefix())]))
    for listing, sort_key in (("failures", [2**70]), ("drift", ["agt_\u0000"])):
        response = client.get(
            f"/v1/internal/backfills/{run['id']}/{listing}",
            params={"cursor": encode_cursor(sort_key)},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_cursor"
