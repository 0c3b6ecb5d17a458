"""An operator at the console, in a real browser: finds a key's failed job, sees why, retries it
and sees the retry applied; retries every failed job a filter matches; follows a backfill to
its end; and a read-only login sees all of it but cannot act. The screenshots of
docs/operations.md come from here (`make screenshots`)."""

import re
import uuid

import httpx
from playwright.sync_api import Page, expect

from tests.api.console.conftest import STALL_AFTER, Viewer, shot, sign_in
from tests.conftest import new_slug, put_pending_users, put_user
from tests.identity.backfill.uploads import agent_item, ndjson, post_ndjson, user_item
from tests.integrators import client_for
from tests.stack import Stack


def failed_write(client: httpx.Client, key: str) -> str:
    """An agent write whose user does not exist: a failed job; its id."""
    answer = client.put(f"/v1/internal/agents/{key}", json={"display_name": "Scout"})
    assert answer.status_code == 404
    return answer.headers["Idmirror-Job-Id"]


def test_an_operator_finds_a_keys_failed_job_sees_why_and_retries_it(
    page: Page, console_stack: Stack
) -> None:
    user_slug = new_slug("govind")
    with console_stack.client() as client:
        job_id = failed_write(client, f"scout@{user_slug}")
        put_user(client, slug=user_slug)  # the cause, fixed

    sign_in(page)
    page.fill("input[name=q]", f"scout@{user_slug}")
    page.click("text=Find")
    expect(page.locator("h1")).to_contain_text(f"agent:scout@{user_slug}")
    shot(page, "console-history")
    page.click(f"a[href='/console/jobs/{job_id}']")
    expect(page.locator(".error").first).to_contain_text("user_not_found")
    expect(page.locator(".error").first).to_contain_text(f"no user has slug '{user_slug}'")
    shot(page, "console-failed-job")

    page.click("button:has-text('Retry')")
    expect(page.locator(".notice")).to_contain_text(f"retry of job {job_id}")
    expect(page.locator("h1 .badge").first).to_have_text("applied")  # the page follows it
    expect(page.locator(f"a[href='/console/jobs/{job_id}']")).to_be_visible()  # retry of
    shot(page, "console-retry-applied")
    page.click(f"a[href='/console/jobs/{job_id}']")
    expect(page.locator(".retry-link")).to_be_visible()
    expect(page.locator("button:has-text('Retry')")).to_have_count(0)


def test_an_operator_retries_every_failed_job_a_filter_matches(
    page: Page, console_stack: Stack
) -> None:
    user_slug = new_slug("crew")
    with console_stack.client() as client:
        ids = [failed_write(client, f"bot{i}@{user_slug}") for i in range(3)]
        put_user(client, slug=user_slug)

    sign_in(page, target="/console/failed")
    page.fill("input[name=code]", "user_not_found")
    page.click("button:has-text('Show')")
    expect(page.locator("table.groups")).to_contain_text("user_not_found")
    shot(page, "console-failed")
    page.click("button:has-text('Retry all')")
    expect(page.locator(".notice")).to_contain_text(re.compile(r"retried \d+ jobs"))
    with console_stack.client() as client:
        for job_id in ids:
            retry = client.get(f"/v1/jobs/{job_id}").json()["retried_by"]
            assert retry is not None
            page.goto(f"/console/jobs/{retry}")
            expect(page.locator("h1 .badge").first).to_have_text("applied")


def test_an_operator_follows_a_backfill_to_completion(page: Page, console_stack: Stack) -> None:
    user_slug = new_slug("bf")
    items = [user_item(user_slug)] + [agent_item(f"a{i}@{user_slug}") for i in range(3000)]
    items.append(agent_item(f"lost@{new_slug('nobody')}"))
    with console_stack.client() as client:
        run = post_ndjson(client, ndjson(items))

    sign_in(page, target="/console/backfills")
    page.click(f"a[href='/console/backfills/{run['id']}']")
    expect(page.locator("#backfill-status")).to_have_text("completed", timeout=60_000)
    expect(page.locator("table.counts")).to_contain_text("3002")
    expect(page.locator("table.failures")).to_contain_text("user_not_found")
    shot(page, "console-backfill")
    page.click("table.failures a")  # the failed item's key: its history
    expect(page.locator("table.history")).to_contain_text("backfill.item")


def test_a_read_only_login_sees_but_cannot_act(
    page: Page, console_stack: Stack, viewer: Viewer
) -> None:
    with client_for(console_stack, viewer.writer) as client:
        job_id = failed_write(client, f"scout@{new_slug('ro')}")
    with console_stack.client() as admin:
        others = failed_write(admin, f"scout@{new_slug('other')}")  # not the viewer's
    sign_in(page, viewer.token, target=f"/console/jobs/{job_id}")
    expect(page.locator(".role")).to_have_text("viewer")
    expect(page.locator(".error").first).to_contain_text("user_not_found")
    expect(page.locator("button:has-text('Retry')")).to_have_count(0)
    expect(page.locator("text=Read-only login")).to_be_visible()
    page.goto("/console/failed")
    expect(page.locator("table.groups")).to_be_visible()
    expect(page.locator("button:has-text('Retry all')")).to_have_count(0)
    expect(page.locator(f"a[href='/console/jobs/{job_id}']")).to_be_visible()
    expect(page.locator(f"a[href='/console/jobs/{others}']")).to_have_count(0)
    # The form the page does not show, sent anyway with the session's own CSRF token.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    hidden = page.goto(f"/console/jobs/{others}")  # another integrator's job
    assert hidden is not None and hidden.status == 404
    refused = page.request.post(f"/console/jobs/{job_id}/retry", form={"csrf": csrf or ""})
    assert refused.status == 403 and "read-only" in refused.text()
    with console_stack.client() as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["retried_by"] is None


def test_the_overview_shows_pending_work_charts_and_failures(
    page: Page, console_stack: Stack
) -> None:
    with console_stack.client() as client:
        for _ in range(20):
            put_user(client, id=str(uuid.uuid4()))
    sign_in(page)
    expect(page.locator(".tile").first).to_contain_text(re.compile("idle|moving"))
    expect(page.locator("svg.chart")).to_have_count(3)
    expect(page.locator("figure").first).to_contain_text("Throughput")
    shot(page, "console-overview")


def test_the_overview_shows_a_stall_while_the_worker_is_stopped(
    page: Page, console_stack: Stack
) -> None:
    sign_in(page)
    console_stack.pause("worker")
    try:
        with console_stack.client() as client:
            put_pending_users(console_stack, client, 3)
        page.wait_for_timeout((STALL_AFTER + 1) * 1000)
        page.goto("/console")
        expect(page.locator(".tile.bad").first).to_contain_text("STALLED")
        shot(page, "console-stalled")
    finally:
        console_stack.pause("worker", resume=True)
    page.goto("/console")
    expect(page.locator(".tile").first).not_to_contain_text("STALLED", timeout=30_000)
