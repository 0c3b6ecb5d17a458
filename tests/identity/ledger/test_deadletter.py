"""The dead-letter view: open failed jobs by error code; discarding them one by one or by a
filter; bulk retries pass discarded jobs over; GET /v1/jobs finds a key however it is
written, oldest or newest first."""

import uuid

import httpx

from tests.conftest import new_slug, put_user


def failed_agent(client: httpx.Client, user_slug: str, slug: str = "bot") -> str:
    """An agent write that fails (its user does not exist); its job id."""
    failed = client.put(f"/v1/internal/agents/{slug}@{user_slug}", json={"display_name": "Bot"})
    assert failed.status_code == 404
    return failed.headers["Idmirror-Job-Id"]


def test_a_discarded_job_stays_failed_and_bulk_retries_pass_it_over(
    client: httpx.Client,
) -> None:
    user_slug = new_slug("gone")
    kept, discarded = failed_agent(client, user_slug, "a"), failed_agent(client, user_slug, "b")
    answer = client.post(f"/v1/jobs/{discarded}/discard")
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "failed" and job["discarded_at"] is not None
    again = client.post(f"/v1/jobs/{discarded}/discard").json()
    assert again["discarded_at"] == job["discarded_at"]  # discarding twice changes nothing

    put_user(client, slug=user_slug)
    retried = client.post("/v1/jobs/retry", params={"key": f"a@{user_slug}"}).json()
    assert [r["job_id"] for r in retried["retried"]] == [kept]
    retried = client.post("/v1/jobs/retry", params={"key": f"b@{user_slug}"}).json()
    assert retried == {"retried": [], "already_retried": []}
    by_id = client.post(f"/v1/jobs/{discarded}/retry")  # asked for by its id: still retried
    assert by_id.status_code == 200 and by_id.json()["outcome"] == "created"
    assert (
        client.get(f"/v1/jobs/{discarded}").json()["retried_by"] == by_id.headers["Idmirror-Job-Id"]
    )


def test_only_an_open_failed_job_can_be_discarded(client: httpx.Client) -> None:
    applied = put_user(client)
    job_id = client.get("/v1/jobs", params={"key": applied["id"]}).json()["items"][0]["id"]
    refused = client.post(f"/v1/jobs/{job_id}/discard")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_failed"
    user_slug = new_slug("gone")
    failed = failed_agent(client, user_slug)
    put_user(client, slug=user_slug)
    retry = client.post(f"/v1/jobs/{failed}/retry").headers["Idmirror-Job-Id"]
    refused = client.post(f"/v1/jobs/{failed}/discard")
    assert refused.status_code == 409
    assert refused.json()["error"]["details"]["retry_job_id"] == retry
    missing = client.post(f"/v1/jobs/{uuid.uuid4()}/discard")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"


def test_failed_jobs_matching_a_filter_are_discarded_in_bulk(client: httpx.Client) -> None:
    user_slug = new_slug("gone")
    ids = {failed_agent(client, user_slug, f"bot{i}") for i in range(3)}
    other = failed_agent(client, new_slug("gone"))
    for i in range(3):
        answer = client.post(
            "/v1/jobs/discard", params={"key": f"bot{i}@{user_slug}", "code": "user_not_found"}
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["discarded"]) == 1
    listed = client.get("/v1/jobs", params={"status": "failed", "limit": 500}).json()["items"]
    discarded = {job["id"] for job in listed if job["discarded_at"] is not None}
    assert ids <= discarded and other not in discarded
    assert client.post("/v1/jobs/discard", params={"code": "x" * 65}).status_code == 422


def test_jobs_are_found_by_a_bare_agent_key_or_user_id_oldest_first_on_request(
    client: httpx.Client,
) -> None:
    user = put_user(client)
    for name in ("One", "Two"):
        answer = client.put(
            f"/v1/internal/agents/scout@{user['slug']}", json={"display_name": name}
        )
        assert answer.status_code == 200
    bare = client.get("/v1/jobs", params={"key": f"scout@{user['slug']}"}).json()["items"]
    prefixed = client.get("/v1/jobs", params={"key": f"agent:scout@{user['slug']}"}).json()
    assert [j["id"] for j in bare] == [j["id"] for j in prefixed["items"]]
    assert [j["seq"] for j in bare] == [2, 1]
    oldest = client.get(
        "/v1/jobs", params={"key": f"scout@{user['slug']}", "order": "oldest", "limit": 1}
    ).json()
    assert oldest["items"][0]["seq"] == 1
    rest = client.get(
        "/v1/jobs",
        params={"key": f"scout@{user['slug']}", "order": "oldest", "cursor": oldest["next_cursor"]},
    ).json()
    assert [j["seq"] for j in rest["items"]] == [2]
    by_id = client.get("/v1/jobs", params={"key": user["id"]}).json()["items"]
    assert [j["key"] for j in by_id] == [f"user:{user['id']}"]
    refused = client.get("/v1/jobs", params={"key": "nobody"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_key"
