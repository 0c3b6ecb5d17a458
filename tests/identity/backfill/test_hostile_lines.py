"""A hostile line of a backfill fails alone, with its line number, whatever it holds."""

import httpx

from tests.identity.backfill.uploads import agent_item, failures, prefix, run_backfill, user_item

HOSTILE_METADATA = {
    "overflow": '{"n": 1e400}',
    "surrogate": '{"t": "\\ud800"}',
    "deep": '{"a":' * 990 + "1" + "}" * 990,
}


def test_hostile_lines_fail_alone_and_the_upload_completes(client: httpx.Client) -> None:
    slug = prefix()
    lines: list[dict[str, object] | str] = [user_item(slug)]
    for name, metadata in HOSTILE_METADATA.items():
        lines.append(
            f'{{"type": "agent", "key": "{name}@{slug}", "display_name": "H", '
            f'"metadata": {metadata}}}'
        )
    lines.append(agent_item(f"fine@{slug}"))
    run = run_backfill(client, lines)
    assert run["status"] == "completed", run
    assert run["counts"]["created"] == 2 and run["counts"]["failed"] == 3
    found = {f["line"]: f["error"] for f in failures(client, run["id"])}
    assert sorted(found) == [2, 3, 4]
    kinds = [found[line]["details"]["errors"][0]["type"] for line in (2, 3, 4)]
    assert kinds == ["json_not_finite", "json_lone_surrogate", "json_too_deep"]
    assert client.get(f"/v1/agents/fine@{slug}").status_code == 200
