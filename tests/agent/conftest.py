"""The agent tests' meeting place: ``village`` is an in-process bus by default, and the
session's real broker where a test is parametrized with "broker" (`indirect=True`); such
cases are marked ``broker`` (tests/conftest.py), so `just test-fast` runs the in-process ones."""

from __future__ import annotations

import pytest

from tests.agent.harness import Village, in_process_village
from tests.conftest import BrokerInfo


@pytest.fixture
def village(request: pytest.FixtureRequest) -> Village:
    if getattr(request, "param", "in-process") == "broker":
        broker: BrokerInfo = request.getfixturevalue("mqtt_broker")
        return Village(port=broker.port, links=None, host=broker.host)
    return in_process_village()
