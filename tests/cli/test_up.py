"""`idmirror up` (what `make run` starts) on the embedded services, as a new user runs it: every
line says which process wrote it, a clean start warns of nothing, Ctrl-C stops each process
once, and a second `up` on the same IDMIRROR_HOME is refused."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from cli.embedded import free_port
from cli.up import AlreadyRunning, hold_home
from tests.stack import ROOT, wait_until

pytestmark = pytest.mark.slow

NAMES = ("api", "worker", "beat", "flower")


def answers(url: str, auth: tuple[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, timeout=2, auth=auth).status_code == 200
    except httpx.HTTPError:
        return False


def flower_asks_for_its_login(home: Path, printed: str, flower: str) -> None:
    """Flower answers with the login `up` generated, kept under IDMIRROR_HOME and printed, and
    refuses requests without it."""
    login = (home / "flower-login").read_text().strip()
    assert f"(login {login})" in printed, "up prints Flower's login"
    user, _, password = login.partition(":")
    wait_until(lambda: answers(flower, (user, password)), timeout=60, interval=0.5)
    assert httpx.get(flower, timeout=5).status_code == 401


def test_up_serves_the_api_worker_and_flower_on_embedded_services_and_stops_cleanly(
    tmp_home: Path,
) -> None:
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDMIRROR_")}
    env.update(
        IDMIRROR_HOME=str(tmp_home),
        IDMIRROR_PORT=str(port),
        IDMIRROR_FLOWER_PORT=str(flower_port),
    )
    command = [sys.executable, "-m", "cli", "up"]
    output = tmp_home / "up.log"
    with output.open("wb") as log:
        # In a process group of its own, as a terminal runs a command in the foreground.
        up = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "idmirror is up" in output.read_text(), timeout=90, interval=0.5)
        assert answers(base + "/readyz")
        token = (tmp_home / "token").read_text().strip()
        assert f"export IDMIRROR_TOKEN={token}\n" in output.read_text()
        response = httpx.put(
            f"{base}/v1/internal/users/{uuid.uuid4()}",
            json={"email": "first@example.com", "slug": "first"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200 and response.json()["outcome"] == "created"
        flower_asks_for_its_login(tmp_home, output.read_text(), f"http://127.0.0.1:{flower_port}/")

        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert (second.returncode, second.stdout) == (1, "")
        assert second.stderr == f"idmirror: idmirror up already runs on {tmp_home} (pid {up.pid})\n"
    finally:
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        up.wait(60)
    assert up.returncode == 0
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_home) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [], "up must stop the servers it started"
    hold_home(tmp_home).close()  # the lock went with it

    lines = output.read_text().splitlines()
    prefixes = {line.split(" | ")[0].strip() for line in lines if " | " in line}
    assert prefixes == set(NAMES)
    assert [line for line in lines if "warn" in line.lower()] == []
    stops = [line for line in lines if " stopped" in line]
    assert sorted(stops[:4]) == sorted(f"{name} stopped" for name in NAMES)
    assert stops[4:] == ["embedded Redis stopped", "embedded PostgreSQL stopped"]
    assert sum("Warm shutdown" in line for line in lines) == 1
    assert sum("Finished server process" in line for line in lines) == 1


def test_the_home_lock_goes_with_its_holder_however_that_ends(tmp_home: Path) -> None:
    hold = "import sys, time; from pathlib import Path; from cli.up import hold_home; "
    hold += "lock = hold_home(Path(sys.argv[1])); print(flush=True); time.sleep(60)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_home)], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"\n"
    with pytest.raises(AlreadyRunning, match=rf"\(pid {holder.pid}\)$"):
        hold_home(tmp_home)
    holder.kill()  # no chance to clean up
    holder.wait()
    hold_home(tmp_home).close()


def test_a_server_older_than_postgresql_15_is_refused() -> None:
    from identity.db import UnsupportedServer, check_server_version

    check_server_version(150019)  # the machine's own 15.19
    check_server_version(180006)
    with pytest.raises(UnsupportedServer, match="PostgreSQL 14 is too old"):
        check_server_version(140011)
