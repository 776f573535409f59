"""What every uplink transport offers the delivery worker."""

from __future__ import annotations

import asyncio
from typing import Hashable

from gateway.buffer import Row


class TransportLost(Exception):
    """The connection dropped: everything unacknowledged is sent again once ready."""


class TransientError(Exception):
    """A failure worth retrying (timeout, 5xx, 408, 429); `retry_after` from the far end if it said."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Transport:
    """An uplink's wire side. `send` returns a future of one outcome per row:
    None when the far end accepted it, or the reason it rejected it as invalid
    (the row becomes a dead letter). The future raises TransportLost or
    TransientError for failures that must be retried."""

    name: str
    batch: int = 1  # readings per send
    window: int = 1  # sends awaiting an answer at once
    drain_rate: float | None = None  # readings/s at most while a backlog drains (alerts not counted)
    last_error: str | None = None

    async def start(self) -> None:
        """Begin connecting (returns at once; `ready` tells when sending can start)."""

    async def ready(self) -> None:
        """Returns once sending can start."""

    @property
    def connected(self) -> bool:
        return True

    def group_key(self, row: Row) -> Hashable:
        """Rows with the same key may share one send (MQTT: one topic)."""
        return None

    def stream_key(self, row: Row) -> Hashable:
        """Rows with the same key keep their order (MQTT: one sensor, whatever its
        devices' topics); a send takes consecutive rows of one stream that share
        a group key."""
        return self.group_key(row)

    def send(self, rows: list[Row]) -> asyncio.Future:
        raise NotImplementedError

    async def stop(self) -> None:
        """Close the connection (after the last acknowledgements)."""
