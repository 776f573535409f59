"""Jittered exponential backoff, shared by sensor retries and uplink reconnects."""

import random


class Backoff:
    def __init__(self, first: float = 1.0, cap: float = 30.0, rng: random.Random | None = None):
        self.first, self.cap = first, cap
        self.failures = 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        """Delay before the next attempt: doubling up to the cap, each drawn
        from its upper half so a fleet of gateways does not reconnect in step."""
        ceiling = min(self.cap, self.first * 2 ** self.failures)
        self.failures += 1
        return max(self.first, self.rng.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        self.failures = 0
