"""The daemon's side of the management hooks: the composition root calls
`start_manager(gateway)` and this adapts the running daemon to the callables
the agent takes (commands.Hooks). Kept apart so the agent itself knows nothing
of the daemon's objects."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway import buffer as buffer_module
from gateway import logring, status
from gateway.config import load_config
from gateway.manage.agent import TRIAL_KEY, Manager, managing_uplink
from gateway.manage.commands import Hooks

if TYPE_CHECKING:
    from gateway.service import Gateway


def daemon_hooks(gw: "Gateway", ring: logring.LogRing) -> Hooks:
    async def reload():
        new = await asyncio.to_thread(load_config, gw.config.source)
        await gw.apply(new)
        return new

    def remember(key: str, value: str | None) -> None:
        gw.buffer.remember(key, value)
        gw.buffer.commit()  # on disk before the message is acted on: no replay after a crash

    return Hooks(
        snapshot=lambda: status.snapshot(gw),
        apply_config=gw.apply,
        reload=reload,
        retry_dead=lambda: buffer_module.retry_dead_letters(gw.buffer.conn),
        logs=lambda since, level: ring.lines(since, level),
        recall=lambda key: gw.buffer.recall(key).get(key),
        remember=remember,
        clock_synced=lambda: gw.clock_synced,
    )


async def start_manager(gw: "Gateway") -> Manager | None:
    # A config on trial that dropped the manage section must still be able to roll back.
    if managing_uplink(gw.config) is None and not gw.buffer.recall(TRIAL_KEY):
        return None
    manager = Manager(gw.config, daemon_hooks(gw, logring.install()))
    await manager.start()
    return manager
