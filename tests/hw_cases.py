"""Small helpers shared by the hardware driver tests: options, a driver run through the pipeline, a gateway run
in this process on simulated devices. (The testcases run in test_driver_testcases.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.sdk.driver import Driver
from gateway.config import sensor_model
from gateway.pipeline import Pipeline
from gateway.sdk.reading import Reading

DRIVERS = Path(__file__).resolve().parent.parent / "drivers"


def options(driver: type[Driver], keys: dict, **base):
    return sensor_model(driver).model_validate({"id": "case", "driver": driver.name or "x", "interval": "1s",
                                                **base, **keys})


def run(driver_cls: type[Driver], opts, reads: int, devices=None) -> list[Reading]:
    """Open the driver (on `devices`, a simulated set), read `reads` times, pass every reading through the pipeline."""
    driver = driver_cls(opts, devices)
    pipeline = Pipeline(opts, None)
    driver.open()
    try:
        return [pipeline.process(r) for _ in range(reads) for r in driver.read(opts.read_timeout)]
    finally:
        driver.close()


def check(readings: list[Reading], expected: list[dict]) -> None:
    """expected: readings as SPEC §3 writes them (values as {value, unit})."""
    assert len(readings) == len(expected)
    for r, e in zip(readings, expected):
        got = r.as_json()
        assert list(got["values"]) == list(e["values"]), (got["values"], e)
        for name, want in e["values"].items():
            assert got["values"][name].get("unit") == want.get("unit"), name
            assert got["values"][name]["value"] == pytest.approx(want["value"], abs=1e-4), name
        assert got["quality"] == e["quality"]
        assert got.get("error") == e.get("error")


def run_gateway(config: dict, console: Path, enough, timeout: float = 20.0, seen: list | None = None,
                devices=None) -> tuple[int, list[dict]]:
    """Run `gateway.service.Gateway` in this process, its sensors on `devices`
    (a simulated set handed to the daemon as `devices: sim`), until
    `enough(readings on the console, gateway)`; stop it as SIGTERM would;
    return its exit code and every reading written."""
    import asyncio

    from gateway.config import parse_config
    from gateway.service import Gateway

    for sensor in config["sensors"] if devices is not None else ():
        sensor.setdefault("devices", "sim")
    gateway = Gateway(parse_config(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), "e2e.yaml"),
                      devices=None if devices is None else {"sim": devices})
    if seen is not None:
        seen.append(gateway)  # for a test that looks inside (runner intervals)

    def written() -> list[dict]:
        if not console.exists():
            return []
        return [json.loads(line) for line in console.read_text().splitlines() if line.strip()]

    async def main() -> int:
        task = asyncio.create_task(gateway.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not enough(written(), gateway):
            if task.done() or loop.time() > deadline:
                gateway.request_stop()
                await task
                raise AssertionError(f"gateway wrote {len(written())} readings before the deadline: {written()[-3:]}")
            await asyncio.sleep(0.05)
        gateway.request_stop()
        return await task

    rc = asyncio.run(main())
    return rc, written()


def e2e_config(tmp: Path, sensors: list[dict]) -> dict:
    return {
        "gateway": {"id": "hil-gw", "location": [34.3428, 134.0466], "shutdown_timeout": "5s"},
        "storage": {"path": str(tmp / "buffer.db"), "commit_interval": "100ms"},
        "uplinks": [{"name": "console", "type": "console", "path": str(tmp / "console.jsonl")}],
        "sensors": sensors,
    }
