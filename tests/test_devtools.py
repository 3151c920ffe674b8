"""The development tools' shared pieces: the gateway-config builder and the Mosquitto launcher.

The builder's output must load with ``edge_agent.config.load_config`` (the agent's own
validation) and say what it was asked to; the launcher must start, listen on every port,
and survive a kill -9 + restart with its retained messages when persistence is on.
"""

from __future__ import annotations

import asyncio
import getpass
import math
import os
import ssl
import tomllib
from pathlib import Path

import aiomqtt
import pytest
import trustme

from devtools.chaos.record import Record as ChaosRecord
from devtools.gateway_config import (
    DEFAULT_POLICY,
    DOCTORS,
    gateway_toml,
    numbered,
    toml_dumps,
    write_gateway_config,
)
from devtools.mosquitto import SAVE_EVERY_CHANGE, Listener, MosquittoProcess, mosquitto_binary, write_password_file
from edge_agent.config import load_config

needs_mosquitto = pytest.mark.skipif(mosquitto_binary() is None, reason="needs a real Mosquitto")


# ----- the gateway-config builder ---------------------------------------------------------------
def test_default_village_loads_with_the_agents_own_loader(tmp_path: Path) -> None:
    path = write_gateway_config(tmp_path, "gw-test", south_url="mqtt://127.0.0.1:1883", north_url="mqtt://127.0.0.1:1")
    assert path == tmp_path / "gateway.toml"
    assert (tmp_path / "policy.toml").read_text() == DEFAULT_POLICY
    config = load_config(path)
    gw = config.file
    assert config.id == "gw-test"
    assert (gw.gateway.latitude, gw.gateway.longitude, gw.gateway.timezone) == (28.77, 105.37, "Asia/Shanghai")
    assert config.data_dir == (tmp_path / "state").resolve()
    assert config.policy_path == (tmp_path / "policy.toml").resolve()
    assert gw.south.url == "mqtt://127.0.0.1:1883"
    assert gw.north.url == "mqtt://127.0.0.1:1"
    assert [(lamp.id, lamp.group, lamp.zone) for lamp in gw.lamps] == [
        ("L1", "village", "square"),
        ("L2", "village", "square"),
        ("L3", "village", "lane"),
    ]
    assert [(c.id, c.zone) for c in gw.cameras] == [("C1", "square")]
    assert [(w.id, w.zone) for w in gw.wearables] == [("W1", "lane")]
    assert [(r.id, r.role) for r in gw.responders] == [("doc1", "village_doctor"), ("doc2", "township_doctor")]
    assert [rule.id for rule in config.policy.rules] == ["sos"]


def test_devices_responders_and_extra_sections(tmp_path: Path) -> None:
    (tmp_path / "centre.pub").write_text("")
    path = write_gateway_config(
        tmp_path,
        "gw-x",
        filename="gw-x.toml",
        south_url="mqtt://127.0.0.1:1",
        north_url="mqtts://127.0.0.1:2",
        north={"reconnect_min": 0.2, "username": "gw-x", "password": 'p"w\\d', "tls": {"ca": "tls/ca.crt"}},
        district="naxi",
        data_dir=tmp_path / "data",
        lamps=[*numbered("L", 3, group="village", zone="square"), {"id": "N1", "bus": "street", "unit": 1}],
        wearables=[*numbered("W", 2, zone="lane"), {"id": "grandma", "link": "dongle", "radio_id": 101}],
        cameras=(),
        responders=[*DOCTORS, {"id": "crew", "role": "grid_worker", "x": 1.5}],
        trust_keys=["centre.pub"],
        limits={"outbox_max_mb": 512},
        south={"username": None},  # None: left out
        buses={"street": {"port": "/dev/ttyX", "baudrate": 9600, "poll_interval": 0.3}},
        dongle={"port": "/dev/ttyY"},
        extra={"limits": {"outbox_max_mb": 256}},  # replaces a section built from the arguments
    )
    assert path.name == "gw-x.toml"
    config = load_config(path)
    gw = config.file
    assert [lamp.id for lamp in gw.lamps] == ["L1", "L2", "L3", "N1"]
    assert gw.lamps[3].bus == "street" and gw.lamps[3].unit == 1
    assert [w.id for w in gw.wearables] == ["W1", "W2", "grandma"]
    assert gw.wearables[2].link == "dongle" and gw.wearables[2].radio_id == 101
    assert gw.cameras == []
    assert [r.id for r in gw.responders] == ["doc1", "doc2", "crew"] and gw.responders[2].x == 1.5
    assert gw.north.password == 'p"w\\d' and gw.north.tls is not None and gw.north.tls.ca == "tls/ca.crt"
    assert gw.north.reconnect_min == 0.2
    assert gw.trust is not None and gw.trust.keys == ["centre.pub"]
    assert gw.limits.outbox_max_mb == 256
    assert gw.buses["street"].poll_interval == 0.3
    assert gw.dongle is not None and gw.dongle.port == "/dev/ttyY"
    assert gw.south.username is None
    assert config.data_dir == (tmp_path / "data").resolve()


def test_same_gateway_as_the_agent_test_harness(tmp_path: Path) -> None:
    """The builder's defaults are the village of tests/agent/harness.py."""
    from tests.agent import harness

    (tmp_path / "old").mkdir()
    old = harness.write_gateway(tmp_path / "old", "gw-h", 1883, harness.SOS_RULE)
    url = "mqtt://127.0.0.1:1883"
    new = load_config(
        write_gateway_config(tmp_path / "new", "gw-h", south_url=url, north_url=url, policy_text=DEFAULT_POLICY)
    )
    assert old.file == new.file
    assert old.policy.rules == new.policy.rules


def test_toml_emitter_round_trips() -> None:
    doc = {
        "title": 'quote " backslash \\ tab \t newline \n bell \x07 中文',
        "n": 3,
        "x": -0.5,
        "big": 1e20,
        "inf": math.inf,
        "flag": False,
        "path": Path("/tmp/a b"),
        "list": [1, 2, 3],
        "strings": ["a", "b"],
        "dotted.key": "quoted",
        "skipped": None,
        "table": {"a": 1, "nested": {"b": [{"inline": True}]}},
        "items": [{"id": "one", "sub": {"k": "v"}}, {"id": "two"}],
    }
    text = toml_dumps(doc)
    back = tomllib.loads(text)
    expected = {k: v for k, v in doc.items() if v is not None}
    expected["path"] = "/tmp/a b"
    assert back == expected
    with pytest.raises(TypeError):
        toml_dumps({"bad": object()})


def test_gateway_toml_is_plain_text() -> None:
    text = gateway_toml("gw", south_url="embedded", lamps=(), cameras=(), wearables=(), responders=())
    assert text.startswith('[gateway]\nid = "gw"\n')
    assert tomllib.loads(text)["north"] == {"url": "none"}


# ----- the Mosquitto launcher ----------------------------------------------------------------------
async def _retained(port: int, topic: str, timeout: float = 5.0) -> bytes | None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    return message.payload if isinstance(message.payload, bytes) else None
        except TimeoutError:
            return None
    return None


@needs_mosquitto
async def test_launcher_kill_9_and_restart_keep_port_and_retained_message(tmp_path: Path) -> None:
    me = getpass.getuser()
    broker = MosquittoProcess(persistence=True, extra_config=SAVE_EVERY_CHANGE, workdir=tmp_path, user=me)
    with broker:
        port, pid = broker.port, broker.pid
        assert broker.ports == [port] and pid is not None and broker.running
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.publish("devtools/retained", b"kept", qos=1, retain=True)
        await asyncio.sleep(1.5)  # autosave_interval 1
        broker.kill()
        assert not broker.running and broker.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        broker.start()
        assert broker.port == port and broker.pid != pid
        assert await _retained(port, "devtools/retained") == b"kept"
        broker.restart(kill=True)
        assert broker.port == port
        assert await _retained(port, "devtools/retained") == b"kept"


@needs_mosquitto
async def test_launcher_without_persistence_forgets(tmp_path: Path) -> None:
    with MosquittoProcess(workdir=tmp_path) as broker:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.publish("devtools/retained", b"gone", qos=1, retain=True)
        broker.restart(kill=True)
        assert await _retained(broker.port, "devtools/retained", timeout=1.0) is None


@needs_mosquitto
async def test_launcher_several_listeners_tls_password_and_acl(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca_pem, cert, key = tmp_path / "ca.crt", tmp_path / "broker.crt", tmp_path / "broker.key"
    ca.cert_pem.write_to_path(str(ca_pem))
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    client_cert = ca.issue_cert("client.invalid", common_name="gw1")
    passwd = write_password_file(tmp_path / "passwd", {"gw1": "secret"})
    acl = tmp_path / "acl"
    acl.write_text("user gw1\ntopic readwrite district/v1/gw1/#\n")
    listeners = [
        Listener(options={"allow_anonymous": True}),
        Listener(options={"allow_anonymous": False, "password_file": passwd, "acl_file": acl}),
        Listener.tls(ca_pem, cert, key, allow_anonymous=False, use_identity_as_username=True, acl_file=acl),
    ]
    with MosquittoProcess(
        listeners=listeners, per_listener_settings=True, user=getpass.getuser(), workdir=tmp_path
    ) as broker:
        plain, password, tls = broker.ports
        assert len({plain, password, tls}) == 3 and broker.port == plain
        async with aiomqtt.Client("127.0.0.1", plain) as client:
            await client.publish("anything", b"1", qos=1)
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", password, timeout=5):
                pass
        async with aiomqtt.Client("127.0.0.1", password, username="gw1", password="secret") as client:
            await client.publish("district/v1/gw1/x", b"1", qos=1)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        client_cert.configure_cert(context)
        async with aiomqtt.Client("127.0.0.1", tls, tls_context=context) as client:
            await client.publish("district/v1/gw1/x", b"1", qos=1)
        text = (tmp_path / "mosquitto.conf").read_text()
        assert text.startswith("per_listener_settings true\n")
        assert f"listener {tls} 127.0.0.1\ncafile {ca_pem}\n" in text
        assert "require_certificate true\n" in text


@needs_mosquitto
def test_launcher_with_a_config_of_its_own(tmp_path: Path) -> None:
    def config(broker: MosquittoProcess) -> str:
        return "".join(f"listener {port} 127.0.0.1\nallow_anonymous true\n" for port in broker.ports)

    broker = MosquittoProcess(
        listeners=[Listener(), Listener()],
        per_listener_settings=True,
        config=config,
        extra_config="log_dest none\n",
        workdir=tmp_path,
    )
    with broker:
        assert (tmp_path / "mosquitto.conf").read_text() == config(broker) + "log_dest none\n"
        assert broker.running


@needs_mosquitto
def test_launcher_reports_a_bad_config(tmp_path: Path) -> None:
    from edge_agent.errors import TransportError

    broker = MosquittoProcess(config="no_such_option true\n", workdir=tmp_path)
    with pytest.raises(TransportError, match="exited at start"):
        broker.start()
    assert broker.proc is None


def test_benchmark_figures_rewrite_only_the_readme_part_between_the_markers(tmp_path: Path) -> None:
    from devtools import bench_results
    from devtools.bench_results import BEGIN, END
    from twin.bench_record import Row, record

    results = tmp_path / "bench-results"
    record(
        "fleet",
        title="Rollout",
        command="just fleet",
        rows=[Row(what="3,000 lamps", figure="2.9 s", aim="<= 3 s", met=True)],
        results=results,
    )
    record(
        "bench",
        title="Gateway",
        command="just bench",
        rows=[Row(what="p99", figure="12 ms", aim="<= 10 ms", met=False)],
        results=results,
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n\nbefore\n{BEGIN}\nold figures\n{END}\nafter\n")
    assert bench_results.regenerate(readme, results) is True
    text = readme.read_text()
    assert text.startswith("# X\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "old figures" not in text
    # "bench" comes before "fleet" (the README's order), each with its command and a verdict
    assert text.index("`just bench`") < text.index("`just fleet`")
    assert "| p99 | 12 ms | <= 10 ms | **missed** |" in text and "| 3,000 lamps | 2.9 s | <= 3 s | met |" in text
    assert bench_results.regenerate(readme, results) is False, "a second run changes nothing"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        bench_results.regenerate(readme, results)


def _chaos_row(letter: str, at: str, *, variant: str = "full", lost: int = 0, fault: str = "") -> ChaosRecord:
    return ChaosRecord(
        letter=letter,
        fault=fault or f"fault {letter}",
        injections=5,
        sent=100,
        delivered=100 - lost,
        lost=lost,
        duplicates=1,
        ok=lost == 0,
        variant=variant,
        command=f"just chaos --only {letter}" + (" --quick" if variant == "quick" else ""),
        measured_at=at,
        machine={"loadavg": [1.25, 2.0, 3.0]},
    )


def test_a_partial_chaos_run_keeps_the_other_rows_and_new_rows_just_appear(tmp_path: Path) -> None:
    """`just chaos --only i` merges into bench-results/chaos.json: the rows of the letters it ran
    are replaced (both b rows by a b run), the others kept, a new letter (a power-cut row) added in
    letter order; an older file merged in later never replaces newer rows."""
    from devtools.chaos import record

    path = tmp_path / "chaos.json"
    first = "2026-12-01 10:00 UTC"
    record.write([_chaos_row(x, first) for x in "abbi"], path)
    later = "2026-12-03 09:00 UTC"
    record.write([_chaos_row("i", later, variant="quick"), _chaos_row("k", later, fault="power cut")], path)
    rows = record.read(path)
    assert [(r.letter, r.measured_at) for r in rows] == [
        ("a", first),
        ("b", first),
        ("b", first),
        ("i", later),
        ("k", later),
    ]
    record.write([_chaos_row("b", later, fault="one b row now")], path)
    assert [r.fault for r in record.read(path) if r.letter == "b"] == ["one b row now"]
    record.write([_chaos_row("i", first, lost=3)], path)  # a stale file published after a newer run
    assert [(r.measured_at, r.lost) for r in record.read(path) if r.letter == "i"] == [(later, 0)]


def test_publishing_a_partial_set_of_results_keeps_every_other_readme_table(tmp_path: Path) -> None:
    """Only one fresh benchmark file and one fresh chaos row: the README's other benchmark tables
    and chaos rows stay exactly as they were; the fresh ones replace theirs, marked with their run."""
    from devtools import bench_results
    from devtools.bench_results import BEGIN, CHAOS_BEGIN, CHAOS_END, END
    from devtools.chaos import record as chaos_record
    from twin.bench_record import Row, record

    published, fresh = tmp_path / "published", tmp_path / "bench-results"
    for name, figure in (("bench", "12 ms"), ("fleet", "2.9 s")):
        record(name, title=name, command=f"just {name}", rows=[Row(what="x", figure=figure)], results=published)
    chaos_record.write([_chaos_row(x, "2026-12-01 10:00 UTC") for x in "acj"], published / "chaos.json")
    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n{BEGIN}\n{END}\nbetween\n{CHAOS_BEGIN}\n{CHAOS_END}\nafter\n")
    assert bench_results.regenerate(readme, published) is True
    before = readme.read_text()
    assert "| x | 2.9 s |  |  |" in before and "| c | fault c | 5 | 100 | 100 | 0 | 1 |" in before

    record("bench", title="bench", command="just bench", rows=[Row(what="x", figure="9 ms")], results=fresh)
    chaos_record.write([_chaos_row("c", "2026-12-04 08:00 UTC", variant="quick", lost=2)], fresh / "chaos.json")
    assert bench_results.publish(fresh, published) == ["bench", "chaos"]
    assert bench_results.regenerate(readme, published) is True
    after = readme.read_text()
    assert "| x | 9 ms |  |  |" in after and "12 ms" not in after
    assert "| x | 2.9 s |  |  |" in after  # fleet: no fresh file, table kept
    lines = {line.split(" | ")[0]: line for line in after.splitlines() if line.startswith("| ")}
    assert lines["| a"] in before and lines["| j"] in before  # chaos rows not re-run: kept
    assert lines["| c"].startswith("| c | fault c | 5 | 100 | 98 | **2** |")
    assert lines["| c"].endswith("| **FAIL** | quick, 2026-12-04 08:00 UTC |")
    assert "- row c: `just chaos --only c --quick` (2026-12-04 08:00 UTC, load 1.2/2.0/3.0)" in after
    assert after.endswith(f"{CHAOS_END}\nafter\n") and "\nbetween\n" in after
    assert bench_results.publish(fresh, published) == [], "publishing the same files again changes nothing"
