"""Every `idmirror` command stops at a wrong setting with one line naming it, exit code 2 and
no traceback, before it starts anything; `idmirror --version` answers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import api_settings
from identity.settings import get_settings
from tests.stack import ROOT


def idmirror(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`idmirror ARGS` with only the IDMIRROR_* variables given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDMIRROR_")}
    env.update(settings)
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


COMMANDS = [["up"], ["api"], ["worker"], ["beat"], ["flower"], ["migrate"], ["backfill"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_wrong_setting_stops_every_command_with_one_line(
    command: list[str], tmp_home: Path
) -> None:
    if command == ["backfill"]:
        (tmp_home / "items.ndjson").write_text("")
        command = ["backfill", str(tmp_home / "items.ndjson")]
    result = idmirror(*command, IDMIRROR_HOME=str(tmp_home), IDMIRROR_PORT="eighty")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "idmirror: IDMIRROR_PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]
    assert list(tmp_home.iterdir()) in ([], [tmp_home / "items.ndjson"])


@pytest.mark.parametrize(
    ("command", "missing"),
    [("migrate", "DATABASE"), ("api", "DATABASE"), ("api", "REDIS"), ("worker", "REDIS")]
    + [("beat", "REDIS"), ("flower", "REDIS")],
)
def test_a_process_without_its_service_url_says_which_in_one_line(
    command: str, missing: str
) -> None:
    urls = {
        "IDMIRROR_DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "IDMIRROR_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    del urls[f"IDMIRROR_{missing}_URL"]
    result = idmirror(command, **urls)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"idmirror: IDMIRROR_{missing}_URL is not set; run `idmirror up` for the embedded services"
    ]


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = idmirror("--version")
    assert (result.returncode, result.stdout) == (0, f"idmirror {version('idmirror')}\n")


def test_api_workers_from_the_command_line_reach_every_process_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDMIRROR_API_WORKERS", "1")
    monkeypatch.setenv("IDMIRROR_ACCEPT_WRITERS", "2")
    try:
        settings = api_settings(2)
        assert settings.api_workers == 2 and settings.writers_per_process() == 1
        assert os.environ["IDMIRROR_API_WORKERS"] == "2"  # what uvicorn's processes inherit
        assert api_settings(None).api_workers == 2  # without --workers, the variable says
    finally:
        get_settings.cache_clear()
