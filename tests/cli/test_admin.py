"""`idmirror integrators`, `idmirror tokens` and `idmirror audit` against a running API."""

import os
import subprocess
import sys
import uuid

import httpx

from tests.integrators import client_for
from tests.stack import ROOT, TOKEN, Stack


def idmirror(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IDMIRROR_URL": stack.base_url, "IDMIRROR_TOKEN": TOKEN, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_an_operator_creates_an_integrator_and_a_token_uses_it_and_revokes_it(
    stack: Stack, client: httpx.Client
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    made = idmirror(
        stack,
        "integrators",
        "create",
        name,
        "--display-name",
        "CLI",
        "--per-second",
        "5",
        "--burst",
        "10",
    )
    assert made.returncode == 0, made.stderr
    created = idmirror(
        stack, "tokens", "create", "--integrator", name, "--scope", "read", "--scope", "jobs:read",
        "--name", "ci", "--expires-in", "90d",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("idm_")
    with client_for(stack, token) as c:
        assert c.get("/v1/jobs").status_code == 200
    listed = idmirror(stack, "tokens", "list", "--integrator", name)
    assert "ci" in listed.stdout and token not in listed.stdout
    token_id = client.get("/v1/admin/tokens", params={"integrator": name}).json()["items"][0]["id"]
    assert idmirror(stack, "tokens", "revoke", token_id).returncode == 0
    with client_for(stack, token) as c:
        assert c.get("/v1/jobs").status_code == 401
    disabled = idmirror(stack, "integrators", "update", name, "--disable")
    assert disabled.returncode == 0 and "True" in disabled.stdout
    assert name in idmirror(stack, "integrators", "list").stdout
    trail = idmirror(stack, "audit", "--integrator", name, "--since", "1h")
    assert trail.returncode == 0
    assert "token.revoke" in idmirror(stack, "audit", "--key", f"integrator:{name}").stdout
    unknown = idmirror(stack, "tokens", "create", "--integrator", "nobody-x", "--scope", "read")
    assert unknown.returncode == 1 and "integrator_not_found" in unknown.stdout
    bad = idmirror(
        stack, "tokens", "create", "--integrator", name, "--scope", "read", "--expires-in", "soon"
    )
    assert bad.returncode == 2
