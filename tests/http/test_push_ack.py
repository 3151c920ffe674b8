"""A person answers a push: the push reaches a real HTTP server standing in for ntfy or a
webhook, the doctor follows its link to the gateway's HTTP face with a plain HTTP client, and
the button's POST acknowledges the alert: only that stops the escalation. A forged link gets
403 and changes nothing.

The gateway runs on the in-process bus (no broker). Nothing is mocked: the policy's chain
notifies by app and push, and the agent's own push link (Apprise) sends the push.
"""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from pathlib import Path

from edge_agent.clock import ManualClock
from edge_agent.config import GatewayConfig
from tests.agent.harness import SOS_RULE, T0, Village, eventually, in_process_village, running, write_gateway
from tests.notify.push_server import PushService, push_service

TOKEN = "operator-token-of-the-village"  # the status page's: the ack link neither needs nor takes it
LINK = re.compile(r"\n\n(http://127\.0\.0\.1:(\d+)/answer/([A-Za-z0-9_-]{22}))$")


def post(url: str, form: bytes) -> tuple[int, bytes]:
    """The button's POST, as a phone's browser sends it (urllib: form-encoded by default)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=form, method="POST"), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def gateway(tmp_path: Path, service: PushService) -> tuple[Village, GatewayConfig]:
    (tmp_path / "doc1.push").write_text(f"json://127.0.0.1:{service.port}/doc1/tk_s3cr3t\n")
    extra = {
        "responders": [
            {"id": "doc1", "role": "village_doctor", "push_url_file": "doc1.push"},
            {"id": "doc2", "role": "township_doctor"},
        ],
        "http": {"listen": "127.0.0.1:0", "token": TOKEN},
    }
    village = in_process_village()
    rules = SOS_RULE.replace('notify = "medical"', 'notify = "pushed"') + (
        '\n[chains.pushed]\nroles = ["village_doctor", "township_doctor"]\nchannels = ["app", "push"]\n'
    )
    return village, write_gateway(tmp_path, "push-gw", village.port, rules, extra=extra)


async def test_the_link_in_a_push_acknowledges_the_alert_and_stops_the_escalation(tmp_path: Path) -> None:
    with push_service() as service:
        village, config = gateway(tmp_path, service)
        clock = ManualClock(T0)
        async with (
            village.observing("district/v1/push-gw") as obs,
            running(config, clock, links=village.links) as agent,
        ):
            await obs.publish("wearable/W1/event", {"event": "sos"})
            [app] = await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 notified")
            alert_id = app["alert_id"]
            [push] = await eventually(service.pushes, timeout=30, what="the push, sent by the agent")
            await eventually(
                lambda: [r.state for r in agent.store.notifications.of_step(alert_id, 1)] == ["handed", "delivered"],
                timeout=30,
                what="the push service took it (the closest a push has to a delivery report)",
            )
            assert push.path == "/doc1/tk_s3cr3t"
            assert push.body["title"] == "URGENT W1"
            found = LINK.search(push.body["message"])
            assert found is not None, push.body["message"]
            assert push.body["message"].startswith("URGENT W1: SOS from W1. Reply 1 ")  # the SMS text
            ack_url, port = found.group(1), int(found.group(2))
            assert agent.http is not None and port == agent.http.port  # the gateway's own face

            # opening the link (or a chat app's preview of it) changes nothing
            status, page = await asyncio.to_thread(get, ack_url)
            assert status == 200 and b"SOS from W1" in page and b"value=ack" in page
            assert agent.store.alerts.get(alert_id).status == "notified"

            status, page = await asyncio.to_thread(post, ack_url, b"action=ack")
            assert status == 200 and b"Taken" in page, page
            taken = agent.store.alerts.get(alert_id)
            assert (taken.status, taken.responder) == ("acknowledged", "doc1")
            await clock.advance(600)  # far past the 2-minute ack timeout: nobody else is called
            assert not obs.on("responder/doc2/alert")
            assert agent.stats.push_acks == {"ack": 1}

            # the same link, once more: the page now offers "Resolved"
            status, page = await asyncio.to_thread(get, ack_url)
            assert status == 200 and b"value=resolve" in page and b"value=ack" not in page
            status, page = await asyncio.to_thread(post, ack_url, b"action=resolve")
            assert status == 200 and b"Resolved" in page
            assert agent.store.alerts.get(alert_id).status == "resolved"

            # a closed alert's link: a page saying so, and nothing changes
            status, page = await asyncio.to_thread(post, ack_url, b"action=ack")
            assert status == 200 and b"not (or no longer) yours" in page
            assert agent.store.alerts.get(alert_id).status == "resolved"
            assert agent.stats.rejected["push_ack_not_yours"] == 1


async def test_a_forged_link_gets_403_and_changes_nothing(tmp_path: Path) -> None:
    with push_service() as service:
        village, config = gateway(tmp_path, service)
        clock = ManualClock(T0)
        async with (
            village.observing("district/v1/push-gw") as obs,
            running(config, clock, links=village.links) as agent,
        ):
            await obs.publish("wearable/W1/event", {"event": "sos"})
            [app] = await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 notified")
            alert_id = app["alert_id"]
            assert agent.http is not None
            base = f"http://127.0.0.1:{agent.http.port}/answer/"
            real = agent.push_acks.ack_url(alert_id, "doc1")
            assert real is not None
            token = real.rsplit("/", 1)[1]
            forged = ("B" if token[0] == "A" else "A") + token[1:]  # one character off
            for bad in (forged, "not-a-token", "A" * 22):
                status, _ = await asyncio.to_thread(get, base + bad)
                assert status == 403, bad
                status, page = await asyncio.to_thread(post, base + bad, b"action=ack")
                assert status == 403 and b"no alert" in page, bad
            # neither the operator's token nor a link for someone else's alert opens it
            status, _ = await asyncio.to_thread(post, f"{base}{TOKEN}", b"action=ack")
            assert status == 403
            assert agent.store.alerts.get(alert_id).status == "notified"
            assert agent.stats.rejected["push_ack_forged"] == 4
            # the status page still wants the operator's token
            status, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{agent.http.port}/")
            assert status == 401
