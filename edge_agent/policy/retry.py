"""The program retry schedule of a policy rollout: one definition for the gateway and the twin.

A lamp that has not confirmed the active policy version gets its program at once, then again
``FIRST_RETRY_S`` after the broker acknowledged the last copy (``RETRIES_AT_FIRST_INTERVAL``
times), then after 4, 8 and every ``MAX_RETRY_S`` seconds. The gateway's rollout loop looks
every ``TICK_S``. Pure: no I/O.
"""

from __future__ import annotations

FIRST_RETRY_S = 2.0
RETRIES_AT_FIRST_INTERVAL = 3
MAX_RETRY_S = 16.0
TICK_S = FIRST_RETRY_S / 4


def retry_wait(attempts: int, first: float = FIRST_RETRY_S) -> float:
    """Seconds after the last copy was acknowledged before copy ``attempts + 1`` is due."""
    if attempts <= 0:
        return 0.0
    return min(MAX_RETRY_S, first * 2.0 ** max(0, attempts - RETRIES_AT_FIRST_INTERVAL))
