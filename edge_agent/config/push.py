"""The push channel's side of the gateway file: each responder's Apprise URL, read from the
file ``responders[].push_url_file`` names.

Owns: ``read_push_url`` (the one reading of such a file: at ``load_config``, so ``edge-agent
check`` reports it, and when the push link is built) and keeping the URLs' secrets out of logs:
``redact`` cuts every ``scheme://...`` and every part of a URL read that may be a token (a ntfy
topic, a webhook path, a password); ``quiet_apprise`` puts it on Apprise's log lines and drops
their debug lines (payloads and headers) and urllib3's (each request's path).
A push URL carries a token: no problem, log line or error here shows more than its scheme.
Apprise (its plugin table costs a third of a second) is imported only when a file is read.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from edge_agent.errors import ConfigError, Problem

_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://\S+")
_SECRETS: set[str] = set()  # the parts of the push URLs read: user, password, path, query values


def keep_secret(url: str) -> None:
    """From now on, cut the parts of ``url`` that may be a token (all but scheme, host and
    port) out of whatever ``redact`` is given: Apprise names a ntfy topic in its warnings."""
    parts = urlsplit(url)
    found = [parts.username or "", parts.password or "", *parts.path.split("/")]
    found += [value for _, value in parse_qsl(parts.query)]
    _SECRETS.update(unquote(part) for part in found if len(part) >= 4)
    _SECRETS.update(part for part in found if len(part) >= 4)


def redact(text: str) -> str:
    """``text`` with every ``scheme://...`` cut to ``scheme://…`` and every secret part of a
    push URL (``keep_secret``) to ``…``."""
    text = _URL.sub(r"\1://…", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "…")
    return text


class _Redact(logging.Filter):
    """Apprise's lines, redacted; its debug lines (payloads, headers: a basic auth) dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return False
        record.msg, record.args = redact(record.getMessage()), None
        return True


class _Requests(_Redact):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and super().filter(record)


def quiet_apprise() -> None:
    """Redact what Apprise logs (``_Redact``), and drop the debug lines of the HTTP client under
    it (urllib3 names each request's path: a webhook's token). Idempotent."""
    for name, kind in (("apprise", _Redact), ("urllib3.connectionpool", _Requests)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


def url_scheme(url: str) -> str:
    """The scheme of ``url`` (lower case), "" if it has none: the only part that may be shown."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) else ""


def read_push_url(path: Path, *, source: str, key: str, responder: str) -> str:
    """The one Apprise URL in the file at ``path``; ConfigError naming ``source``'s ``key`` (e.g.
    ``responders[2].push_url_file``), the responder and the file when it is missing, empty, more
    than one line of text, or not a URL Apprise can send to."""

    def problem(what: str) -> ConfigError:
        return ConfigError([Problem(source, key, f"responder {responder!r}: {path}: {what}")])

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise problem(f"cannot read the push URL file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise problem("not a text file") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise problem("empty: expected one Apprise URL (ntfy://, gotify://, tgram://, json://...)") from None
    if len(lines) > 1:
        raise problem(f"{len(lines)} lines: expected one Apprise URL") from None
    url = lines[0]
    keep_secret(url)
    scheme = url_scheme(url)
    if not scheme:
        raise problem("not a URL: expected scheme://... (ntfy://, gotify://, tgram://, json://...)")
    quiet_apprise()
    from apprise import Apprise
    from apprise.manager_plugins import NotificationManager

    if scheme not in NotificationManager():  # type: ignore[no-untyped-call]  # (Apprise: untyped)
        raise problem(f"Apprise has no service for the scheme {scheme!r}")
    if Apprise.instantiate(url) is None:
        raise problem(f"Apprise cannot use this {scheme}:// URL (a part is missing or malformed)")
    return url
