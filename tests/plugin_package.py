"""A tiny third-party driver package, built as a wheel in a temp dir and
pip-installed into the test's venv: the way a city adds its own driver without
touching this repository. The wheel is written directly (it is a zip with a
dist-info folder), so no build backend is needed and installing takes a second."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

DIST = "ceg_demo_plugin"
VERSION = "0.1.0"

MODULE = '''\
"""Demo drivers from a plugin package (tests only)."""

import itertools

from pydantic import Field

from gateway.sdk.driver import DeviceError, Driver, SensorOptions
from gateway.sdk.reading import Value


class CounterOptions(SensorOptions):
    start: int = Field(0, description="the first count")
    step: float = Field(1.0, gt=0, description="added on every read")


class Counter(Driver):
    summary = "counts up by step on every read (plugin demo)"
    Options = CounterOptions
    kind = "counter"

    def open(self):
        self.counts = itertools.count()

    def read(self, timeout):
        n = next(self.counts)
        return [self.reading({"count": Value(self.options.start + n * self.options.step, "m")})]


class Unplugged(Driver):
    summary = "a device that never answers (plugin demo)"

    def open(self):
        raise DeviceError("no answer on /dev/ttyDEMO0")

    def read(self, timeout):
        raise DeviceError("never reached: open() fails")


class NoRead(Driver):
    summary = "forgot to implement read() (plugin demo)"


class Raw(Counter):
    summary = "every third reading carries raw bytes that JSON cannot hold (plugin demo)"

    def read(self, timeout):
        (reading,) = super().read(timeout)
        if int(reading.values["count"].value) % 3 == 1:
            reading.values["frame"] = Value(b"\\x01\\x02")  # a plugin author forgot to decode the frame
        return [reading]


class Flaky(Counter):
    summary = "answers once, then fails (plugin demo)"

    def read(self, timeout):
        if getattr(self, "done", False):
            raise DeviceError("checksum mismatch in frame")
        self.done = True
        return super().read(timeout)
'''

ENTRY_POINTS = """\
[city_edge_gateway.drivers]
demo_counter = ceg_demo_plugin:Counter
demo_unplugged = ceg_demo_plugin:Unplugged
demo_flaky = ceg_demo_plugin:Flaky
demo_raw = ceg_demo_plugin:Raw
demo_noread = ceg_demo_plugin:NoRead
demo_broken = ceg_demo_plugin_gone:Driver
"""


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(directory: Path) -> Path:
    info = f"{DIST}-{VERSION}.dist-info"
    files = {
        f"{DIST}.py": MODULE.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": ENTRY_POINTS.encode(),
    }
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{DIST}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def installed_plugin(directory: Path) -> Iterator[None]:
    _pip("install", "--no-deps", "--no-index", str(build_wheel(directory)))
    try:
        yield
    finally:
        _pip("uninstall", "-y", DIST)
