"""An HC-SR04 on gpiozero's MockFactory: the idea of gpiozero's own
MockTriggerPin, with the module's real behaviour and timing.

- The module starts on the falling edge of a TRIG pulse of at least 10 µs
  (shorter pulses are ignored, as the real module does).
- About 0.45 ms later (the 40 kHz burst) ECHO goes high for the round trip
  of the sound, 2·d/c(T), with d and T from a physical model; no target
  holds ECHO high for 38 ms; `silent` never raises it (a broken wire).
- Edges carry exact timestamps (ticks), like a pin factory with hardware-timed
  edges, so the time of flight a test expects is the one the driver measures;
  the edges still arrive at their real time.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from gpiozero.pins.mock import MockFactory, MockPin, MockTriggerPin, PinState

from hil.models import speed_of_sound

BURST = 0.00045  # s from the end of TRIG to ECHO high
MIN_TRIGGER = 0.00001
NO_TARGET_ECHO = 0.038

# What the module sees per ping: seconds of echo, or "no_target", or "silent".
EchoSource = Callable[[], "float | str"]


class EchoPin(MockPin):
    """ECHO: an input the simulated module drives, with exact edge timestamps."""

    def edge(self, state: bool, tick: float) -> None:
        time.sleep(max(0.0, tick - time.monotonic()))  # deliver the edge at its real time
        if self._state == state:
            return
        self._state = state
        self.states.append(PinState(tick - self._last_change, state))
        self._last_change = tick
        if self._edges in ("both", "rising" if state else "falling") and self._when_changed is not None:
            self._call_when_changed()


class SonarTriggerPin(MockTriggerPin):
    """TRIG: when a ≥10 µs pulse ends, the module pings and drives `echo_pin`."""

    def __init__(self, factory, info, echo_pin: EchoPin | None = None, echo: EchoSource | None = None):
        super().__init__(factory, info, echo_pin=echo_pin)
        self.echo = echo or (lambda: 0.0058)
        self.pings = 0
        self.ignored = 0  # pulses shorter than 10 µs

    def _set_state(self, value):
        was, rose_at = self._state, self._last_change
        MockPin._set_state(self, value)
        if was and not value:
            fell_at = self._last_change
            if fell_at - rose_at < MIN_TRIGGER:
                self.ignored += 1
                return
            if self._echo_thread is not None:
                self._echo_thread.join()
            self.pings += 1
            self._echo_thread = threading.Thread(target=self._answer, args=(fell_at,), daemon=True)
            self._echo_thread.start()

    def _answer(self, fell_at: float) -> None:
        echo = self.echo()
        if echo == "silent":
            return
        width = NO_TARGET_ECHO if echo == "no_target" else float(echo)
        start = fell_at + BURST
        self.echo_pin.edge(True, start)
        self.echo_pin.edge(False, start + width)


def from_model(distance: Callable[[], float], temperature: Callable[[], float] = lambda: 20.0,
               max_range: float = 4.0) -> EchoSource:
    """Echo times from a physical model: distance in m and air temperature in °C."""
    def echo() -> float | str:
        d = distance()
        return "no_target" if d > max_range else 2 * d / speed_of_sound(temperature())
    return echo


def scripted(echoes: list) -> EchoSource:
    """Echo times in µs (or "no_target" / "silent") in turn, the last one repeated."""
    queue = list(echoes)

    def echo() -> float | str:
        e = queue.pop(0) if len(queue) > 1 else queue[0]
        return e if isinstance(e, str) else e / 1e6
    return echo


def hcsr04(factory: MockFactory, trigger_pin, echo_pin, echo: EchoSource) -> SonarTriggerPin:
    """Wire a simulated module to two pins of `factory`, before the driver opens them."""
    echo_side = factory.pin(echo_pin, pin_class=EchoPin)
    return factory.pin(trigger_pin, pin_class=SonarTriggerPin, echo_pin=echo_side, echo=echo)
