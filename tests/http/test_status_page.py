"""The status page in a real headless browser (Debian's chromium, driven by Playwright).

The page is opened once; an SOS raised over MQTT appears in it without a reload (SSE), and a
responder's acknowledgement changes it in place. The page loads nothing but the gateway's own
URLs. It takes a screenshot; with UPDATE_SCREENSHOTS=1 it replaces docs/img/status-page.png (shown
in the README), otherwise it writes it to the test's temp dir.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_agent.clock import ManualClock
from tests.agent.harness import eventually, observing, running
from tests.conftest import BrokerInfo
from tests.http.helpers import http_gateway

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get update && apt-get install -y chromium"
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "status-page.png"
NIGHT = datetime(2026, 1, 1, 21, 30, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()  # lamps on
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason=f"needs Debian's chromium for the browser test: {INSTALL}",
)


async def test_an_sos_appears_live_and_its_acknowledgement_changes_it(tmp_path: Path, mqtt_broker: BrokerInfo) -> None:
    screenshot = README_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "status-page.png"
    playwright_api = pytest.importorskip("playwright.async_api", reason="pip install -e '.[dev]' (playwright)")
    gw = "naxi-v01"  # the shipped example's id, for the picture; no other test of the session uses it
    config = http_gateway(tmp_path, gw, mqtt_broker.port)
    clock = ManualClock(NIGHT)
    async with (
        observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{gw}") as obs,
        running(config, clock) as agent,
        playwright_api.async_playwright() as pw,
    ):
        assert agent.http is not None
        base = f"http://127.0.0.1:{agent.http.port}/"
        for lamp, level in (("L1", 80), ("L2", 80), ("L3", 80)):
            await obs.publish(f"lamp/{lamp}/state", {"on": True, "level": level, "power_w": 64.0, "policy_version": 0})
        await obs.publish("camera/C1/status", {"online": True})
        await obs.publish("wearable/W1/heartbeat", {"battery": 76})
        await eventually(lambda: len(agent.stats.last_seen) == 5, what="devices seen")

        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 1000})
            foreign: list[str] = []

            async def only_the_gateway(route: object) -> None:
                request = route.request  # type: ignore[attr-defined]
                if request.url.startswith(base):
                    await route.continue_()  # type: ignore[attr-defined]
                else:
                    foreign.append(request.url)
                    await route.abort()  # type: ignore[attr-defined]

            await page.route("**/*", only_the_gateway)
            await page.goto(base)
            await page.wait_for_selector("#conn.up", timeout=10_000)  # the SSE stream is open
            assert await page.locator("tr.alert").count() == 0
            await page.evaluate("window.__notReloaded = true")

            await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
            row = page.locator("tr.alert").first
            await row.locator("td.status", has_text="notified").wait_for(timeout=10_000)
            alert_id = await row.get_attribute("data-alert-id")
            assert alert_id is not None
            assert await row.locator("td.responder").inner_text() == "doc1"
            assert await row.locator("td.step").inner_text() == "0"

            await obs.publish("responder/doc1/ack", {"alert_id": alert_id})
            acked = page.locator(f'tr.alert[data-alert-id="{alert_id}"] td.status', has_text="acknowledged")
            await acked.wait_for(timeout=10_000)
            assert await page.evaluate("window.__notReloaded") is True  # changed in place, no reload
            await page.locator("tr.trace").first.wait_for(timeout=10_000)  # rule traces, flushed each second
            assert await page.locator('tr[data-link="south"] td.up').count() == 1
            assert "80%" in await page.locator('tr[data-group="village"]').inner_text()
            assert foreign == [], f"the page asked the internet for {foreign}"

            await page.screenshot(path=str(screenshot), full_page=True)
        finally:
            await browser.close()
    assert 10_000 < screenshot.stat().st_size < 400_000
