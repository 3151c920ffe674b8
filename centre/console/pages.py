"""The console's HTML: the login page, the main page and its live section, the energy plot.

Owns: rendering (everything escaped here; the page's script only swaps in what the server sent),
the energy plot as inline SVG (stacked bars: one per UTC day, one colour per group), the
acknowledge forms (only for an operator, each with the session's CSRF token).
No inline script or style anywhere: the strict CSP (script-src/style-src 'self') holds.
Must not import: the server, the database.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from edge_agent.http.html import age as _age
from edge_agent.http.html import escape as _e

PALETTE = ("#0969da", "#1a7f37", "#bf8700", "#cf222e", "#8250df", "#1b7c83", "#bc4c00", "#57606a")
PLOT_W, PLOT_H, PAD_L, PAD_B, PAD_T = 760, 220, 56, 28, 10


def _head(title: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)}</title><link rel="stylesheet" href="/static/console.css"></head>'
    )


def render_login(message: str = "", username: str = "") -> str:
    note = f'<p class="error" role="alert">{_e(message)}</p>' if message else ""
    return (
        _head("District centre: sign in")
        + '<body class="login"><main><h1>District centre</h1>'
        + note
        + '<form method="post" action="/login">'
        + f'<label>User <input name="username" autocomplete="username" required value="{_e(username)}"></label>'
        + '<label>Password <input name="password" type="password" autocomplete="current-password" required></label>'
        + '<button type="submit">Sign in</button></form></main></body></html>\n'
    )


def _gateways(rows: list[dict[str, Any]], now: float) -> str:
    if not rows:
        return '<p class="muted">No gateway has reported yet.</p>'
    body = []
    for g in rows:
        state = '<span class="up">online</span>' if g["online"] else '<span class="down">offline</span>'
        seen = _age(now - g["last_seen"]) + " ago" if g["last_seen"] is not None else "never"
        lamps = f"{g['lamps_on_version']}/{g['lamps']}"
        full = g["lamps"] > 0 and g["lamps_on_version"] == g["lamps"]
        body.append(
            f'<tr data-gateway="{_e(g["gateway"])}"><td>{_e(g["gateway"])}</td><td>{state}</td><td>{_e(seen)}</td>'
            f"<td>{_e(g['policy_version'] if g['policy_version'] is not None else '-')}</td>"
            f'<td class="{"" if full else "partial"}">{_e(lamps)}</td>'
            f"<td>{_e(g['outbox_depth'] if g['outbox_depth'] is not None else '-')}</td><td>{g['outages']}</td></tr>"
        )
    return (
        '<table id="gateways"><thead><tr><th>gateway</th><th>state</th><th>last seen</th><th>policy</th>'
        "<th>lamps confirmed</th><th>outbox</th><th>uplink outages</th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _alerts(rows: list[dict[str, Any]], now: float, role: str, csrf: str) -> str:
    if not rows:
        return '<p class="muted">No open alert.</p>'
    body = []
    for a in rows:
        action = ""
        if a["ackable"] and role == "operator":
            action = (
                '<form method="post" action="/ack" class="ack">'
                f'<input type="hidden" name="alert_id" value="{_e(a["alert_id"])}">'
                f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
                '<button type="submit">acknowledge</button></form>'
            )
        reached = ", ".join(a["reached"]) or (a["responder"] or "-")
        body.append(
            f'<tr class="alert p{a["priority"]}" data-alert="{_e(a["alert_id"])}">'
            f"<td>{_e(a['gateway'])}</td><td>P{a['priority']}</td><td>{_e(a['message'])}"
            f'<br><span class="muted">{_e(a["device"])} · {_e(a["rule"])}</span></td>'
            f'<td class="status-{_e(a["status"])}">{_e(a["status"])}</td><td>{_e(reached)}</td>'
            f"<td>{_e(', '.join(a['channels']) or '-')}</td><td>{_e(a['step'] if a['step'] is not None else '-')}</td>"
            f"<td>{_e(_age(now - a['raised']))}</td><td>{action}</td></tr>"
        )
    return (
        '<table id="alerts"><thead><tr><th>gateway</th><th>prio</th><th>alert</th><th>status</th>'
        "<th>reached</th><th>channel</th><th>step</th><th>age</th><th></th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _faults(rows: list[dict[str, Any]], now: float) -> str:
    if not rows:
        return '<p class="muted">No lamp fault open.</p>'
    body = "".join(
        f"<tr><td>{_e(f['gateway'])}</td><td>{_e(f['lamp'])}</td><td>0x{f['faults']:02x}</td>"
        f"<td>{_e(_age(now - f['since']))}</td></tr>"
        for f in rows
    )
    return (
        '<table id="faults"><thead><tr><th>gateway</th><th>lamp</th><th>fault bits</th><th>open for</th></tr>'
        f"</thead><tbody>{body}</tbody></table>"
    )


def _nice(top: float) -> float:
    """A round axis maximum at or above ``top``."""
    if top <= 0:
        return 1.0
    step = 10.0 ** len(str(int(top))) / 10.0
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * mult >= top:
            return float(step * mult)
    return float(step * 10.0)


def render_energy(energy: dict[str, Any]) -> str:
    """Stacked bars of kWh per UTC day, one colour per group, with a legend; inline SVG."""
    days: list[float] = energy["days"]
    series: dict[str, list[float]] = energy["series"]
    if not series:
        return '<p class="muted">No energy reported in the last days.</p>'
    totals = [sum(values[i] for values in series.values()) / 1000.0 for i in range(len(days))]
    top = _nice(max(totals))
    inner_w, inner_h = PLOT_W - PAD_L - 8, PLOT_H - PAD_B - PAD_T
    slot = inner_w / len(days)
    bar = slot * 0.7
    parts = [
        f'<svg id="energy-plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {PLOT_W} {PLOT_H + 20 * len(series)}"'
        ' role="img" aria-label="energy per day and group, kWh">'
    ]
    for tick in range(5):
        value = top * tick / 4
        y = PAD_T + inner_h - inner_h * tick / 4
        parts.append(f'<line x1="{PAD_L}" x2="{PLOT_W - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e9ed"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{value:g}</text>')
    parts.append(f'<text x="4" y="{PAD_T + 10}" font-size="11">kWh</text>')
    for i, day in enumerate(days):
        x = PAD_L + i * slot + (slot - bar) / 2
        base = float(PAD_T + inner_h)
        for n, (name, values) in enumerate(series.items()):
            kwh = values[i] / 1000.0
            if kwh <= 0:
                continue
            h = inner_h * kwh / top
            base -= h
            colour = PALETTE[n % len(PALETTE)]
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}" '
                f'data-group="{_e(name)}" data-kwh="{kwh:.3f}"><title>{_e(name)}: {kwh:.2f} kWh</title></rect>'
            )
        label = datetime.fromtimestamp(day, UTC).strftime("%m-%d")
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{PAD_T + inner_h + 16}" text-anchor="middle" font-size="10">{label}</text>'
        )
    for n, name in enumerate(series):
        y = PLOT_H + 20 * n
        colour = PALETTE[n % len(PALETTE)]
        parts.append(f'<rect x="{PAD_L}" y="{y}" width="12" height="12" fill="{colour}"/>')
        total = sum(series[name]) / 1000.0
        parts.append(f'<text x="{PAD_L + 18}" y="{y + 10}" font-size="12">{_e(name)}: {total:.2f} kWh</text>')
    parts.append("</svg>")
    return "".join(parts)


def _rollouts(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">No rollout in progress or ended in the last day.</p>'
    body = []
    for r in rows:
        counts = ", ".join(f"{state.lower()} {n}" for state, n in r["counts"].items() if n)
        body.append(
            f'<tr data-rollout="{_e(r["rollout_id"])}"><td>{_e(r["rollout_id"])}</td><td>v{r["version"]}</td>'
            f"<td>{_e(r['state'])}</td><td>{r['wave']}</td>"
            f'<td><progress max="{max(r["total"], 1)}" value="{r["done"]}"></progress> {r["done"]}/{r["total"]}</td>'
            f"<td>{_e(counts or '-')}</td></tr>"
        )
    return (
        '<table id="rollouts"><thead><tr><th>rollout</th><th>version</th><th>state</th><th>wave</th>'
        "<th>progress</th><th>targets</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


def render_live(snap: dict[str, Any], role: str, csrf: str, now: float | None = None) -> str:
    """The live section: re-sent over SSE whenever the database says something changed."""
    now = time.time() if now is None else now
    open_alerts = len(snap["alerts"])
    return "\n".join(
        [
            f"<section><h2>Gateways ({len(snap['gateways'])})</h2>{_gateways(snap['gateways'], now)}</section>",
            f"<section><h2>Open alerts ({open_alerts})</h2>{_alerts(snap['alerts'], now, role, csrf)}</section>",
            f"<section><h2>Lamp faults ({len(snap['faults'])})</h2>{_faults(snap['faults'], now)}</section>",
            f"<section><h2>Energy per day (UTC) and group</h2>{render_energy(snap['energy'])}</section>",
            f"<section><h2>Rollouts</h2>{_rollouts(snap['rollouts'])}</section>",
        ]
    )


def render_page(snap: dict[str, Any], username: str, role: str, csrf: str, notice: str = "") -> str:
    note = f'<p class="notice" role="status">{_e(notice)}</p>' if notice else ""
    return (
        _head("District centre")
        + "<body><header><h1>District centre</h1>"
        + f'<div><span id="conn" class="muted">connecting…</span> · {_e(username)} ({_e(role)}) '
        + '<form method="post" action="/logout" class="inline">'
        + f'<input type="hidden" name="csrf" value="{_e(csrf)}"><button type="submit">sign out</button></form></div>'
        + "</header>"
        + note
        + f'<div id="live">{render_live(snap, role, csrf)}</div>'
        + '<script src="/static/console.js"></script></body></html>\n'
    )
