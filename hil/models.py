"""Physical models behind the simulated devices. Each is a deterministic
function of elapsed time and a seed, so a test knows what the sensor saw."""

from __future__ import annotations

import math
import random


class Hydrograph:
    """River stage in m above the gauge datum: base flow, then a storm that
    rises to a peak and recedes exponentially, plus sensor noise."""

    def __init__(self, seed: int = 0, base: float = 0.8, peak: float = 3.2, storm_at: float = 600.0,
                 rise: float = 1800.0, recession: float = 3600.0, noise: float = 0.005):
        self.rng = random.Random(seed)
        self.base, self.peak, self.storm_at = base, peak, storm_at
        self.rise, self.recession, self.noise = rise, recession, noise

    def level(self, t: float) -> float:
        s = t - self.storm_at
        if s <= 0:
            surge = 0.0
        elif s < self.rise:
            surge = (self.peak - self.base) * (1 - math.cos(math.pi * s / self.rise)) / 2
        else:
            surge = (self.peak - self.base) * math.exp(-(s - self.rise) / self.recession)
        return self.base + surge + self.rng.gauss(0, self.noise)


class Snowpack:
    """Snow depth in m and air temperature in °C: snowfall events at a seeded
    rate, settling of the pack, melt above 0 °C, and a daily temperature cycle."""

    def __init__(self, seed: int = 0, start_depth: float = 0.2, mean_temp: float = -3.0, swing: float = 4.0):
        self.rng = random.Random(seed)
        self.depth, self.mean_temp, self.swing = start_depth, mean_temp, swing
        self.t = 0.0
        self.snowing_until = 0.0

    def temperature(self, t: float) -> float:
        # Coldest around 05:00, warmest around 14:00 (t = 0 is midnight).
        return self.mean_temp + self.swing * math.sin(2 * math.pi * (t - 9 * 3600) / 86_400)

    def step(self, t: float) -> tuple[float, float]:
        dt, self.t = max(0.0, t - self.t), t
        temp = self.temperature(t)
        if t >= self.snowing_until and self.rng.random() < dt / 7200:  # about one event every 2 h
            self.snowing_until = t + self.rng.uniform(1800, 5400)
        if t < self.snowing_until and temp < 1.0:
            self.depth += dt * 0.03 / 3600  # 3 cm/h of new snow
        self.depth *= math.exp(-dt / (20 * 86_400))  # settling
        if temp > 0:
            self.depth = max(0.0, self.depth - dt * temp * 0.002 / 3600)
        return self.depth, temp


def speed_of_sound(temp_c: float) -> float:
    """m/s in air; c = 331.3 * sqrt(1 + T / 273.15)."""
    return 331.3 * math.sqrt(1 + temp_c / 273.15)


class BeaconCrowd:
    """Beacons that arrive and leave, each with a distance drifting in a room
    and RSSI noise around the log-distance model."""

    def __init__(self, seed: int = 0, population: int = 5, present: float = 0.6):
        self.rng = random.Random(seed)
        self.beacons = [
            {"raw": f"ibeacon:{uuid:032x}:{100 + i}:{i}", "tx_power": -59, "distance": self.rng.uniform(1, 15),
             "battery": round(self.rng.uniform(2.6, 3.1), 2), "here": self.rng.random() < present}
            for i, uuid in enumerate(self.rng.getrandbits(128) for _ in range(population))
        ]
        self.present = present

    def tick(self) -> list[dict]:
        """One scan interval: which beacons were heard, with their RSSI samples."""
        heard = []
        for b in self.beacons:
            if self.rng.random() < 0.05:  # 5 % chance per interval to arrive or leave
                b["here"] = not b["here"]
            if not b["here"]:
                continue
            b["distance"] = min(30.0, max(0.5, b["distance"] + self.rng.gauss(0, 0.3)))
            mean = b["tx_power"] - 10 * 2.0 * math.log10(b["distance"])
            samples = [round(mean + self.rng.gauss(0, 3)) for _ in range(self.rng.randint(1, 8))]
            heard.append({**b, "rssi": samples})
        return heard
