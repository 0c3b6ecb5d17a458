"""`idmirror up` (what `make run` starts) on the embedded services, as a new user runs it."""

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
from tests.stack import ROOT, wait_until

pytestmark = pytest.mark.slow


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
    log = open(tmp_home / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "cli", "up"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=90, interval=0.5)
        token = (tmp_home / "token").read_text().strip()
        assert token in (tmp_home / "up.log").read_text(), "up prints the token it generated"
        headers = {"Authorization": f"Bearer {token}"}
        user_id = str(uuid.uuid4())
        response = httpx.put(
            f"{base}/v1/internal/users/{user_id}",
            json={"email": "first@example.com", "slug": "first"},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200 and response.json()["outcome"] == "created"

        def flower_up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{flower_port}/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(flower_up, timeout=60, interval=0.5)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    assert up.returncode == 0
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_home) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [], "up must stop the servers it started"


def test_a_server_older_than_postgresql_15_is_refused() -> None:
    from identity.db import UnsupportedServer, check_server_version

    check_server_version(150019)  # the machine's own 15.19
    check_server_version(180006)
    with pytest.raises(UnsupportedServer, match="PostgreSQL 14 is too old"):
        check_server_version(140011)
