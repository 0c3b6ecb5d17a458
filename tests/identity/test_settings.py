"""Settings that are wrong or contradict each other are refused when a process starts, in one
line that names the environment variable; the README's table lists every setting."""

import json
import re

import pytest
from pydantic import ValidationError

from identity.settings import InvalidSettings, Settings, read_settings
from tests.stack import ROOT


def test_an_accept_statement_must_fit_inside_the_accept_bound() -> None:
    with pytest.raises(ValidationError, match="IDMIRROR_ACCEPT_STATEMENT_TIMEOUT_SECONDS"):
        Settings(accept_timeout_seconds=2, accept_statement_timeout_seconds=2)
    assert Settings(accept_timeout_seconds=2, accept_statement_timeout_seconds=1)


@pytest.mark.parametrize(
    ("writers", "processes", "each"), [(2, 1, 2), (2, 2, 1), (2, 3, 1), (8, 2, 4), (5, 2, 2)]
)
def test_accept_writers_are_shared_among_the_api_processes(
    writers: int, processes: int, each: int
) -> None:
    settings = Settings(accept_writers=writers, api_workers=processes)
    assert settings.writers_per_process() == each


@pytest.mark.parametrize(
    ("environment", "line"),
    [
        (
            {"IDMIRROR_PORT": "eighty"},
            "IDMIRROR_PORT: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            {"IDMIRROR_SOURCES": '{"crm": {"base_url": "ftp://crm.internal"}}'},
            "IDMIRROR_SOURCES (crm.base_url): String should match pattern '^https?://'",
        ),
        (
            {"IDMIRROR_ACCEPT_TIMEOUT_SECONDS": "2"},
            "IDMIRROR_ACCEPT_STATEMENT_TIMEOUT_SECONDS must be less than "
            "IDMIRROR_ACCEPT_TIMEOUT_SECONDS, which bounds the statement and the wait for "
            "a connection together",
        ),
        (
            {"IDMIRROR_ACCEPT_WRITERS": "0"},
            "IDMIRROR_ACCEPT_WRITERS: Input should be greater than or equal to 1",
        ),
        (
            {"IDMIRROR_LOG_LEVEL": "loud"},
            "IDMIRROR_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'",
        ),
    ],
)
def test_a_wrong_setting_is_one_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], line: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as refused:
        read_settings()
    assert str(refused.value) == line


def test_a_source_list_that_is_not_json_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDMIRROR_SOURCES", "crm=https://crm.internal")
    with pytest.raises(InvalidSettings, match=r"^IDMIRROR_SOURCES: not valid JSON \(Expecting"):
        read_settings()


def test_the_log_level_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDMIRROR_LOG_LEVEL", "warning")
    assert read_settings().log_level == "WARNING"


def readme_settings() -> dict[str, str]:
    """The README's configuration table: each variable with its default as written."""
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(IDMIRROR_\w+)` \| ([^|]*) \|", section, re.MULTILINE)
    return {name: default.strip().strip("`") for name, default in rows}


def shown(default: object) -> str:
    """A default as the table writes it."""
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, dict):
        return json.dumps(default)
    return str(default)


def test_the_readme_lists_every_setting_with_its_default_and_nothing_else() -> None:
    defaults = {
        f"IDMIRROR_{name.upper()}": shown(field.get_default(call_default_factory=True))
        for name, field in Settings.model_fields.items()
    }
    assert readme_settings() == defaults
