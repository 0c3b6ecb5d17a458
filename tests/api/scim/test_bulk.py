"""POST /scim/v2/Bulk: operations applied in order through the ledger, bulkId references to
what earlier operations created, failOnErrors, and the advertised limits enforced."""

from typing import Any

import httpx

from tests.api.scim.conftest import AGENT_SCHEMA, patch, slug_of, user_body

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def bulk(scim: httpx.Client, operations: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return scim.post("Bulk", json={"schemas": [BULK_REQUEST], "Operations": operations, **extra})


def test_a_user_then_an_agent_it_owns_by_bulk_id(scim: httpx.Client, client: httpx.Client) -> None:
    agent = {"schemas": [AGENT_SCHEMA], "name": "scout", "owners": [{"value": "bulkId:ada"}]}
    operations: list[dict[str, Any]] = [
        {"method": "POST", "bulkId": "ada", "path": "/Users", "data": user_body()},
        {"method": "POST", "bulkId": "scout", "path": "/Agents", "data": agent},
        {
            "method": "PATCH",
            "path": "/Agents/bulkId:scout",
            "data": patch([{"op": "replace", "path": "displayName", "value": "Scout"}]),
        },
        {"method": "delete", "path": "/Users/bulkId:ada"},
    ]
    answer = bulk(scim, operations)
    assert answer.status_code == 200, answer.text
    results = answer.json()["Operations"]
    assert [r["status"] for r in results] == ["201", "201", "200", "204"]
    assert [r.get("bulkId") for r in results] == ["ada", "scout", None, None]
    user_id = results[0]["location"].rsplit("/", 1)[1]
    agent_id = results[1]["location"].rsplit("/", 1)[1]
    assert results[2]["location"].endswith(f"/scim/v2/Agents/{agent_id}")
    assert results[2]["version"].startswith('W/"')
    assert results[3]["location"].endswith(f"/scim/v2/Users/{user_id}")
    jobs = client.get("/v1/jobs", params={"key": f"user:{user_id}"}).json()["items"]
    assert [job["kind"] for job in sorted(jobs, key=lambda job: job["seq"])] == [
        "user.scim_create",
        "user.delete",
    ]
    key = f"agent:scout@{slug_of(operations[0]['data']['userName'])}"
    jobs = client.get("/v1/jobs", params={"key": key}).json()["items"]
    assert {(job["kind"], job["status"]) for job in jobs} == {
        ("agent.scim_create", "applied"),
        ("agent.scim_patch", "applied"),
    }
    assert client.get(f"/v1/agents/{agent_id}").status_code == 404  # went with its owner


def test_errors_fail_alone_until_fail_on_errors(scim: httpx.Client) -> None:
    operations: list[dict[str, Any]] = [
        {"method": "POST", "bulkId": "bad", "path": "/Users", "data": {"schemas": []}},
        {
            "method": "POST",
            "bulkId": "orphan",
            "path": "/Agents",
            "data": {"schemas": [AGENT_SCHEMA], "name": "x", "owners": [{"value": "bulkId:bad"}]},
        },
        {"method": "POST", "bulkId": "good", "path": "/Users", "data": user_body()},
        {"method": "GET", "path": "/Users"},
    ]
    results = bulk(scim, operations).json()["Operations"]
    assert [r["status"] for r in results] == ["400", "409", "201", "400"]
    assert results[1]["response"]["scimType"] == "invalidValue"
    assert "location" not in results[0] and results[0]["response"]["status"] == "400"
    stopped = bulk(scim, operations, failOnErrors=2).json()["Operations"]
    assert [r["status"] for r in stopped] == ["400", "409"]


def test_limits_are_advertised_and_enforced(scim: httpx.Client) -> None:
    advertised = scim.get("ServiceProviderConfig").json()["bulk"]
    assert advertised["supported"] is True
    limit, size = advertised["maxOperations"], advertised["maxPayloadSize"]
    one: dict[str, Any] = {
        "method": "DELETE",
        "path": "/Users/00000000-0000-0000-0000-000000000000",
    }
    many = bulk(scim, [one] * (limit + 1))
    assert many.status_code == 413 and many.json()["scimType"] == "tooMany"
    assert [r["status"] for r in bulk(scim, [one] * 2).json()["Operations"]] == ["404", "404"]
    padding = {"method": "POST", "bulkId": "big", "path": "/Users", "data": {"x": "y" * size}}
    large = bulk(scim, [padding])
    assert large.status_code == 413 and large.json()["status"] == "413"
    malformed = scim.post("Bulk", json={"Operations": []})
    assert malformed.status_code == 400 and malformed.json()["scimType"] == "invalidSyntax"
