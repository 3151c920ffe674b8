"""`just demo` (`python -m devtools.demo`): one village night on the embedded broker, at accelerated time.

Owns: the scripted night (dusk, a person at the square, an SOS that escalates, a lamp fault,
midnight dimming, dawn) against simulated devices over real MQTT, the printed timeline and
the checks that decide the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from devtools.demo_centre import OPERATOR, DemoCentre
from devtools.gammu import DummyModem, SentSms, gammu_smsd_binary
from devtools.modem_emulator import Callee, ModemEmulator
from devtools.simdevices import Received, ResponderBehaviour, SimField, SimLamp
from edge_agent.agent.app import Agent
from edge_agent.agent.shadow_store import read_report
from edge_agent.cli.shadow import print_report
from edge_agent.clock import ScaledClock
from edge_agent.config import GatewayConfig, load_config
from edge_agent.config.schema import BrokerSettings, Modem, Shadow, Trust
from edge_agent.engine import AlertChanged, Effect, LampSet
from edge_agent.models import Alert
from edge_agent.policy.messages import Messages, render_sms, reply_code
from edge_agent.policy.model import parse_policy

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "village-gateway.toml"
# shadow mode: the candidate that decides beside the active policy all night, acting on nothing
DEFAULT_SHADOW = Path(__file__).resolve().parents[1] / "scenarios" / "policies" / "naxi-eco.toml"


@dataclass
class Check:
    name: str
    passed: bool = False
    detail: str = ""


@dataclass
class Timeline:
    console: Console
    clock: ScaledClock
    tz: Any
    checks: dict[str, Check] = field(default_factory=dict)
    _pending_lamps: dict[tuple[float, str], list[str]] = field(default_factory=dict)

    def stamp(self, at: float | None = None) -> str:
        moment = datetime.fromtimestamp(self.clock.now() if at is None else at, self.tz)
        return moment.strftime("%H:%M")

    def line(self, who: str, what: str, style: str = "") -> None:
        self.console.print(
            f"[dim]{self.stamp()}[/dim]  [bold]{who:<12}[/bold] [{style}]{what}[/{style}]"
            if style
            else f"[dim]{self.stamp()}[/dim]  [bold]{who:<12}[/bold] {what}"
        )

    def check(self, name: str, detail: str = "") -> None:
        entry = self.checks.setdefault(name, Check(name))
        if not entry.passed:
            entry.passed = True
            entry.detail = detail


def _demo_config(
    path: Path,
    data_dir: Path,
    shadow: Path | None = None,
    modem: DummyModem | None = None,
    ring_port: str | None = None,
    centre_key: Path | None = None,
) -> GatewayConfig:
    config = load_config(path)
    gateway = msgspec.structs.replace(config.file.gateway, data_dir=str(data_dir))
    # The demo runs on the in-process broker, whatever brokers the gateway file names (the
    # shipped examples name the village Mosquitto of the field layout, docs/DEPLOY.md), and on
    # Gammu's dummy phone instead of the modem (without gammu-smsd: no SMS, the app topic only),
    # and an emulated AT port for rings (devtools/modem_emulator.py: dr-wang's line is busy).
    # With the centre, north goes to the same embedded broker and the centre's key is trusted.
    north = BrokerSettings(url="embedded" if centre_key is not None else "none")
    file = msgspec.structs.replace(config.file, gateway=gateway, south=BrokerSettings(url="embedded"), north=north)
    if centre_key is not None:
        file = msgspec.structs.replace(file, trust=Trust(keys=[str(centre_key)]))
    if modem is not None and file.modem is not None:
        modem_settings = Modem(smsdrc=str(modem.smsdrc), poll=0.05, ring_port=ring_port, ring_seconds=3.0)
        file = msgspec.structs.replace(file, modem=modem_settings)
    else:
        responders = [msgspec.structs.replace(r, phone=None) for r in file.responders]
        file = msgspec.structs.replace(file, modem=None, responders=responders)
    if shadow is None:
        return dataclasses.replace(config, file=file)
    candidate = shadow.read_bytes()  # [shadow] policy = the candidate, as a gateway file would say
    file = msgspec.structs.replace(file, shadow=Shadow(policy=str(shadow.resolve())))
    policy = parse_policy(candidate, str(shadow))
    return dataclasses.replace(config, file=file, shadow_policy=policy, shadow_policy_bytes=candidate)


async def run_demo(
    config_path: Path = DEFAULT_CONFIG,
    speed: float = 2400.0,
    console: Console | None = None,
    http_listen: str = "127.0.0.1:9180",
    shadow: Path | None = DEFAULT_SHADOW,
    centre_console: str | None = "127.0.0.1:8090",
) -> bool:
    """``centre_console``: where the district centre's console listens (taken: any free port);
    None runs the night without a centre."""
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as tmp, contextlib.ExitStack() as stack:
        centre = DemoCentre(Path(tmp) / "centre", centre_console) if centre_console is not None else None
        modem = stack.enter_context(DummyModem(Path(tmp) / "modem")) if gammu_smsd_binary() else None
        doctors = load_config(config_path).file.responders
        busy = {r.phone: Callee(busy=True) for r in doctors if r.id == "dr-wang" and r.phone}
        phone_network = stack.enter_context(ModemEmulator(busy))
        centre_key = centre.public_key if centre is not None else None
        config = _demo_config(config_path, Path(tmp), shadow, modem, phone_network.port, centre_key)
        sms_on = config.file.modem is not None
        tz = config.tz
        night = date(2026, 11, 26)
        start = datetime.combine(night, dtime(17, 0), tz).timestamp()
        end = datetime.combine(night + timedelta(days=1), dtime(8, 0), tz).timestamp()
        clock = ScaledClock(start=start, speed=speed)
        timeline = Timeline(console, clock, tz)
        for name in (
            "lamps on at dusk",
            "boost and revert",
            "SOS notified < 1 s",
            "SOS escalated",
            "SOS acknowledged",
            "lamp fault alert",
            "midnight dimming",
            "lamps off at dawn",
            *(["SOS sent by SMS", "failed channel shown", "SMS reply acknowledged"] if sms_on else []),
            *(["shadow diff reported"] if shadow is not None else []),
            *(["centre rolled the policy out", "console shows the rollout"] if centre is not None else []),
        ):
            timeline.checks[name] = Check(name)
        agent = Agent(config, clock, http_listen=http_listen)
        console.print(
            f"[bold]Village night demo[/bold]: gateway {config.id} at {config.file.gateway.latitude} N, "
            f"{config.file.gateway.longitude} E; {night} 17:00 -> 08:00, time x{speed:g}"
        )
        if not sms_on:
            console.print("[dim]no SMS leg: gammu-smsd is not installed (apt-get install gammu-smsd)[/dim]")
        last_alert: dict[str, Alert] = {}  # responder -> the alert last put to them
        replied: dict[str, bool] = {}  # responders who answered by SMS
        lamp_batches: dict[tuple[str, float], list[str]] = {}

        def on_effect(effect: Effect) -> None:
            if isinstance(effect, LampSet):
                lamp_batches.setdefault((effect.reason, effect.level), []).append(effect.lamp)
                local = datetime.fromtimestamp(clock.now(), tz)
                if effect.level > 0 and effect.reason == "program" and local.hour >= 17:
                    timeline.check("lamps on at dusk", timeline.stamp())
                if effect.reason == "boost":
                    timeline.check("boost and revert", "boosted")
                if effect.reason == "program" and local.hour == 0 and effect.level < 80:
                    timeline.check("midnight dimming", f"{effect.lamp} -> {effect.level:g}%")
                if effect.level == 0 and 5 <= local.hour < 9:
                    timeline.check("lamps off at dawn", timeline.stamp())
                loop.call_soon(flush_lamps)
            elif isinstance(effect, AlertChanged):
                alert = effect.alert
                who = alert.responder or "-"
                if alert.responder:
                    last_alert[alert.responder] = alert
                if sms_on and alert.status == "acknowledged" and alert.rule == "sos":
                    clock.set_speed(speed)  # the person answered: the night goes on at full pace
                    if replied.get(who):
                        timeline.check("SMS reply acknowledged", f"{who}'s reply stopped the escalation")
                timeline.line("alert", escape(f"{alert.message} [{alert.status}] -> {who}"), "red")
                if alert.status == "escalated":
                    timeline.check("SOS escalated", f"to {who}")
                if alert.status == "acknowledged" and alert.rule == "sos":
                    timeline.check("SOS acknowledged", f"by {who}")
                if alert.rule == "lamp-fault":
                    timeline.check("lamp fault alert", alert.message)

        def flush_lamps() -> None:
            for (reason, level), lamps in sorted(lamp_batches.items()):
                shown = ", ".join(lamps) if len(lamps) <= 4 else f"{len(lamps)} lamps"
                timeline.line("lamps", f"{shown} -> {level:g}% ({reason})", "yellow")
            lamp_batches.clear()

        sos_sent: dict[str, float] = {}

        def on_receive(item: Received) -> None:
            if "/responder/" in item.topic:
                responder = item.topic.split("/")[-2]
                timeline.line(responder, f"app notified: {item.payload['message']}", "magenta")
                if "sos" in sos_sent:
                    delay = item.real_time - sos_sent["sos"]
                    if item.payload.get("step") == 0 and delay < 1.0:
                        timeline.check("SOS notified < 1 s", f"{delay * 1000:.0f} ms real time")

        loop = asyncio.get_running_loop()
        agent.on_effect = on_effect
        agent_task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.ready.wait(), 30)
        if agent.http is not None:
            console.print(f"status page: [bold]{agent.http.url}[/bold]   metrics: {agent.http.url}metrics")
        else:
            console.print(f"[dim]status page not served: {http_listen} is taken (try --http 127.0.0.1:0)[/dim]")
        if centre is not None:
            await centre.start(agent.south_address, config.file.gateway.district)
            console.print(f"[dim]  (the centre's console: log in as {OPERATOR} / {centre.password})[/dim]")
        host, port = agent.south_address
        field_ = SimField(config.id, host, port, clock, on_receive=on_receive)
        for lamp in config.file.lamps:
            field_.lamps[lamp.id] = SimLamp(lamp.id, lamp.rated_w)
        field_.responders = {
            "dr-wang": ResponderBehaviour(ack_after=None),  # busy: does not answer
            "dr-li": ResponderBehaviour(ack_after=None if sms_on else 60.0),  # with a modem: replies by SMS
            "grid-zhang": ResponderBehaviour(ack_after=300.0),
        }
        phones = {r.id: r.phone for r in config.file.responders if r.phone is not None}

        async def sms_leg(modem: DummyModem) -> None:
            """The doctors' phones: show each SMS as it reaches them; dr-li answers his by reply."""
            seen: set[Path] = set()
            while True:
                for sms in modem.sent():
                    if sms.path in seen:
                        continue
                    seen.add(sms.path)
                    await show_sms(modem, sms)
                await asyncio.sleep(0.05)

        async def show_sms(modem: DummyModem, sms: SentSms) -> None:
            who = next((r for r, phone in phones.items() if phone == sms.number), sms.number)
            coding = "UCS-2" if not sms.text.isascii() else "GSM 7-bit"
            timeline.line(who, f"SMS ({len(sms.parts)} part(s), {coding}): {escape(sms.text)}", "magenta")
            alert = last_alert.get(who)
            if alert is not None and alert.rule == "sos":
                english = render_sms(
                    Messages(),
                    alert_id=alert.alert_id,
                    device=alert.device,
                    message=alert.message,
                    priority=alert.priority,
                    gateway=config.id,
                    rule=alert.rule,
                )
                timeline.line("", f"[dim](in English: {escape(english)})[/dim]")
                timeline.check("SOS sent by SMS", f"to {who}, {len(sms.parts)} part(s), {coding}")
                if who == "dr-li":
                    code = reply_code(alert.alert_id)
                    await clock.sleep_until(clock.now() + 20.0)  # he reads it and answers
                    timeline.line(who, f"replies by SMS: 1 {code}", "bold magenta")
                    modem.receive(sms.number, f"1 {code}")
                    replied["dr-li"] = True

        field_ready = asyncio.Event()
        field_task = asyncio.create_task(field_.run(field_ready))
        await asyncio.wait_for(field_ready.wait(), 10)

        async def heartbeats() -> None:
            while True:  # each wearable checks in every 10 minutes of the night
                for wearable in config.file.wearables:
                    await field_.wearable(wearable.id, "heartbeat", battery=80)
                await clock.sleep_until(clock.now() + 600.0)

        heartbeat_task = asyncio.create_task(heartbeats())

        async def ledger_leg() -> None:
            """How far each SMS and ring got, from the notification ledger (what the status page shows)."""
            shown: dict[int, str] = {}
            while True:
                alerts = agent.store.alerts.newest(5)
                for rows in agent.store.notifications.of_alerts(a.alert_id for a in alerts).values():
                    for row in rows:
                        if row.channel == "app" or shown.get(row.id) == row.state or row.state in ("waiting", "queued"):
                            continue
                        shown[row.id] = row.state
                        why = f": {row.reason}" if row.reason else ""
                        timeline.line(row.responder, escape(f"{row.channel} {row.state}{why}"), "cyan")
                        if row.state == "failed" and row.channel == "ring":
                            timeline.check("failed channel shown", f"{row.responder}'s ring: {row.reason}")
                await asyncio.sleep(0.05)

        ledger_task = asyncio.create_task(ledger_leg()) if sms_on else None
        sms_task = asyncio.create_task(sms_leg(modem)) if modem is not None and sms_on else None

        def at(hour: int, minute: int) -> float:
            day = night if hour >= 12 else night + timedelta(days=1)
            return datetime.combine(day, dtime(hour, minute), tz).timestamp()

        async def scene(when: float) -> None:
            await clock.sleep_until(when)

        try:
            await scene(at(21, 40))
            timeline.line("cam-square", "person detected in the square", "cyan")
            await field_.camera("cam-square", "person")
            await scene(at(21, 50))
            square = [lamp for lamp in config.file.lamps if lamp.zone == "square"]
            for _ in range(20):  # back by 22:00 (a loaded machine runs the x2400 night a little late)
                if all(field_.lamps[lamp.id].level == 80 for lamp in square):
                    timeline.checks["boost and revert"].detail = "boosted to 100%, back to 80%"
                    break
                await scene(clock.now() + 30.0)
            else:
                timeline.checks["boost and revert"].passed = False
            await scene(at(22, 30))
            if sms_on:
                clock.set_speed(min(speed, 30.0))  # a person's minutes: an SMS takes real seconds
            timeline.line("wear-001", "SOS button pressed", "bold red")
            sos_sent["sos"] = time.monotonic()
            await field_.wearable("wear-001", "sos")
            await scene(at(1, 30))
            timeline.line("lamp-ln-2", "driver fault reported (bits 0x0004)", "cyan")
            await field_.fault("lamp-ln-2", 4)
            await scene(end)
            if centre is not None:
                clock.set_speed(1.0)  # the planner's morning runs in real time
                await morning_rollout(centre, agent, config, shadow or DEFAULT_SHADOW, timeline)
        finally:
            legs = [task for task in (sms_task, ledger_task) if task is not None]
            tasks = [heartbeat_task, agent_task, field_task, *legs]
            for task in tasks:
                task.cancel()
            await field_.close()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if centre is not None:
                await centre.stop()
        night_diff = read_report(config) if shadow is not None else None  # kept by the stopped agent
        if night_diff is not None and sum(day.minutes for day in night_diff.days) > 0:
            candidate = night_diff.candidate
            title = f"Shadow mode: candidate {candidate} vs {config.policy.policy.name}"
            print_report(night_diff, console, title=title)
            timeline.check("shadow diff reported", f"{candidate}: {sum(d.differences for d in night_diff.days)} diffs")
        table = Table(title="What the night showed")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail")
        for check in timeline.checks.values():
            table.add_row(
                check.name,
                "[green]ok[/green]" if check.passed else "[red]MISSING[/red]",
                check.detail,
            )
        console.print(table)
        return all(check.passed for check in timeline.checks.values())


async def morning_rollout(
    centre: DemoCentre, agent: Agent, config: GatewayConfig, policy: Path, timeline: Timeline
) -> None:
    """The planner signs the night's candidate as the next version and rolls it out with
    ``centre rollout``; the gateway must run it and the console must show the rollout."""
    version = agent.policy_version + 1
    bundle = centre.bundle(policy, version, config.id, config.file.gateway.district, timeline.clock.now())
    timeline.line("planner", f"centre rollout {bundle.name} --canary 0 --waves 100% --gateways {config.id}", "green")
    code = await centre.rollout(bundle, config.id)
    if code == 0 and agent.policy_version == version:
        timeline.check("centre rolled the policy out", f"{config.id} runs v{version} ({policy.stem})")
    row = await asyncio.to_thread(lambda: centre.rollout_row(centre.console_page(), version))
    if row is not None and "succeeded" in row:
        timeline.check("console shows the rollout", row)
    timeline.line("centre", f"console: {escape(row or 'no row for v' + str(version))}", "green")


def main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Gateway config (default: examples/village-gateway.toml)."),
    ] = None,
    speed: Annotated[float, typer.Option(help="Timeline seconds per real second.")] = 2400.0,
    http: Annotated[
        str, typer.Option(help="Where the status page and /metrics are served while the demo runs (port 0: any).")
    ] = "127.0.0.1:9180",
    shadow: Annotated[
        Path, typer.Option(help="Candidate policy run in shadow mode beside the active one; its diff is printed.")
    ] = DEFAULT_SHADOW,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Run without shadow mode.")] = False,
    centre_console: Annotated[
        str, typer.Option("--centre-console", help="Where the district centre's console listens (taken: any port).")
    ] = "127.0.0.1:8090",
    no_centre: Annotated[bool, typer.Option("--no-centre", help="Run the night without the district centre.")] = False,
) -> None:
    """One village night at accelerated time on the embedded broker, watched by the district
    centre (its console's URL printed), which rolls the night's candidate policy out at dawn;
    exits 0 if all checks pass."""
    logging.basicConfig(level=logging.ERROR)
    candidate = None if no_shadow else shadow
    ok = asyncio.run(
        run_demo(
            config or DEFAULT_CONFIG,
            speed=speed,
            console=Console(),
            http_listen=http,
            shadow=candidate,
            centre_console=None if no_centre else centre_console,
        )
    )
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    typer.run(main)
