"""Jittered exponential backoff, shared by sensor retries, uplink reconnects and
task restarts. tenacity computes the policy; this class only keeps the count
between attempts, because our retry loops are long-lived asyncio loops (stop
events, Retry-After, state reports) rather than one wrapped call.

The delay before attempt n is drawn from the upper half of
min(cap, first * 2**n): the lower half is tenacity's exponential wait, the
jitter its random exponential wait, so a fleet of gateways does not reconnect
in step yet every delay still grows.
"""

from __future__ import annotations

import random

from tenacity import RetryCallState
from tenacity.wait import wait_base, wait_exponential, wait_random_exponential


class _SeededRandomExponential(wait_random_exponential):
    """tenacity's random exponential wait, drawing from a given generator (tests seed it)."""

    def __init__(self, rng: random.Random, **kwargs):
        super().__init__(**kwargs)
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        high = wait_exponential.__call__(self, retry_state)
        return self.rng.uniform(self.min, high)


def upper_half_wait(first: float, cap: float, rng: random.Random) -> wait_base:
    """ceiling/2 + uniform(0, ceiling/2), ceiling = min(cap, first * 2**(attempt-1))."""
    half = {"multiplier": first / 2, "max": cap / 2}
    return wait_exponential(**half) + _SeededRandomExponential(rng, **half)


class Backoff:
    def __init__(self, first: float = 1.0, cap: float = 30.0, rng: random.Random | None = None):
        self.first, self.cap = first, cap
        self.failures = 0
        self.rng = rng or random.Random()
        self._state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})

    def next(self) -> float:
        """Delay before the next attempt: never below `first`, never above `cap`."""
        self.failures += 1
        self._state.attempt_number = self.failures
        # Built per call: callers (and tests) may change first/cap between attempts.
        delay = upper_half_wait(self.first, self.cap, self.rng)(self._state)
        return min(self.cap, max(self.first, delay))

    def reset(self) -> None:
        self.failures = 0
