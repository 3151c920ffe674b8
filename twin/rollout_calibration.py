"""The rollout model's calibrations and its comparison with the measured fleet.

Owns: the two calibrations of ``twin.rollout.RolloutParams`` (``ci``: fitted to measured ``just
fleet`` runs, read from twin/data/fleet-measured.json; ``field``: the planner's district where
every gateway is its own computer), ``configure`` (a calibration with a scenario's fleet and
faults), the measured fleet runs, the model-vs-fleet comparison and the fit of ``ci`` to them
(``fit_ci``).

Must not import: typer, rich, matplotlib.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from twin.rollout import RolloutParams, aggregate, replicate

# ----- calibrations ---------------------------------------------------------------------------
#: The measured figures and the ``ci`` calibration live in a file, not in this module:
#: twin/data/fleet-measured.json (``TWIN_FLEET_FIGURES`` overrides the path), written from
#: `just fleet --record` runs (devtools/fleet.py) with the calibration fitted to them by
#: ``fit_ci``; its ``calibration_ci_provenance`` says where each value comes from.
FLEET_FIGURES = Path(os.environ.get("TWIN_FLEET_FIGURES", Path(__file__).parent / "data" / "fleet-measured.json"))


def load_fleet_figures(path: Path = FLEET_FIGURES) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except OSError as exc:
        raise RuntimeError(
            f"the rollout model's fleet figures are missing: cannot read {path} ({exc.strerror}); "
            "run `just fleet` and copy bench-results/fleet.json's runs into it, or set TWIN_FLEET_FIGURES"
        ) from None
    except ValueError as exc:
        raise RuntimeError(f"the rollout model's fleet figures in {path} are not JSON: {exc}") from None
    for key in ("calibration_ci", "runs"):
        if key not in doc:
            raise RuntimeError(f"{path}: no {key!r} in the fleet figures")
    return doc


_FIGURES = load_fleet_figures()
_CI = dict(_FIGURES["calibration_ci"])
_CI["restart_s"] = tuple(_CI.get("restart_s", (1.5, 1.5)))
CI = RolloutParams(**_CI)

#: ``field``: the planner's view. Gateways are separate cabinet computers (one core each for the
#: agent's event loop), lamps are separate devices, so only the centre's publish is shared. CPU
#: costs per message are the CI values (measured on an x86 core that also ran the broker, lamps
#: and controller; a cabinet ARM core is ~3x slower, and the two roughly cancel: an assumption,
#: not a measurement); latencies are assumed for NB-IoT / cellular (median 150 ms one way to a
#: lamp, 80 ms to a gateway, PUBACK 200 ms); the centre pipelines its publishes (2 ms each).
#: A gateway that is down is down from the start and back after 1-5 minutes.
FIELD = replace(
    CI,
    shared_cpu_cores=None,
    idle_cpu_per_gateway=0.0,
    publish_s=0.002,
    uplink_s=0.08,
    latency_s=0.15,
    latency_sigma=0.6,
    puback_s=0.2,
    kill_at_s=0.0,
    restart_s=(60.0, 300.0),
    horizon_s=600.0,
)

CALIBRATIONS: dict[str, RolloutParams] = {"ci": CI, "field": FIELD}


def configure(calibration: str, **overrides: Any) -> RolloutParams:
    """A calibration with the scenario's fleet and faults; ``loss`` sets both directions."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {calibration!r}; choose from {sorted(CALIBRATIONS)}")
    loss = overrides.pop("loss", None)
    if loss is not None:
        overrides.update(loss_down=loss, loss_up=loss)
    return replace(CALIBRATIONS[calibration], **{k: v for k, v in overrides.items() if v is not None})


# ----- the measured fleet and the comparison -------------------------------------------------------
@dataclass(frozen=True)
class FleetMeasurement:
    gateways: int
    lamps_per_gateway: int
    loss: float
    restarts: int
    convergence_s: float
    quantiles: tuple[float, float, float] | None
    retries: int

    @property
    def label(self) -> str:
        faults = []
        if self.loss:
            faults.append(f"{self.loss:.0%} loss")
        if self.restarts:
            faults.append(f"{self.restarts} killed")
        return f"{self.gateways} x {self.lamps_per_gateway}, " + (", ".join(faults) or "no faults")


def _measurement(run: dict[str, Any]) -> FleetMeasurement:
    q = run.get("quantiles_s")
    return FleetMeasurement(
        int(run["gateways"]),
        int(run["lamps_per_gateway"]),
        float(run["loss"]),
        int(run["restarts"]),
        float(run["convergence_s"]),
        (float(q[0]), float(q[1]), float(q[2])) if q else None,
        int(run["retries"]),
    )


#: the measured runs of the figures file the ``ci`` calibration is fitted to (``used_for_fit``)
FLEET_MEASUREMENTS: tuple[FleetMeasurement, ...] = tuple(
    _measurement(run)
    for run in _FIGURES["runs"]
    if run.get("convergence_s") is not None and run.get("used_for_fit", True)
)


def measured_params(m: FleetMeasurement, base: RolloutParams = CI) -> RolloutParams:
    return replace(
        base,
        gateways=m.gateways,
        lamps_per_gateway=m.lamps_per_gateway,
        loss_down=m.loss,
        loss_up=m.loss,
        down=m.restarts / m.gateways,
        horizon_s=60.0,
    )


def compare_with_fleet(replications: int = 7, seed: int = 1, base: RolloutParams = CI) -> list[dict[str, Any]]:
    """Model (median over replications) vs measurement, for every measured fleet configuration."""
    rows = []
    for m in FLEET_MEASUREMENTS:
        table = aggregate(replicate(measured_params(m, base), replications, seed))
        model_q = (table["p10_s"]["median"], table["p50_s"]["median"], table["p90_s"]["median"])
        rows.append(
            {
                "config": m.label,
                "measured_convergence_s": m.convergence_s,
                "model_convergence_s": table["convergence_s"]["median"],
                "model_convergence_lo90": table["convergence_s"]["lo90"],
                "model_convergence_hi90": table["convergence_s"]["hi90"],
                "measured_quantiles_s": m.quantiles,
                "model_quantiles_s": model_q,
                "measured_retries": m.retries,
                "model_retries": table["retries"]["median"],
                "loss": m.loss,
                "restarts": m.restarts,
            }
        )
    return rows


def fit_error(rows: list[dict[str, Any]]) -> float:
    """Mean squared log-ratio of model to measurement (convergence and quantiles)."""
    errs = []
    for r in rows:
        errs.append(math.log(r["model_convergence_s"] / r["measured_convergence_s"]))
        if r["measured_quantiles_s"]:
            for mq, q in zip(r["model_quantiles_s"], r["measured_quantiles_s"], strict=True):
                errs.append(0.5 * math.log(mq / q))
    return float(np.mean(np.square(errs)))


def fit_ci(trials: int = 200, seed: int = 0, replications: int = 3) -> tuple[RolloutParams, float]:
    """Coarse random search around CI for the fitted parameters (how CI was obtained)."""
    rng = np.random.default_rng(seed)
    best, best_err = CI, fit_error(compare_with_fleet(replications, 1, CI))
    for _ in range(trials):
        scale = rng.lognormal(0.0, 0.3, 6)
        cand = replace(
            best,
            idle_cpu_per_gateway=min(0.06, best.idle_cpu_per_gateway * scale[0]),
            publish_s=best.publish_s * scale[1],
            install_cpu_s=best.install_cpu_s * scale[2],
            send_cpu_s=best.send_cpu_s * scale[3],
            report_cpu_s=best.report_cpu_s * scale[4],
            restart_s=(best.restart_s[0] * scale[5], best.restart_s[1] * scale[5]),
        )
        e = fit_error(compare_with_fleet(replications, 1, cand))
        if e < best_err:
            best, best_err = cand, e
    return best, best_err
