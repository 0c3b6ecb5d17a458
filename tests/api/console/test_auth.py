"""The console's door: the same tokens as the API, a session cookie only the console gets and no
script reads, forms that only the console's own pages can send, and errors as pages."""

import re

import httpx
import pytest

from tests.api.console.conftest import Viewer
from tests.integrators import new_integrator, new_token
from tests.stack import TOKEN, Stack


@pytest.fixture
def browser_like(console_stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=console_stack.base_url, timeout=30)


def signed_in(client: httpx.Client, token: str = TOKEN) -> str:
    """Sign in; the CSRF token of the session's forms."""
    answer = client.post("/console/login", data={"token": token, "next": "/console/failed"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/failed"
    page = client.get("/console/failed").text
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match
    return match.group(1)


def test_a_page_without_a_session_sends_to_the_login_form(browser_like: httpx.Client) -> None:
    answer = browser_like.get("/console/jobs?status=failed")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=%2Fconsole%2Fjobs%3Fstatus%3Dfailed"
    assert "Sign in" in browser_like.get(answer.headers["location"]).text


def test_the_session_cookie_is_httponly_samesite_strict_and_the_consoles_alone(
    browser_like: httpx.Client, viewer: Viewer
) -> None:
    answer = browser_like.post("/console/login", data={"token": viewer.token})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie


def test_a_wrong_token_is_refused_and_a_login_never_leaves_the_console(
    browser_like: httpx.Client, console_stack: Stack
) -> None:
    with console_stack.client() as admin:
        writes_only = new_token(admin, new_integrator(admin), ["agents:write"])["token"]
    for token in ("nope", "idm_nope", writes_only):  # the last may not read jobs
        refused = browser_like.post("/console/login", data={"token": token})
        assert refused.status_code == 401 and "not valid" in refused.text
        assert "set-cookie" not in refused.headers
    away = browser_like.post("/console/login", data={"token": TOKEN, "next": "//evil.example/"})
    assert away.headers["location"] == "/console"


def test_an_action_needs_the_sessions_csrf_token_and_the_consoles_origin(
    browser_like: httpx.Client,
) -> None:
    csrf = signed_in(browser_like)
    assert browser_like.post("/console/failed/discard", data={"code": "none"}).status_code == 403
    foreign = browser_like.post(
        "/console/failed/discard",
        data={"csrf": csrf, "code": "none"},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403 and "not sent from the console" in foreign.text
    done = browser_like.post("/console/failed/discard", data={"csrf": csrf, "code": "none"})
    assert done.status_code == 303 and "discarded+0+jobs" in done.headers["location"]


def test_bad_input_is_an_html_error_page_not_a_500(
    browser_like: httpx.Client, viewer: Viewer
) -> None:
    signed_in(browser_like, viewer.token)
    for path, status, code in [
        ("/console/jobs/not-a-job", 404, "job_not_found"),
        ("/console/jobs?key=nobody", 400, "invalid_key"),
        ("/console?hours=5", 422, "validation_error"),
        ("/console/backfills/nope", 404, "backfill_not_found"),
        ("/console/history?key=a@b@c", 400, "invalid_agent_key"),
    ]:
        answer = browser_like.get(path)
        assert answer.status_code == status, path
        assert answer.headers["content-type"].startswith("text/html") and code in answer.text


def test_the_assets_ship_with_the_package(browser_like: httpx.Client) -> None:
    css = browser_like.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert browser_like.get("/console/static/console.js").status_code == 200
