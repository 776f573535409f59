"""What every uplink transport offers the delivery worker."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Hashable

from gateway.buffer import Row


class TransportLost(Exception):
    """The connection dropped: everything unacknowledged is sent again once ready."""


class TransientError(Exception):
    """A failure worth retrying (timeout, 5xx, 408, 429); `retry_after` from the far end if it said."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TransportLoadError(Exception):
    """A transport class that cannot be used (an abstract method left out)."""


class Transport(ABC):
    """An uplink's wire side. `send` returns a future of one outcome per row:
    None when the far end accepted it, or the reason it rejected it as invalid
    (the row becomes a dead letter). The future raises TransportLost or
    TransientError for failures that must be retried.

    `last_error` is the latest reason the uplink cannot deliver (refused
    connection, bad TLS material, HTTP 503 ...), None once it delivers again;
    `gateway status` shows it."""

    name: str
    batch: int = 1  # readings per send
    window: int = 1  # sends awaiting an answer at once
    drain_rate: float | None = None  # readings/s at most while a backlog drains (alerts not counted)
    last_error: str | None = None

    async def start(self) -> None:
        """Prepare (returns at once; `ready` tells when sending can start). An
        exception here is shown as the uplink's last_error and start is retried."""

    async def run(self) -> None:
        """The transport's own background work (connect and reconnect), run as a
        supervised task: if it dies it is logged, shown and restarted. Returns at
        once for a transport without such work."""

    async def ready(self) -> None:
        """Returns once sending can start."""

    @property
    def connected(self) -> bool:
        """What `gateway status` and the health message show."""
        return True

    @property
    def can_send(self) -> bool:
        """Whether a send handed over now can go out. Where a connection is kept
        (MQTT) it is that connection, and delivery waits on `ready` while it is
        down; where only a request can tell (NGSI-LD after a failed one) it stays
        True, and the next send finds out."""
        return True

    def group_key(self, row: Row) -> Hashable:
        """Rows with the same key may share one send (MQTT: one topic)."""
        return None

    def stream_key(self, row: Row) -> Hashable:
        """Rows with the same key keep their order (MQTT: one sensor, whatever its
        devices' topics); a send takes consecutive rows of one stream that share
        a group key."""
        return self.group_key(row)

    @abstractmethod
    def send(self, rows: list[Row]) -> asyncio.Future:
        ...

    async def stop(self) -> None:
        """Close the connection (after the last acknowledgements)."""


def check_transport_class(cls: type) -> type[Transport]:
    """A transport class fit to use, or TransportLoadError naming it and what it lacks."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise TransportLoadError(f"transport {where} is not a gateway.uplinks.base.Transport subclass")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise TransportLoadError(f"transport {where} does not implement {', '.join(missing)}")
    return cls
