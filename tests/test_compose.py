"""docker-compose.yml is valid Compose (checked by the real Compose v2 binary) and runs the same
commands as a local install."""

import json
import subprocess
from pathlib import Path
from typing import Any

import compose
import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = Path(compose.__file__).parent / "docker-compose"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = subprocess.run(
        [str(COMPOSE), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


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
