"""The console in a real browser: Debian's headless Chromium driven by Playwright.

Logs in, reads the policies, renders and sends in the playground against the fake upstream, opens
an eval run and the live stats, at desktop (1280 px) and phone (390 px) widths. Screenshots are
test artefacts: in the test's tmp dir, copied to ``.prefit/console-screenshots/`` (gitignored).
Any browser console error (a CSP violation, a script error) fails the test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright import sync_api

from tests.conftest import GatewayProcess
from tests.console.helpers import ADMIN_KEY, RUN_NAME, console_files
from tests.fakes.upstream import FakeUpstream

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEPT = Path(__file__).resolve().parents[2] / ".prefit" / "console-screenshots"


@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    """A missing browser fails the run (scripts/test installs Debian's chromium): no silent skip."""
    assert CHROMIUM.exists(), "needs Debian's chromium package (/usr/bin/chromium): apt-get install chromium"


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    return start_gateway(console_files(fake_upstream.base_url))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    yield folder
    KEPT.mkdir(parents=True, exist_ok=True)
    for shot in folder.iterdir():
        shutil.copy(shot, KEPT / shot.name)


def _session(browser: Browser, gateway: GatewayProcess, width: int, height: int) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": height}, base_url=gateway.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto("/console/playground")
    assert page.url.endswith("/console/login?next=/console/playground")
    page.fill("#key", "not-the-key")
    page.click("button[type=submit]")
    sync_api.expect(page.locator(".alert")).to_contain_text("not an admin key")
    page.fill("#key", ADMIN_KEY)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/playground")
    errors.clear()  # the refused login's 401 is logged as a failed load; expected
    return page, errors


def test_desktop_walkthrough(browser: Browser, gateway: GatewayProcess, shots: Path) -> None:
    page, errors = _session(browser, gateway, 1280, 900)
    page.goto("/console")
    sync_api.expect(page.locator("table.policies")).to_contain_text("gpt-4o-mini")
    sync_api.expect(page.locator("table.policies")).to_contain_text("treatment")
    page.screenshot(path=shots / "desktop-1-policies.png", full_page=True)

    page.click("text=ab")
    sync_api.expect(page.locator("pre.prompt").first).to_contain_text("You help Acme customers.")
    sync_api.expect(page.locator("pre.diff")).to_contain_text("+Never guess.")
    page.screenshot(path=shots / "desktop-2-policy.png", full_page=True)

    page.click("text=Playground")
    page.select_option("#pg-policy", "ab")
    page.select_option("#pg-variant", "treatment")
    page.fill("#pg-message", "Where is my parcel?")
    page.click("#pg-render")
    sync_api.expect(page.locator("#pg-body")).to_contain_text('"model": "gpt-4o"')
    sync_api.expect(page.locator("#pg-body")).to_contain_text("Never guess.")
    sync_api.expect(page.locator("#pg-result-title")).to_contain_text("Rendered request")
    page.screenshot(path=shots / "desktop-3-playground-render.png", full_page=True)
    page.click("#pg-send")
    sync_api.expect(page.locator("#pg-answer")).to_contain_text("Where is my parcel?")
    sync_api.expect(page.locator("#pg-meta")).to_contain_text("gateway time")
    page.screenshot(path=shots / "desktop-4-playground-send.png", full_page=True)

    page.click("text=Eval runs")
    page.click(f"text={RUN_NAME}")
    sync_api.expect(page.locator("svg.interval-chart")).to_be_visible()
    sync_api.expect(page.locator("#regressions")).to_contain_text("i2")
    page.screenshot(path=shots / "desktop-5-eval-run.png", full_page=True)

    page.click("text=Live stats")
    sync_api.expect(page.locator("table.stats")).to_contain_text("ab")
    page.screenshot(path=shots / "desktop-6-stats.png", full_page=True)
    assert errors == []


def test_phone_width(browser: Browser, gateway: GatewayProcess, shots: Path) -> None:
    page, errors = _session(browser, gateway, 390, 844)
    for name, path in [
        ("policies", "/console"),
        ("policy", "/console/policies/ab"),
        ("eval-run", f"/console/evals/{RUN_NAME}"),
        ("stats", "/console/stats"),
    ]:
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 392, f"{path} scrolls sideways at 390 px ({width} px wide)"
        page.screenshot(path=shots / f"phone-{name}.png", full_page=True)
    page.goto("/console/playground")
    page.fill("#pg-message", "hello from a phone")
    page.click("#pg-send")
    sync_api.expect(page.locator("#pg-answer")).to_contain_text("hello from a phone")
    page.screenshot(path=shots / "phone-playground.png", full_page=True)
    assert errors == []
