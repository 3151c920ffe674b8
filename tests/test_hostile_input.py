"""Hostile input: payload decoding, config and policy parsing under fuzzing, and a flood.

Only the project's own error types come out; each input is handled quickly; the next valid
input is still handled; a burst of 10,000 messages leaves the agent within its memory cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import msgspec
import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.gateway_config import POLICY_HEAD, write_gateway_config
from edge_agent.config import load_config
from edge_agent.errors import ConfigError, ProtocolError
from edge_agent.models import SOUTH_SCHEMAS, ResponderAck, decode_payload
from edge_agent.policy.model import parse_policy
from edge_agent.transports.mqtt_client import NO_DELAY
from tests.conftest import BrokerInfo

SCHEMAS = [*SOUTH_SCHEMAS.values(), ResponderAck]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
FIELDS = ["v", "on", "level", "power_w", "faults", "detection", "zone", "online", "event", "seq", "heart_rate",
          "battery", "alert_id", "ts", "policy_version", "confidence"]  # fmt: skip
objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=8)


def fastest_ms(fn: Callable[[], object]) -> float:
    """Best of three: a scheduler hiccup on a loaded machine is not the input's cost."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        with contextlib.suppress(ProtocolError, ConfigError):
            fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SCHEMAS), st.binary(max_size=2048) | objects.map(msgspec.json.encode))
def test_payload_decoding_raises_only_protocol_errors_quickly(schema, payload: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        decode_payload(schema, payload, where="fuzz")
    except ProtocolError as exc:
        assert exc.reason in {"bad_json", "schema", "bad_version", "oversized", "too_deep", "implausible"}
    assert fastest_ms(lambda: decode_payload(schema, payload, where="fuzz")) < 10
    # the next valid input is still handled
    assert decode_payload(ResponderAck, b'{"v": 1, "alert_id": "a"}', where="ok").alert_id == "a"


def test_oversized_and_invalid_utf8_payloads() -> None:
    for payload, reason in (
        (b'{"v":1,"event":"sos","x":"' + b"a" * 20000 + b'"}', "oversized"),
        (b'{"v":1,"event":"\xff\xfe"}', "bad_json"),
        (b"", "bad_json"),
    ):
        try:
            decode_payload(SOUTH_SCHEMAS[("wearable", "event")], payload, where="t")
        except ProtocolError as exc:
            assert exc.reason == reason
        else:
            raise AssertionError("accepted a hostile payload")


toml_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=400)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(toml_text | objects.map(lambda d: "\n".join(f"{k!r} = {v!r}" for k, v in d.items())))
def test_policy_parsing_raises_only_config_errors(text: str) -> None:
    try:
        parse_policy(text.encode("utf-8", "surrogatepass"), "fuzz.toml")
    except ConfigError as exc:
        assert all(p.source == "fuzz.toml" for p in exc.problems)
    assert fastest_ms(lambda: parse_policy(text.encode("utf-8", "surrogatepass"), "fuzz.toml")) < 10


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.sampled_from(
            [
                "[gateway]",
                "id = 'x'",
                "latitude = 'north'",
                "[[lamps]]",
                "id = 3",
                "zone = []",
                "[south]",
                "url = 'ftp://x'",
                "[limits]",
                "traces_per_rule = -1",
                "policy = 'p.toml'",
                "[[rules]]",
                "when = {}",
                "[trust]",
                "keys = 5",
                "longitude = 1e999",
                "x = [",
            ]
        ),
        max_size=25,
    )
)
def test_gateway_config_parsing_raises_only_config_errors(tmp_path_factory, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("cfg") / "gw.toml"
    path.write_text("\n".join(lines))
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems


def test_a_burst_of_10000_messages_stays_under_the_memory_cap(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    """A babbling wearable hub floods the gateway; RSS stays under 150 MB; an SOS still goes out."""
    rules = """
[[rules]]
id = "sos"
when = { trigger = "event", event = "sos", kind = "wearable" }
then = [ { action = "alert", priority = 1, message = "SOS", notify = "medical" } ]
"""
    url = f"mqtt://127.0.0.1:{mqtt_broker.port}"
    path = write_gateway_config(tmp_path, unique_id, south_url=url, north_url=url, policy_text=POLICY_HEAD + rules)
    load_config(path)  # fails here, not in the child, if the config is wrong
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"district/v1/{unique_id}"
    try:
        peak = asyncio.run(_flood(mqtt_broker, root, agent.pid))
    finally:
        agent.terminate()
        agent.wait(10)
    assert peak < 150, f"agent RSS peaked at {peak:.0f} MB"


async def _flood(broker: BrokerInfo, root: str, pid: int) -> float:
    proc = psutil.Process(pid)
    async with aiomqtt.Client(broker.host, broker.port, max_inflight_messages=1000, socket_options=NO_DELAY) as client:
        await client.subscribe(f"{root}/status", qos=1)
        await client.subscribe(f"{root}/responder/#", qos=1)
        async for message in client.messages:  # wait until the agent is online
            if str(message.topic).endswith("/status") and message.payload == b"online":
                break
        peak = 0.0
        junk = [b'{"v":1,"heart_rate":80,"battery":50}', b"\x00" * 512, b'{"v":1,"event":"sos","seq":"x"}', b"[" * 5000]
        for i in range(10_000):
            topic = f"{root}/wearable/W1/vitals" if i % 4 == 0 else f"{root}/wearable/W1/event"
            await client.publish(topic, junk[i % 4], qos=i % 2)
            if i % 500 == 0:
                peak = max(peak, proc.memory_info().rss / 1e6)
        await client.publish(f"{root}/wearable/W1/event", b'{"v":1,"event":"sos","seq":424242}', qos=1)
        deadline = time.monotonic() + 60
        async for message in client.messages:
            peak = max(peak, proc.memory_info().rss / 1e6)
            if "/responder/" in str(message.topic):
                return peak
            if time.monotonic() > deadline:
                break
    raise AssertionError("the SOS after the flood never reached the responder")


def test_empty_and_foreign_topics_are_ignored_safely() -> None:
    from edge_agent.agent.topics import split

    assert split("gw", "") is None
    assert split("gw", "district/v1/gw/") is None
    assert split("gw", "district/v1/gw//x/y") is None
    assert split("gw", "district/v1/other/lamp/L1/state") is None
    assert split("gw", "district/v1/gw/lamp/L1/state") == ("lamp", "L1", "state")
