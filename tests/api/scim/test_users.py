"""/scim/v2/Users: create, read, replace, patch, deactivate and delete, each write a job, and
the same user read through /v1."""

from datetime import UTC, datetime, timedelta

import httpx

from tests.api.scim.conftest import SCIM_JSON, create, patch, user_body, user_name
from tests.identity.backfill.uploads import agent_item, iso, prefix, run_backfill, user_item


def test_create_answers_201_with_location_etag_and_job(scim: httpx.Client) -> None:
    name = user_name("Ada.Lovelace")
    response = scim.post("Users", json=user_body(name, externalId="okta-1"))
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith(SCIM_JSON)
    user = response.json()
    assert user["userName"] == name and user["externalId"] == "okta-1" and user["active"] is True
    assert response.headers["Location"] == user["meta"]["location"]
    assert user["meta"]["location"].endswith(f"/scim/v2/Users/{user['id']}")
    assert response.headers["ETag"] == user["meta"]["version"]
    assert user["meta"]["version"].startswith('W/"')
    assert response.headers["Idmirror-Job-Id"]
    assert "password" not in user


def test_a_scim_user_is_the_rest_user(scim: httpx.Client, client: httpx.Client) -> None:
    name = user_name("Grace.Hopper")
    user = create(scim, name=name)
    rest = client.get(f"/v1/internal/users/{user['id']}").json()
    assert rest["email"] == name
    assert rest["slug"] == name.lower().replace(".", "-").replace("@", "-")
    assert str(rest["version"]) in user["meta"]["version"]


def test_get_honours_if_none_match_and_attributes(scim: httpx.Client) -> None:
    user = create(scim)
    etag = user["meta"]["version"]
    assert scim.get(f"Users/{user['id']}", headers={"If-None-Match": etag}).status_code == 304
    only = scim.get(f"Users/{user['id']}", params={"attributes": "userName"}).json()
    assert set(only) == {"schemas", "id", "userName"}
    without = scim.get(f"Users/{user['id']}", params={"excludedAttributes": "emails"}).json()
    assert "emails" not in without and without["userName"] == user["userName"]


def test_put_replaces_and_never_creates(scim: httpx.Client) -> None:
    user = create(scim)
    body = user_body(user["userName"], displayName="Countess", active=False)
    replaced = scim.put(f"Users/{user['id']}", json=body)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["displayName"] == "Countess" and replaced.json()["active"] is False
    missing = scim.put("Users/6f1c2a52-3d1e-4c8a-9a4b-2f4f0c9d7e11", json=body)
    assert missing.status_code == 404
    assert missing.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert missing.json()["status"] == "404"


def test_if_match_on_a_stale_version_is_412(scim: httpx.Client) -> None:
    user = create(scim)
    stale = scim.put(
        f"Users/{user['id']}", json=user_body(user["userName"]), headers={"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412, stale.text
    fresh = scim.put(
        f"Users/{user['id']}",
        json=user_body(user["userName"], displayName="Fresh"),
        headers={"If-Match": user["meta"]["version"]},
    )
    assert fresh.status_code == 200, fresh.text


def test_patch_with_a_value_path_filter(scim: httpx.Client) -> None:
    user = create(scim)
    ops = [
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "new@example.com"},
        {"op": "add", "path": "name.middleName", "value": "Byron"},
        {"op": "remove", "path": "displayName"},
    ]
    patched = scim.patch(f"Users/{user['id']}", json=patch(ops))
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["emails"] == [{"value": "new@example.com", "type": "work", "primary": True}]
    assert body["name"]["middleName"] == "Byron" and "displayName" not in body


def test_patch_on_a_missing_path_target_is_a_scim_error(scim: httpx.Client) -> None:
    user = create(scim)
    ops = [{"op": "replace", "path": 'emails[type eq "home"].value', "value": "x@example.com"}]
    refused = scim.patch(f"Users/{user['id']}", json=patch(ops))
    assert refused.status_code == 400
    assert refused.json()["scimType"] == "noTarget"
    assert refused.headers["Idmirror-Job-Id"]


def test_deactivation_is_not_a_delete(scim: httpx.Client) -> None:
    user = create(scim)
    ops = [{"op": "replace", "path": "active", "value": False}]
    assert scim.patch(f"Users/{user['id']}", json=patch(ops)).json()["active"] is False
    assert scim.get(f"Users/{user['id']}").json()["active"] is False
    deleted = scim.delete(f"Users/{user['id']}")
    assert deleted.status_code == 204 and deleted.headers["Idmirror-Job-Id"]
    assert scim.get(f"Users/{user['id']}").status_code == 404
    assert scim.delete(f"Users/{user['id']}").status_code == 404


def test_a_taken_user_name_is_409_uniqueness(scim: httpx.Client) -> None:
    user = create(scim)
    again = scim.post("Users", json=user_body(user["userName"].upper()))
    assert again.status_code == 409, again.text
    assert again.json()["scimType"] == "uniqueness"


def test_bad_input_is_answered_in_the_scim_error_schema(scim: httpx.Client) -> None:
    no_name = scim.post("Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]})
    assert no_name.status_code == 400 and no_name.json()["scimType"] == "invalidValue"
    not_json = scim.post("Users", content=b"{nope")
    assert not_json.status_code == 400 and not_json.json()["scimType"] == "invalidSyntax"
    assert scim.get("Users/not-a-uuid").status_code == 404
    bad_filter = scim.get("Users", params={"filter": "userName eq"})
    assert bad_filter.status_code == 400 and bad_filter.json()["scimType"] == "invalidFilter"


def test_application_json_is_accepted_and_no_token_is_refused(scim: httpx.Client) -> None:
    answer = scim.post("Users", json=user_body(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 201
    refused = httpx.get(f"{scim.base_url}Users", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and refused.json()["status"] == "401"


def test_a_scim_write_to_backfilled_identities_makes_their_lines_read_again(
    scim: httpx.Client, client: httpx.Client
) -> None:
    """A backfill line counts unchanged, unread, while its row holds the line's digest
    (identity/backfill/known.py): a SCIM write of the fields the line sets must clear it, so
    that sending the line again writes them back as the long way does."""
    slug = prefix()
    user, agent = user_item(slug), agent_item(f"bot@{slug}", display_name="Backfilled")
    assert run_backfill(client, [user, agent])["counts"]["created"] == 2
    agent_id = client.get(f"/v1/agents/bot@{slug}").json()["id"]
    email = [{"value": "scim@example.com", "primary": True}]
    for path, operation in (
        (f"Users/{user['id']}", {"op": "replace", "path": "emails", "value": email}),
        (f"Agents/{agent_id}", {"op": "replace", "path": "displayName", "value": "By SCIM"}),
    ):
        answer = scim.patch(path, json=patch([operation]))
        assert answer.status_code == 200, answer.text
    again = run_backfill(client, [user, agent])["counts"]
    assert again["updated"] == 2 and again["unchanged"] == 0, again
    assert client.get(f"/v1/internal/users/{user['id']}").json()["email"] == user["email"]
    assert client.get(f"/v1/agents/bot@{slug}").json()["display_name"] == "Backfilled"


def test_a_scim_write_of_other_fields_makes_older_backfill_lines_superseded(
    scim: httpx.Client, client: httpx.Client
) -> None:
    """A SCIM write that leaves the line's fields alone still makes the row newer than a line
    of an earlier `source_updated_at`: read again, such lines are superseded, not unchanged."""
    slug, yesterday = prefix(), iso(datetime.now(UTC) - timedelta(days=1))
    user = user_item(slug, source_updated_at=yesterday)
    agent = agent_item(f"bot@{slug}", source_updated_at=yesterday)
    assert run_backfill(client, [user, agent])["counts"]["created"] == 2
    agent_id = client.get(f"/v1/agents/bot@{slug}").json()["id"]
    for path in (f"Users/{user['id']}", f"Agents/{agent_id}"):
        answer = scim.patch(path, json=patch([{"op": "replace", "path": "active", "value": False}]))
        assert answer.status_code == 200, answer.text
    again = run_backfill(client, [user, agent])["counts"]
    assert again["superseded"] == 2 and again["unchanged"] == 0, again
