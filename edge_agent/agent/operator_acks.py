"""The district centre's operator acknowledges an alert: ``command/ack`` (platform -> gateway).

Owns: ``OperatorAcks``. It takes ``district/v1/<gw>/command/ack``
``{"v":1,"alert_id":"…","by":"operator:<name>"}`` ahead of the links' handlers, finds the
responder the alert waits for now, and hands the intake that responder's own acknowledgement
(``responder/<id>/ack``): the same path as the app's answer and a push link's
(``Intake.receive_south`` -> ``Intake.acknowledge``: in the link's batch, durable before the
broker hears it was taken), and only this stops the escalation. Logged as by the operator.
A malformed command is rejected and counted (``bad_operator_ack``); one for an alert unknown,
answered or closed changes nothing (logged).
Must not import: the app.
"""

from __future__ import annotations

import logging

import msgspec

from edge_agent.agent import topics
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.push_acks import WAITING
from edge_agent.transports.link import Handled, MessageHandler

log = logging.getLogger("edge_agent")


class OperatorAck(msgspec.Struct, frozen=True):
    v: int
    alert_id: str
    by: str  # "operator:<user name>", as the centre's console sends it


class OperatorAcks:
    """``receive``: the intake's handler for south messages (``Intake.receive_south``)."""

    def __init__(self, context: GatewayContext, receive: MessageHandler) -> None:
        self.context = context
        self.receive = receive
        self.topic = topics.command_ack(context.gateway)
        self.max_payload = context.limits.max_payload_bytes

    def wrap(self, handler: MessageHandler) -> MessageHandler:
        """``handler`` with ``command/ack`` taken here first."""

        async def handle(topic: str, payload: bytes) -> Handled:
            if topic == self.topic:
                return await self.take(payload)
            return await handler(topic, payload)

        return handle

    async def take(self, payload: bytes) -> Handled:
        """Counted once: as ``command_ack`` here, or as the ``responder_ack`` it becomes."""
        ack = self._decode(payload)
        if ack is None:
            return True  # counted; taken, so the broker does not bring it again
        alert = self.context.store.alerts.get(ack.alert_id)
        if alert is None or alert.status not in WAITING or alert.responder is None:
            self._received()
            state = "unknown" if alert is None else alert.status
            log.info("operator acknowledgement by %s of alert %s changes nothing: %s", ack.by, ack.alert_id, state)
            return True
        log.warning("alert %s acknowledged by %s on behalf of %s", alert.alert_id, ack.by, alert.responder)
        answer = msgspec.json.encode({"v": 1, "alert_id": alert.alert_id})
        return await self.receive(
            topics.build(self.context.gateway, "responder_ack", responder=alert.responder), answer
        )

    def _decode(self, payload: bytes) -> OperatorAck | None:
        problem = ""
        if len(payload) > self.max_payload:
            problem = f"{len(payload)} bytes"
        else:
            try:
                ack = msgspec.json.decode(payload, type=OperatorAck)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                problem = str(exc)
            else:
                if ack.v == 1 and ack.alert_id:
                    return ack
                problem = f"v={ack.v}, alert_id={ack.alert_id!r}"
        self._received()
        self.context.stats.rejected["bad_operator_ack"] += 1
        self.context.unflushed.rejects["bad_operator_ack"] += 1
        log.warning("rejected %s: %s", self.topic, problem)
        return None

    def _received(self) -> None:
        self.context.stats.received += 1
        self.context.stats.received_by_class["command_ack"] += 1
