"""A simulated serial device behind a real pseudo-terminal.

The driver opens a stable path (a symlink, like /dev/serial/by-id/…) that
points at the pty's slave side; the simulator owns the master side. `unplug`
closes the pty as a pulled USB adapter would; `replug` makes a new one behind
the same path. Subclasses answer commands in `on_command` and push unsolicited
bytes with `send`.
"""

from __future__ import annotations

import os
import pty
import select
import threading
import tty
from pathlib import Path


class PtyDevice:
    def __init__(self, link: str | Path, terminator: bytes = b"\r\n"):
        self.link = Path(link)
        self.terminator = terminator
        self.received: list[bytes] = []  # every command the driver sent, in order
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._rx = b""

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "PtyDevice":
        master, slave = pty.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".new")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link)
        self._stopping = False
        self._thread = threading.Thread(target=self._reader, args=(master,), daemon=True, name=f"pty-{self.link.name}")
        self._thread.start()
        return self

    def unplug(self) -> None:
        # Stop the reader first: a thread blocked in read() on the master would
        # keep the pty alive, and the driver would never see the hang-up.
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._lock:
            for fd in (self._master, self._slave):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._master = self._slave = None
        if self.link.is_symlink():
            self.link.unlink()

    def replug(self) -> None:
        self.unplug()
        self.start()

    stop = unplug

    def __enter__(self) -> "PtyDevice":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- bytes ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Bytes the device puts on the wire."""
        with self._lock:
            if self._master is None:
                return
            try:
                os.write(self._master, data)
            except OSError:
                pass

    def on_command(self, command: bytes) -> None:
        """Called for each terminated command the driver wrote. Override."""

    def _reader(self, master: int) -> None:
        while not self._stopping:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            self._rx += data
            while self.terminator in self._rx:
                command, self._rx = self._rx.split(self.terminator, 1)
                self.received.append(command)
                self.on_command(command)
