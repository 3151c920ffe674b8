"""Which responder gets an incident: one pure function for the gateway and the twin.

Owns: the responder choice at one escalation step. A responder chain is a list of roles
(e.g. village doctor, township doctor, centre); step ``k`` of the chain considers responders
whose ``rank`` is ``k`` and picks the nearest available one (ties: the lower index).
Scalar arithmetic and indexing only, so the twin ``numba.njit``s this same function.
"""

from __future__ import annotations

import math


def choose_responder(
    x: float,
    y: float,
    responder_x: tuple[float, ...],
    responder_y: tuple[float, ...],
    available: tuple[bool, ...],
    rank: tuple[int, ...],
    n: int,
    step: int,
) -> int:
    """Index of the nearest available responder of chain position ``step``, or -1 if none."""
    best = -1
    best_distance = math.inf
    for i in range(n):
        if rank[i] != step or not available[i]:
            continue
        distance = math.hypot(responder_x[i] - x, responder_y[i] - y)
        if distance < best_distance:
            best = i
            best_distance = distance
    return best


def travel_minutes(distance_m: float, speed_kmh: float, detour_factor: float) -> float:
    """Travel time over a road network approximated by a detour factor on the straight line."""
    return distance_m * detour_factor / (speed_kmh * 1000.0 / 60.0)


# Functions the twin registers with numba (register_jitable) so its kernels call these very ones.
JITABLE = (choose_responder, travel_minutes)
