"""The page a responder opens from a push: the alert, and two buttons (take it / resolved).

Owns: the HTML of ``/answer/<token>`` (GET: the alert and the buttons; POST: what the press did),
reading the form's ``action``, and the page's security headers. GET changes nothing (a chat
app's link preview fetches it); only the form's POST acts. No script, no external style: the
page must open on a phone that has nothing but the link.
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qs

from edge_agent.http.actions import AckAction, AckOutcome, AckTarget

MAX_FORM_BYTES = 1024  # "action=resolve" is 14

# like the status page's, but the form may post to this page and the style is inline
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
]

_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:32em}"
    "button{font-size:1.3em;padding:.7em 1em;margin:.4em 0;width:100%}"
    ".ack{background:#1b7f3b;color:#fff}.done{background:#eee}"
)
_LABELS: dict[AckAction, tuple[str, str]] = {"ack": ("I take it", "ack"), "resolve": ("Resolved", "done")}


def _page(title: str, inner: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{inner}</body></html>"
    ).encode()


def _alert(target: AckTarget) -> str:
    return (
        f"<p><b>{escape(target.device)}</b>: {escape(target.message)}</p>"
        f"<p>For {escape(target.responder)}; status now: {escape(target.status)}.</p>"
    )


def render_ack(target: AckTarget) -> bytes:
    """GET: the alert and a button per action the responder may take now."""
    if not target.allowed:
        return _page("Not yours now", _alert(target) + "<p>This alert is not (or no longer) yours to take.</p>")
    buttons = "".join(
        f"<button class={_LABELS[a][1]} name=action value={a} type=submit>{_LABELS[a][0]}</button>"
        for a in target.allowed
    )
    return _page("Alert", _alert(target) + f"<form method=post>{buttons}</form>")


def render_outcome(outcome: AckOutcome, target: AckTarget | None) -> bytes:
    """POST: what the press did."""
    alert = _alert(target) if target is not None else ""
    if outcome == "acknowledged":
        return _page("Taken: it is yours", alert + "<p>Nobody else is called. Press Resolved when done.</p>")
    if outcome == "resolved":
        return _page("Resolved", alert + "<p>Thank you.</p>")
    if outcome == "not_yours":
        return _page("Not yours now", alert + "<p>Nothing changed: this alert is not (or no longer) yours.</p>")
    return _page("Unknown link", "<p>This link names no alert of this gateway.</p>")


def read_action(body: bytes, content_type: str) -> AckAction | None:
    """The form's ``action`` (``ack`` or ``resolve``); None for anything else."""
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        return None
    try:
        values = parse_qs(body.decode("ascii"), strict_parsing=False).get("action", [])
    except UnicodeDecodeError:
        return None
    if values == ["ack"]:
        return "ack"
    if values == ["resolve"]:
        return "resolve"
    return None
