"""What a responder reads and answers, without a modem: reply codes, reply parsing, the
templates' and the gateway file's checks (each problem names its key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.gateway_config import POLICY_HEAD, SOS_RULE, write_gateway_config
from edge_agent.config import load_config
from edge_agent.config.gammu import read_smsdrc
from edge_agent.errors import ConfigError
from edge_agent.notify.gammu import is_gsm7, read_backup
from edge_agent.policy.messages import CODE_ALPHABET, Messages, Reply, parse_reply, reply_code
from edge_agent.policy.model import parse_policy

SMSDRC = """[gammu]
model = dummy
device = /tmp/phone/

[smsd]
service = files
inboxformat = detail
inboxpath = inbox/
outboxpath = outbox/
sentsmspath = sent/
errorsmspath = error/
"""


@given(st.text(min_size=1, max_size=40))
def test_a_reply_code_is_four_unambiguous_characters_and_stable(alert_id: str) -> None:
    code = reply_code(alert_id)
    assert len(code) == 4 and set(code) <= set(CODE_ALPHABET)
    assert not set(code) & set("01OILS5B8")
    assert reply_code(alert_id) == code


def test_codes_of_different_alerts_rarely_collide() -> None:
    codes = {reply_code(f"alert-{i}") for i in range(2000)}
    # 27^4 = 531,441 codes: 2,000 alerts collide in about 4 pairs (birthday bound); a weak hash far more
    assert len(codes) >= 1990


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 K7QD", Reply("ack", "K7QD")),
        ("  1   k7qd  ", Reply("ack", "K7QD")),
        ("1K7QD", Reply("ack", "K7QD")),
        ("2 K7QD.", Reply("resolve", "K7QD")),
        ("2 K7QD。", Reply("resolve", "K7QD")),
        ("3 K7QD", None),
        ("1 K7Q", None),
        ("1 K7QDX", None),
        ("ok", None),
        ("", None),
    ],
)
def test_replies_are_read_forgivingly_but_not_guessed(text: str, expected: Reply | None) -> None:
    assert parse_reply(Messages(), text) == expected


def test_the_reply_words_are_the_policys() -> None:
    words = Messages(ack="收到", resolve="完成")
    assert parse_reply(words, "收到 K7QD") == Reply("ack", "K7QD")
    assert parse_reply(words, "完成K7QD") == Reply("resolve", "K7QD")
    assert parse_reply(words, "1 K7QD") is None


def policy_problems(messages: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_policy((POLICY_HEAD + SOS_RULE + messages).encode(), "p.toml")
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def test_template_problems_name_their_key() -> None:
    [problem] = policy_problems('[messages]\nsms = "SOS {device} {colour}. Reply {ack} {code}"\n')
    assert problem.startswith("messages.sms: unknown field(s) ['colour']")
    [problem] = policy_problems('[messages]\nsms = "SOS {device}"\n')
    assert problem.startswith("messages.sms: the template must contain {code}")
    [problem] = policy_problems('[messages]\nack = "2"\n')
    assert problem.startswith("messages.resolve: must differ")
    [problem] = policy_problems('[messages]\nwhy = { not_understood = "?" }\n')
    assert problem.startswith("messages.why: missing reason(s) ['not_yours', 'unknown_code']")
    [problem] = policy_problems('[chains.x]\nroles = ["village_doctor"]\nchannels = ["sms", "pigeon"]\n')
    assert problem.startswith("chains.x.channels")


def gateway(tmp_path: Path, responders: list[dict[str, str]], modem: bool = True) -> Path:
    (tmp_path / "smsdrc").write_text(SMSDRC)
    extra: dict[str, object] = {"responders": responders}
    if modem:
        extra["modem"] = {"smsdrc": "smsdrc"}
    return write_gateway_config(tmp_path, "gw", south_url="mqtt://127.0.0.1:1", extra=extra)


def config_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def test_phone_numbers_are_e164_and_may_be_shared(tmp_path: Path) -> None:
    ok = gateway(tmp_path, [{"id": "doc1", "role": "village_doctor", "phone": "+8613800000001"}])
    assert load_config(ok).file.responders[0].phone == "+8613800000001"
    problems = config_problems(
        gateway(
            tmp_path,
            [
                {"id": "doc1", "role": "village_doctor", "phone": "138 0000 0001"},
                {"id": "doc2", "role": "township_doctor", "phone": "+8613800000002"},
                {"id": "doc3", "role": "township_doctor", "phone": "+8613800000002"},
            ],
        )
    )
    # doc2 and doc3 share the clinic's phone: allowed (a reply takes the alert for the one it was offered to)
    assert len(problems) == 1 and problems[0].startswith("responders[0].phone: expected an E.164 number")
    no_modem = gateway(tmp_path, [{"id": "doc1", "role": "village_doctor", "phone": "+8613800000001"}], modem=False)
    assert config_problems(no_modem) == ["modem: responders have phone numbers but there is no [modem] to reach them"]


def test_the_smsdrc_must_share_folders_the_agent_can_read(tmp_path: Path) -> None:
    path = gateway(tmp_path, [{"id": "doc1", "role": "village_doctor", "phone": "+8613800000001"}])
    (tmp_path / "smsdrc").write_text(SMSDRC.replace("service = files", "service = sql").replace("inboxpath", "#"))
    problems = config_problems(path)
    assert problems[0].startswith("smsd.service: expected 'files'")
    assert problems[1].startswith("smsd.inboxpath: missing")


def test_a_received_sms_backup_is_read_back_exactly(tmp_path: Path) -> None:
    text = "1 K7QD 马上到"
    path = tmp_path / "IN20261205_083500_00_+8613800000001_00.txt"
    path.write_text(
        '[SMSBackup000]\nNumber = "+8613800000001"\nCoding = Unicode_No_Compression\n'
        f"Text00 = {text.encode('utf-16-be').hex().upper()}\n"
    )
    sms = read_backup(path)
    assert sms is not None and (sms.number, sms.text) == ("+8613800000001", text)
    path.write_text("not an SMS at all")
    assert read_backup(path) is None


def test_gsm7_is_the_gsm_alphabet() -> None:
    assert is_gsm7("SOS from W1. Reply 1 K7QD @ 12:00!")
    assert not is_gsm7("紧急求助")
    assert not is_gsm7("price: 5€ ^")  # the euro and caret need the extension table: sent as UCS-2


def test_the_shipped_smsdrc_is_one_the_agent_accepts() -> None:
    folders = read_smsdrc(Path(__file__).resolve().parents[2] / "deploy" / "gammu" / "smsdrc")
    assert folders.inbox == Path("/var/spool/gammu/inbox")
    assert folders.outbox == Path("/var/spool/gammu/outbox")


def test_an_ack_token_is_the_hmac_of_alert_and_responder_url_safe_and_short() -> None:
    import base64
    import hashlib
    import hmac

    from edge_agent.policy.messages import ack_token

    secret = bytes(range(32))
    mac = hmac.new(secret, b"a-1|doc1", hashlib.sha256).digest()[:16]
    assert ack_token(secret, "a-1", "doc1") == base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert len(ack_token(secret, "a-1", "doc1")) == 22
    # one person, one alert, one gateway
    assert ack_token(secret, "a-1", "doc2") != ack_token(secret, "a-1", "doc1")
    assert ack_token(secret, "a-2", "doc1") != ack_token(secret, "a-1", "doc1")
    assert ack_token(bytes(32), "a-1", "doc1") != ack_token(secret, "a-1", "doc1")
