"""The fleet run in CI: a signed policy reaches all 3,000 lamps of 30 gateways on a real
Mosquitto, without faults and with 5% message loss and 3 gateways killed mid-rollout.

Timing figures are printed by `just fleet`; this test checks behaviour: every lamp confirms
the new version, none is left behind, and the fault phase needed retries.
"""

from __future__ import annotations

import pytest

from devtools.fleet import run_fleet
from devtools.fleet_report import print_phases
from devtools.mosquitto import mosquitto_binary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(mosquitto_binary() is None, reason="the fleet run needs Mosquitto (apt-get install mosquitto)"),
]


def test_a_signed_policy_reaches_all_3000_lamps_with_and_without_faults() -> None:
    phases = run_fleet(n_gateways=30, per_gateway=100, loss=0.05, restarts=3, timeout=120, sim_processes=2)
    print_phases(phases)
    calm, faulty = phases
    assert calm.lamps == faulty.lamps == 3000
    assert calm.seconds is not None and calm.left_behind == 0
    assert faulty.seconds is not None and faulty.left_behind == 0
    assert len(faulty.restarted) == 3
    assert faulty.retries > 0, "5% loss must have cost some lamps a second copy"
