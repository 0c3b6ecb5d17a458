"""What the edge lets through without a token: /healthz and /readyz always, /metrics only with
the metrics (or admin) scope unless IDMIRROR_METRICS_PUBLIC is set; refusals are counted by
reason."""

from pathlib import Path

import httpx

from tests.integrators import client_for, new_integrator, new_token
from tests.stack import Stack


def refused(metrics: str, reason: str) -> float:
    series = f'idmirror_requests_refused_total{{reason="{reason}"}} '
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(series))


def test_metrics_need_the_metrics_scope_and_probes_need_nothing(
    stack: Stack, client: httpx.Client
) -> None:
    assert httpx.get(f"{stack.base_url}/healthz").status_code == 200
    assert httpx.get(f"{stack.base_url}/readyz").status_code == 200
    before = refused(client.get("/metrics").text, "invalid_token")
    anonymous = httpx.get(f"{stack.base_url}/metrics")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_token"
    integrator = new_integrator(client)
    with client_for(stack, new_token(client, integrator, ["metrics"])["token"]) as scraper:
        assert "idmirror_jobs_pending" in scraper.get("/metrics").text
    with client_for(stack, new_token(client, integrator, ["read"])["token"]) as reader:
        assert reader.get("/metrics").json()["error"]["code"] == "insufficient_scope"
    assert refused(client.get("/metrics").text, "invalid_token") == before + 1


def test_public_metrics_need_no_token(stack: Stack, tmp_home: Path) -> None:
    public = Stack(stack.database_url, stack.redis_url, tmp_home, metrics_public="true")
    public.start("api")
    try:
        assert httpx.get(f"{public.base_url}/metrics").status_code == 200
        assert httpx.get(f"{public.base_url}/v1/jobs").status_code == 401
    finally:
        public.stop()
