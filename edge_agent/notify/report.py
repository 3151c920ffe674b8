"""What every notification channel shares: the topic a notification is queued under, and what a
channel says of it after it was taken (network-delivered, or failed and why).

Owns: ``Report`` and ``NotifyLink`` (a ``Link`` that can also report on what it took), and the
notification topic ``<channel>/<target>/<alert ids>``: ``sms/+8613800138000/a1``,
``ring/+8613800138000/a1``, ``push/doctor-li/a1``. The target is the phone number (SMS, ring)
or the responder id (push: the secret URL stays in its file). Several alert ids joined by ``,``
are one message standing for several alerts (a storm of alerts to one phone becomes one SMS).
The topic of a message that is not a notification (an answer to a reply) has no alert ids.

Used by the outbox drain (the message was *handed*: the link took it), the links' own
``reports`` (delivered / failed) and the ledger that shows, per alert, step and channel, how far
each notification got (edge_agent/store/notifications.py). Only a person's acknowledgement
stops an escalation: nothing here does.
Must not import: the agent, the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from edge_agent.errors import PublishRefused, TransportError
from edge_agent.transports.link import Link, Outgoing

CHANNELS = ("app", "sms", "ring", "push")
Channel = Literal["app", "sms", "ring", "push"]
# the outbox link each channel drains into (``app`` is the village broker)
LINK_OF: dict[str, str] = {"app": "south", "sms": "modem", "ring": "ring", "push": "push"}
CHANNEL_OF: dict[str, str] = {link: channel for channel, link in LINK_OF.items()}


@dataclass(frozen=True, slots=True)
class Report:
    """A channel's word on a message it took: ``delivered`` (a delivery report, a call that rang
    at the far end, a push service's 2xx) or ``failed`` (``reason`` says why, for a person)."""

    topic: str
    state: Literal["delivered", "failed"]
    reason: str = ""


@runtime_checkable
class NotifyLink(Link, Protocol):
    def reports(self) -> list[Report]:
        """What became of messages taken since the last call, each reported once."""
        ...


@dataclass(frozen=True, slots=True)
class NotificationTopic:
    channel: str
    target: str
    alert_ids: tuple[str, ...]


def notification_topic(channel: str, target: str, alert_ids: tuple[str, ...] | list[str] = ()) -> str:
    if channel not in CHANNELS or channel == "app":
        raise ValueError(f"not a notification channel with a topic of its own: {channel!r}")
    if not target or "/" in target:
        raise ValueError(f"bad {channel} target {target!r}")
    if any(not a or "," in a or "/" in a for a in alert_ids):
        raise ValueError(f"bad alert id in {alert_ids!r}")
    return f"{channel}/{target}/{','.join(alert_ids)}" if alert_ids else f"{channel}/{target}"


def parse_notification_topic(topic: str) -> NotificationTopic | None:
    """The parts of a notification topic; None when ``topic`` is not one."""
    parts = topic.split("/")
    if len(parts) not in (2, 3) or parts[0] not in CHANNELS or parts[0] == "app" or not parts[1]:
        return None
    ids = tuple(a for a in parts[2].split(",") if a) if len(parts) == 3 else ()
    return NotificationTopic(parts[0], parts[1], ids)


async def publish_each(
    publish: Callable[[str, bytes], Awaitable[None]], messages: Sequence[Outgoing]
) -> list[Exception | None]:
    """A notification link's ``publish_many``: one message after the other; one it refuses for
    good (``PublishRefused``) is reported and the rest go on, one it cannot take now
    (``TransportError``) ends the batch (the rest stay in order behind it)."""
    results: list[Exception | None] = []
    for topic, payload, _qos, _retain in messages:
        try:
            await publish(topic, payload)
        except PublishRefused as exc:
            results.append(exc)
            continue
        except TransportError as exc:
            results.append(exc)
            break
        results.append(None)
    return results
