"""A person's answer by SMS: a reply "1 <code>" acknowledges the alert, "2 <code>" resolves it.

Owns: the loop over the modem's received SMS. A reply counts only from a responder's
registered number (``responders[].phone``), for an alert that responder may take, through the
same engine path as the app's ``responder/<id>/ack``: only this stops an escalation, never an
SMS being sent or delivered. A reply from an unknown number, one not understood, with a code no
open alert has, or for an alert that is not (or no longer) theirs changes nothing: it is counted
(``sms_reply_<reason>``) and answered with one short SMS (at most one per number per
``ANSWER_EVERY_S``; nothing to an unknown number). Each SMS file leaves the inbox only after
what it caused is on disk (edge_agent/notify/gammu.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from edge_agent.agent.context import GatewayContext
from edge_agent.agent.intake import Intake
from edge_agent.notify.gammu import ModemLink, ReceivedSms
from edge_agent.policy.messages import parse_reply, render_refusal, reply_code
from edge_agent.store.outbox import ALERT_PRIORITY

log = logging.getLogger("edge_agent")

ANSWER_EVERY_S = 600.0  # at most one refusal answer per number in this long (a loop of replies costs SMS)


class Replies:
    def __init__(self, context: GatewayContext, intake: Intake, modem: ModemLink, poll_s: float) -> None:
        self.context = context
        self.intake = intake
        self.modem = modem
        self.poll_s = poll_s
        self.by_phone = {r.phone: r.id for r in context.config.file.responders if r.phone is not None}
        self._answered: dict[str, float] = {}  # number -> when it was last answered

    async def run(self) -> None:
        while True:
            for report in self.modem.reports():  # delivered stops nothing: only a reply does
                if report.state == "failed":
                    self.failed(report.topic)
            for sms in self.modem.received():
                try:
                    self.handle(sms)
                    await self.context.store.sync()
                except sqlite3.Error as exc:  # kept in the inbox: handled again on the next look
                    self.context.alarm.sound("storage", f"a reply SMS cannot be stored: {exc}")
                    break
                except Exception as exc:  # a bug: the SMS is kept for a person, and said out loud
                    log.exception("reply SMS %s from %s broke the agent", sms.path.name, sms.number)
                    self.context.alarm.sound("sms_reply", f"reply SMS {sms.path.name} not handled ({exc!r}): kept")
                    self.modem.failed(sms)
                    continue
                self.modem.handled(sms)
            await asyncio.sleep(self.poll_s)

    def failed(self, topic: str) -> None:
        """The daemon could not send an SMS: counted and alarmed; when SMS was the only channel
        of the step (the chain has no ``app``), the next responder is called now, not at the
        ack timeout (a person who was never reached cannot answer)."""
        _, number, *rest = topic.split("/")
        who = self.by_phone.get(number, number)
        self.context.stats.sms_failed += 1
        self.context.alarm.sound("sms_failed", f"the modem could not send the SMS to {who} ({number})")
        if not rest:
            return  # an answer to a reply, not a notification
        for alert_id in rest[0].split(","):  # one SMS may stand for several alerts
            alert = self.context.store.alerts.get(alert_id)
            if alert is None or alert.responder != who:
                continue
            chain = self.context.active.engine.policy.chains.get(alert.chain or "")
            if chain is not None and "app" not in chain.channels:
                self.intake.unreachable(alert.alert_id, who)

    def handle(self, sms: ReceivedSms) -> None:
        """Apply one reply (inside its own transactions); raises sqlite3.Error when it cannot be stored."""
        stats = self.context.stats
        responder = self.by_phone.get(sms.number)
        if responder is None:
            self._refuse("unknown_number", sms, answer=False)
            return
        messages = self.context.active.engine.policy.messages
        reply = parse_reply(messages, sms.text)
        if reply is None:
            self._refuse("not_understood", sms)
            return
        alert = next((a for a in self.context.store.alerts.answerable() if reply_code(a.alert_id) == reply.code), None)
        if alert is None:
            self._refuse("unknown_code", sms)
            return
        if reply.action == "ack" and alert.status == "acknowledged" and alert.responder == responder:
            return  # a second "1 <code>" from the one who took it: nothing to change or to answer
        if reply.action == "ack":
            changed = self.intake.acknowledge(alert.alert_id, responder)
        else:
            changed = self.intake.resolve(alert.alert_id, responder)
        if not changed:
            self._refuse("not_yours", sms)
            return
        stats.sms_replies[reply.action] += 1
        log.info("SMS reply from %s: %s %s (alert %s)", responder, reply.action, reply.code, alert.alert_id)

    def _refuse(self, reason: str, sms: ReceivedSms, *, answer: bool = True) -> None:
        stats, now = self.context.stats, self.context.clock.now()
        stats.rejected[f"sms_reply_{reason}"] += 1
        self.context.unflushed.rejects[f"sms_reply_{reason}"] += 1
        log.warning("SMS reply from %s refused (%s): %r", sms.number, reason, sms.text[:80])
        last = self._answered.get(sms.number)
        if not answer or (last is not None and now - last < ANSWER_EVERY_S):
            return
        self._answered[sms.number] = now
        text = render_refusal(self.context.active.engine.policy.messages, reason)
        with self.context.store.transaction():
            self.context.store.outbox.enqueue(
                "modem", f"sms/{sms.number}", text.encode(), priority=ALERT_PRIORITY, now=now
            )
        self.context.links.wake["modem"].set()
