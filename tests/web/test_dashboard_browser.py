"""The dashboard in a real browser: a fault on the overview, "diagnose now", its report.

Debian's chromium, driven by Playwright; Playwright's own browser download is not used.
A full-page screenshot of each page is kept in `$RUNBOOK_ARTIFACTS` (else `artifacts/`).
"""

from __future__ import annotations

import time

import pytest

from engine.web import create_app
from tests.web._kit import CHROMIUM, CHROMIUM_ARGS, add_fault, artifacts, serving

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} "
                       "(Debian package 'chromium'); Playwright's download is not used"),
]


def test_9_fault_on_the_overview_then_diagnose_now(store, lab_session, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    add_fault(store)
    shots = artifacts()
    with serving(create_app(store, lab_session)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(10_000)
            page.goto(url + "/")
            card = page.locator("#health-LAB")
            sync_api.expect(card.get_by_text(
                "The DAQ is in neither MONITOR nor RECORD state")).to_be_visible()
            sync_api.expect(card.get_by_text("(section 10.2)")).to_be_visible()
            page.screenshot(path=shots / "dashboard-overview.png", full_page=True)

            started = time.time()
            card.get_by_label("diagnosis for LAB").select_option("lab-marker")
            card.get_by_role("button", name="Diagnose now").click()
            page.wait_for_url("**/runs/*")
            sync_api.expect(page.get_by_text(
                f"No marker file at {tmp_path / 'marker'}")).to_be_visible()
            shot = shots / "dashboard-diagnosis.png"
            page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
    [run] = store.runs()
    assert run["runbook"] == "lab-marker" and run["started"] >= started - 1
    print(f"screenshots: {shots / 'dashboard-overview.png'} {shot}")
