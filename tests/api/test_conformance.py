"""Schemathesis against a live stack: every operation of the OpenAPI document gets generated
requests (its examples, boundary values, random ones and sequences that follow links), and no
answer is a 5xx or strays from what the document declares: its status code, content type,
headers and body schema."""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.embedded import EmbeddedRedis
from tests.stack import TOKEN, Stack, database_url_for

HOOKS = Path(__file__).with_name("conformance_hooks.py")
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]
# Enough for each operation to meet its examples, its boundaries and random values, within
# about a minute on two cores.
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def conformance_stack(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack of its own: generated writes and bulk retries must not touch the shared one."""
    home = tmp_path_factory.mktemp("conformance")
    broker = EmbeddedRedis(home / "redis")
    broker.start()
    url = database_url_for(postgres_server, f"idmirror_conformance_{uuid.uuid4().hex[:10]}")
    stack = Stack(url, broker.url, home)
    try:
        stack.start("worker", "--concurrency", "1")
        stack.start("api")
        yield stack
    finally:
        stack.stop()
        broker.stop()


def test_schemathesis_finds_nothing_in_any_operation(
    conformance_stack: Stack, tmp_path: Path
) -> None:
    document = httpx.get(f"{conformance_stack.base_url}/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())
    report = tmp_path / "report.json"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{conformance_stack.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        # One worker: Python 3.11's ast module is not safe to use from two threads at once,
        # and Hypothesis parses sources when it describes a strategy.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "too_slow",  # a busy two-core machine says nothing about the document
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    run = subprocess.run(
        command,
        cwd=tmp_path,  # where it keeps what it found
        env={**conformance_stack.env, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-30_000:] + run.stderr[-5_000:]
    found = json.loads(report.read_text())
    assert (found["failures"], found["errors"]) == ([], [])
    assert found["complete"] and found["operations"]["tested"] == operations
    assert found["test_cases"]["generated"] >= 10 * operations  # more than a token effort
