"""What the pipeline remembers of one sensor (stage, filters, windows), written
to the buffer with the readings it belongs to, so a restart or a reload goes on
where the last committed reading left off: a river keeps its stage and its
hysteresis, a snow field its 24 h snowfall and its removal call.

Times in the state are the readings' monotonic seconds. Within one boot they
stay valid across a daemon restart (CLOCK_MONOTONIC is system-wide). After a
reboot they are moved by the wall-clock time between the last saved reading
and the first new one, when the clock was synchronised for both; otherwise that
gap is taken as zero, so a window lasts longer, never shorter: a reboot never
ends a removal call by itself.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.sdk.reading import Reading

log = logging.getLogger(__name__)

FORMAT = 1
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass
class SensorState:
    stage: str = "normal"
    last_level: float | None = None  # the last accepted (not suspect) raw level
    suspect_run: list[float] = field(default_factory=list)  # consecutive jumped levels
    recent: deque = field(default_factory=deque)  # accepted raw levels for the median
    history: deque = field(default_factory=deque)  # river: (monotonic, filtered level) for the rise rate
    snow_reference: float | None = None  # lowest depth since the last counted snowfall
    snowfall: deque = field(default_factory=deque)  # (monotonic, m of new snow)
    fast: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "last_level": self.last_level, "suspect_run": self.suspect_run,
                "recent": list(self.recent), "history": [list(p) for p in self.history],
                "snow_reference": self.snow_reference, "snowfall": [list(e) for e in self.snowfall],
                "fast": self.fast}

    @classmethod
    def from_json(cls, doc: dict[str, Any], shift: float) -> SensorState:
        """`shift`: seconds to add to every saved time to place it on this run's monotonic clock."""
        return cls(stage=str(doc["stage"]), last_level=_number(doc["last_level"]),
                   suspect_run=[float(x) for x in doc["suspect_run"]],
                   recent=deque(float(x) for x in doc["recent"]),
                   history=deque((float(t) + shift, float(v)) for t, v in doc["history"]),
                   snow_reference=_number(doc["snow_reference"]),
                   snowfall=deque((float(t) + shift, float(v)) for t, v in doc["snowfall"]),
                   fast=bool(doc["fast"]))


def _number(x: Any) -> float | None:
    return None if x is None else float(x)


def boot_id() -> str:
    """This boot's id (Linux), or "" where the system does not tell."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def dump(states: dict[str | None, SensorState], last: Reading, boot: str, measure: str) -> str:
    """The JSON kept under `pipeline:<sensor>`. `last` is the reading that left the
    states as they are; `measure` names the options the levels were derived with."""
    return json.dumps({"format": FORMAT, "boot": boot, "monotonic": last.monotonic, "wall": last.observed_at,
                       "clock_synced": last.clock_synced, "measure": measure,
                       "devices": [[device, s.as_json()] for device, s in states.items()]},
                      separators=(",", ":"))


def gap(saved: dict[str, Any], first: Reading, boot: str) -> float:
    """Seconds between the saved last reading and `first`, the first of this run."""
    if boot and saved["boot"] == boot:
        return max(0.0, first.monotonic - float(saved["monotonic"]))
    if saved["clock_synced"] and first.clock_synced:
        return max(0.0, first.observed_at - float(saved["wall"]))
    return 0.0  # unknown: windows go on from where they were


def load(text: str, first: Reading, boot: str, measure: str) -> dict[str | None, SensorState]:
    """The states saved in `text`, placed on this run's clock by `first`. Saved
    under other measuring options (mount height, kind, filters ...), the levels
    and windows are not comparable: only each device's stage is kept, so the
    first reading under the new options says whether the stage changed."""
    sensor = first.sensor
    try:
        saved = json.loads(text)
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise ValueError(f"not a format {FORMAT} pipeline state")
        shift = first.monotonic - gap(saved, first, boot) - float(saved["monotonic"])
        states = {device: SensorState.from_json(doc, shift) for device, doc in saved["devices"]}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("sensor %s: the saved pipeline state cannot be read (%s); starting afresh", sensor, exc)
        return {}
    if saved["measure"] != measure:
        log.info("sensor %s: measuring options changed; levels and windows start afresh, stage %s kept",
                 sensor, ", ".join(sorted({s.stage for s in states.values()})) or "none")
        return {device: SensorState(stage=s.stage) for device, s in states.items()}
    return states
