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

from gateway.config import Config, ConfigError, load_config
from hil.i2c import I2cxlDevice, SimBus, bme280_in_air
from hil.models import Hydrograph, Snowpack


class SimTime:
    def __init__(self, scale: float):
        self.scale, self.start = scale, time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self.start) * self.scale


def install(config: Config, time_scale: float = 60.0, seed: int = 0) -> dict[int, SimBus]:
    """Wire simulators to the seams of the bme280, i2cxl and hcsr04 drivers; returns the buses."""
    from gpiozero.pins.mock import MockFactory

    from drivers.bme280 import Bme280
    from drivers.hcsr04 import Hcsr04
    from drivers.i2cxl import I2cxl
    from hil import gpio

    clock = SimTime(time_scale)
    air = Snowpack(seed=seed)
    buses: dict[int, SimBus] = defaultdict(SimBus)
    pins = MockFactory()

    def air_temp() -> float:
        return air.temperature(clock.now())

    def target(sensor, n: int):
        """Distance from the sensor face to the water or snow surface, m."""
        mount = sensor.mount_height or 4.0
        if sensor.kind == "snow_depth":
            pack = Snowpack(seed=seed + n, start_depth=0.3)
            return lambda: mount - min(pack.step(clock.now())[0], mount)
        river = Hydrograph(seed=seed + n, storm_at=600.0)
        return lambda: mount - river.level(clock.now())

    for n, s in enumerate(config.sensors):
        if s.driver == "bme280":
            buses[s.bus].devices[s.address] = bme280_in_air(lambda: (air_temp(), 1005.0, 85.0))
        elif s.driver == "i2cxl":
            distance = target(s, n)
            # The sensor counts 58 µs per cm: at another temperature the same distance reads differently.
            buses[s.bus].devices[s.address] = I2cxlDevice(
                distance=lambda d=distance: d() * (20000 / 58) / (331.3 * (1 + air_temp() / 273.15) ** 0.5))
        elif s.driver == "hcsr04":
            gpio.hcsr04(pins, s.trigger_pin, s.echo_pin, gpio.from_model(target(s, n), air_temp))
    factory = (lambda number: buses[number].factory(number))
    Bme280.smbus_factory = I2cxl.smbus_factory = staticmethod(factory)
    Hcsr04.pin_factory = pins
    return buses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.buses", description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--time-scale", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--seed", type=int, default=0)
    args, rest = p.parse_known_args(argv)
    try:
        install(load_config(args.config), args.time_scale, args.seed)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from gateway.cli import main as gateway_main
    return gateway_main(["run", "-c", args.config, *rest])


if __name__ == "__main__":
    sys.exit(main())
