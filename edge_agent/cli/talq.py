"""``edge-agent talq``: export a policy's lighting to TALQ 2.7.1, import a TALQ document as a policy.

Owns: the command-line face of ``edge_agent.talq`` (mapping in docs/TALQ.md). Exit codes: 0 done
(with a warning listing, by name, whatever TALQ or our programs cannot express), 2 a file that
cannot be read or is malformed (the problem names its key or JSON path), 3 with ``--strict`` when
anything could not be expressed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from edge_agent.cli.terminal import LazyConsole
from edge_agent.errors import ConfigError
from edge_agent.policy.model import parse_policy
from edge_agent.talq.common import DEFAULT_OWNER_CMS, Site, TalqError
from edge_agent.talq.export import export_talq
from edge_agent.talq.importer import import_talq, policy_toml

__all__ = ["talq_app"]

talq_app = typer.Typer(
    help="TALQ 2.7.1 calendars and control programs: export a policy's lighting, import a TALQ document.",
    no_args_is_help=True,
    add_completion=False,
)
_err = LazyConsole(stderr=True, highlight=False)

Strict = Annotated[bool, typer.Option("--strict", help="Exit 3 if anything could not be expressed.")]
Latitude = Annotated[float | None, typer.Option(help="Site latitude: check sun-dependent cases over a year.")]
Longitude = Annotated[float | None, typer.Option(help="Site longitude (with --latitude and --tz).")]
Tz = Annotated[str | None, typer.Option("--tz", help="Site time zone, e.g. Asia/Shanghai.")]


def _site(latitude: float | None, longitude: float | None, tz: str | None) -> Site | None:
    given = [v is not None for v in (latitude, longitude, tz)]
    if not any(given):
        return None
    if not all(given) or latitude is None or longitude is None or tz is None:
        raise typer.BadParameter("give --latitude, --longitude and --tz together")
    return Site(latitude, longitude, tz)


def _write(out: Path | None, text: str) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)


def _report(unsupported: list[str], what: str, strict: bool) -> None:
    if not unsupported:
        return
    _err.print(f"[yellow]warning:[/yellow] {len(unsupported)} item(s) {what}:")
    for item in unsupported:
        _err.print(f"  - {item}", markup=False, soft_wrap=True)
    if strict:
        raise typer.Exit(3)


@talq_app.command("export")
def export_command(
    policy: Annotated[Path, typer.Argument(help="The policy file (TOML).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the TALQ JSON here (default: stdout).")] = None,
    owner_cms: Annotated[str, typer.Option(help="TALQ ownerCMS of the exported objects.")] = DEFAULT_OWNER_CMS,
    latitude: Latitude = None,
    longitude: Longitude = None,
    tz: Tz = None,
    strict: Strict = False,
) -> None:
    """Export the policy's programs and group assignment as TALQ calendars and control programs."""
    site = _site(latitude, longitude, tz)
    try:
        parsed = parse_policy(policy.read_bytes(), str(policy))
    except OSError as exc:
        _err.print(f"[red]cannot read {policy}:[/red] {exc.strerror}")
        raise typer.Exit(2) from None
    except ConfigError as exc:
        _err.print(f"[red]{len(exc.problems)} problem(s) in the policy:[/red]")
        for problem in exc.problems:
            _err.print(f"  {problem}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    document, unsupported = export_talq(parsed, site=site, owner_cms=owner_cms)
    _write(out, json.dumps(document, indent=2) + "\n")
    if out is not None:
        _err.print(
            f"wrote {out}: {len(document['controlPrograms'])} control program(s), "
            f"{len(document['calendars'])} calendar(s)"
        )
    _report(unsupported, "TALQ cannot express exactly (or at all)", strict)


@talq_app.command("import")
def import_command(
    document: Annotated[Path, typer.Argument(help="The TALQ JSON document.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the policy TOML here (default: stdout).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Policy name (default: the document's, else talq-import).")] = None,
    latitude: Latitude = None,
    longitude: Longitude = None,
    tz: Tz = None,
    strict: Strict = False,
) -> None:
    """Import TALQ control programs and calendars as a policy file (programs and group assignment)."""
    site = _site(latitude, longitude, tz)
    try:
        raw = json.loads(document.read_text(encoding="utf-8"))
        policy, unsupported = import_talq(raw, site=site, name=name)
    except OSError as exc:
        _err.print(f"[red]cannot read {document}:[/red] {exc.strerror}")
        raise typer.Exit(2) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _err.print(f"[red]{document} is not JSON:[/red] {exc}", markup=False)
        raise typer.Exit(2) from None
    except TalqError as exc:
        _err.print(f"[red]malformed TALQ document {document}:[/red]", end=" ")
        _err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _write(out, policy_toml(policy))
    if out is not None:
        _err.print(f"wrote {out}: {len(policy.programs)} program(s), {len(policy.assign)} group assignment(s)")
    _report(unsupported, "our policy cannot express exactly", strict)
