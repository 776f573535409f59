"""What the serial distance drivers (maxbotix, a02yyuw, sr50a) share: a
SerialLink, a per-driver count of discarded frames, and the rule that turns
the samples of one read into one Reading.

Each driver only decodes its own wire format: `decode(buffer)` returns the
samples found in the complete frames of `buffer`, how many frames it discarded,
and the unfinished tail to keep for the next bytes. Decoding is separate from
I/O so a testcase can feed captured bytes to the driver's own code.

The rule for one read (issue 3):
- any in-range sample: the median of the in-range samples, quality "ok";
- else any out-of-range sample (a distance the device cannot measure): their
  median, quality "suspect";
- else only the device's own error / no-target codes: no distance, quality
  "error", `error` naming the code;
- nothing at all before the deadline: DeviceError (the scheduler reopens).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from gateway.sdk.driver import DeviceError, DistanceOptions, Driver
from gateway.sdk.serial_link import SerialLink
from gateway.sdk.reading import Reading, Value

log = logging.getLogger(__name__)

MAX_PENDING = 4096  # bytes of an unfinished frame kept between chunks; more is garbage
BAD_FRAME_LOG_EVERY = 60.0  # s between debug lines about discarded frames, per sensor


@dataclass(frozen=True, slots=True)
class Sample:
    """One decoded measurement: `status` ok, suspect (outside the device's
    range) or code (the device's own error or no-target code, told by `note`)."""

    status: Literal["ok", "suspect", "code"]
    distance: float | None = None  # m, as the device gave it
    note: str = ""
    extra: tuple[tuple[str, float], ...] = ()  # further per-sample values, e.g. the SR50A quality number


class SerialDistanceOptions(DistanceOptions):
    port: str = Field(..., description="serial device path, e.g. /dev/serial/by-id/usb-FTDI_…")
    baudrate: int = Field(9600, gt=0, description="the device's own speed (8N1)")
    samples: int = Field(5, ge=1, le=100, description="samples per reading; the reading is their median")


def summarise(samples: list[Sample]) -> tuple[str, float | None, str | None, list[Sample]]:
    """(quality, median distance, error, the samples used) for one read."""
    for status, quality in (("ok", "ok"), ("suspect", "suspect")):
        used = [s for s in samples if s.status == status]
        if used:
            return quality, statistics.median(s.distance for s in used), None, used
    codes = Counter(s.note for s in samples if s.status == "code")
    if codes:
        return "error", None, ", ".join(f"{note} (x{n})" if n > 1 else note for note, n in codes.items()), []
    raise ValueError("no samples")


class SerialDistanceDriver(Driver):
    """Base of the serial distance drivers. Subclasses implement `decode` and
    may override `poll` (send a command)."""

    Options: ClassVar[type[SerialDistanceOptions]] = SerialDistanceOptions

    def __init__(self, options: SerialDistanceOptions, devices=None):
        super().__init__(options, devices)
        self.link: SerialLink | None = None
        self.bad_frames = 0  # frames discarded for checksum or framing errors since start
        self._buffer = b""
        self._logged_bad = 0
        self._logged_at = 0.0

    # --- decoding (no I/O) -----------------------------------------------------------------------

    def decode(self, buffer: bytes) -> tuple[list[Sample], int, bytes]:
        """(samples, frames discarded, unfinished tail) for the bytes in `buffer`."""
        raise NotImplementedError

    def feed(self, data: bytes) -> list[Sample]:
        """Bytes from the wire in, the samples they complete out; bad frames are counted."""
        samples, bad, rest = self.decode(self._buffer + data)
        if len(rest) > MAX_PENDING:  # garbage that never completes a frame
            rest, bad = rest[-MAX_PENDING:], bad + 1
        self._buffer = rest
        if bad:
            self.count_bad(bad)
        return samples

    def count_bad(self, n: int) -> None:
        self.bad_frames += n
        now = time.monotonic()
        if now - self._logged_at >= BAD_FRAME_LOG_EVERY:  # rate-limited: garbage can arrive at line speed
            log.debug("sensor %s: discarded %d bad frames (%d since start) on %s", self.options.id,
                      self.bad_frames - self._logged_bad, self.bad_frames, self.options.port)
            self._logged_bad, self._logged_at = self.bad_frames, now

    def to_reading(self, samples: list[Sample]) -> Reading:
        quality, distance, error, used = summarise(samples)
        values: dict[str, Value] = {}
        if distance is not None:
            values["distance"] = Value(round(distance, 4), "m")
            for name in dict.fromkeys(name for s in used for name, _ in s.extra):
                values[name] = Value(statistics.median(dict(s.extra)[name] for s in used if name in dict(s.extra)))
        return self.reading(values, quality=quality, error=error)

    # --- I/O ---------------------------------------------------------------------------------------

    def open(self) -> None:
        self.link = SerialLink(self.options.port, self.options.baudrate)
        self.link.open()
        self._buffer = b""

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    def poll(self) -> None:
        """Ask for a measurement, for devices that answer commands. Streaming devices do nothing."""

    def drain_stale(self) -> None:
        """Drop what arrived since the last read (a streaming device fills the
        OS buffer between reads), but keep an unfinished frame's tail so the
        first fresh frame is whole."""
        stale, limit = self._buffer, time.monotonic() + 0.2
        while time.monotonic() < limit:  # bounded: a streaming device never stops sending
            chunk = self.link.read_some(0.0)
            if not chunk:
                break
            stale += chunk
        _, _, rest = self.decode(stale)
        self._buffer = rest[-MAX_PENDING:]

    def read(self, timeout: float) -> list[Reading]:
        if self.link is None:
            raise DeviceError(f"serial port {self.options.port} is not open")
        deadline = time.monotonic() + timeout
        self.drain_stale()
        samples: list[Sample] = []
        heard, bad_before = False, self.bad_frames
        while len(samples) < self.options.samples and time.monotonic() < deadline:
            self.poll()
            data = self.link.read_some(min(deadline, time.monotonic() + 0.2))
            heard = heard or bool(data)
            samples += self.feed(data)
        if samples:
            return [self.to_reading(samples[: self.options.samples])]
        if not heard:  # silent: unpowered, wrong port or cable cut; the scheduler reopens with backoff
            raise DeviceError(f"{self.options.port}: no data from the device within {timeout:g}s")
        # It talks, but nothing decodes (wrong baud rate, noise on the line): say so in a reading.
        return [self.reading({}, quality="error", error=f"no valid frame within {timeout:g}s "
                             f"({self.bad_frames - bad_before} discarded for checksum or framing)")]
