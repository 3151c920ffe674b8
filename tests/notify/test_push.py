"""The push channel: a push goes through Apprise to a real HTTP server on 127.0.0.1 standing in
for ntfy or a webhook (nothing is mocked; no internet), and comes back as a Report. A service
that answers 500 or is down is a failed Report and a TransportError (the outbox keeps the row);
the push URL, which carries a token, is never in a log line, an error or a Report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_agent.config.schema import GatewayFile, Identity, Responder
from edge_agent.errors import ConfigError, PublishRefused, TransportError
from edge_agent.notify.push import PushLink, PushPayload, read_push_urls
from edge_agent.notify.report import NotifyLink, Report
from tests.notify.push_server import PushService, closed_port, push_service

SECRET = "tk_s3cr3t"  # stands for the token a real push URL holds


def payload(title: str, body: str, ack_url: str | None = None) -> bytes:
    return msgspec.json.encode({"title": title, "body": body, "ack_url": ack_url})


@pytest.fixture
def service() -> Any:
    with push_service() as service:
        yield service


def shown(text: str, body: dict[str, Any]) -> None:
    """What a phone shows: Apprise's JSON (``message``) and ntfy (``message``) both carry the body."""
    assert body["message"] == text, body


@pytest.mark.parametrize("scheme", ["json", "ntfy"])
async def test_a_push_reaches_the_service_with_its_title_body_and_ack_link(
    service: PushService, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # Apprise's own debug lines included: still no token
    url = (
        f"json://127.0.0.1:{service.port}/hook/{SECRET}"
        if scheme == "json"
        else f"ntfy://127.0.0.1:{service.port}/{SECRET}"
    )
    link = PushLink({"doc1": url})
    assert isinstance(link, NotifyLink) and link.connected
    ack = "http://192.168.1.10:9180/answer/AAAAAAAAAAAAAAAAAAAAAA"
    await link.publish("push/doc1/a1", payload("URGENT W1", "SOS from W1", ack))
    [push] = service.pushes()
    assert push.body["title"] == "URGENT W1"
    shown(f"SOS from W1\n\n{ack}", push.body)
    assert SECRET in push.path or push.body.get("topic") == SECRET  # it went where the URL said
    assert link.reports() == [Report("push/doc1/a1", "delivered")]
    assert link.reports() == []  # each reported once
    assert SECRET not in caplog.text


async def test_a_push_without_an_ack_link_is_the_body_alone(service: PushService) -> None:
    link = PushLink({"doc1": f"json://127.0.0.1:{service.port}/hook"})
    await link.publish("push/doc1/a1,a2", payload("ALERT", "two alerts"))
    [push] = service.pushes()
    shown("two alerts", push.body)


async def test_a_service_answering_500_is_a_failed_report_and_the_row_stays(
    service: PushService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service.status = 500
    link = PushLink({"doc1": f"json://127.0.0.1:{service.port}/hook/{SECRET}"})
    messages = [
        ("push/doc1/a1", payload("URGENT W1", "first"), 1, False),
        ("push/doc1/a2", payload("URGENT W2", "second"), 1, False),
    ]
    results = await link.publish_many(messages)
    # the first failed: the drain keeps it and everything behind it, in order
    assert len(results) == 1 and isinstance(results[0], TransportError)
    [report] = link.reports()
    assert report.topic == "push/doc1/a1" and report.state == "failed" and "500" in report.reason
    assert len(service.pushes()) == 1  # it did reach the service, which said no
    assert SECRET not in caplog.text and SECRET not in str(results[0]) and SECRET not in report.reason

    service.status = 200  # the service is back: the same rows go
    assert await link.publish_many(messages) == [None, None]
    assert [r.state for r in link.reports()] == ["delivered", "delivered"]


async def test_a_service_that_is_down_is_a_failed_report(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    link = PushLink({"doc1": f"json://127.0.0.1:{closed_port()}/hook/{SECRET}"}, timeout_s=10)
    with pytest.raises(TransportError):
        await link.publish("push/doc1/a1", payload("URGENT W1", "SOS"))
    [report] = link.reports()
    assert report.state == "failed" and "connection" in report.reason.lower()
    assert SECRET not in caplog.text


async def test_a_push_that_can_never_go_is_refused_not_retried(service: PushService) -> None:
    """No URL for that responder, or not a push payload: the drain parks it (PublishRefused)
    and the pushes behind it still go."""
    link = PushLink({"doc1": f"json://127.0.0.1:{service.port}/hook"})
    results = await link.publish_many(
        [
            ("push/nobody/a1", payload("t", "b"), 1, False),
            ("push/doc1/a2", b"not json", 1, False),
            ("push/doc1/a3", payload("t", "third"), 1, False),
        ]
    )
    assert isinstance(results[0], PublishRefused) and isinstance(results[1], PublishRefused) and results[2] is None
    assert [(r.topic, r.state) for r in link.reports()] == [
        ("push/nobody/a1", "failed"),
        ("push/doc1/a2", "failed"),
        ("push/doc1/a3", "delivered"),
    ]
    assert [p.body["message"] for p in service.pushes()] == ["third"]


def test_the_payload_is_the_contract_the_link_reads() -> None:
    assert msgspec.json.decode(payload("t", "b", "u"), type=PushPayload) == PushPayload("t", "b", "u")


def _gateway(tmp_path: Path, files: dict[str, str | None]) -> tuple[GatewayFile, Path]:
    responders = []
    for i, (name, text) in enumerate(files.items()):
        if text is not None:
            (tmp_path / name).write_text(text)
        responders.append(Responder(id=f"doc{i + 1}", role="village_doctor", push_url_file=name))
    gw = GatewayFile(gateway=Identity(id="gw", latitude=0, longitude=0, policy="p.toml"), responders=responders)
    return gw, tmp_path / "gw.toml"


def test_push_urls_are_read_from_their_files(tmp_path: Path) -> None:
    gw, path = _gateway(tmp_path, {"a.url": f"# doc1's phone\nntfy://ntfy.example/{SECRET}\n"})
    assert read_push_urls(gw, path) == {"doc1": f"ntfy://ntfy.example/{SECRET}"}


def test_a_bad_push_url_file_names_the_responder_the_file_and_the_key(tmp_path: Path) -> None:
    gw, path = _gateway(
        tmp_path,
        {
            "missing.url": None,
            "empty.url": "\n\n",
            "words.url": "my ntfy topic\n",
            "unknown.url": f"nosuchservice://{SECRET}@host\n",
            "two.url": "ntfy://a/b\nntfy://c/d\n",
        },
    )
    with pytest.raises(ConfigError) as caught:
        read_push_urls(gw, path)
    said = {p.path: str(p) for p in caught.value.problems}
    assert set(said) == {f"responders[{i}].push_url_file" for i in range(5)}
    for i, (name, what) in enumerate(
        [
            ("missing.url", "cannot read"),
            ("empty.url", "empty"),
            ("words.url", "not a URL"),
            ("unknown.url", "no service for the scheme 'nosuchservice'"),
            ("two.url", "2 lines"),
        ]
    ):
        line = said[f"responders[{i}].push_url_file"]
        assert f"'doc{i + 1}'" in line and str(tmp_path / name) in line and what in line, line
    assert SECRET not in str(caught.value)
