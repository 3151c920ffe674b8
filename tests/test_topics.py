"""The topic namespace has one owner: ``edge_agent/agent/topics.py`` and its ``TOPIC_CLASSES``.

Three angles, all derived from the code itself:
- statically, no module under ``edge_agent/`` but topics.py writes a topic string (an AST scan
  for the literals and f-strings a hand-built topic needs);
- the registry, its builders, the subscriptions, the module's summary and docs/TOPICS.md agree;
- at run time, every topic a real gateway puts on a real broker is of exactly one class, and
  every class is seen.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import pytest

from edge_agent.agent import topics
from edge_agent.agent.shadow import queue_report
from edge_agent.agent.topics import BOTH, NORTH, SOUTH, TOPIC_CLASSES, TopicClass
from edge_agent.clock import ManualClock
from edge_agent.policy.shadow_report import ShadowReport
from edge_agent.transports.mqtt_client import NO_DELAY
from tests.agent.harness import POLICY_HEAD, SOS_RULE, eventually, running, sign_policy, write_trusting_gateway
from tests.conftest import BrokerInfo

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "edge_agent"
TOPICS_MODULE = PACKAGE / "agent" / "topics.py"

# ----- the static scan ---------------------------------------------------------------------------

# The fixed words of the registry's patterns ("lamp", "state", "telemetry", "policy", "ack", ...):
# a literal that puts one of them next to a "/" is a topic (or a piece of one) being written.
WORDS = sorted({piece for c in TOPIC_CLASSES for piece in c.pattern.split("/") if not piece.startswith("{")})
SEGMENT = re.compile(r"(?:^|/)(?:{})(?:/|$)".format("|".join(map(re.escape, WORDS))))
ROOT_LIKE = re.compile(r"root|prefix", re.IGNORECASE)


def _name(node: ast.expr) -> str:
    """The name an expression ends in: ``self.root`` -> root, ``topics.root(gw)`` -> root."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _name(node.func)
    return ""


def _docstrings(tree: ast.Module) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def hand_built_topics(source: str) -> list[tuple[int, str]]:
    """(line, why) for each place in ``source`` that looks like a topic being built by hand:
    a literal with the district prefix, a literal or f-string with a pattern word next to a
    "/", or a "/..." glued to something named like a root (f-string or ``+``)."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for i, value in enumerate(node.values):
                if isinstance(value, ast.Constant):
                    skip.add(id(value))  # judged as a whole below
                elif isinstance(value, ast.FormattedValue) and ROOT_LIKE.search(_name(value.value)):
                    after = node.values[i + 1] if i + 1 < len(node.values) else None
                    if isinstance(after, ast.Constant) and str(after.value).startswith("/"):
                        found.append((node.lineno, f"f-string continues {_name(value.value)} with '/'"))
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            if topics.PREFIX in text or SEGMENT.search(text):
                found.append((node.lineno, f"f-string {text!r}"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            right = node.right
            if (
                ROOT_LIKE.search(_name(node.left))
                and isinstance(right, ast.Constant)
                and str(right.value).startswith("/")
            ):
                found.append((node.lineno, f"{_name(node.left)} + {right.value!r}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if topics.PREFIX in text or ("/" in text and SEGMENT.search(text)):
                found.append((node.lineno, f"literal {text!r}"))
    return sorted(set(found))


# Modules owned elsewhere that still build a topic by hand, each with the call that replaces it.
# An entry must go as soon as its module is clean (the test below says so).
PENDING: dict[str, str] = {}  # module -> what it must change, while a migration is under way


def test_no_module_but_topics_builds_a_topic() -> None:
    offenders: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == TOPICS_MODULE:
            continue
        found = hand_built_topics(path.read_text())
        if found:
            offenders[str(path.relative_to(REPO))] = found
    unexpected = {name: found for name, found in offenders.items() if name not in PENDING}
    assert not unexpected, f"build topics with edge_agent.agent.topics, not by hand: {unexpected}"
    cleaned = sorted(set(PENDING) - set(offenders))
    assert not cleaned, f"{cleaned} no longer build topics by hand: remove them from PENDING"


# The hand-built topics of the agent before topics.py owned them (edge_agent/agent/app.py at
# faa141b; the whole file scans to 17 findings): each must be caught on its own.
OLD_APP_LINES = [
    'subscriptions = [(f"{self.root}/{pattern}", 1) for pattern in topics.SOUTH_INBOUND]',
    'policy_topic = (f"{self.root}/{topics.POLICY}", 1)',
    'task = loop.create_task(self._publish_quietly(link, f"{self.root}/alarm", body))',
    'if topic == f"{self.root}/{topics.POLICY}": pass',
    'self._enqueue_north(f"telemetry/lamp/{event.device}", dict(event.data), event.device, TELEMETRY_PRIORITY)',
    'self.store.enqueue(link, f"{self.root}/{topics.POLICY_ACK}", encode(ack), priority=EVENT_PRIORITY)',
    'await self._publish_quietly(target, f"{self.root}/{topics.ROLLOUT}", body, retain=True)',
    'await self._publish_quietly(link, f"{self.root}/lamp/{lamp_id}/program", payload, retain=True)',
    'self.store.enqueue("south", f"{self.root}/responder/{effect.responder}/alert", payload)',
    'self._enqueue_north(f"event/{effect.topic}", dict(effect.payload), device, EVENT_PRIORITY)',
    'await link.publish(f"{self.root}/lamp/{lamp}/set", payload, qos=1)',
    'self.store.enqueue(link, f"{self.root}/{suffix}", body)',
    'status = topics.root(config.id) + "/status"',
    'TOPIC = "district/v1/gw/lamp/L1/state"',
    'SUFFIX = "lamp/+/state"',
]


@pytest.mark.parametrize("line", OLD_APP_LINES)
def test_the_scan_catches_each_hand_built_topic_of_the_old_agent(line: str) -> None:
    assert hand_built_topics(line), line


NEAR_MISSES = '''
"""A docstring may say lamp/<id>/state and district/v1/<gateway>/alert."""
URL = "mqtts://broker.example:8883"
log.info("%s outbox paused: %s", name, result)
counts = {f"rejected.{k}": v for k, v in rejects.items()}
kinds = ("state", "alert", "event", "lamp", "policy")
path = config.data_dir / "gateway.sqlite3"
text = f"{kind} {device!r} is not in the config"
detail = f"cannot store what {topic} caused: {exc}"
where = f"{which}.tls"
reason = f"rule:{rule.id}"
'''


def test_the_scan_has_no_false_positive_on_near_misses() -> None:
    assert hand_built_topics(NEAR_MISSES) == []


# ----- the registry and what is made from it -----------------------------------------------------

LEVEL_VALUES = {"lamp": "L1", "camera": "C1", "wearable": "W1", "responder": "doc1", "topic": "report/morning"}


def test_the_registry_is_well_formed() -> None:
    names = [c.name for c in TOPIC_CLASSES]
    assert len(names) == len(set(names))
    assert len({c.pattern for c in TOPIC_CLASSES}) == len(TOPIC_CLASSES)
    for c in TOPIC_CLASSES:
        assert c.side in (SOUTH, NORTH, BOTH), c
        assert c.publisher in ("gateway", "lamp", "camera", "wearable", "responder", "centre"), c
        assert c.qos in (0, 1, 2) and isinstance(c.retained, bool) and c.payload, c
        if c.publisher not in ("gateway", "centre"):  # a device publishes in its own name only
            assert c.publisher in c.levels, c
        assert "+" not in c.pattern and "#" not in c.pattern, "wildcards are written as named levels"


@pytest.mark.parametrize("topic_class", TOPIC_CLASSES, ids=lambda c: c.name)
def test_each_class_builds_and_parses_back(topic_class: TopicClass) -> None:
    levels = {name: LEVEL_VALUES[name] for name in topic_class.levels}
    topic = topics.build("gw1", topic_class.name, **levels)
    assert topic.startswith("district/v1/gw1/")
    assert topics.match("gw1", topic) == (topic_class, levels)
    builder = getattr(topics, topic_class.name, None)
    if topic_class.publisher == "gateway" or topic_class.name == "policy":
        assert builder is not None, f"topics.{topic_class.name}() is missing"
    if builder is not None:
        assert builder("gw1", *levels.values()) == topic
    # the subscription filter of the class matches its topics
    assert _filter_matches(topics.bind(topic_class, "gw1"), topic)


def test_builders_refuse_missing_levels_and_foreign_topics_are_not_ours() -> None:
    with pytest.raises(ValueError, match="lamp_set"):
        topics.build("gw1", "lamp_set")
    assert topics.match("gw1", "district/v1/gw2/alert") is None
    assert topics.match("gw1", "district/v1/gw1/lamp//state") is None
    assert topics.match("gw1", "district/v1/gw1/lamp/L1/state/extra") is None
    assert topics.match("gw1", "district/v1/gw1/event") is None


def test_subscriptions_come_from_the_registry() -> None:
    south_in = [c for c in TOPIC_CLASSES if c.inbound and c.side == SOUTH]
    with_uplink = topics.subscriptions("gw1", "south", uplink=True)
    assert with_uplink == [(topics.bind(c, "gw1"), c.qos) for c in south_in]
    assert ("district/v1/gw1/lamp/+/state", 1) in with_uplink
    centre = [("district/v1/gw1/policy", 1), ("district/v1/gw1/command/ack", 1)]
    assert topics.subscriptions("gw1", "north", uplink=True) == centre
    assert topics.subscriptions("gw1", "south", uplink=False) == [*with_uplink, *centre]
    assert topics.subscriptions("gw1", "north", uplink=False) == []


def _summary_lines() -> list[tuple[str, str | None]]:
    """(topic, publisher or None) for each topic line of topics.py's docstring summary."""
    lines = re.findall(r"^ {2}(\S+)(?:\s+(\w+) -> \w+)?", topics.__doc__ or "", re.MULTILINE)
    return [(topic, publisher or None) for topic, publisher in lines]


def test_the_module_summary_lists_exactly_the_registry() -> None:
    """tests/security reads this summary to check the city ACL; it must not drift."""
    summary = _summary_lines()
    assert sorted(topic for topic, _ in summary) == sorted(c.display for c in TOPIC_CLASSES)
    by_display = {c.display: c for c in TOPIC_CLASSES}
    for topic, publisher in summary:
        if publisher is not None and publisher != "gateway":
            assert by_display[topic].publisher == publisher, topic
        if publisher == "gateway":
            assert not by_display[topic].inbound, topic


def test_docs_topics_md_lists_exactly_the_registry() -> None:
    text = (REPO / "docs" / "TOPICS.md").read_text()
    south_part, _, north_part = text.partition("## North")
    north_part = north_part.split("\n## ")[0]

    def rows(part: str) -> list[str]:
        return re.findall(r"^\| `([^`]+)` \|", part, re.MULTILINE)

    assert sorted(rows(south_part)) == sorted(c.display for c in TOPIC_CLASSES if c.side == SOUTH)
    assert sorted(rows(north_part)) == sorted(c.display for c in TOPIC_CLASSES if c.side in (NORTH, BOTH))


def _filter_matches(filter_: str, topic: str) -> bool:
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or part not in ("+", t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


# ----- on the wire -------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()

RULES = (
    SOS_RULE
    + """
[[rules]]
id = "motion-report"
when = { trigger = "event", event = "motion", kind = "camera" }
then = [ { action = "publish", topic = "report/motion", payload = { note = "seen" } } ]
"""
)


@dataclass(frozen=True)
class Wire:
    topic: str
    qos: int
    retain: bool


@contextlib.asynccontextmanager
async def wiretap(broker: BrokerInfo, topic_filter: str) -> AsyncIterator[tuple[list[Wire], aiomqtt.Client]]:
    """A second client subscribed to ``topic_filter``: everything the broker forwards."""
    seen: list[Wire] = []
    ready = asyncio.Event()
    holder: list[aiomqtt.Client] = []

    async def listen() -> None:
        async with aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as client:
            holder.append(client)
            await client.subscribe(topic_filter, qos=1)
            ready.set()
            async for message in client.messages:
                seen.append(Wire(str(message.topic), message.qos, bool(message.retain)))

    task = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield seen, holder[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _classes_of(gateway: str, seen: list[Wire]) -> dict[str, list[Wire]]:
    by_class: dict[str, list[Wire]] = {}
    for wire in seen:
        matched = [c for c in TOPIC_CLASSES if _filter_matches(topics.bind(c, gateway), wire.topic)]
        assert len(matched) == 1, f"{wire.topic} matches {[c.name for c in matched]}, not exactly one class"
        parsed = topics.match(gateway, wire.topic)
        assert parsed is not None and parsed[0] == matched[0], wire.topic
        by_class.setdefault(matched[0].name, []).append(wire)
    return by_class


async def test_every_topic_on_the_wire_is_of_exactly_one_class_and_every_class_is_seen(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    """A real gateway with its north link on the same broker, driven through every flow that
    publishes: SOS (responder alert, alert north), lamp state (telemetry north), a rule's
    publish (event/...), a signed policy (policy/ack, programs to the lamps, rollout summary),
    lamp levels (resync on connect), the local alarm; plus the status birth message."""
    config, key = write_trusting_gateway(tmp_path, unique_id, mqtt_broker.port, RULES)
    root = topics.root(unique_id)
    clock = ManualClock(T0)
    # The session broker is shared by the tests of the session (one at a time): district/v1/#
    # also brings the retained leftovers of earlier tests' gateways. Anything else outside our
    # root was published while we ran, i.e. by this gateway in the wrong place.
    async with wiretap(mqtt_broker, f"{topics.PREFIX}/#") as (seen, device):

        async def send(name: str, body: bytes, retain: bool = False, **levels: str) -> None:
            await device.publish(topics.build(unique_id, name, **levels), body, qos=1, retain=retain)

        def ours(name: str) -> list[Wire]:
            return _classes_of(unique_id, [w for w in seen if w.topic.startswith(root + "/")]).get(name, [])

        async with running(config, clock) as agent:
            await eventually(lambda: ours("status") and len(ours("lamp_set")) >= 3, what="birth and resync")
            await send("wearable_event", b'{"v":1,"event":"sos","seq":1}', wearable="W1")
            await eventually(lambda: ours("responder_alert") and ours("alert"), what="alert south and north")
            alert_id = agent.store.alerts.newest()[0].alert_id
            await send("responder_ack", b'{"v":1,"alert_id":"%s"}' % alert_id.encode(), responder="doc1")
            await send("responder_resolved", b'{"v":1,"alert_id":"%s"}' % alert_id.encode(), responder="doc1")
            await send("lamp_state", b'{"v":1,"on":false,"level":0}', lamp="L1")
            await send("camera_event", b'{"v":1,"detection":"motion"}', camera="C1")
            await send("camera_status", b'{"v":1,"online":true}', camera="C1")
            await send("wearable_vitals", b'{"v":1,"heart_rate":80}', wearable="W1")
            await send("wearable_heartbeat", b'{"v":1,"battery":90}', wearable="W1")
            await eventually(lambda: ours("telemetry_lamp") and ours("event"), what="telemetry and rule event")
            policy = POLICY_HEAD.replace("level = 80", "level = 60").encode()
            await send("policy", sign_policy(key, policy, 1, T0), retain=True)
            await eventually(lambda: ours("policy_ack"), what="policy ack")
            await eventually(lambda: len(ours("lamp_program")) >= 3 and ours("rollout"), what="rollout")
            # No fault can be injected into a healthy store from outside, so the alarm is
            # sounded the way intake sounds it when a commit fails.
            agent.alarm("test", "sounded by tests/test_topics.py")
            await eventually(lambda: ours("alarm"), what="alarm")
            # no shadow-mode day ends here: a report is queued the way shadow mode queues one
            drill = ShadowReport(
                gateway=unique_id, candidate="drill", candidate_sha256="0" * 64, days_planned=1, started=""
            )
            queue_report(agent.store, agent.links, drill, clock.now())
            await eventually(lambda: ours("shadow_report"), what="shadow report")
            # the centre's operator acknowledges (the alert is closed by now: it changes nothing)
            await send("command_ack", b'{"v":1,"alert_id":"%s","by":"operator:t"}' % alert_id.encode())
            # of our classes: Mosquitto's $SYS dropped counter (edge_agent/agent/drops.py) comes too
            handled = agent.stats.received_by_class
            await eventually(lambda: handled.total() - handled["other"] == 10, what="the 10 inbound messages handled")
            assert agent.stats.rejected == {}, "every inbound class reached the agent's handlers"
        await send("policy", b"", retain=True)  # clear the retained bundle for the next tests

    mine = _classes_of(unique_id, [w for w in seen if w.topic.startswith(root + "/")])
    strays = [w.topic for w in seen if not w.topic.startswith(root + "/") and not w.retain]
    assert not strays, f"published outside the gateway's root: {strays}"
    assert sorted(mine) == sorted(c.name for c in TOPIC_CLASSES), "every class, inbound and outbound, seen"
    for name, wires in mine.items():
        topic_class = topics.BY_NAME[name]
        assert {w.qos for w in wires} == {topic_class.qos}, name
        if not topic_class.retained:
            assert not any(w.retain for w in wires), f"{name} arrived retained"
