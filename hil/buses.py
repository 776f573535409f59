"""Run the real I2C and GPIO drivers with no hardware: fill their seams with
simulated devices driven by the physical models, then run the gateway.

    python -m hil.buses -c config/hil-gpio-i2c.yaml [--time-scale 60] [--seed 0]

Every `bme280` sensor gets a simulated chip at its address measuring the air
of a snowy site (hil.models.Snowpack's daily temperature cycle); every
`i2cxl` and `hcsr04` sensor looks at a river (Hydrograph) or a snowpack
(Snowpack), by its `kind`, from its `mount_height`, with echoes at the speed
of sound of that same air. Serial devices need no help: they are real
pseudo-terminals (hil/pty_device.py)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

from gateway.sdk.devices import Devices
from hil.i2c import I2cxlDevice, SimBus, bme280_in_air
from hil.models import Hydrograph, Snowpack


class SimTime:
    def __init__(self, scale: float):
        self.scale, self.start = scale, time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self.start) * self.scale


class FixedDevices(Devices):
    """A device set that hands every sensor the same simulated bus and pins (tests)."""

    name = "fixed"

    def __init__(self, bus: SimBus | None = None, pins=None):
        self.bus, self.pins = bus, pins

    def i2c_bus(self, options):
        return self.bus.factory(options.bus)

    def gpio_pins(self, options):
        return self.pins


class SimDevices(Devices):
    """`devices: sim`: every bme280 gets a simulated chip at its address measuring the air of a snowy site,
    every i2cxl and hcsr04 looks at a river or a snowpack by its `kind`, from its `mount_height`, with echoes
    at the speed of sound of that same air. Built lazily, sensor by sensor, as the drivers open."""

    name = "sim"
    time_scale = 60.0  # set by main() (--time-scale) before the gateway starts
    seed = 0

    def __init__(self):
        from gpiozero.pins.mock import MockFactory
        self.clock = SimTime(self.time_scale)
        self.air = Snowpack(seed=self.seed)
        self.buses: dict[int, SimBus] = defaultdict(SimBus)
        self.pins = MockFactory()
        self._placed: dict[str, int] = {}  # sensor id -> its number, for its own model's seed

    def air_temp(self) -> float:
        return self.air.temperature(self.clock.now())

    def _target(self, sensor, n: int):
        """Distance from the sensor face to the water or snow surface, m."""
        mount = sensor.mount_height or 4.0
        if sensor.kind == "snow_depth":
            pack = Snowpack(seed=self.seed + n, start_depth=0.3)
            return lambda: mount - min(pack.step(self.clock.now())[0], mount)
        river = Hydrograph(seed=self.seed + n, storm_at=600.0)
        return lambda: mount - river.level(self.clock.now())

    def _place(self, s) -> int | None:
        """The sensor's number if its simulator is new (a reopen keeps the one it has)."""
        if s.id in self._placed:
            return None
        self._placed[s.id] = n = len(self._placed)
        return n

    def i2c_bus(self, s):
        if (n := self._place(s)) is not None:
            if s.driver == "bme280":
                self.buses[s.bus].devices[s.address] = bme280_in_air(lambda: (self.air_temp(), 1005.0, 85.0))
            elif s.driver == "i2cxl":
                distance = self._target(s, n)
                # The sensor counts 58 µs per cm: at another temperature the same distance reads differently.
                self.buses[s.bus].devices[s.address] = I2cxlDevice(
                    distance=lambda d=distance: d() * (20000 / 58) / (331.3 * (1 + self.air_temp() / 273.15) ** 0.5))
        return self.buses[s.bus].factory(s.bus)

    def gpio_pins(self, s):
        from hil import gpio
        if (n := self._place(s)) is not None and s.driver == "hcsr04":
            gpio.hcsr04(self.pins, s.trigger_pin, s.echo_pin, gpio.from_model(self._target(s, n), self.air_temp))
        return self.pins


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.buses", description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--time-scale", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--seed", type=int, default=0)
    args, rest = p.parse_known_args(argv)
    SimDevices.time_scale, SimDevices.seed = args.time_scale, args.seed
    from gateway.cli import main as gateway_main
    return gateway_main(["run", "-c", args.config, *rest])


if __name__ == "__main__":
    sys.exit(main())
