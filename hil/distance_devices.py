"""Simulated serial distance sensors behind pseudo-terminals, speaking the
bytes of the MaxBotix, DFRobot A02YYUW and Campbell SR50A documents:

- MaxbotixDevice: streams `R####<CR>` lines (mm) at the HRXL's 6.67 Hz;
- A02yyuwDevice: streams `FF H L SUM` frames every 100 ms;
- Sr50aDevice: answers its poll command `pAA<CR>` with a checksummed packet,
  and can also send packets unsolicited.

A Scene (a river from hil.models.Hydrograph or snow from Snowpack) says what
the sensor sees. A device that does not compensate for air temperature reports
the distance it computes with its own assumed speed of sound, as the real one
would. Faults can be injected once (`inject`) or held (`fault`):
garbage, partial, bad_checksum, error_code, out_of_range, low_quality (SR50A).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque

from hil.models import Hydrograph, Snowpack, speed_of_sound
from hil.pty_device import PtyDevice

FAULTS = ("garbage", "partial", "bad_checksum", "error_code", "out_of_range", "low_quality")


class Scene:
    """The true distance from a downward-looking sensor to the water or snow,
    and the air temperature, at scaled time since creation."""

    def __init__(self, kind: str = "river_level", mount_height: float | None = None, seed: int = 0,
                 time_scale: float = 1.0, air_temperature: float = 15.0):
        self.kind = kind
        self.mount_height = mount_height or (6.0 if kind == "river_level" else 2.0)
        self.time_scale = time_scale
        self.air_temperature = air_temperature  # river scenes: a constant; snow scenes follow the model
        self.river = Hydrograph(seed=seed) if kind == "river_level" else None
        self.snow = Snowpack(seed=seed) if kind != "river_level" else None
        self._start = time.monotonic()
        self._lock = threading.Lock()  # the models keep state; devices call from their threads

    def now(self) -> tuple[float, float]:
        """(true distance m, air temperature °C)."""
        t = (time.monotonic() - self._start) * self.time_scale
        with self._lock:
            if self.river is not None:
                return self.mount_height - self.river.level(t), self.air_temperature
            depth, temp = self.snow.step(t)
        return self.mount_height - min(depth, self.mount_height), temp


class DistanceDevice(PtyDevice):
    """Base of the simulated distance sensors: a scene, faults, optional streaming."""

    period: float | None = None  # s between unsolicited frames; None: only answers commands
    compensates = True  # does the device correct for air temperature itself?
    assumed_sound_speed = 343.0

    def __init__(self, link, scene: Scene | None = None, *, seed: int = 0, terminator: bytes = b"\r",
                 period: float | None = None):
        super().__init__(link, terminator=terminator)
        self.scene = scene or Scene()
        self.rng = random.Random(seed)
        self.distance: float | None = None  # m; set to pin what the device reports (tests)
        self.fault: str | None = None  # held fault: every frame is this fault until cleared
        self.faults: deque[str] = deque()  # one-shot faults, sent before the next frames
        self.frames_sent = 0
        if period is not None:
            self.period = period
        self._stop_stream = threading.Event()
        self._streamer: threading.Thread | None = None

    # --- what the device measures ------------------------------------------------------------------

    def measured(self) -> float:
        """The distance in m the device would report now."""
        if self.distance is not None:
            return self.distance
        true, temp = self.scene.now()
        if self.compensates:
            return true
        # The device times the echo and converts with its own fixed speed of sound.
        return true * self.assumed_sound_speed / speed_of_sound(temp)

    def inject(self, fault: str, count: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        self.faults.extend([fault] * count)

    def garbage(self) -> bytes:
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(3, 12)))

    # --- wire ----------------------------------------------------------------------------------------

    def frame(self, metres: float) -> bytes:
        raise NotImplementedError

    def fault_bytes(self, fault: str) -> bytes:
        raise NotImplementedError

    def next_bytes(self) -> bytes:
        if self.faults:
            return self.fault_bytes(self.faults.popleft())
        if self.fault:
            return self.fault_bytes(self.fault)
        return self.frame(self.measured())

    def emit(self) -> None:
        self.send(self.next_bytes())
        self.frames_sent += 1

    # --- streaming ---------------------------------------------------------------------------------

    def start(self) -> "DistanceDevice":
        super().start()
        if self.period is not None:
            self._stop_stream.clear()
            self._streamer = threading.Thread(target=self._stream, daemon=True, name=f"stream-{self.link.name}")
            self._streamer.start()
        return self

    def unplug(self) -> None:
        self._stop_stream.set()
        if self._streamer is not None:
            self._streamer.join(timeout=2)
            self._streamer = None
        super().unplug()

    stop = unplug

    def _stream(self) -> None:
        while not self._stop_stream.wait(self.period):
            self.emit()


class MaxbotixDevice(DistanceDevice):
    """HRXL-MaxSonar-WR: `R####<CR>` in mm, internal temperature compensation."""

    period = 0.15  # MB7389: 6.67 Hz

    def __init__(self, link, scene: Scene | None = None, *, range_m: int = 5, hrusb: bool = False, **kw):
        # A 5 m model hung 4.5 m above the datum sees the whole hydrograph.
        super().__init__(link, scene or Scene("river_level", 4.5), **kw)
        self.no_target = 5000 if range_m == 5 else 9999
        self.hrusb = hrusb  # HRUSB puts a space before the CR

    def line(self, mm: int) -> bytes:
        return f"R{mm:04d}{' ' if self.hrusb else ''}\r".encode()

    def frame(self, metres: float) -> bytes:
        mm = round(metres * 1000)
        return self.line(self.no_target if mm >= self.no_target else max(300, mm))

    def fault_bytes(self, fault: str) -> bytes:
        if fault == "partial":
            return b"R22"  # cut short: runs into the next line
        if fault in ("error_code", "low_quality"):
            return self.line(self.no_target)
        if fault == "out_of_range":
            return self.line(150)  # below the 300 mm minimum: impossible
        return self.garbage().replace(b"\r", b"") + b"\r"  # garbage, bad_checksum (no checksum on this wire)


class A02yyuwDevice(DistanceDevice):
    """A02YYUW / JSN-SR04T UART: `FF H L SUM`, mm (or cm), no temperature compensation."""

    period = 0.1
    compensates = False
    assumed_sound_speed = 340.0

    def __init__(self, link, scene: Scene | None = None, *, unit: str = "mm", triggered: bool = False, **kw):
        # Triggered (JSN-SR04T mode 3): silent until the host sends 0x55, then one frame.
        super().__init__(link, scene or Scene("river_level", 4.5), terminator=b"\x55", **kw)
        self.unit = unit
        if triggered:
            self.period = None

    def on_command(self, command: bytes) -> None:
        if self.period is None:
            self.emit()

    @staticmethod
    def raw_frame(value: int, corrupt: bool = False) -> bytes:
        high, low = value >> 8 & 0xFF, value & 0xFF
        return bytes([0xFF, high, low, (0xFF + high + low + corrupt) & 0xFF])

    def frame(self, metres: float) -> bytes:
        value = round(metres * (1000 if self.unit == "mm" else 100))
        return self.raw_frame(min(max(value, 0), 0xFFFC))

    def fault_bytes(self, fault: str) -> bytes:
        good = self.frame(self.measured())
        if fault == "partial":
            return good[:2]
        if fault == "bad_checksum":
            return self.raw_frame(good[1] << 8 | good[2], corrupt=True)
        if fault in ("error_code", "low_quality"):
            return self.raw_frame(30 if self.unit == "mm" else 3)  # at the lower limit: the device's "invalid"
        if fault == "out_of_range":
            return self.raw_frame(9000 if self.unit == "mm" else 900)
        return self.garbage().replace(b"\xff", b"\x00")


def sr50a_packet(address: str, distance: str, quality: int, diagnostics: str = "11111",
                 temperature: str | None = None, corrupt: bool = False) -> bytes:
    """An SR50A measurement packet with its checksum (manual's RS-232 format)."""
    fields = [address, distance, f"{quality:03d}"] + ([temperature] if temperature is not None else []) + [diagnostics]
    head, tail = b"\x02" + ";".join(fields).encode() + b";", b"\r\n\x03"
    cc = (-(sum(head) + sum(tail)) + corrupt) & 0xFF
    return head + f"{cc:02X}".encode() + tail


class Sr50aDevice(DistanceDevice):
    """SR50A on RS-232: answers `pAA<CR>`; no temperature sensor, 331.4 m/s at 0 °C."""

    compensates = False
    assumed_sound_speed = 331.4
    FORMATS = {"m": ("{:.3f}", 1.0, "0.000"), "cm": ("{:06.2f}", 100.0, "000.00"), "mm": ("{:.0f}", 1000.0, "-999")}

    def __init__(self, link, scene: Scene | None = None, *, address: str = "33", units: str = "mm",
                 answer_delay: float = 0.05, answer_polls: bool = True, quality: int = 194, **kw):
        super().__init__(link, scene or Scene("snow_depth"), **kw)
        self.address, self.units = address, units
        self.answer_delay = answer_delay  # a real SR50A takes about 1 s per measurement
        self.answer_polls = answer_polls
        self.quality = quality
        self.polls = 0

    def packet(self, distance: str, quality: int | None = None, corrupt: bool = False) -> bytes:
        return sr50a_packet(self.address, distance, self.quality if quality is None else quality, corrupt=corrupt)

    def frame(self, metres: float) -> bytes:
        form, scale, _ = self.FORMATS[self.units]
        return self.packet(form.format(metres * scale))

    def fault_bytes(self, fault: str) -> bytes:
        form, scale, none = self.FORMATS[self.units]
        good = self.frame(self.measured())
        # Noise or a cut packet on the line, then the answer: a poll is still answered.
        if fault == "partial":
            return good[: len(good) // 2] + good
        if fault == "bad_checksum":
            return self.packet(form.format(self.measured() * scale), corrupt=True)
        if fault == "error_code":
            return self.packet(none, quality=0)
        if fault == "out_of_range":
            return self.packet(form.format(12.5 * scale))
        if fault == "low_quality":
            return self.packet(form.format(self.measured() * scale), quality=450)
        return self.garbage().replace(b"\x03", b"").replace(b"\x02", b"") + good

    def on_command(self, command: bytes) -> None:
        if command.strip() == f"p{self.address}".encode():
            self.polls += 1
            if self.answer_polls:
                time.sleep(self.answer_delay)
                self.emit()


__all__ = ["Scene", "MaxbotixDevice", "A02yyuwDevice", "Sr50aDevice", "sr50a_packet", "FAULTS"]
