"""The console uplink: JSON lines to stdout or to a file (the embedded default)."""

from __future__ import annotations

import asyncio
import sys

from gateway.buffer import Row
from gateway.config import ConsoleUplinkConfig
from gateway.uplinks.base import TransientError, Transport


class ConsoleTransport(Transport):
    def __init__(self, config: ConsoleUplinkConfig):
        self.name = config.name
        self.path = config.path
        self.batch = 500
        self.out = None

    async def start(self) -> None:
        self.out = sys.stdout if self.path == "-" else open(self.path, "a", encoding="utf-8")

    def send(self, rows: list[Row]) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        try:
            self.out.write("".join(row.body + "\n" for row in rows))
            self.out.flush()
        except OSError as exc:  # a full disk or a closed pipe: retried later, nothing released
            fut.set_exception(TransientError(f"cannot write to {self.path}: {exc}"))
        else:
            fut.set_result([None] * len(rows))
        return fut

    async def stop(self) -> None:
        if self.out is not None and self.out is not sys.stdout:
            self.out.close()
