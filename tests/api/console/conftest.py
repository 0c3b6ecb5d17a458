"""The console's tests share one stack of their own (API, worker, beat on a fresh database), so
that what the pages show, and the screenshots the runbook uses, are theirs alone; and a
headless Chromium, Debian's (`make test` installs it), driven by Playwright."""

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from cli.embedded import EmbeddedRedis
from tests.conftest import start_stack, stop_stacks
from tests.integrators import WRITES, new_integrator, new_token
from tests.stack import ROOT, TOKEN, Stack

# Screenshots go to docs/images when IDMIRROR_SCREENSHOTS says so (`make screenshots`), else
# to a scratch directory: a test run leaves the checked-in images alone.
STALL_AFTER = 3
SHOTS = Path(os.environ.get("IDMIRROR_SCREENSHOTS") or ROOT / ".pytest_cache" / "screenshots")


@pytest.fixture(scope="package")
def console_stack(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    made: list[tuple[Stack, EmbeddedRedis]] = []
    home = tmp_path_factory.mktemp("console")
    try:
        yield start_stack(
            postgres_server,
            home,
            made,
            "worker",
            "beat",
            "api",
            worker_args=["--concurrency", "1"],
            stall_after_seconds=str(STALL_AFTER),
        )
    finally:
        stop_stacks(made)


@dataclass(frozen=True)
class Viewer:
    """An integrator's read-only console login (`jobs:read`), and a token that writes as it."""

    token: str
    writer: str


@pytest.fixture(scope="package")
def viewer(console_stack: Stack) -> Viewer:
    with console_stack.client() as admin:
        integrator = new_integrator(admin)
        token = new_token(admin, integrator, ["jobs:read", "read"])["token"]
        return Viewer(token, new_token(admin, integrator, WRITES)["token"])


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, console_stack: Stack) -> Iterator[Page]:
    context = browser.new_context(
        base_url=console_stack.base_url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(20_000)
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, token: str = TOKEN, target: str = "/console") -> None:
    """Through the login form, as a person would."""
    page.goto(target)
    page.fill("input[name=token]", token)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"**{target}*")


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
