"""The access log: every request, refusals included, with its method, path, status, duration,
job id and request id, as text or as JSON lines; the request id comes back in X-Request-Id."""

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import OwnStack, new_slug
from tests.stack import Stack, wait_until


def access_records(log: Path) -> list[dict[str, Any]]:
    """The access log's records in a JSON log, which has nothing but JSON lines."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in records if r["logger"] == "api.access"]


def test_json_access_records_carry_status_duration_job_and_request_ids(
    own_stack: OwnStack,
) -> None:
    stack: Stack = own_stack("api", log_level="INFO", log_format="json")
    with stack.client() as client:
        accepted = client.put(
            f"/v1/internal/users/{uuid.uuid4()}",
            json={"email": "logged@example.com", "slug": new_slug()},
            headers={"Prefer": "respond-async", "X-Request-Id": "import-7f3a"},
        )
        health = client.get("/healthz")
        unusable = client.get("/healthz", headers={"X-Request-Id": "two words"})
    refused = httpx.get(stack.base_url + "/v1/jobs", headers={"X-Request-Id": "no-token"})
    assert (accepted.status_code, refused.status_code) == (202, 401)
    assert accepted.headers["X-Request-Id"] == "import-7f3a"
    made = health.headers["X-Request-Id"]
    assert re.fullmatch("[0-9a-f]{32}", made)
    assert re.fullmatch("[0-9a-f]{32}", unusable.headers["X-Request-Id"])

    def all_four() -> list[dict[str, Any]] | None:
        found = access_records(stack.log_dir / "api.log")
        return found if len(found) >= 4 else None

    records = wait_until(all_four)
    write, *_ = (r for r in records if r["request_id"] == "import-7f3a")
    assert write["method"] == "PUT" and write["path"] == accepted.request.url.path
    assert write["status"] == 202 and write["level"] == "INFO"
    assert write["pid"] == stack.processes["api"].pid  # one API process: uvicorn runs in it
    assert write["job_id"] == accepted.headers["Idmirror-Job-Id"]
    assert isinstance(write["duration_ms"], float) and write["duration_ms"] > 0
    assert write["message"].startswith(f"PUT {write['path']} 202 ")
    read, *_ = (r for r in records if r["request_id"] == made)
    assert (read["path"], read["status"], read["job_id"]) == ("/healthz", 200, None)
    refusal, *_ = (r for r in records if r["request_id"] == "no-token")
    assert (refusal["path"], refusal["status"]) == ("/v1/jobs", 401)


def test_text_access_lines_say_the_same_in_one_line(own_stack: OwnStack) -> None:
    stack: Stack = own_stack("api", log_level="INFO")
    answer = httpx.get(stack.base_url + "/healthz", headers={"X-Request-Id": "probe-1"})
    assert answer.status_code == 200
    pid = stack.processes["api"].pid  # one API process: uvicorn runs in it
    line = re.compile(
        rf"INFO \[{pid}\] api\.access: GET /healthz 200 \d+\.\dms request=probe-1$", re.M
    )
    wait_until(lambda: line.search((stack.log_dir / "api.log").read_text()))
