"""Scopes and ownership: each route needs its scope; an integrator's identities, jobs and
backfills do not exist for another integrator, whose writes to them are refused; concurrent
writes of two integrators to one key end with exactly one owner; an admin sees all and moves
ownership."""

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg

from tests.conftest import new_slug
from tests.integrators import client_for, integrator_client, new_integrator, new_token
from tests.stack import Stack, scalar


def error_code(answer: httpx.Response) -> str:
    code: str = answer.json()["error"]["code"]
    return code


def test_a_route_without_its_scope_is_403_naming_the_scope(
    stack: Stack, client: httpx.Client
) -> None:
    reader = new_token(client, new_integrator(client), ["read"])
    with client_for(stack, reader["token"]) as c:
        put = c.put(
            f"/v1/internal/users/{uuid.uuid4()}",
            json={"email": "a@example.com", "slug": new_slug()},
        )
        assert put.status_code == 403 and error_code(put) == "insufficient_scope"
        assert put.json()["error"]["details"]["required"] == ["users:write"]
        assert c.get("/v1/internal/users").status_code == 200
        assert c.get("/v1/jobs").json()["error"]["details"]["required"] == ["jobs:read"]
        assert c.get("/v1/admin/tokens").json()["error"]["details"]["required"] == ["admin"]
        assert c.get("/v1/audit").status_code == 403
        assert c.get("/metrics").status_code == 403


def test_the_openapi_document_shows_each_routes_scope(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    security = paths["/v1/internal/users/{user_id}"]["put"]["security"]
    assert any(
        "users:write" in scopes for requirement in security for scopes in requirement.values()
    )


def test_another_integrators_identities_do_not_exist_for_reads_and_refuse_writes(
    stack: Stack, client: httpx.Client
) -> None:
    with integrator_client(stack, client) as alice, integrator_client(stack, client) as bob:
        user_id, slug = str(uuid.uuid4()), new_slug("u")
        body = {"email": "a@example.com", "slug": slug}
        created = alice.put(f"/v1/internal/users/{user_id}", json=body)
        assert created.status_code == 200
        agent = alice.put(f"/v1/internal/agents/bot@{slug}", json={"display_name": "Bot"}).json()

        assert error_code(bob.get(f"/v1/internal/users/{user_id}")) == "user_not_found"
        assert user_id not in bob.get("/v1/internal/users", params={"limit": 500}).text
        assert error_code(bob.get(f"/v1/agents/bot@{slug}")) == "agent_not_found"
        assert error_code(bob.get(f"/v1/agents/{agent['id']}")) == "agent_not_found"
        assert error_code(bob.get(f"/v1/agents/{agent['id']}/graph")) == "agent_not_found"
        assert agent["id"] not in bob.get("/v1/agents", params={"user_slug": slug}).text
        job_id = created.headers["Idmirror-Job-Id"]
        assert error_code(bob.get(f"/v1/jobs/{job_id}")) == "job_not_found"
        assert job_id not in bob.get("/v1/jobs", params={"limit": 500}).text

        refused = [
            bob.put(f"/v1/internal/users/{user_id}", json={**body, "plan": "stolen"}),
            bob.delete(f"/v1/internal/users/{user_id}"),
            bob.put(f"/v1/internal/agents/bot@{slug}", json={"display_name": "Stolen"}),
            bob.put(f"/v1/internal/agents/new@{slug}", json={"display_name": "Planted"}),
            bob.delete(f"/v1/internal/agents/bot@{slug}"),
            bob.post(f"/v1/agents/bot@{slug}/update", json={"name": "Stolen"}),
        ]
        assert [(r.status_code, error_code(r)) for r in refused] == [
            (409, "owned_by_another_integrator")
        ] * len(refused)
        update = bob.post(f"/v1/agents/{agent['id']}/update", json={"name": "Stolen"})
        assert error_code(update) == "agent_not_found"

        assert alice.get(f"/v1/internal/users/{user_id}").json()["plan"] == "free"
        assert alice.get(f"/v1/agents/bot@{slug}").json()["display_name"] == "Bot"
        assert alice.get(f"/v1/agents/new@{slug}").status_code == 404
        # The admin sees both integrators' identities.
        assert client.get(f"/v1/internal/users/{user_id}").status_code == 200


def race(
    alice: httpx.Client, bob: httpx.Client, method: str, path: str, bodies: list[dict[str, Any]]
) -> list[httpx.Response]:
    with ThreadPoolExecutor(2) as pool:
        return list(
            pool.map(
                lambda pair: pair[0].request(method, path, json=pair[1]),
                zip((alice, bob), bodies, strict=True),
            )
        )


def test_two_integrators_writing_one_user_and_one_agent_at_once_leave_one_owner(
    stack: Stack, client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    with integrator_client(stack, client) as alice, integrator_client(stack, client) as bob:
        names = {id(alice): "alice", id(bob): "bob"}
        for _ in range(12):
            user_id, slug = str(uuid.uuid4()), new_slug("race")
            bodies = [{"email": f"{n}@example.com", "slug": slug} for n in ("alice", "bob")]
            users = race(alice, bob, "PUT", f"/v1/internal/users/{user_id}", bodies)
            assert sorted(r.status_code for r in users) == [200, 409], [r.text for r in users]
            winner = "alice" if users[0].status_code == 200 else "bob"
            assert error_code(users[1 if winner == "alice" else 0]) == "owned_by_another_integrator"
            stored = db.execute(
                "SELECT email, owner FROM users WHERE id = %s", (user_id,)
            ).fetchone()
            assert stored is not None and stored[0] == f"{winner}@example.com"
            owner = scalar(db, "SELECT owner FROM users WHERE id = %s", (user_id,))

            agent_bodies = [{"display_name": n} for n in ("alice", "bob")]
            agents = race(alice, bob, "PUT", f"/v1/internal/agents/bot@{slug}", agent_bodies)
            statuses = {
                names[id(c)]: r.status_code for c, r in zip((alice, bob), agents, strict=True)
            }
            assert statuses == {winner: 200, ("bob" if winner == "alice" else "alice"): 409}
            rows = db.execute(
                "SELECT a.display_name, u.owner FROM agents a JOIN users u ON u.id = a.user_id "
                "WHERE u.id = %s",
                (user_id,),
            ).fetchall()
            assert rows == [(winner, owner)], "nothing of the loser's write is stored"


def test_an_admin_moves_a_user_with_its_agents_to_another_integrator(
    stack: Stack, client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    alice_name, bob_name = new_integrator(client), new_integrator(client)
    alice = client_for(stack, new_token(client, alice_name)["token"])
    bob = client_for(stack, new_token(client, bob_name)["token"])
    with alice, bob:
        user_id, slug = str(uuid.uuid4()), new_slug("moved")
        alice.put(f"/v1/internal/users/{user_id}", json={"email": "m@example.com", "slug": slug})
        alice.put(f"/v1/internal/agents/bot@{slug}", json={"display_name": "Bot"})
        moved = client.put(f"/v1/admin/users/{user_id}/owner", json={"integrator": bob_name})
        assert moved.status_code == 200 and moved.json()["owner"] == bob_name
        assert bob.get(f"/v1/agents/bot@{slug}").status_code == 200
        assert (
            bob.put(f"/v1/internal/agents/bot@{slug}", json={"display_name": "B"}).status_code
            == 200
        )
        assert alice.get(f"/v1/internal/users/{user_id}").status_code == 404
        assert (
            alice.put(f"/v1/internal/agents/bot@{slug}", json={"display_name": "A"}).status_code
            == 409
        )
    nobody = client.put(f"/v1/admin/users/{uuid.uuid4()}/owner", json={"integrator": bob_name})
    assert error_code(nobody) == "user_not_found"
    unknown = client.put(f"/v1/admin/users/{user_id}/owner", json={"integrator": "no-such-one"})
    assert error_code(unknown) == "integrator_not_found"
    entry = db.execute(
        "SELECT details FROM audit WHERE action = 'ownership.move' AND key = %s",
        (f"user:{user_id}",),
    ).fetchone()
    assert entry is not None and entry[0] == {"from": alice_name, "to": bob_name}


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def wait_backfill(c: httpx.Client, run_id: str) -> dict[str, Any]:
    from tests.stack import wait_until

    def done() -> dict[str, Any] | None:
        run: dict[str, Any] = c.get(f"/v1/internal/backfills/{run_id}").json()
        return run if run["status"] not in ("receiving", "running") else None

    return wait_until(done, timeout=60)


def test_a_backfills_items_that_touch_another_integrators_identities_fail_alone(
    stack: Stack, client: httpx.Client
) -> None:
    with integrator_client(stack, client) as alice, integrator_client(stack, client) as bob:
        theirs_id, theirs = str(uuid.uuid4()), new_slug("theirs")
        alice.put(
            f"/v1/internal/users/{theirs_id}", json={"email": "t@example.com", "slug": theirs}
        )
        mine_id, mine = str(uuid.uuid4()), new_slug("mine")
        items = [
            {"type": "user", "id": mine_id, "email": "m@example.com", "slug": mine},
            {"type": "user", "id": theirs_id, "email": "x@example.com", "slug": theirs},
            {"type": "agent", "key": f"bot@{mine}", "display_name": "Mine"},
            {"type": "agent", "key": f"bot@{theirs}", "display_name": "Planted"},
        ]
        started = bob.post(
            "/v1/internal/backfills",
            content=ndjson(items),
            headers={"Content-Type": "application/x-ndjson"},
            params={"mode": "mirror"},
        )
        assert started.status_code == 202, started.text
        run = wait_backfill(bob, started.json()["id"])
        assert run["status"] == "completed" and run["counts"]["created"] == 2
        assert run["counts"]["failed"] == 2
        failures = bob.get(f"/v1/internal/backfills/{run['id']}/failures").json()["items"]
        assert {(f["line"], f["error"]["code"]) for f in failures} == {
            (2, "owned_by_another_integrator"),
            (4, "owned_by_another_integrator"),
        }
        assert alice.get(f"/v1/internal/users/{theirs_id}").json()["email"] == "t@example.com"
        assert alice.get(f"/v1/agents/bot@{theirs}").status_code == 404
        assert error_code(alice.get(f"/v1/internal/backfills/{run['id']}")) == "backfill_not_found"
        assert run["id"] not in alice.get("/v1/internal/backfills").text
        pull = bob.post("/v1/internal/backfills", json={"source": "crm"})
        assert error_code(pull) == "insufficient_scope"


def test_lines_another_integrator_backfilled_are_not_known_to_an_integrator_resending_them(
    stack: Stack, client: httpx.Client
) -> None:
    """An upload counts a line unchanged, without reading it, when its row holds the line's
    digest (identity/backfill/known.py). The same bytes sent by another integrator must still
    fail as its chunk apply would fail them, not pass as unchanged."""
    with integrator_client(stack, client) as alice, integrator_client(stack, client) as bob:
        slug = new_slug("held")
        items = [
            {"type": "user", "id": str(uuid.uuid4()), "email": "h@example.com", "slug": slug},
            {"type": "agent", "key": f"bot@{slug}", "display_name": "Held"},
        ]
        body, headers = ndjson(items), {"Content-Type": "application/x-ndjson"}
        for c, counts in ((alice, {"created": 2}), (alice, {"unchanged": 2})):
            run = wait_backfill(
                c, c.post("/v1/internal/backfills", content=body, headers=headers).json()["id"]
            )
            assert {k: v for k, v in run["counts"].items() if v and k != "received"} == counts
        started = bob.post("/v1/internal/backfills", content=body, headers=headers)
        run = wait_backfill(bob, started.json()["id"])
        assert run["counts"]["unchanged"] == 0 and run["counts"]["failed"] == 2, run["counts"]
        failures = bob.get(f"/v1/internal/backfills/{run['id']}/failures").json()["items"]
        assert {(f["line"], f["error"]["code"]) for f in failures} == {
            (1, "owned_by_another_integrator"),
            (2, "owned_by_another_integrator"),
        }
