"""What Microsoft Entra and Okta really send, accepted as they mean it; a provider's retry
changes nothing; and SCIM writes keep their order with /v1 writes to the same user."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.api.scim.conftest import USER_SCHEMA, create, patch, user_body, user_name

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def entra_user(upn: str) -> dict[str, object]:
    """Entra's create, as its provisioning service sends it."""
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "externalId": upn.split("@")[0],
        "userName": upn,
        "active": True,
        "displayName": "Test User",
        "emails": [{"primary": True, "type": "work", "value": upn}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Test User", "familyName": "User", "givenName": "Test"},
        "roles": [],
        ENTERPRISE: {"department": "Research", "employeeNumber": "42"},
    }


def test_entra_looks_up_by_user_name_and_external_id_before_creating(scim: httpx.Client) -> None:
    upn = user_name("Test_User")
    absent = scim.get("Users", params={"filter": f'userName eq "{upn}"'}).json()
    assert absent["totalResults"] == 0 and absent["Resources"] == []
    created = scim.post("Users", json=entra_user(upn))
    assert created.status_code == 201, created.text
    assert created.json()[ENTERPRISE]["department"] == "Research"
    for filter in (f'userName eq "{upn}"', f'externalId eq "{upn.split("@")[0]}"'):
        found = scim.get("Users", params={"filter": filter}).json()
        assert [user["id"] for user in found["Resources"]] == [created.json()["id"]]


def test_entra_patch_with_capitalised_ops_string_booleans_and_remove_values(
    scim: httpx.Client,
) -> None:
    user = create(scim)
    ops: list[dict[str, Any]] = [
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "Add", "path": 'emails[type eq "home"].value', "value": "home@example.org"},
        {"op": "Replace", "path": "name.givenName", "value": "Augusta"},
        {"op": "Remove", "path": "emails", "value": [{"value": user["userName"]}]},
    ]
    patched = scim.patch(f"Users/{user['id']}", json=patch(ops))
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["active"] is False and body["name"]["givenName"] == "Augusta"
    assert [email["value"] for email in body["emails"]] == ["home@example.org"]


def test_a_strict_client_may_not_remove_by_value(scim: httpx.Client) -> None:
    user = create(scim)
    ops = [{"op": "remove", "path": "emails", "value": [{"value": user["userName"]}]}]
    refused = scim.patch(f"Users/{user['id']}", json=patch(ops))
    assert refused.status_code == 400 and refused.json()["scimType"] == "invalidValue"


def test_okta_deactivates_with_a_put_of_the_full_resource(scim: httpx.Client) -> None:
    user = create(scim)
    okta = {**user, "active": False}
    okta.pop("meta")
    replaced = scim.put(f"Users/{user['id']}", json=okta)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["active"] is False and replaced.json()["id"] == user["id"]
    found = scim.get(
        "Users",
        params={"filter": f'userName eq "{user["userName"]}"', "startIndex": 1, "count": 100},
    ).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["active"] is False
    assert found["itemsPerPage"] == 1 and found["startIndex"] == 1


def test_a_retried_request_changes_nothing(scim: httpx.Client) -> None:
    user = create(scim)
    ops = patch([{"op": "replace", "path": "displayName", "value": "Once"}])
    first = scim.patch(f"Users/{user['id']}", json=ops)
    again = scim.patch(f"Users/{user['id']}", json=ops)
    assert first.status_code == again.status_code == 200
    assert again.json()["meta"] == first.json()["meta"]
    assert again.headers["Idmirror-Job-Id"] != first.headers["Idmirror-Job-Id"]
    key = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
    body = user_body()
    made = scim.post("Users", json=body, headers=key)
    remade = scim.post("Users", json=body, headers=key)
    assert made.status_code == remade.status_code == 201
    assert remade.json()["id"] == made.json()["id"]
    assert remade.headers["Idmirror-Job-Id"] == made.headers["Idmirror-Job-Id"]


def test_scim_and_rest_writes_of_one_user_apply_in_order(
    scim: httpx.Client, client: httpx.Client
) -> None:
    user = create(scim)
    rest = client.get(f"/v1/internal/users/{user['id']}").json()

    def rest_put(i: int) -> int:
        body = {"email": f"rest{i}@example.com", "slug": rest["slug"]}
        return client.put(f"/v1/internal/users/{user['id']}", json=body).status_code

    def scim_patch(i: int) -> int:
        ops = patch([{"op": "replace", "path": "displayName", "value": f"v{i}"}])
        return scim.patch(f"Users/{user['id']}", json=ops).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: (rest_put if i % 2 else scim_patch)(i), range(20)))
    assert set(codes) == {200}
    jobs = client.get("/v1/jobs", params={"key": f"user:{user['id']}", "limit": 50}).json()
    ordered = sorted(jobs["items"], key=lambda job: job["seq"])
    versions = [job["result"].get("version") for job in ordered if job["status"] == "applied"]
    assert versions == sorted(versions)
    final = scim.get(f"Users/{user['id']}").json()
    last_patch = next(j for j in reversed(ordered) if j["kind"] == "user.scim_patch")
    assert final["displayName"] == last_patch["result"]["scim"]["displayName"]
    assert final["userName"] == user["userName"]
