"""What a broker dropped behind the gateway's back: per-device ``seq`` gaps and the south
broker's own ``$SYS`` dropped counter, counted (``/metrics``) and told by the local alarm.

A broker acknowledges a device's QoS 1 message and may still drop it before the gateway gets
it (Mosquitto's per-client queue, ``max_queued_messages``, full while the agent is away, or
behind by more than the 65,535 messages the south link holds in flight). Two independent
traces of that:

* ``seq`` gaps: wearables number their events (``seq``). The last seq each device sent is
  kept in memory, rebuilt at start from the store's redelivery inbox (the newest row of each
  device, kept ``INBOX_KEEP_S``: a device silent longer starts afresh). A jump by more than
  one counts the missing ones; a seq back to 0 or 1 is the device's reboot, not a gap; an
  older seq seen for the first time is a late arrival (no gap, the last seq stays); a
  redelivery (same seq, already in the inbox) never gets here. No SQL of its own per event.
* ``$SYS/broker/publish/messages/dropped`` (Mosquitto 2.x, every ``sys_interval``, retained):
  the broker's total since it started, for any client. The last value seen is kept in the
  store's ``meta`` (in the open batch) so an agent restart does not alarm twice for the same
  drops; a smaller value is a broker restart (all of it is new). The embedded amqtt broker
  does not publish it: then nothing arrives and only the seq gaps tell.

The alarm (``seq_gap``, ``broker_dropped``) sounds at most once per device per
``ALARM_EVERY_S``; what is missed meanwhile is in the next alarm and always in the counters.
Must not import: the flows (intake, outbound, lamps, loops, policy_install) or the app.
"""

from __future__ import annotations

from edge_agent.agent.alarm import Alarm
from edge_agent.agent.runtime import AgentStats
from edge_agent.agent.topics import BROKER_DROPPED
from edge_agent.clock import Clock
from edge_agent.errors import ProtocolError
from edge_agent.models import Event
from edge_agent.store.db import Store

_META_KEY = "south.broker_dropped"


class DropWatch:
    ALARM_EVERY_S = 600.0

    def __init__(self, alarm: Alarm, stats: AgentStats, clock: Clock, store: Store) -> None:
        self.alarm = alarm
        self.stats = stats
        self.clock = clock
        self.meta = store.meta
        self._last: dict[str, int] = store.inbox.last_seqs()
        self._unalarmed: dict[str, int] = {}  # device -> missed since its last alarm
        self._alarmed_at: dict[str, float] = {}
        self._broker_seen: int | None = None  # the broker's counter as last seen (None: read meta)

    # ----- per-device seq ------------------------------------------------------------------
    def observe(self, event: Event) -> int:
        """A first-time event: how many of the device's events are missing before it."""
        seq = event.data.get("seq")
        if event.kind != "wearable" or not isinstance(seq, int):
            return 0
        device = event.device
        last = self._last.get(device)
        if last is None or seq == last + 1 or seq <= 1:  # first seen, in order, or a reboot
            self._last[device] = seq
            return 0
        if seq <= last:  # late (out of order): no gap, the last seq stays
            return 0
        self._last[device] = seq
        missed = seq - last - 1
        self.stats.seq_gaps[event.kind] += missed
        self.stats.seq_missed[device] += missed
        self._tell(device, missed, f"{event.kind} {device}: seq {last + 1}..{seq - 1}")
        return missed

    def _tell(self, device: str, missed: int, where: str) -> None:
        pending = self._unalarmed.get(device, 0) + missed
        now = self.clock.now()
        if now - self._alarmed_at.get(device, float("-inf")) < self.ALARM_EVERY_S:
            self._unalarmed[device] = pending
            return
        self._unalarmed[device], self._alarmed_at[device] = 0, now
        self.alarm.sound(
            "seq_gap",
            f"{where} never arrived ({pending} events missing since the last alarm):"
            " a broker acknowledged and dropped them",
        )

    # ----- the broker's $SYS counter ---------------------------------------------------------
    def broker_counter(self, payload: bytes) -> bool:
        """The south broker's dropped total (inside the open batch). False: not durable."""
        try:
            value = int(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise ProtocolError("bad_payload", where=BROKER_DROPPED, detail=repr(payload[:40])) from None
        seen = self._broker_seen
        if seen is None:
            stored = self.meta.get(_META_KEY)
            seen = int(stored) if stored is not None and stored.isdigit() else 0
        new = value - seen if value >= seen else value  # smaller: the broker restarted
        self._broker_seen = value
        if value != seen:
            self.meta.set(_META_KEY, str(value))
        if new > 0:
            self.stats.broker_dropped += new
            self.alarm.sound("broker_dropped", f"the south broker dropped {new} messages (its total {value})")
        return False
