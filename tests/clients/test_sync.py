"""`Client` against the live stack: typed answers, jobs, typed errors, and a backfill streamed
from a generator."""

import uuid
from typing import Any

import pytest
from idmirror_client import (
    AgentGraphUpdate,
    AgentUpsert,
    AgentWrite,
    Backfill,
    Client,
    Conflict,
    ConnectionFailed,
    Job,
    NodeTypeUpsert,
    NotFound,
    Unauthorized,
    UserUpsert,
    UserWrite,
    ValidationFailed,
)
from idmirror_client.transport import RetryPolicy

from cli.embedded import free_port
from tests.conftest import new_slug
from tests.stack import Stack


def new_user(api: Client) -> UserWrite:
    written = api.upsert_user(uuid.uuid4(), UserUpsert(email="c@example.com", slug=new_slug("c")))
    assert isinstance(written, UserWrite)
    return written


def test_writes_answer_typed_results_and_the_same_body_is_a_no_op(api: Client) -> None:
    user_id, slug = uuid.uuid4(), new_slug("c")
    body = UserUpsert(email="Ada@Example.COM", slug=slug, metadata={"team": "a"})
    first = api.upsert_user(user_id, body)
    again = api.upsert_user(user_id, body)
    assert isinstance(first, UserWrite) and isinstance(again, UserWrite)
    assert (first.created, first.outcome, first.email) == (True, "created", "Ada@example.com")
    assert (again.created, again.outcome, again.version) == (False, "unchanged", first.version)
    assert api.get_user(user_id).slug == slug

    agent = api.upsert_agent(f"scout@{slug}", AgentUpsert(display_name="Scout"))
    assert isinstance(agent, AgentWrite) and agent.user_slug == slug
    assert api.get_agent(agent.id).display_name == "Scout"
    page = api.list_agents(user_slug=slug, limit=1)
    assert [a.slug for a in page.items] == ["scout"] and page.next_cursor is None
    assert api.delete_agent(f"scout@{slug}").outcome == "deleted"
    with pytest.raises(NotFound):
        api.get_agent(f"scout@{slug}")


def test_a_graph_update_names_its_new_nodes(api: Client) -> None:
    user = new_user(api)
    api.upsert_agent(f"g@{user.slug}", AgentUpsert(display_name="G"))
    node_type = uuid.uuid4()
    api.upsert_node_type(node_type, NodeTypeUpsert(name="step"))
    operations: list[dict[str, Any]] = [
        {"op": "create_node", "node_type_id": str(node_type), "temp_ref_id": "a"},
        {"op": "create_node", "node_type_id": str(node_type), "temp_ref_id": "b"},
        {"op": "create_connection", "source_temp_ref_id": "a", "target_temp_ref_id": "b"},
    ]
    update = api.update_agent_graph(f"g@{user.slug}", AgentGraphUpdate(operations=operations))
    assert not isinstance(update, Job)
    assert sorted(n.temp_ref_id or "" for n in update.created_nodes) == ["a", "b"]
    graph = api.get_agent_graph(f"g@{user.slug}")
    assert len(graph.nodes) == 2 and len(graph.connections) == 1


def test_respond_async_answers_the_job_and_wait_for_job_follows_it(api: Client) -> None:
    user = new_user(api)
    job = api.upsert_agent(f"a@{user.slug}", AgentUpsert(display_name="A"), respond_async=True)
    assert isinstance(job, Job) and job.kind == "agent.upsert"
    done = api.wait_for_job(job.id)
    assert done.status == "applied" and done.result is not None
    assert done.result["display_name"] == "A"
    history = api.list_jobs(key=f"agent:a@{user.slug}")
    assert [j.id for j in history.items] == [job.id]


def test_errors_are_typed_and_carry_the_envelope_and_the_job(api: Client, stack: Stack) -> None:
    with pytest.raises(NotFound) as missing_user:
        api.upsert_agent(f"x@{new_slug('nobody')}", AgentUpsert(display_name="X"))
    assert missing_user.value.code == "user_not_found" and missing_user.value.job_id
    assert api.get_job(missing_user.value.job_id).status == "failed"

    taken = new_user(api).slug
    with pytest.raises(Conflict) as conflict:
        api.upsert_user(uuid.uuid4(), UserUpsert(email="t@example.com", slug=taken))
    assert conflict.value.code == "slug_taken" and conflict.value.status == 409

    with pytest.raises(ValidationFailed) as invalid:
        api.upsert_user(uuid.uuid4(), UserUpsert(email="not an address", slug="ok"))
    assert invalid.value.status == 422 and invalid.value.details["errors"]
    assert invalid.value.job_id is None  # refused before it became a job

    with Client(stack.base_url, "wrong") as stranger, pytest.raises(Unauthorized):
        stranger.get_user(uuid.uuid4())


def test_an_unreachable_api_is_named_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    quick = RetryPolicy(retries=2, backoff=0.01)
    with Client(url, "t", retry=quick) as client, pytest.raises(ConnectionFailed) as failed:
        client.get_health()
    assert url in str(failed.value)


def test_a_backfill_streams_a_generator_and_is_followed_to_its_end(api: Client) -> None:
    owner = new_slug("bf")
    user_id = str(uuid.uuid4())

    def items() -> Any:
        yield {"type": "user", "id": user_id, "email": "b@example.com", "slug": owner}
        for i in range(300):
            yield {"type": "agent", "key": f"a{i}@{owner}", "display_name": f"A{i}"}
        yield {"type": "agent", "key": "bad key", "display_name": "X"}

    seen: list[Backfill] = []
    sent: list[int] = []
    run = api.backfill(items(), progress=seen.append, uploaded=sent.append, poll=0.1)
    assert run.status == "completed" and seen[-1] == run
    assert (run.counts.received, run.counts.created, run.counts.failed) == (302, 301, 1)
    assert sum(sent) > 300 * 40
    failures = api.list_backfill_failures(run.id)
    assert [(f.line, f.error["code"]) for f in failures.items] == [(302, "invalid_agent_key")]
    assert api.get_agent(f"a299@{owner}").display_name == "A299"


def test_an_admin_manages_integrators_tokens_and_reads_the_audit_trail(
    api: Client, stack: Stack
) -> None:
    name = new_slug("cli")
    made = api.create_integrator(name, "Client", per_second=5, burst=10)
    assert (made.name, made.rate_limit.burst) == (name, 10)
    assert api.update_integrator(name, disabled=True).disabled is True
    api.update_integrator(name, disabled=False)
    assert api.get_integrator(name).display_name == "Client"
    assert name in [i.name for i in api.list_integrators(limit=500).items]
    created = api.create_token(name, ["read", "users:write"], name="client")
    assert created.token.startswith("idm_")
    with Client(stack.base_url, created.token) as theirs:
        user = new_user(theirs)
    assert [t.id for t in api.list_tokens(integrator=name).items] == [created.id]
    api.revoke_token(created.id)
    assert api.list_tokens(integrator=name).items[0].revoked_at is not None
    assert api.move_user(user.id, None).owner is None
    actions = [e.action for e in api.list_audit(key=f"integrator:{name}").items]
    assert actions == [
        "token.revoke",
        "token.create",
        "integrator.update",
        "integrator.update",
        "integrator.create",
    ]


def test_failed_jobs_are_discarded_and_a_keys_history_read(api: Client) -> None:
    slug = new_slug("nobody")
    with pytest.raises(NotFound) as failed:
        api.upsert_agent(f"x@{slug}", AgentUpsert(display_name="X"))
    job_id = failed.value.job_id
    assert job_id is not None
    assert api.discard_job(job_id).discarded_at is not None
    assert api.discard_jobs(key=f"x@{slug}").discarded == []  # nothing open is left
    history = api.get_history(f"x@{slug}")
    assert history.keys == [f"agent:x@{slug}"]
    assert [(e.job_id, e.discarded) for e in history.items] == [(uuid.UUID(job_id), True)]
    oldest = api.list_jobs(key=f"x@{slug}", order="oldest")
    assert [j.id for j in oldest.items] == [uuid.UUID(job_id)]
    assert api.get_stall().status in ("idle", "moving")
