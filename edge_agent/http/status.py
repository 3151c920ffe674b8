"""The status page's content: a snapshot of the running gateway, and its HTML.

Owns: ``snapshot`` (what an operator looks at: links, devices, alerts, traces, lamp groups,
policy version, outbox; JSON-ready, also served as ``/status.json``) and ``render_live`` (the
same as HTML, escaped here, once). The page is server-rendered; the SSE stream (``/events``)
sends the re-rendered live section when it changes and the page's script swaps it in. It only
reads, through the ``GatewayView``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import msgspec

from edge_agent.http.html import age as _age
from edge_agent.http.html import escape as _e
from edge_agent.http.readmodel import GatewayView

TRACES_SHOWN = 15
ALERTS_SHOWN = 20


def _reached(rows: list[dict[str, Any]], clock: Any) -> str:
    """Who was reached how, and when: one line per channel of each notification."""
    lines = []
    for r in rows:
        why = f" ({_e(r['reason'])})" if r["reason"] else ""
        lines.append(
            f'<span class="reach reach-{_e(r["state"])}" data-channel="{_e(r["channel"])}">'
            f"{_e(r['responder'])} {_e(r['channel'])} {_e(r['state'])}{why} {clock(r['at'])}</span>"
        )
    return "<br>".join(lines) or "-"


def _replies(a: dict[str, Any]) -> str:
    take, done = a["replies"]
    if not take:
        return ""
    return f"SMS <b>{_e(take)}</b> to take it, <b>{_e(done)}</b> when done"


def snapshot(view: GatewayView, started: float) -> dict[str, Any]:
    identity = view.identity()
    now = view.now()
    state = view.links()
    links: list[dict[str, Any]] = [
        {
            "name": link.name,
            "up": link.connected,
            "detail": link.address,
            "connects": link.connects,
            "error": link.last_error,
        }
        for link in state.mqtt
    ]
    for bus in state.buses:
        links.append(
            {
                "name": f"bus {bus.name}",
                "up": bus.online > 0,
                "detail": f"{bus.port}: {bus.online}/{bus.units} nodes answer",
                "connects": 0,
                "error": "",
            }
        )
    if state.dongle is not None:
        dongle = state.dongle
        links.append(
            {"name": "dongle", "up": dongle.connected, "detail": dongle.port, "connects": dongle.reopens, "error": ""}
        )
    lamps = view.lamps()
    levels = {lamp.id: lamp.level for lamp in lamps}
    devices = []
    for device in view.devices():
        seen = device.last_event
        state_text = "never seen" if seen is None else {"state": "reporting"}.get(seen, seen)
        level = levels.get(device.id)
        if level is not None:
            state_text += f", decided {level:g}%"
        devices.append(
            {
                "id": device.id,
                "kind": device.kind,
                "where": " / ".join(x for x in (device.group, device.zone) if x),
                "last_seen": device.last_seen,
                "state": state_text,
            }
        )
    groups: dict[str, dict[str, Any]] = {}
    for lamp in lamps:
        entry = groups.setdefault(lamp.group, {"group": lamp.group, "lamps": 0, "levels": {}, "overrides": 0})
        entry["lamps"] += 1
        shown = "-" if lamp.level is None else f"{lamp.level:g}%"
        entry["levels"][shown] = entry["levels"].get(shown, 0) + 1
        entry["overrides"] += lamp.overridden
    traces = [
        {"ts": t.ts, "rule": t.rule, "trigger": t.trigger, "actions": list(t.actions), "duration_us": t.duration_us}
        for t in view.traces(TRACES_SHOWN)
    ]
    return {
        "gateway": identity.gateway,
        "now": now,
        "tz": identity.timezone,
        "uptime_s": time.monotonic() - started,
        "policy_version": identity.policy_version,
        "links": links,
        "outbox": {
            o.link: {"messages": o.messages, "bytes": o.payload_bytes, "oldest_age_s": now - (o.oldest_created or now)}
            for o in view.outbox().links
        },
        "alerts": [msgspec.to_builtins(a) for a in view.recent_alerts(ALERTS_SHOWN)],
        "devices": devices,
        "groups": [
            {**g, "levels": ", ".join(f"{n}× {lvl}" for lvl, n in sorted(g["levels"].items()))}
            for _, g in sorted(groups.items())
        ],
        "traces": traces,
    }


def render_live(snap: dict[str, Any]) -> str:
    """The live section of the page: everything below the header, re-sent on change."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(snap["tz"])
    now = snap["now"]

    def clock(ts: float | None) -> str:
        return "-" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%H:%M:%S")

    out: list[str] = []
    out.append(
        f'<p class="summary">Gateway <b>{_e(snap["gateway"])}</b> · policy version '
        f'<b id="policy-version">{_e(snap["policy_version"])}</b> · gateway time {clock(now)} · '
        f"up {_age(snap['uptime_s'])}</p>"
    )
    out.append('<section id="links"><h2>Links</h2><table><tr><th>link</th><th>state</th><th>where</th>')
    out.append("<th>connects</th><th>last error</th></tr>")
    for link in snap["links"]:
        up = "up" if link["up"] else "down"
        out.append(
            f'<tr data-link="{_e(link["name"])}"><td>{_e(link["name"])}</td><td class="{up}">{up}</td>'
            f"<td>{_e(link['detail'])}</td><td>{_e(link['connects'])}</td><td>{_e(link['error'])}</td></tr>"
        )
    out.append("</table></section>")
    out.append('<section id="outbox"><h2>Outbox</h2><table><tr><th>link</th><th>messages</th><th>bytes</th>')
    out.append("<th>oldest</th></tr>")
    if not snap["outbox"]:
        out.append('<tr><td colspan="4" class="muted">empty</td></tr>')
    for link, o in snap["outbox"].items():
        out.append(
            f'<tr data-outbox="{_e(link)}"><td>{_e(link)}</td><td class="depth">{o["messages"]}</td>'
            f"<td>{o['bytes']}</td><td>{_age(o['oldest_age_s'])}</td></tr>"
        )
    out.append("</table></section>")
    out.append('<section id="alerts"><h2>Alerts</h2><table><tr><th>status</th><th>message</th><th>device</th>')
    out.append("<th>rule</th><th>step</th><th>responder</th><th>raised</th><th>reached</th><th>reply</th></tr>")
    if not snap["alerts"]:
        out.append('<tr><td colspan="9" class="muted">no alerts</td></tr>')
    for a in snap["alerts"]:
        cls = "open" if a["open"] else "closed"
        out.append(
            f'<tr class="alert {cls}" data-alert-id="{_e(a["alert_id"])}">'
            f'<td class="status status-{_e(a["status"])}">{_e(a["status"])}</td><td>{_e(a["message"])}</td>'
            f'<td>{_e(a["device"])}</td><td>{_e(a["rule"])}</td><td class="step">{_e(a["step"])}</td>'
            f'<td class="responder">{_e(a["responder"] or "-")}</td><td>{clock(a["created"])}</td>'
            f'<td class="reached">{_reached(a["reached"], clock)}</td>'
            f'<td class="replies">{_replies(a) if a["open"] else ""}</td></tr>'
        )
    out.append("</table></section>")
    out.append('<section id="groups"><h2>Lamps by group</h2><table><tr><th>group</th><th>lamps</th>')
    out.append("<th>decided levels</th><th>overridden</th></tr>")
    for g in snap["groups"]:
        out.append(
            f'<tr data-group="{_e(g["group"])}"><td>{_e(g["group"])}</td><td>{g["lamps"]}</td>'
            f"<td>{_e(g['levels'])}</td><td>{g['overrides']}</td></tr>"
        )
    out.append("</table></section>")
    out.append('<section id="devices"><h2>Devices</h2><table><tr><th>device</th><th>kind</th><th>group / zone</th>')
    out.append("<th>last seen</th><th>state</th></tr>")
    for d in snap["devices"]:
        seen = "-" if d["last_seen"] is None else f"{clock(d['last_seen'])} ({_age(now - d['last_seen'])} ago)"
        out.append(
            f'<tr data-device="{_e(d["id"])}"><td>{_e(d["id"])}</td><td>{_e(d["kind"])}</td><td>{_e(d["where"])}</td>'
            f'<td>{_e(seen)}</td><td class="state">{_e(d["state"])}</td></tr>'
        )
    out.append("</table></section>")
    out.append('<section id="traces"><h2>Last rule runs</h2><table><tr><th>time</th><th>rule</th><th>trigger</th>')
    out.append("<th>actions</th><th>µs</th></tr>")
    if not snap["traces"]:
        out.append('<tr><td colspan="5" class="muted">none yet</td></tr>')
    for t in snap["traces"]:
        out.append(
            f'<tr class="trace"><td>{clock(t["ts"])}</td><td>{_e(t["rule"])}</td><td>{_e(t["trigger"])}</td>'
            f"<td>{_e('; '.join(t['actions']) or '(condition false)')}</td><td>{_e(t['duration_us'])}</td></tr>"
        )
    out.append("</table></section>")
    return "".join(out)


def render_page(snap: dict[str, Any]) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(snap['gateway'])}: gateway status</title>"
        '<link rel="stylesheet" href="static/status.css"></head><body>'
        f'<header><h1>{_e(snap["gateway"])} <span class="muted">gateway status</span></h1>'
        '<span id="conn" class="muted">static</span></header>'
        f'<main id="live">{render_live(snap)}</main>'
        '<footer class="muted">read-only · <a href="metrics">/metrics</a> · <a href="status.json">status.json</a>'
        "</footer>"
        '<script src="static/status.js"></script></body></html>\n'
    )
