"""The console in a real headless browser (Debian's chromium, driven by Playwright), with a real
gateway on a real Mosquitto: an operator signs in, sees the gateways, an alert appears live, and
the acknowledge button sends ``command/ack`` that stops the gateway's escalation."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from centre.db import open_database
from edge_agent.clock import ManualClock
from edge_agent.transports.mqtt_client import NO_DELAY
from tests.agent.harness import SOS_RULE, T0, eventually, observing, running, write_gateway
from tests.centre.console_helpers import PASSWORDS, add_accounts, console, insert_alert
from tests.conftest import BrokerInfo

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get update && apt-get install -y chromium"
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "console.png"
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


@contextlib.asynccontextmanager
async def mqtt_publisher(broker: BrokerInfo) -> AsyncIterator[object]:
    """The centre's ``publish``: QoS 1 on the real broker, returning once PUBACK came."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="centre-test", socket_options=NO_DELAY) as client:

        async def publish(topic: str, payload: bytes, *, retain: bool = False) -> None:
            await client.publish(topic, payload, qos=1, retain=retain)

        yield publish


def seed(db: object, gw: str) -> None:
    """What the ingest would have stored: the gateway, a neighbour, energy, a fault, a rollout."""
    from centre.db import Database

    assert isinstance(db, Database)
    now = time.time()
    today = int(now // 86400) * 86400
    with db.transaction() as tx:
        tx.executemany(
            "INSERT INTO gateways (gateway, online, last_seen, policy_version, lamps, lamps_on_version, "
            "outbox_depth, outages) VALUES (?, ?, ?, ?, 3, ?, ?, ?)",
            [(gw, 1, now - 2, 4, 3, 0, 0), ("naxi-v02", 0, now - 5400, 3, 1, 42, 2)],
        )
        tx.executemany(
            "INSERT INTO lamps (gateway, lamp, lamp_group) VALUES (?, ?, ?)",
            [(gw, "L1", "village"), (gw, "L2", "village"), (gw, "L3", ""), ("naxi-v02", "L1", "")],
        )
        rows = []
        for day in range(7):
            for lamp, wh in (("L1", 900.0), ("L2", 850.0), ("L3", 400.0)):
                rows.append((gw, lamp, today - day * 86400 + 3600, wh + 20 * day))
            rows.append(("naxi-v02", "L1", today - day * 86400 + 3600, 1100.0 - 30 * day))
        tx.executemany(
            "INSERT INTO lamp_hours (gateway, lamp, hour, reports, energy_wh, level_sum, power_w_max, faults) "
            "VALUES (?, ?, ?, 60, ?, 0, 0, 0)",
            rows,
        )
        tx.execute(
            "INSERT INTO lamp_faults (gateway, lamp, since, faults) VALUES ('naxi-v02', 'L1', ?, 4)", (now - 3000,)
        )
        tx.execute(
            "INSERT INTO rollouts (rollout_id, version, state, plan, wave, created, updated) "
            "VALUES ('v5-eco', 5, 'running', '{}', 1, ?, ?)",
            (now - 600, now),
        )
        tx.executemany(
            "INSERT INTO rollout_targets (rollout_id, gateway, wave, state) VALUES ('v5-eco', ?, ?, ?)",
            [(gw, 0, "SUCCEEDED"), ("naxi-v02", 1, "IN_PROGRESS"), ("naxi-v03", 1, "QUEUED")],
        )


async def test_an_operator_acknowledges_a_live_alert_and_the_gateway_stops_escalating(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    screenshot = README_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "console.png"
    playwright_api = pytest.importorskip("playwright.async_api", reason="pip install -e '.[dev]' (playwright)")
    gw = f"naxi-v01-{unique_id}"[:40]
    config = write_gateway(tmp_path, gw, mqtt_broker.port, SOS_RULE)
    clock = ManualClock(T0)
    with open_database(f"sqlite:///{tmp_path / 'centre.db'}") as db:
        add_accounts(db)
        seed(db, gw)
        async with (
            observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{gw}") as obs,
            running(config, clock) as agent,
            mqtt_publisher(mqtt_broker) as publish,
            console(db, publish) as server,
            playwright_api.async_playwright() as pw,
        ):
            base = f"http://127.0.0.1:{server.port}"
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1200, "height": 1100})
                foreign: list[str] = []

                async def only_the_console(route: object) -> None:
                    request = route.request  # type: ignore[attr-defined]
                    if request.url.startswith(base):
                        await route.continue_()  # type: ignore[attr-defined]
                    else:
                        foreign.append(request.url)
                        await route.abort()  # type: ignore[attr-defined]

                await page.route("**/*", only_the_console)
                await page.goto(base + "/")
                assert page.url == base + "/login"
                await page.fill("input[name=username]", "ana")
                await page.fill("input[name=password]", PASSWORDS["ana"])
                await page.click("button[type=submit]")
                await page.wait_for_url(base + "/")
                await page.wait_for_selector("#conn.up", timeout=10_000)  # the SSE stream is open
                assert "3/3" in await page.locator(f'#gateways tr[data-gateway="{gw}"]').inner_text()
                assert await page.locator("#gateways tbody tr").count() == 2
                assert await page.locator("#energy-plot rect[data-kwh]").count() == 21  # 7 days x 3 series
                await page.evaluate("window.__notReloaded = true")

                await obs.publish("wearable/W1/event", {"event": "sos"})
                first = await eventually(lambda: obs.on("alert"), what="the alert north")
                alert_id = first[0]["alert_id"]
                reached = [(0, "doc1", "sms", "delivered")]  # its ledger row, as the gateway's history brings it
                insert_alert(db, alert_id, gw, raised=time.time(), body=first[0], reached=reached)

                row = page.locator(f'tr.alert[data-alert="{alert_id}"]')
                await row.wait_for(timeout=10_000)  # appeared live
                assert await page.evaluate("window.__notReloaded") is True
                assert "doc1" in await row.inner_text() and "sms" in await row.inner_text()
                await page.screenshot(path=str(screenshot), full_page=True)

                await row.locator("button", has_text="acknowledge").click()
                await page.wait_for_url(f"{base}/?sent={alert_id}")
                sent = await eventually(lambda: obs.on("command/ack"), what="command/ack on the broker")
                assert sent == [{"v": 1, "alert_id": alert_id, "by": "operator:ana"}]
                acked = await eventually(
                    lambda: [a for a in obs.on("alert") if a["status"] == "acknowledged"],
                    what="the gateway's acknowledged alert",
                )
                assert acked[0]["responder"] == "doc1"
                await clock.advance(600)  # past the ack timeout: nobody else is called
                assert not obs.on("responder/doc2/alert")
                stored = agent.store.alerts.get(alert_id)
                assert stored is not None and stored.status == "acknowledged"
                assert foreign == [], f"the page asked the internet for {foreign}"
            finally:
                await browser.close()
    assert 10_000 < screenshot.stat().st_size < 600_000
