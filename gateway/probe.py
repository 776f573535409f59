"""`gateway probe`: read one sensor with its real driver and print the readings
as the pipeline leaves them. Nothing is buffered or sent: a technician's check
that a sensor works, on site."""

from __future__ import annotations

import logging
import sys
import time

from gateway import registry
from gateway.config import Config
from gateway.pipeline import Pipeline

log = logging.getLogger(__name__)


def probe(config: Config, sensor_id: str, count: int) -> int:
    try:
        options = config.sensor(sensor_id)
    except KeyError:
        known = ", ".join(s.id for s in config.sensors) or "none"
        print(f"no sensor {sensor_id!r} in {config.source} (sensors: {known})", file=sys.stderr)
        return 1
    driver = registry.load(options.driver)(options, registry.devices(options.devices))
    pipeline = Pipeline(options, config.location_of(options))
    seen = 0
    try:
        driver.open()
        next_due = time.monotonic()
        while seen < count:
            if not driver.event_driven:
                time.sleep(max(0.0, next_due - time.monotonic()))
                next_due += options.interval
            wait = options.interval if driver.event_driven else options.read_timeout
            for reading in driver.read(wait):
                reading = pipeline.process(reading)
                reading.gateway = config.gateway.id
                reading.id = f"{config.gateway.id}.{reading.sensor}.{round(reading.observed_at * 1000)}.{seen:06d}"
                print(reading.to_json(), flush=True)
                seen += 1
                if seen >= count:
                    break
    except Exception as exc:
        print(f"sensor {sensor_id} ({options.driver}): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            driver.close()
        except Exception:
            pass
    return 0
