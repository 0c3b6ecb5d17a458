"""The alert rules and the Grafana dashboard under deploy/: promtool accepts the rules and their
unit tests (the alerts fire on the series that should page, and not before their time), every
dashboard query parses as PromQL, and every idmirror series either uses is one a live /metrics
serves."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import new_slug, put_user
from tests.stack import ROOT, wait_until

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "idmirror.json"


def promtool() -> str:
    found = shutil.which("promtool", path=str(Path(sys.executable).parent)) or shutil.which(
        "promtool"
    )
    assert found, "promtool is missing: `make test` takes it from Debian's prometheus package"
    return found


def run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, cwd=RULES.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    run(promtool(), "check", "rules", str(RULES))
    run(promtool(), "test", "rules", str(RULE_TESTS))


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"idmirror:dashboard_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(as_rules))
    run(promtool(), "check", "rules", str(tmp_path / "dashboard.yml"))


def test_the_dashboard_is_laid_out_on_its_datasource_variable() -> None:
    loaded = dashboard()
    assert [v["name"] for v in loaded["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in loaded["panels"]]
    assert len(ids) == len(set(ids))
    for panel in loaded["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24


def served(scrape: str, name: str) -> bool:
    return re.search(rf"^{re.escape(name)}[{{ ]", scrape, re.MULTILINE) is not None


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_series_used_is_served_by_metrics(client: httpx.Client, source: str) -> None:
    # Labelled families appear once something was counted: a failed job, a backfill item.
    user = put_user(client)
    assert client.put(f"/v1/internal/agents/x@{new_slug('gone')}", json={"display_name": "X"})
    backfill = client.post(
        "/v1/internal/backfills",
        content=json.dumps({"type": "agent", "key": f"b@{user['slug']}", "display_name": "B"}),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert backfill.status_code == 202
    exprs = rule_exprs() if source == "alerts" else dashboard_exprs()
    names = {name for expr in exprs for name in re.findall(r"\bidmirror_[a-z_]+\b", expr)}
    assert names

    def unserved() -> set[str]:
        scrape = client.get("/metrics").text
        return {name for name in names if not served(scrape, name)}

    try:
        wait_until(lambda: not unserved(), timeout=15)
    except AssertionError:
        pytest.fail(f"series not served: {sorted(unserved())}")
