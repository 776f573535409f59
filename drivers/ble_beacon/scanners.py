"""The driver's seam: a scanner calls back with an Advertisement for every
advertisement heard. Two kinds fill it:

- BleakAdvertScanner: a real adapter through bleak (BlueZ on the Pi). bleak is
  asyncio; the scanner runs in its own thread with its own event loop, so the
  driver (called from the scheduler's worker thread) stays plain blocking code.
- ReplayScanner: a replay file (`adapter: replay:FILE`), played in real time
  by each line's `t`.

Both deliver the same records, so everything after the seam is the field code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

from drivers.ble_beacon.advert import AdvertError, Advertisement, from_json
from gateway.sdk.driver import DeviceError

log = logging.getLogger(__name__)

Callback = Callable[[Advertisement], None]
REPLAY_PREFIX = "replay:"


class Scanner(Protocol):
    error: BaseException | None  # set when the scanner died; the driver raises DeviceError
    bad_lines: int

    def start(self, callback: Callback) -> None: ...
    def stop(self) -> None: ...


class ReplayScanner:
    """Plays a replay file: each line is delivered at start + t (seconds).
    Lines that are not valid records are skipped and counted. With `loop`,
    the file starts again one second after its last line."""

    LOOP_GAP = 1.0  # s between the last line and the start of the next pass

    def __init__(self, path: Path, loop: bool = False):
        self.path = Path(path)
        self.loop = loop
        self.error: BaseException | None = None
        self.bad_lines = 0
        self.played = 0
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, callback: Callback) -> None:
        try:
            handle = self.path.open("r", encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DeviceError(f"cannot open replay file {self.path}: {exc.strerror or exc}") from exc
        handle.close()
        self._thread = threading.Thread(target=self._run, args=(callback,), name=f"ble-replay-{self.path.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self, callback: Callback) -> None:
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                last_t = 0.0
                with self.path.open("r", encoding="utf-8", errors="replace") as lines:
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            adv = from_json(line)
                        except AdvertError as exc:
                            self.bad_lines += 1
                            log.debug("replay %s: skipped a line: %s", self.path, exc)
                            continue
                        last_t = max(last_t, adv.t)
                        if self._stop.wait(max(0.0, start + adv.t - time.monotonic())):
                            return
                        callback(adv)
                        self.played += 1
                if not self.loop:
                    break
                start += last_t + self.LOOP_GAP
        except Exception as exc:  # a vanished file or a failing callback: the driver reopens
            self.error = exc
        finally:
            self.finished.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class BleakAdvertScanner:
    """A BlueZ adapter through bleak, in a thread with its own event loop."""

    START_TIMEOUT = 20.0

    def __init__(self, adapter: str = "hci0"):
        self.adapter = adapter
        self.error: BaseException | None = None
        self.bad_lines = 0
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, callback: Callback) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(callback)),
                                        name=f"ble-{self.adapter}", daemon=True)
        self._thread.start()
        if not self._started.wait(self.START_TIMEOUT):
            self.stop()
            raise DeviceError(f"BLE adapter {self.adapter}: scanning did not start within {self.START_TIMEOUT:g}s")
        if self.error is not None:
            raise DeviceError(f"BLE adapter {self.adapter}: cannot scan ({type(self.error).__name__}: {self.error}); "
                              "is bluetoothd running and the adapter up? (bluetoothctl list)")

    async def _main(self, callback: Callback) -> None:
        from bleak import BleakScanner  # imported here: the replay path needs no BlueZ

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        t0 = time.monotonic()

        def heard(device, data) -> None:
            callback(Advertisement(device.address.upper(), int(data.rssi), dict(data.manufacturer_data),
                                   {k.lower(): bytes(v) for k, v in data.service_data.items()},
                                   time.monotonic() - t0))

        try:
            # DuplicateData on: BlueZ reports every advertisement, not only changed ones, so `count` counts.
            scanner = BleakScanner(detection_callback=heard,
                                   bluez={"adapter": self.adapter, "filters": {"DuplicateData": True}})
            await scanner.start()
        except BaseException as exc:
            self.error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            try:
                await scanner.stop()
            except Exception as exc:  # the adapter may be gone already
                log.debug("BLE adapter %s: stop failed: %s", self.adapter, exc)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:
                pass  # the loop has already finished
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


def open_scanner(adapter: str, loop: bool = False) -> Scanner:
    """`hci0` → a bleak scanner on that adapter; `replay:FILE` → a replay."""
    if adapter.startswith(REPLAY_PREFIX):
        return ReplayScanner(Path(adapter[len(REPLAY_PREFIX):]), loop=loop)
    return BleakAdvertScanner(adapter)
