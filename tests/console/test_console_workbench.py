"""The iteration loop in the console, in headless Chromium: history chart, slices and confusion, flips.

The runs shown are real ``prefit eval`` runs against the fake upstream: a zero-shot prompt (v1),
then the same policy with an example (v2), as a team would iterate.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright import sync_api

from tests.conftest import GatewayProcess
from tests.console.helpers import ADMIN_KEY, login
from tests.console.test_console_browser import _chromium_installed, _session, browser, shots  # noqa: F401
from tests.e2e.test_workbench import DATASET, FEW_SHOT, ZERO_SHOT
from tests.fakes.upstream import FakeUpstream

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def _iterate(workdir: Path) -> None:
    for policy in (ZERO_SHOT, FEW_SHOT):
        (workdir / "policies/labeler.yaml").write_text(policy)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "eval", "labeler", "--by", "channel"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def gateway(start_gateway, fake_upstream: FakeUpstream) -> GatewayProcess:  # type: ignore[no-untyped-def]
    files = {
        "prefit.yaml": f"upstreams:\n  fake: {{base_url: {fake_upstream.base_url}}}\ndefault_upstream: fake\n"
        f"admin_keys: [{ADMIN_KEY}]\n",
        "policies/labeler.yaml": ZERO_SHOT,
        "policies/evals/labeler.jsonl": DATASET,
    }
    return start_gateway(files, prepare=_iterate)  # type: ignore[no-any-return]


def _run_ids(gateway: GatewayProcess) -> list[str]:
    return sorted(p.stem for p in (gateway.workdir / ".prefit/eval-runs").glob("*.json"))


def test_history_slices_confusion_and_flips(browser: Browser, gateway: GatewayProcess, shots: Path) -> None:  # noqa: F811
    first, second = _run_ids(gateway)
    page, errors = _session(browser, gateway, 1280, 900)
    page.goto("/console/evals")
    page.click(f"text={second}.json")
    sync_api.expect(page.locator("#analysis-default")).to_contain_text("2 content (well-formed but wrong)")
    slices = page.locator("#analysis-default table.slices")
    sync_api.expect(slices).to_contain_text("(none)")
    sync_api.expect(slices).to_contain_text("0.800 [0.376, 0.964]")
    confusion = page.locator("#analysis-default table.confusion")
    sync_api.expect(confusion.locator("tr", has_text="shipping").locator("td.off")).to_have_text("2")
    sync_api.expect(confusion.locator("tr", has_text="billing").locator("td.diag")).to_have_text("8")
    sync_api.expect(page.locator("ul.clusters")).to_contain_text("t8, t9")
    page.screenshot(path=shots / "desktop-workbench-1-run.png", full_page=True)

    page.click("text=History of labeler")
    chart = page.locator("svg.history-chart")
    sync_api.expect(chart).to_be_visible()
    sync_api.expect(chart.locator("text.axis")).to_contain_text(["v1", "v2"])
    sync_api.expect(chart.locator("circle.point")).to_have_count(2)
    sync_api.expect(chart.locator("circle.significant")).to_have_count(1)
    rows = page.locator("table.history-table tbody tr")
    sync_api.expect(rows.nth(1)).to_contain_text("+0.800")
    sync_api.expect(rows.nth(1)).to_contain_text("p = 0.0078 significant")
    page.screenshot(path=shots / "desktop-workbench-2-history.png", full_page=True)

    page.click("text=flips")
    assert page.url.endswith(f"/console/evals/diff?a={first}&b={second}")
    sync_api.expect(page.locator("section.flips h2")).to_contain_text("8 fixed")
    fixed = page.locator("table.flip-fixed tbody tr")
    sync_api.expect(fixed).to_have_count(8)
    sync_api.expect(fixed.first).to_contain_text("unknown")
    sync_api.expect(fixed.first).to_contain_text("billing")
    page.screenshot(path=shots / "desktop-workbench-3-flips.png", full_page=True)
    assert errors == []


def test_phone_width_and_bad_references(browser: Browser, gateway: GatewayProcess, shots: Path) -> None:  # noqa: F811
    first, second = _run_ids(gateway)
    page, errors = _session(browser, gateway, 390, 844)
    for name, path in [
        ("history", "/console/evals/history/labeler"),
        ("flips", f"/console/evals/diff?a={first}&b={second}"),
        ("run", f"/console/evals/{second}.json"),
    ]:
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 392, f"{path} scrolls sideways at 390 px ({width} px wide)"
        page.screenshot(path=shots / f"phone-workbench-{name}.png", full_page=True)
    assert errors == []
    client = login(gateway.url)
    for ref in ("../prefit.yaml", "no-such-run", "/etc/passwd"):
        reply = client.get("/console/evals/diff", params={"a": ref, "b": second})
        assert reply.status_code == 404, ref
        assert "root:" not in reply.text and "upstreams" not in reply.text
    assert "No stored runs" in client.get("/console/evals/history/nobody").text
