"""``edge-agent policy``: create signing keys, sign a validated policy, verify a bundle.

Owns: the command-line face of the signed policy bundle (the format and the checks are in
``edge_agent.policy.bundle*`` and ``validation_record``, the key files in ``edge_agent.agent.policy_keys``).
Must not import: edge_agent.engine, edge_agent.transports, edge_agent.store (signing and
verifying a file needs no gateway state).

Run standalone with ``python -m edge_agent.cli.policy --help``.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, cast, get_args

import typer

from edge_agent.agent.policy_keys import load_private_key, load_trusted_keys, write_keypair
from edge_agent.cli.terminal import LazyConsole, escape
from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import DEFAULT_MAX_ENVELOPE_BYTES, Bundle, BundleKind, bundle_sha256, parse_envelope
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.bundle_verify import check_payload, check_signatures, check_target, check_validity
from edge_agent.policy.keys import key_id
from edge_agent.policy.validation_record import decode_validation_record

if TYPE_CHECKING:
    from rich.table import Table


__all__ = ["policy_app"]

policy_app = typer.Typer(
    help=(
        "Signed policy bundles: keygen (the centre's Ed25519 key pair), sign (a policy file that "
        "passed `twin validate`), verify (what a gateway would accept). "
        "Format: docs/POLICY_BUNDLE.md."
    ),
    no_args_is_help=True,
    add_completion=False,
)

_out = LazyConsole(highlight=False)
_err = LazyConsole(stderr=True, highlight=False)

_KINDS: tuple[str, ...] = get_args(BundleKind)


def _fail(exc: PolicyError, action: str) -> NoReturn:
    _err.print(f"[bold red]{action}: {escape(exc.reason)}[/]: {escape(exc.detail)}")
    raise typer.Exit(code=1)


def _when(epoch: int) -> str:
    return f"{epoch} ({datetime.fromtimestamp(epoch, UTC).isoformat()})"


def _parse_time(text: str) -> int:
    """Epoch seconds, or ISO 8601 (a time without a zone is taken as UTC)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither epoch seconds nor ISO 8601 (e.g. 2025-03-01T18:00:00+00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _bundle_table(bundle: Bundle, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    gateways = ", ".join(bundle.target.gateways)
    forced = "[bold red]YES (signed without a passing validation)[/]" if bundle.forced else "no"
    rows = [
        ("kind", bundle.kind),
        ("version", str(bundle.version)),
        ("district", bundle.target.district),
        ("gateways", gateways),
        ("issued_at", _when(bundle.issued_at)),
        ("not_before", _when(bundle.not_before)),
        ("expires", _when(bundle.expires)),
        ("payload", f"{len(bundle.payload)} bytes, sha256 {bundle.payload_sha256}"),
        ("validation_sha256", bundle.validation_sha256 or "none"),
        ("key_id", bundle.key_id),
        ("bundle_sha256", bundle_sha256(bundle)),
    ]
    for name, value in rows:
        table.add_row(name, escape(value))
    table.add_row("forced", forced)
    return table


def _forced_warning(bundle: Bundle) -> None:
    from rich.panel import Panel

    _err.print(
        Panel(
            f"Bundle v{bundle.version} is FORCED: it was signed without a passing validation "
            "record. Gateways will accept it and report forced=true. Make sure this is intended.",
            title="WARNING: forced policy bundle",
            border_style="bold red",
        )
    )


@policy_app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for the key pair (created 0700 if missing).")],
    name: Annotated[str, typer.Option("--name", help="File stem: writes NAME.key (0600) and NAME.pub.")] = "centre",
) -> None:
    """Create an Ed25519 signing key (NAME.key, mode 0600) and its public key (NAME.pub).

    Keep NAME.key offline; copy NAME.pub to each gateway's pinned-key directory.
    Refuses to overwrite existing files.
    """
    try:
        private_path, public_path, kid = write_keypair(out, name)
    except PolicyError as exc:
        _fail(exc, "keygen refused")
    except OSError as exc:
        _fail(PolicyError("key_write_failed", f"{out}: {exc.strerror}"), "keygen failed")
    _out.print(f"private key: {escape(str(private_path))} (0600, keep it secret)")
    _out.print(f"public key:  {escape(str(public_path))} (pin it on the gateways)")
    _out.print(f"key id:      {kid}")


@policy_app.command()
def sign(
    policy_file: Annotated[
        Path, typer.Argument(help="The policy TOML file; signed byte for byte.", show_default=False)
    ],
    key: Annotated[Path, typer.Option("--key", help="Private key PEM from `policy keygen`.")],
    district: Annotated[str, typer.Option("--district", help="District the bundle is for.")],
    gateways: Annotated[
        str,
        typer.Option("--gateways", help="Comma-separated gateway ids, or * for every gateway."),
    ],
    version: Annotated[int, typer.Option("--version", min=1, help="Bundle version; must exceed the active one.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed envelope.")],
    validation: Annotated[
        Path | None,
        typer.Option(
            "--validation",
            help="Validation record JSON from `twin validate` (must pass and match the file).",
        ),
    ] = None,
    valid_days: Annotated[
        float, typer.Option("--valid-days", min=0.001, help="Validity after not-before, in days.")
    ] = 30.0,
    not_before: Annotated[
        str | None,
        typer.Option(
            "--not-before",
            help="Start of validity: epoch seconds or ISO 8601 (UTC if no zone). Default: now.",
        ),
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help=f"Bundle kind: one of {', '.join(_KINDS)}.")] = "policy",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Sign without a passing validation record; the bundle then says forced=true.",
        ),
    ] = False,
) -> None:
    """Sign POLICY_FILE into a bundle for a district and a set of gateways.

    Refuses unless --validation names a passing record of `twin validate` for this exact file,
    or --force is given (the bundle is then flagged forced and a warning is printed).
    """
    if kind not in _KINDS:
        raise typer.BadParameter(f"{kind!r}; expected one of {', '.join(_KINDS)}", param_hint="--kind")
    try:
        payload = policy_file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"{policy_file}: {exc.strerror}", param_hint="POLICY_FILE") from None
    ids = [g.strip() for g in gateways.split(",") if g.strip()]
    now = int(time.time())
    start = now if not_before is None else _parse_time(not_before)
    try:
        record = None
        if validation is not None:
            try:
                record_bytes = validation.read_bytes()
            except OSError as exc:
                raise PolicyError("bad_validation_record", f"{validation}: cannot read ({exc.strerror})") from None
            record = decode_validation_record(record_bytes, source=str(validation))
        private_key = load_private_key(key)
        bundle = build_bundle(
            payload,
            kind=cast(BundleKind, kind),  # checked against _KINDS above
            district=district,
            gateways=ids,
            version=version,
            issued_at=now,
            not_before=start,
            expires=start + max(1, round(valid_days * 86400)),
            key_id=key_id(private_key.public_key()),
            validation=record,
            force=force,
        )
        envelope = sign_bundle(bundle, private_key)
    except PolicyError as exc:
        _fail(exc, "sign refused")
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_bytes(envelope)
        os.replace(tmp, out)
    except OSError as exc:
        _fail(PolicyError("write_failed", f"{out}: {exc.strerror}"), "sign failed")
    if bundle.forced:
        _forced_warning(bundle)
    _out.print(_bundle_table(bundle, f"signed -> {escape(str(out))}"))


@policy_app.command()
def verify(
    bundle_file: Annotated[Path, typer.Argument(help="A signed bundle (envelope) file.", show_default=False)],
    pubkey: Annotated[
        list[Path],
        typer.Option("--pubkey", help="Pinned public key PEM, or a directory of them (repeatable)."),
    ],
    gateway: Annotated[str | None, typer.Option("--gateway", help="Check that this gateway id is targeted.")] = None,
    district: Annotated[str | None, typer.Option("--district", help="Check that this district is targeted.")] = None,
    now: Annotated[
        str | None,
        typer.Option("--now", help="Judge validity at this time (epoch or ISO 8601), not now."),
    ] = None,
    max_size: Annotated[
        int, typer.Option("--max-size", min=1, help="Size limit in bytes, as on the gateway.")
    ] = DEFAULT_MAX_ENVELOPE_BYTES,
) -> None:
    """Check a bundle as a gateway would (except the version, which needs gateway state).

    Prints the bundle's fields; exits 1 with the specific reason (bad_signature, unknown_key,
    expired, wrong_target, ...) when a gateway would refuse it.
    """
    at = int(time.time()) if now is None else _parse_time(now)
    try:
        try:
            data = bundle_file.read_bytes()
        except OSError as exc:
            raise PolicyError("unreadable", f"{bundle_file}: {exc.strerror}") from None
        trusted = load_trusted_keys(pubkey)
        bundle, signatures = parse_envelope(data, max_size=max_size)
        signers = check_signatures(bundle, signatures, trusted)
        check_payload(bundle)
        if district is not None or gateway is not None:
            # An unspecified half of the target is checked against the bundle itself (passes).
            check_target(
                bundle,
                gateway if gateway is not None else bundle.target.gateways[0],
                district if district is not None else bundle.target.district,
            )
        check_validity(bundle, at)
    except PolicyError as exc:
        _fail(exc, f"verify refused {bundle_file}")
    if bundle.forced:
        _forced_warning(bundle)
    table = _bundle_table(bundle, f"verified {escape(str(bundle_file))}")
    table.add_row("signed by", escape(", ".join(sorted(signers))))
    table.add_row("target checked", "yes" if (district or gateway) else "no (give --district)")
    _out.print(table)
    _out.print("[bold green]OK[/]: a gateway with these pinned keys would accept it")


if __name__ == "__main__":
    policy_app()
