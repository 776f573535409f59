"""The daemon's side of the management hooks: the composition root calls
`start_manager(gateway)` and this adapts the running daemon to the callables
the agent takes (commands.Hooks): the health view's snapshot and change
callbacks, the reload plan (all or nothing), the buffer's memo, the log ring.
Kept apart so the agent itself knows nothing of the daemon's objects."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gateway import buffer as buffer_module
from gateway import logring
from gateway.config import Config, load_config
from gateway.manage.agent import TRIAL_KEY, Manager, managing_uplink
from gateway.manage.commands import Hooks

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)


class ApplyRefused(Exception):
    """The reload plan did not apply the config; the running one stays."""


def daemon_hooks(gw: "Gateway", ring: logring.LogRing) -> Hooks:
    async def apply_config(new: Config) -> Config:
        if not await gw.apply(new):
            raise ApplyRefused((gw.last_reload or {}).get("reason") or "the reload plan refused the config")
        return gw.config  # what runs: storage, service and gateway.id stay as they were until a restart

    async def reload() -> Config:
        return await apply_config(await asyncio.to_thread(load_config, gw.config.source))

    def remember(key: str, value: str | None) -> None:
        gw.buffer.remember(key, value)
        gw.buffer.commit()  # on disk before the message is acted on: no replay after a crash

    return Hooks(
        snapshot=gw.health.snapshot,
        on_change=gw.health.on_change,
        apply_config=apply_config,
        reload=reload,
        retry_dead=lambda: buffer_module.retry_dead_letters(gw.buffer.conn),
        logs=lambda since, level: ring.lines(since, level),
        recall=lambda key: gw.buffer.recall(key).get(key),
        remember=remember,
        clock_synced=gw.corrector.is_synced,
    )


async def start_manager(gw: "Gateway") -> Manager | None:
    # A config on trial that dropped the manage section must still be able to roll back.
    if managing_uplink(gw.config) is None and not gw.buffer.recall(TRIAL_KEY):
        return None
    try:
        manager = Manager(gw.config, daemon_hooks(gw, logring.shared()))
        await manager.start()
    except Exception as exc:  # reading and delivering go on without remote management
        log.error("remote management cannot start (%s: %s); the unit is not managed remotely",
                  type(exc).__name__, exc)
        return None
    return manager
