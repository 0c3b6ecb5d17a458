"""The OpenAPI document: valid, its operations the ones docs/api.md lists, every error code and
header declared, the bearer scheme with a scope per route (api/limits.py checks the token);
and JSON endpoints refuse other media types with 415."""

import re
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from openapi_spec_validator import validate

from api import contract, errors
from tests.conftest import new_slug
from tests.stack import ROOT, Stack, scalar

METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    served: dict[str, Any] = httpx.get(f"{stack.base_url}/openapi.json").json()
    return served


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if method in METHODS
    }


def documented_table() -> dict[tuple[str, str], tuple[str, str, str]]:
    """docs/api.md's operations: (method, path) -> (operationId, scope, answers)."""
    rows = re.findall(
        r"^\| (GET|PUT|POST|PATCH|DELETE) \| `([^`]+)` \| `(\w+)` \| ([^|]+) \| ([^|]+) \|$",
        (ROOT / "docs" / "api.md").read_text(),
        re.MULTILINE,
    )
    return {(m, p): (op, scope.strip(), answers.strip()) for m, p, op, scope, answers in rows}


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_the_operations_are_the_ones_docs_api_md_lists(document: dict[str, Any]) -> None:
    served = {
        key: (
            operation["operationId"],
            ", ".join(f"`{s}`" for s in operation.get("x-scopes", [])) or "none",
            ", ".join(sorted(operation["responses"])),
        )
        for key, operation in operations(document).items()
    }
    assert served == documented_table()
    ids = [operation_id for operation_id, _, _ in served.values()]
    assert len(ids) == len(set(ids)), "operationIds are unique"
    assert (
        served[("POST", "/v1/agents/{ref}/update")][0],
        served[("PATCH", "/v1/agents/{ref}/update")][0],
    ) == ("updateAgentGraph", "patchAgentGraph")


def test_every_v1_operation_needs_the_bearer_token_with_one_scope(
    document: dict[str, Any],
) -> None:
    scheme = document["components"]["securitySchemes"][contract.BEARER_SCHEME]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for (method, path), operation in operations(document).items():
        if path.startswith("/v1/"):
            [requirement] = operation["security"]
            [scope] = requirement[contract.BEARER_SCHEME]
            assert operation["x-scopes"] == [scope], (method, path)
            assert "401" in operation["responses"]
            parameters = operation.get("parameters", [])
            assert not any(p["name"].lower() == "authorization" for p in parameters)
        else:
            assert "security" not in operation, (method, path)


def declared_codes() -> set[str]:
    """Every `code` an error class of identity/ declares, read from the source."""
    found = {
        code
        for path in (ROOT / "identity").rglob("*.py")
        for code in re.findall(r'^    code(?:, status)? = "(\w+)"', path.read_text(), re.MULTILINE)
    }
    return found - {"error"}  # the base class's placeholder


def test_the_error_envelope_enumerates_every_code_there_is(document: dict[str, Any]) -> None:
    enum = document["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    framework = {*errors.FRAMEWORK_CODES.values(), errors.OTHER_HTTP_ERROR}
    assert set(enum) == declared_codes() | framework
    assert {"backfill_input_lost", "unsupported_media_type", "not_found"} <= set(enum)


def test_writes_declare_their_job_and_their_headers(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        answers = operation["responses"]
        if "Idmirror-Job-Id" not in answers.get("202", {}).get("headers", {}):
            continue
        for status, headers in (
            ("200", ["Idmirror-Job-Id"]),
            ("202", ["Idmirror-Job-Id", "Location"]),
        ):
            assert all(answers[status]["headers"][h]["required"] for h in headers), (method, path)
        job = answers["202"]["content"]["application/json"]["schema"]["$ref"]
        assert job.endswith("/JobOut"), (method, path)
        assert answers["503"]["headers"]["Retry-After"]["required"]
        assert answers["401"]["headers"]["WWW-Authenticate"]["required"]
        for status in set(answers) - {"200", "202"}:
            schema = answers[status]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorEnvelope"), (method, path, status)


def test_writes_take_the_write_headers_and_reads_do_not(document: dict[str, Any]) -> None:
    # api/writes.py reads them from the request; api/contract.py declares them on each
    # operation whose route reads them: every write through the ledger, and the bulk retry.
    expected = contract.write_header_parameters()
    assert [p["name"] for p in expected] == ["prefer", "idempotency-key"]
    taking = set()
    for (method, path), operation in operations(document).items():
        headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
        if headers:
            assert headers == expected, (method, path)
            taking.add((method, path))
        if "Idmirror-Job-Id" in operation["responses"].get("202", {}).get("headers", {}):
            assert (method, path) in taking, (method, path)
        if method == "GET":
            assert (method, path) not in taking, (method, path)
    assert ("POST", "/v1/jobs/retry") in taking
    assert len(taking) == 9  # the write operations docs/api.md lists


def test_request_bodies_carry_examples(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        for media in operation.get("requestBody", {}).get("content", {}).values():
            assert media.get("examples") or media.get("example"), (method, path)


def jobs(db: psycopg.Connection[Any]) -> int:
    count: int = scalar(db, "SELECT count(*) FROM jobs")
    return count


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/x-ndjson"],
)
def test_a_json_body_sent_as_another_media_type_is_415(
    client: httpx.Client, db: psycopg.Connection[Any], content_type: str | None
) -> None:
    before = jobs(db)
    body = b'{"email": "m@example.com", "slug": "media"}'
    headers = {"Content-Type": content_type} if content_type else {}
    for response in (
        client.put(f"/v1/internal/users/{uuid.uuid4()}", content=body, headers=headers),
        client.post("/v1/agents/scout@nobody/update", content=b'{"name": "S"}', headers=headers),
    ):
        assert response.status_code == 415, response.text
        error = response.json()["error"]
        assert error["code"] == "unsupported_media_type"
        assert error["details"]["content_type"] == content_type
    assert jobs(db) == before


def test_json_with_parameters_or_a_json_suffix_is_accepted(client: httpx.Client) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        body = b'{"email": "m@example.com", "slug": "%s"}' % new_slug().encode()
        response = client.put(
            f"/v1/internal/users/{uuid.uuid4()}",
            content=body,
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 200, response.text
