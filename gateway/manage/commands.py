"""The signed commands of SPEC §7 (`cmd/{name}`): each takes the request's
args and returns the result document; a CommandError is a refusal with its
reason. The daemon's side comes in as callables (see Hooks), so this module
never reaches into the daemon's objects."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from gateway.sdk.fields import parse_duration

MAX_PROBE_COUNT = 10
PROBE_POLL_S = 0.1
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class CommandError(Exception):
    pass


@dataclass
class Hooks:
    """What the management agent may ask of the daemon."""

    snapshot: Callable[[], dict]                              # `gateway status --json`, plus last_error etc.
    # all-or-nothing; raises when refused; returns the Config now running (the reload plan keeps
    # storage, service and gateway.id until a restart, so it may differ from the one given)
    apply_config: Callable[[Any], Awaitable[Any]]
    reload: Callable[[], Awaitable[Any]]                      # re-read the config file; the Config now running
    retry_dead: Callable[[], int]                             # dead letters moved back to pending
    logs: Callable[[float | None, int], list[dict]]           # recent log lines (LogRing.lines)
    recall: Callable[[str], str | None]                       # durable state ("manage:seq")
    remember: Callable[[str, str | None], None]               # ... written to disk before it returns
    clock_synced: Callable[[], bool]
    on_change: Callable[[Callable[[], None]], None] | None = None


async def next_readings(snapshot: Callable[[], dict], sensor: str, count: int, timeout: float) -> list[dict]:
    """The sensor's next `count` readings as the daemon takes them, seen in the
    health view: the device stays with its runner, a probe only watches."""
    def last() -> dict | None:
        return (snapshot().get("sensors", {}).get(sensor) or {}).get("last_reading")

    seen: list[dict] = []
    previous = last()
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        await asyncio.sleep(PROBE_POLL_S)
        current = last()
        if current is not None and current.get("id") != (previous or {}).get("id"):
            seen.append(current)
            previous = current
    if not seen:
        raise CommandError(f"sensor {sensor} took no reading within {timeout:g}s")
    return seen


def _count(args: dict) -> int:
    count = args.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_PROBE_COUNT:
        raise CommandError(f"count must be a whole number 1..{MAX_PROBE_COUNT}")
    return count


Handler = Callable[[dict, Any], Awaitable[Any]]  # (args, request id) -> result


def command_table(hooks: Hooks, reload: Callable[[], Awaitable[dict]]) -> dict[str, Handler]:
    async def status(args: dict, request_id: Any) -> Any:
        return hooks.snapshot()

    async def probe(args: dict, request_id: Any) -> Any:
        sensor = args.get("sensor")
        if not isinstance(sensor, str):
            raise CommandError("probe needs args.sensor, a sensor id")
        known = hooks.snapshot().get("sensors", {})
        if sensor not in known:
            raise CommandError(f"no sensor {sensor!r} (sensors: {', '.join(known) or 'none'})")
        try:
            timeout = parse_duration(args.get("timeout", "60s"))
        except ValueError as exc:
            raise CommandError(f"timeout: {exc}") from None
        return await next_readings(hooks.snapshot, sensor, _count(args), timeout)

    async def retry_dead(args: dict, request_id: Any) -> Any:
        return {"moved": hooks.retry_dead()}

    async def logs(args: dict, request_id: Any) -> Any:
        since = args.get("since")
        level = args.get("level", "info")
        if level not in LEVELS:
            raise CommandError(f"level must be one of {', '.join(LEVELS)}")
        try:
            seconds = None if since is None else parse_duration(since)
        except ValueError as exc:
            raise CommandError(f"since: {exc}") from None
        return hooks.logs(seconds, LEVELS[level])

    async def reload_cmd(args: dict, request_id: Any) -> Any:
        return await reload()

    return {"status": status, "probe": probe, "retry-dead": retry_dead, "reload": reload_cmd, "logs": logs}
