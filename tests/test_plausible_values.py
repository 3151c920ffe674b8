"""Physically impossible values in device payloads are refused as ``implausible``, naming the
field: the bounds are the physics of a street lamp, a wearable and a clock, written here
independently of the schema's own constants."""

from __future__ import annotations

import pytest

from edge_agent.errors import ProtocolError
from edge_agent.models import (
    SOUTH_SCHEMAS,
    LampState,
    WearableEvent,
    check_device_time,
    decode_payload,
)

NOW = 1_767_225_600.0  # 2026-01-01


@pytest.mark.parametrize(
    ("channel", "body", "field"),
    [
        (("lamp", "state"), '"on":true,"level":101', "level"),
        (("lamp", "state"), '"on":true,"level":-1', "level"),
        (("lamp", "state"), '"on":true,"level":50,"power_w":-3', "power_w"),
        (("lamp", "state"), '"on":true,"level":50,"power_w":250000', "power_w"),
        (("lamp", "state"), '"on":true,"level":50,"energy_wh":-1', "energy_wh"),
        (("lamp", "state"), '"on":true,"level":50,"burn_hours":10000000', "burn_hours"),
        (("lamp", "state"), '"on":true,"level":50,"faults":-1', "faults"),
        (("lamp", "state"), '"on":true,"level":50,"policy_version":-2', "policy_version"),
        (("lamp", "state"), '"on":true,"level":50,"ts":86400', "ts"),  # 1970: before any device of ours
        (("wearable", "vitals"), '"heart_rate":80,"ts":86400', "ts"),
        (("wearable", "event"), '"event":"sos","seq":-5', "seq"),
        (("wearable", "vitals"), '"heart_rate":900', "heart_rate"),
        (("wearable", "vitals"), '"battery":140', "battery"),
        (("wearable", "heartbeat"), '"battery":-1', "battery"),
        (("camera", "event"), '"detection":"person","confidence":1.5', "confidence"),
    ],
)
def test_an_impossible_value_is_implausible_and_named(channel: tuple[str, str], body: str, field: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_payload(SOUTH_SCHEMAS[channel], f'{{"v":1,{body}}}'.encode(), where="lamp/L1/state")
    assert err.value.reason == "implausible"
    assert f"`$.{field}`" in str(err.value) and "lamp/L1/state" in str(err.value)


def test_plausible_values_still_pass() -> None:
    state = decode_payload(
        LampState, b'{"v":1,"on":true,"level":100,"power_w":120.5,"energy_wh":3.2e6,"ts":1767225600}', where="t"
    )
    assert (state.level, state.power_w) == (100, 120.5)
    check_device_time(state, NOW, where="t")
    check_device_time(state, NOW + 30 * 86_400, where="t")  # a device clock behind the gateway's: fine
    check_device_time(state, 0.0, where="t")  # a gateway clock not set yet (1970): no "ahead" judged


def test_a_device_time_thousands_of_years_ahead_is_implausible() -> None:
    lamp = decode_payload(
        LampState, b'{"v":1,"on":true,"level":5,"ts":95617584000}', where="lamp/L1/state"
    )  # year 5000
    with pytest.raises(ProtocolError) as err:
        check_device_time(lamp, NOW, where="lamp/L1/state")
    assert err.value.reason == "implausible" and "`$.ts`" in str(err.value)
    tomorrow = decode_payload(LampState, b'{"v":1,"on":true,"level":5,"ts":1767315600}', where="t")  # 25 h ahead
    with pytest.raises(ProtocolError):
        check_device_time(tomorrow, NOW, where="t")
    soon = decode_payload(LampState, b'{"v":1,"on":true,"level":5,"ts":1767229200}', where="t")  # 1 h ahead: drift
    check_device_time(soon, NOW, where="t")


@pytest.mark.parametrize("ts", [95617584000, 86400])
def test_an_sos_is_never_refused_for_its_clock(ts: int) -> None:
    """Losing an SOS to a wrong wearable clock is worse than any wrong time: it is taken."""
    sos = decode_payload(WearableEvent, f'{{"v":1,"event":"sos","ts":{ts}}}'.encode(), where="t")
    check_device_time(sos, NOW, where="t")
    geofence = decode_payload(WearableEvent, f'{{"v":1,"event":"geofence_exit","ts":{ts}}}'.encode(), where="t")
    with pytest.raises(ProtocolError):
        check_device_time(geofence, NOW, where="t")
