"""The wheel `pip install idmirror` would get: every package of the service, the console's
templates and static files, and the migrations' templates, built without a warning that some
folder would be left out."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.stack import ROOT

SOURCES = ("identity", "api", "tasks", "worker", "cli", "migrations")


def _copy(into: Path) -> None:
    """The tree a build reads, without the checkout's caches (a build writes into it)."""
    for name in (*SOURCES, "pyproject.toml", "celeryconfig.py", "README.md"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / name)


def test_the_wheel_holds_every_package_and_data_file(tmp_path: Path) -> None:
    tree, out = tmp_path / "tree", tmp_path / "out"
    _copy(tree)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "-w", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "absent from the `packages` configuration" not in done.stdout + done.stderr
    [wheel] = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {
        str(init.parent.relative_to(ROOT))
        for source in SOURCES
        for init in (ROOT / source).rglob("__init__.py")
    }
    assert packages and {p for p in packages if f"{p}/__init__.py" not in names} == set()
    data = [
        p.relative_to(ROOT).as_posix()
        for folder in ("api/console/templates", "api/console/static")
        for p in (ROOT / folder).iterdir()
    ]
    data += ["migrations/alembic.ini", "migrations/script.py.mako"]
    assert data and {d for d in data if d not in names} == set()
