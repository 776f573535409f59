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
from typing import Any

from gateway.sdk.reading import Reading

log = logging.getLogger(__name__)

FORMAT = 1


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

    def as_json(self, keep: frozenset[str]) -> dict[str, Any]:
        """The fields in `keep` (those the sensor's options use: a field no rule reads is not
        written, so a river with stages only is written when its stage moves, not per reading)."""
        doc = {"stage": self.stage, "fast": self.fast, "suspect_run": list(self.suspect_run)}  # a copy: compared later
        if "last_level" in keep:
            doc["last_level"] = self.last_level
        if "recent" in keep:
            doc["recent"] = list(self.recent)
        if "history" in keep:
            doc["history"] = [list(p) for p in self.history]
        if "snow" in keep:
            doc["snow_reference"] = self.snow_reference
            doc["snowfall"] = [list(e) for e in self.snowfall]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any], shift: float) -> SensorState:
        """`shift`: seconds to add to every saved time to place it on this run's monotonic clock."""
        return cls(stage=str(doc["stage"]), last_level=_number(doc.get("last_level")),
                   suspect_run=[float(x) for x in doc["suspect_run"]],
                   recent=deque(float(x) for x in doc.get("recent", ())),
                   history=deque((float(t) + shift, float(v)) for t, v in doc.get("history", ())),
                   snow_reference=_number(doc.get("snow_reference")),
                   snowfall=deque((float(t) + shift, float(v)) for t, v in doc.get("snowfall", ())),
                   fast=bool(doc["fast"]))


def _number(x: Any) -> float | None:
    return None if x is None else float(x)


def devices(states: dict[str | None, SensorState], keep: frozenset[str]) -> list:
    return [[device, s.as_json(keep)] for device, s in states.items()]


def dump(saved: list, last: Reading, boot: str | None, measure: str) -> str:
    """The JSON kept under `pipeline:<sensor>`: `saved` from `devices()`, `last` a
    reading of this run at or before which they were so (any one will do: it ties
    their times to this run's clock), `measure` the options the levels were derived with."""
    return json.dumps({"format": FORMAT, "boot": boot, "monotonic": last.monotonic, "wall": last.observed_at,
                       "clock_synced": last.clock_synced, "measure": measure, "devices": saved},
                      separators=(",", ":"))


def shift(saved: dict[str, Any], first: Reading, boot: str | None) -> float:
    """Seconds to add to the saved times to place them on the clock of `first`, this run's first reading."""
    if boot and saved["boot"] == boot:
        return 0.0  # one boot, one monotonic clock
    gap = 0.0  # unknown: windows go on from where they were
    if saved["clock_synced"] and first.clock_synced:
        gap = max(0.0, first.observed_at - float(saved["wall"]))
    return first.monotonic - gap - float(saved["monotonic"])


def load(text: str, first: Reading, boot: str | None, measure: str) -> dict[str | None, SensorState]:
    """The states saved in `text`, placed on this run's clock by `first`. Saved
    under other measuring options (mount height, kind, filters ...), the levels
    and windows are not comparable: only each device's stage is kept, so the
    first reading under the new options says whether the stage changed."""
    sensor = first.sensor
    try:
        saved = json.loads(text)
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise ValueError(f"not a format {FORMAT} pipeline state")
        offset = shift(saved, first, boot)
        states = {device: SensorState.from_json(doc, offset) for device, doc in saved["devices"]}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("sensor %s: the saved pipeline state cannot be read (%s); starting afresh", sensor, exc)
        return {}
    if saved["measure"] != measure:
        log.info("sensor %s: measuring options changed; levels and windows start afresh, stage %s kept",
                 sensor, ", ".join(sorted({s.stage for s in states.values()})) or "none")
        return {device: SensorState(stage=s.stage) for device, s in states.items()}
    return states
