"""Bad input gets its documented 4xx in the error envelope, and changes nothing."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import put_user
from tests.stack import Stack, scalar


def job_count(db: psycopg.Connection[Any]) -> int:
    count: int = scalar(db, "SELECT count(*) FROM jobs")
    return count


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["status"] == status and error["message"]
    return error


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}, {"Authorization": ""}],
)
def test_missing_or_wrong_token_is_401_and_changes_nothing(
    stack: Stack, db: psycopg.Connection[Any], headers: dict[str, str]
) -> None:
    before = job_count(db)
    with httpx.Client(base_url=stack.base_url, headers=headers) as anonymous:
        user_id = str(uuid.uuid4())
        put = anonymous.put(
            f"/v1/internal/users/{user_id}", json={"email": "a@b.co", "slug": "nope"}
        )
        listed = anonymous.get("/v1/jobs")
        for refused in (put, listed):
            assert_error(refused, 401, "invalid_token")
            assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert job_count(db) == before


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "6f1c2a8e-3b7d-4e21-9a55-0c8e2f4b7d1"])
def test_bad_user_id_is_400(client: httpx.Client, db: psycopg.Connection[Any], bad_id: str) -> None:
    before = job_count(db)
    response = client.put(f"/v1/internal/users/{bad_id}", json={"email": "a@b.co", "slug": "ok"})
    assert_error(response, 400, "invalid_user_id")
    assert_error(client.get(f"/v1/internal/users/{bad_id}"), 400, "invalid_user_id")
    assert job_count(db) == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-email", "slug": "ok"}, "body.email"),
        ({"email": "a@example.com", "slug": "Bad_Slug"}, "body.slug"),
        ({"email": "a@example.com", "slug": "-edge"}, "body.slug"),
        ({"email": "a@example.com", "slug": "x" * 65}, "body.slug"),
        ({"email": "a@example.com"}, "body.slug"),
        ({"email": "a@example.com", "slug": "ok", "metadata": "str"}, "body.metadata"),
        (
            {"email": "a@example.com", "slug": "ok", "external_owner": "o" * 65},
            "body.external_owner",
        ),
        (
            {"email": "a@example.com", "slug": "ok", "source_updated_at": "yesterday"},
            "body.source_updated_at",
        ),
        ({"email": "a@example.com", "slug": "ok", "surprise": 1}, "body.surprise"),
    ],
)
def test_bad_user_body_is_422_with_locations(
    client: httpx.Client, db: psycopg.Connection[Any], body: dict[str, Any], field: str
) -> None:
    before = job_count(db)
    error = assert_error(
        client.put(f"/v1/internal/users/{uuid.uuid4()}", json=body), 422, "validation_error"
    )
    assert field in [e["loc"] for e in error["details"]["errors"]]
    assert job_count(db) == before


def test_a_source_time_further_ahead_than_the_allowed_skew_is_422(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """Stored, it would make every later write and delete of the key `superseded` until then."""
    user = put_user(client)
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    before = job_count(db)
    refused = [
        client.put(
            f"/v1/internal/users/{user['id']}",
            json={"email": user["email"], "slug": user["slug"], "source_updated_at": ahead},
        ),
        client.put(
            f"/v1/internal/agents/late@{user['slug']}",
            json={"display_name": "Late", "source_updated_at": ahead},
        ),
        client.put(
            f"/v1/internal/node-types/{uuid.uuid4()}",
            json={"name": "n", "source_updated_at": ahead},
        ),
    ]
    for response in refused:
        error = assert_error(response, 422, "validation_error")
        assert error["details"]["errors"][0]["loc"] == "body.source_updated_at"
        assert error["details"]["errors"][0]["type"] == "too_far_ahead"
    assert job_count(db) == before
    assert client.get(f"/v1/internal/users/{user['id']}").json()["version"] == user["version"]

    within = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()  # ordinary clock skew
    accepted = client.put(
        f"/v1/internal/agents/late@{user['slug']}",
        json={"display_name": "Late", "source_updated_at": within},
    )
    assert accepted.status_code == 200 and accepted.json()["outcome"] == "created"


def test_body_that_is_not_json_is_422(client: httpx.Client) -> None:
    response = client.put(
        f"/v1/internal/users/{uuid.uuid4()}",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "key", ["scout", "scout@a@b", "Scout@owner", "scout@", "@owner", "sc_out@owner", "-x@owner"]
)
def test_bad_agent_key_is_400(client: httpx.Client, db: psycopg.Connection[Any], key: str) -> None:
    before = job_count(db)
    response = client.put(f"/v1/internal/agents/{key}", json={"display_name": "S"})
    assert_error(response, 400, "invalid_agent_key")
    assert job_count(db) == before


def test_oversized_agent_metadata_is_422(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    user = put_user(client)
    before = job_count(db)
    response = client.put(
        f"/v1/internal/agents/big@{user['slug']}",
        json={"display_name": "Big", "metadata": {"blob": "x" * (16 * 1024)}},
    )
    error = assert_error(response, 422, "validation_error")
    assert error["details"]["errors"][0]["loc"] == "body.metadata"
    assert job_count(db) == before


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://api.localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://0x7f.1/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "https://user:pass@example.com/hook",
        "not a url",
        "http://[::1/hook",
        "http://100.64.0.1/hook",
        "http://100.100.100.200/latest/meta-data/",
        # IPv6 forms that carry an IPv4 address: compatible, NAT64, 6to4
        "http://[::127.0.0.1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[2002:7f00:1::]/hook",
        # hosts that IDNA maps to loopback: full-width digits, ideographic dots, circled letters
        "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/hook",
        "http://127\u30020\u30020\u30021/hook",
        "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/hook",
        "http://%31%32%37.0.0.1/hook",
        "http://hooks.example.com:70000/hook",
    ],
)
def test_private_or_malformed_webhook_url_is_refused(
    client: httpx.Client, db: psycopg.Connection[Any], url: str
) -> None:
    user = put_user(client)
    before = job_count(db)
    response = client.put(
        f"/v1/internal/agents/hook@{user['slug']}", json={"display_name": "H", "webhook_url": url}
    )
    assert_error(response, 422, "invalid_webhook_url")
    assert job_count(db) == before
    assert client.get(f"/v1/agents/hook@{user['slug']}").status_code == 404


def test_public_webhook_url_is_accepted(client: httpx.Client) -> None:
    user = put_user(client)
    response = client.put(
        f"/v1/internal/agents/hook@{user['slug']}",
        json={"display_name": "H", "webhook_url": "https://hooks.example.com/x?y=1"},
    )
    assert response.status_code == 200
    assert response.json()["webhook_url"] == "https://hooks.example.com/x?y=1"


def test_bad_list_parameters_are_4xx(client: httpx.Client) -> None:
    assert_error(client.get("/v1/internal/users", params={"limit": 0}), 422, "validation_error")
    assert_error(client.get("/v1/internal/users", params={"limit": 501}), 422, "validation_error")
    assert_error(
        client.get("/v1/internal/users", params={"cursor": "garbage!"}), 400, "invalid_cursor"
    )
    assert_error(client.get("/v1/jobs", params={"status": "done"}), 422, "validation_error")


@pytest.mark.parametrize(
    "path, params",
    [
        ("/v1/jobs", {"key": "user:\u0000"}),
        ("/v1/jobs", {"kind": "user.upsert\u0000"}),
        ("/v1/jobs/retry", {"code": "\u0000"}),
    ],
)
def test_a_filter_holding_a_nul_is_422(
    client: httpx.Client, path: str, params: dict[str, str]
) -> None:
    method = client.post if path.endswith("/retry") else client.get
    assert_error(method(path, params=params), 422, "validation_error")


def test_unknown_route_and_method_use_the_envelope(client: httpx.Client) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.post(f"/v1/internal/users/{uuid.uuid4()}"), 405, "method_not_allowed")


def test_bad_agent_ref_is_400_and_unknown_agent_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/v1/agents/what"), 400, "invalid_agent_ref")
    assert_error(client.get("/v1/agents/agt_000000000000"), 404, "agent_not_found")
    assert_error(client.get("/v1/agents/no-such@no-user"), 404, "agent_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@example.com", "slug": "ok", "plan": "pro\u0000"},
        {"email": "a@example.com", "slug": "ok", "metadata": {"k": "v\u0000"}},
        {"email": "a@example.com", "slug": "ok", "metadata": {"k\u0000": 1}},
    ],
)
def test_nul_characters_are_refused(
    client: httpx.Client, db: psycopg.Connection[Any], body: dict[str, Any]
) -> None:
    before = job_count(db)
    response = client.put(f"/v1/internal/users/{uuid.uuid4()}", json=body)
    assert (
        "NUL" in assert_error(response, 422, "validation_error")["details"]["errors"][0]["message"]
    )
    assert job_count(db) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/integrators", {"name": "nul-a", "display_name": "A\u0000"}),
        ("PATCH", "/v1/admin/integrators/nul-b", {"display_name": "B\u0000"}),
        ("POST", "/v1/admin/tokens", {"integrator": "nul\u0000", "scopes": ["read"]}),
        ("POST", "/v1/internal/backfills", {"source": "crm\u0000"}),
    ],
)
def test_nul_characters_in_admin_and_trigger_bodies_are_refused(
    client: httpx.Client, method: str, path: str, body: dict[str, Any]
) -> None:
    response = client.request(method, path, json=body)
    error = assert_error(response, 422, "validation_error")
    assert "NUL" in error["details"]["errors"][0]["message"]


@pytest.mark.parametrize(
    "path, sort_key",
    [
        ("/v1/internal/users", ["not-a-uuid"]),
        ("/v1/agents", [12]),
        ("/v1/agents", ["agt_\u0000"]),
        ("/v1/jobs", ["yesterday", "x"]),
        ("/v1/node-types", [None]),
    ],
)
def test_forged_cursors_are_400(client: httpx.Client, path: str, sort_key: list[Any]) -> None:
    from identity.pagination import encode_cursor

    assert_error(
        client.get(path, params={"cursor": encode_cursor(sort_key)}), 400, "invalid_cursor"
    )
