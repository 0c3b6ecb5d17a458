"""docker-compose.yml is valid Compose (checked by the real Compose v2 binary), runs the same
commands as a local install, and refuses to start without a token."""

import json
import subprocess
from pathlib import Path
from typing import Any

import compose
import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = Path(compose.__file__).parent / "docker-compose"


TOKEN = "a-long-random-string"


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    """`docker compose config` on the file, with only these variables set besides PATH and HOME."""
    return subprocess.run(
        [str(COMPOSE), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env},
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose_config(IDMIRROR_INTERNAL_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.mark.parametrize("token", [None, ""])
def test_compose_refuses_to_start_without_a_token(token: str | None) -> None:
    result = compose_config(**({} if token is None else {"IDMIRROR_INTERNAL_TOKEN": token}))
    assert result.returncode != 0
    assert "set IDMIRROR_INTERNAL_TOKEN" in result.stderr
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()


def test_every_idmirror_process_gets_the_token_it_was_given(config: dict[str, Any]) -> None:
    tokens = {
        name: s["environment"].get("IDMIRROR_INTERNAL_TOKEN")
        for name, s in config["services"].items()
        if name not in ("postgres", "redis")
    }
    assert set(tokens.values()) == {TOKEN}, tokens


def test_compose_file_has_the_whole_topology(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
        "beat",
        "flower",
    }


def test_services_run_the_idmirror_commands(config: dict[str, Any]) -> None:
    for name in ("migrate", "api", "worker", "beat", "flower"):
        assert config["services"][name]["command"] == ["idmirror", name]


def test_stores_and_api_have_healthchecks_and_start_in_order(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("postgres", "redis", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "beat"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )


def test_every_process_gets_the_same_service_urls(config: dict[str, Any]) -> None:
    urls = {
        (s["environment"]["IDMIRROR_DATABASE_URL"], s["environment"]["IDMIRROR_REDIS_URL"])
        for name, s in config["services"].items()
        if name not in ("postgres", "redis")
    }
    assert len(urls) == 1
