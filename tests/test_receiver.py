"""The platform-side receiver: duplicates dropped by id, gaps told from late arrivals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ProtocolError
from edge_agent.receiver import Receiver


def msg(seq: int, device: str = "w1", msg_id: str | None = None) -> dict:
    return {"msg_id": msg_id or f"id-{device}-{seq}", "seq": seq, "gateway": "g", "device": device}


def test_duplicates_are_dropped_and_gaps_reported_until_filled() -> None:
    r = Receiver()
    assert r.accept(msg(1)) is not None
    assert r.accept(msg(1)) is None and r.duplicates == 1
    assert r.accept(msg(4)) is not None
    assert r.gaps() == {("g", "w1"): [2, 3]}
    r.accept(msg(3))
    r.accept(msg(2))
    assert r.gaps() == {} and r.late == 2 and r.accepted == 4
    assert r.accept(b'{"msg_id": "x", "seq": 1, "gateway": "g", "device": "w2"}') is not None


def test_messages_without_identity_are_refused() -> None:
    with pytest.raises(ProtocolError, match="msg_id"):
        Receiver().accept({"seq": 1})
    with pytest.raises(ProtocolError, match="JSON object"):
        Receiver().accept(b"[1, 2]")


@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=200))
def test_any_redelivery_order_gives_each_message_once(seqs: list[int]) -> None:
    r = Receiver()
    delivered = [m for m in (r.accept(msg(s)) for s in seqs) if m is not None]
    assert sorted(m["seq"] for m in delivered) == sorted(set(seqs))
    assert r.duplicates == len(seqs) - len(set(seqs))
    missing = set(range(1, max(seqs) + 1)) - set(seqs)
    assert set(r.gaps().get(("g", "w1"), [])) == missing
