"""HC-SR04 / JSN-SR04T (mode 1) on two GPIO pins, through gpiozero's pin factory.

Per sample: a 10 µs pulse on TRIG; the module answers with ECHO high for the
round-trip time of the sound. The edge timestamps (ticks) come from the pin
factory, so a factory with hardware-timed edges (lgpio, pigpio) gives the
best figures. Samples are at least 60 ms apart (the datasheet's cycle) and
their median is reported.

- Echo high for 36 ms or more: no target (the module's own 38 ms time-out;
  no echo that long comes from a target in range).
- No echo pulse at all: nothing answered; with no sample at all the read
  fails (wiring, power, a 5 V echo without a divider that killed the pin).
- The module does not compensate for air temperature: distance is computed
  with the datasheet's rule (58 µs per cm, i.e. 344.8 m/s) and the pipeline
  rescales it when `air_temperature` or `temperature_from` is set.

`self.devices.gpio_pins(options)` (a gpiozero Factory, None for gpiozero's default) is the seam:
tests fill it with gpiozero's MockFactory and hil/gpio.py's echo emulation."""

from __future__ import annotations

import statistics
import threading
import time


from pydantic import Field, model_validator

from gateway.sdk.driver import DeviceError, DistanceOptions, Driver
from gateway.sdk.reading import Reading, Value

TRIGGER_PULSE = 0.00001  # s, ≥ 10 µs high
CYCLE = 0.06  # s between triggers ("we suggest to use over 60ms measurement cycle")
# The module gives up after 38 ms (HC-SR04; 60 ms JSN-SR04T). Any echo of 36 ms or more (6.2 m, beyond the
# 4 m / 6 m range of either module) is that time-out, also when the edges jitter a little short of 38 ms.
NO_TARGET = 0.036
ECHO_WAIT = 0.1  # s for the whole echo to arrive before the sample counts as silent
US_PER_CM = 58.0


class Hcsr04Error(DeviceError):
    """The module gave no echo at all, or the pins could not be set up."""


def echo_to_distance(seconds: float, sound_speed: float = 20000 / US_PER_CM) -> float:
    """Round-trip echo time -> one-way distance in m."""
    return seconds * sound_speed / 2


def classify(seconds: float | None) -> str | None:
    """None for a usable echo, else the sample's code."""
    if seconds is None:
        return "no_echo"
    if seconds < 0:
        return "bad_timing"
    if seconds >= NO_TARGET:
        return "no_target"
    return None


class Hcsr04Options(DistanceOptions):
    trigger_pin: int | str = Field(description="GPIO for TRIG, e.g. 23 or \"GPIO23\" or \"BOARD16\"")
    echo_pin: int | str = Field(description="GPIO for ECHO (through a 5 V -> 3.3 V divider)")
    samples: int = Field(5, ge=1, le=25, description="median of N pings (60 ms each)")
    max_range: float = Field(4.0, gt=0, le=6, json_schema_extra={"unit": "m"},
                             description="the module's range (HC-SR04 4, JSN-SR04T 6): the highest mount_height")
    measuring_range = 6.0  # JSN-SR04T; the HC-SR04 datasheet gives 2 cm to 4 m

    def range_limit(self) -> float:
        return self.max_range

    @model_validator(mode="after")
    def _distinct(self) -> "Hcsr04Options":
        if str(self.trigger_pin) == str(self.echo_pin):
            raise ValueError("trigger_pin and echo_pin must be different pins")
        return self


class Hcsr04(Driver):
    summary = "HC-SR04 / JSN-SR04T mode 1: trigger/echo on GPIO (gpiozero pin factory)"
    Options = Hcsr04Options
    temperature_compensated = False
    assumed_sound_speed = 20000 / US_PER_CM

    def __init__(self, options: Hcsr04Options, devices=None):
        super().__init__(options, devices)
        self.trigger = self.echo = None
        self._edge_seen = threading.Event()
        self._rise = self._fall = None
        self._last_ping = 0.0
        self.codes: dict[str, int] = {}  # unusable samples by code, for the logs and tests

    def _where(self) -> str:
        return f"HC-SR04 on TRIG {self.options.trigger_pin} / ECHO {self.options.echo_pin}"

    def open(self) -> None:
        from gpiozero import DigitalOutputDevice, GPIOZeroError, InputDevice  # late: gpiozero probes the board
        try:
            pins = self.devices.gpio_pins(self.options)  # the seam (gateway/sdk/devices.py)
            self.trigger = DigitalOutputDevice(self.options.trigger_pin, initial_value=False, pin_factory=pins)
            self.echo = InputDevice(self.options.echo_pin, pull_up=False, pin_factory=pins)
            self.echo.pin.edges = "both"
            self.echo.pin.bounce = None
            self.echo.pin.when_changed = self._changed
        except (GPIOZeroError, OSError, RuntimeError) as exc:
            self.close()
            raise Hcsr04Error(f"{self._where()}: cannot set up the pins: {exc}") from exc

    def _changed(self, ticks, state) -> None:
        # Called from the pin factory's thread with the edge's own timestamp.
        if state:
            self._rise = ticks
        else:
            self._fall = ticks
            self._edge_seen.set()

    def _ping(self) -> float | None:
        """One trigger; the echo's high time in s, or None when nothing came back."""
        time.sleep(max(0.0, self._last_ping + CYCLE - time.monotonic()))
        if self.echo.pin.state:  # a late echo from the last ping: let it end first
            self._edge_seen.clear()
            if not self._edge_seen.wait(CYCLE):
                raise Hcsr04Error(f"{self._where()}: ECHO stays high; check the wiring")
        self._edge_seen.clear()
        self._rise = self._fall = None
        self._last_ping = time.monotonic()
        self.trigger.pin.state = True
        time.sleep(TRIGGER_PULSE)
        self.trigger.pin.state = False
        if not self._edge_seen.wait(ECHO_WAIT) or self._rise is None:
            return None
        return self.echo.pin_factory.ticks_diff(self._fall, self._rise)

    def read(self, timeout: float) -> list[Reading]:
        if self.trigger is None or self.echo is None:
            raise Hcsr04Error(f"{self._where()}: not open")
        good, codes = [], []
        for _ in range(self.options.samples):
            echo = self._ping()
            code = classify(echo)
            if code is None:
                good.append(echo)
            else:
                codes.append(code)
                self.codes[code] = self.codes.get(code, 0) + 1
        if good:
            return [self.reading({"distance": Value(round(echo_to_distance(statistics.median(good)), 4), "m")})]
        if all(c == "no_echo" for c in codes):
            raise Hcsr04Error(f"{self._where()}: no echo pulse to {len(codes)} triggers; check power and wiring")
        code = next(c for c in codes if c != "no_echo")
        return [self.reading({}, quality="error", error=code)]

    def close(self) -> None:
        for device in (self.echo, self.trigger):
            if device is not None:
                try:
                    device.close()
                except Exception:  # closing must never fail
                    pass
        self.trigger = self.echo = None
