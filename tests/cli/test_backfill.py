"""`idmirror backfill` checks its options before it uploads anything, and names the URL it could
not reach. (The upload itself: tests/identity/backfill/test_runs.py.)"""

from pathlib import Path

import pytest

from cli.embedded import free_port
from tests.cli.test_main import idmirror


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--mode", "sideways"], "--mode"),
        (["--prune"], "--prune"),
        (["--snapshot-at", "yesterday"], "--snapshot-at"),
        (["--snapshot-at", "2026-01-01T00:00:00"], "--snapshot-at"),
    ],
)
def test_bad_options_are_refused_before_the_upload(
    options: list[str], named: str, tmp_home: Path
) -> None:
    items = tmp_home / "items.ndjson"
    items.write_text('{"type": "user"}\n')
    unreachable = f"http://127.0.0.1:{free_port()}"  # an upload would fail differently
    result = idmirror("backfill", str(items), *options, "--url", unreachable, "--token", "t")
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr and unreachable not in result.stdout + result.stderr


def test_an_unreachable_api_is_named(tmp_home: Path) -> None:
    items = tmp_home / "items.ndjson"
    items.write_text('{"type": "user"}\n')
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = idmirror("backfill", str(items), "--url", unreachable, "--token", "t")
    assert result.returncode == 1
    assert f"could not reach {unreachable}" in result.stdout
