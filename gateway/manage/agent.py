"""The management agent (SPEC §7): health to the city, signed config and
commands from it, over its own channel to the managing uplink's broker.

Messages are handled one at a time, in arrival order. A config is checked as
`gateway check` checks a file, applied through the daemon's reload path (all or
nothing), written to disk keeping the one before, and kept only if the
managing broker is reachable again within `rollback_after`; otherwise the
previous config is restored and `rolled_back` reported once the unit is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, MqttUplinkConfig, parse_config
from gateway.manage.channel import Channel
from gateway.manage.commands import CommandError, Hooks, command_table
from gateway.manage.configfile import config_hash, previous_path, replace_keeping_previous
from gateway.manage.envelope import Refused, SeqGuard, load_public_key, open_envelope, utc_stamp
from gateway.manage.health import Host, health_document, state_signature
from gateway.manage.update_request import take_result, write_request
from gateway.yamlsource import Problem

log = logging.getLogger(__name__)

CHANGE_POLL_S = 1.0  # without a change callback, how often the state is compared
TRIAL_KEY = "manage:config-trial"  # a config applied but not yet confirmed by a reconnect


def managing_uplink(config: Config) -> MqttUplinkConfig | None:
    return next((u for u in config.uplinks if getattr(u, "manage", None) is not None), None)


def _unverified(raw: bytes, key: str) -> Any:
    """A field of a message that did not verify, only to echo it back (a request id)."""
    try:
        value = json.loads(json.loads(raw)["payload"]).get(key)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _dumps(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class Manager:
    def __init__(self, config: Config, hooks: Hooks, host: Host | None = None):
        self.config = config
        self.hooks = hooks
        self.host = host or Host()
        self.path = Path(config.source)
        self.config_hash = config_hash(self.path.read_bytes()) if self.path.is_file() else None
        self.channel: Channel | None = None
        self.seq = SeqGuard(hooks.recall, hooks.remember)
        self.commands = command_table(hooks, self._reload)
        self.commands["update"] = self._update
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    @property
    def gateway(self) -> str:
        return self.config.gateway.id

    async def start(self) -> None:
        await self._follow(self.config)
        if self.hooks.on_change is not None:
            self.hooks.on_change(self._changed.set)
        self._tasks = [asyncio.create_task(self._health_loop(), name="manage-health"),
                       asyncio.create_task(self._work(), name="manage-inbox"),
                       asyncio.create_task(self._resume_trial(), name="manage-trial")]
        outcome = take_result(self._state_dir)
        if outcome is not None:  # an update ran while this version was not (yet) running
            log.info("management: reporting the outcome of update request %s", outcome.get("id"))
            self._tasks.append(asyncio.create_task(self._publish("cmd/update/result", outcome), name="manage-update"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.channel is not None:
            await self.channel.stop()

    async def _follow(self, config: Config) -> None:
        """(Re)open the channel when the managing uplink's settings change."""
        uplink = managing_uplink(config)
        if self.channel is not None and uplink == self.channel.uplink:
            return
        if self.channel is not None:
            await self.channel.stop()
            self.channel = None
        if uplink is None:
            log.warning("management: no uplink has a manage section; the unit is not managed remotely")
            return
        self.key = load_public_key(uplink.manage.public_key_file)
        self.channel = Channel(uplink, self.gateway, lambda topic, payload: self._inbox.put_nowait((topic, payload)))
        await self.channel.start()

    def _connected(self) -> bool:
        return self.channel is not None and self.channel.connected.is_set()

    async def _publish(self, suffix: str, doc: dict, retain: bool = False) -> None:
        """Publish once connected (a result waits for the channel rather than being lost)."""
        while not (self._connected() and self.channel.publish(suffix, _dumps(doc), retain)):
            await asyncio.sleep(0.2)

    # --- health ---------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        last_sig, next_due, sent_on = None, 0.0, None
        while True:
            snap = self.hooks.snapshot()
            sig = state_signature(snap)
            channel = self.channel if self._connected() else None
            link = None if channel is None else (channel, channel.connections)
            if link is not None and (sig != last_sig or time.monotonic() >= next_due or link != sent_on):
                host = await asyncio.to_thread(self.host.facts, self.hooks.clock_synced())
                doc = health_document(snap, host, self.config_hash)
                if channel.publish("health", _dumps(doc), retain=True):
                    last_sig, sent_on = sig, link
                    next_due = time.monotonic() + channel.uplink.manage.health_interval
            try:
                await asyncio.wait_for(self._changed.wait(), CHANGE_POLL_S)
            except TimeoutError:
                pass
            self._changed.clear()

    # --- the inbox --------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            topic, raw = await self._inbox.get()
            try:
                if topic == "config/set":
                    await self._config_set(raw)
                elif topic.startswith("cmd/") and topic.count("/") == 1:
                    await self._command(topic[4:], raw)
            except Exception:
                log.exception("management: handling %s failed", topic)

    def _open(self, raw: bytes, kind: str):
        return open_envelope(raw, self.key, gateway=self.gateway, kind=kind, clock_synced=self.hooks.clock_synced())

    def _state(self, result: str, seq: Any, errors: list[str] = ()) -> dict:
        return {"result": result, "seq": seq, "config_hash": self.config_hash, "at": utc_stamp(),
                "errors": list(errors)}

    async def _command(self, name: str, raw: bytes) -> None:
        request_id = _unverified(raw, "id")
        try:
            message = self._open(raw, "cmd")
            if message.get("name") != name:
                raise Refused(f"the signed payload names command {message.get('name')!r}, the topic {name!r}")
            handler = self.commands.get(name)
            if handler is None:
                raise Refused(f"unknown command {name!r}; known: {', '.join(self.commands)}")
            self.seq.accept(message)
            request_id = message.get("id")
            args = message.get("args") or {}
            if not isinstance(args, dict):
                raise CommandError("args must be a JSON object")
            log.info("management: command %s (id %s, seq %d)", name, request_id, message.seq)
            doc = {"id": request_id, "ok": True, "result": await handler(args, request_id)}
        except (Refused, CommandError) as exc:
            log.warning("management: command %s refused: %s", name, exc)
            doc = {"id": request_id, "ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("management: command %s failed", name)
            doc = {"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        await self._publish(f"cmd/{name}/result", doc)

    @property
    def _state_dir(self) -> Path:
        return self.config.storage.path.parent

    async def _update(self, args: dict, request_id: Any) -> dict:
        return await asyncio.to_thread(write_request, self._state_dir, args, request_id)

    async def _reload(self) -> dict:
        try:
            new = await self.hooks.reload()
        except ConfigError as exc:
            raise CommandError("; ".join(str(p) for p in exc.problems)) from None
        self.config = new
        self.config_hash = config_hash(self.path.read_bytes())
        await self._follow(new)
        self._changed.set()
        return {"config_hash": self.config_hash}

    # --- config/set -----------------------------------------------------------------------------

    def _check(self, text: str) -> Config:
        new = parse_config(text, "config/set")
        if new.gateway.id != self.gateway:
            line = next((i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith("id:")), 1)
            raise ConfigError([Problem("config/set", line, "gateway.id",
                                       f"this gateway is {self.gateway!r}, the config is for {new.gateway.id!r}")])
        return new.model_copy(update={"source": str(self.path)})

    async def _config_set(self, raw: bytes) -> None:
        try:
            message = self._open(raw, "config")
            text = message.get("config")
            if not isinstance(text, str):
                raise Refused("the payload has no config text")
            self.seq.accept(message)
        except Refused as exc:
            log.warning("management: config/set refused: %s", exc)
            await self._publish("config/state", self._state("rejected", _unverified(raw, "seq"), [str(exc)]), True)
            return
        try:
            new = await asyncio.to_thread(self._check, text)
        except ConfigError as exc:
            log.warning("management: config/set seq %d rejected: %d problem(s)", message.seq, len(exc.problems))
            await self._publish("config/state", self._state("rejected", message.seq, [str(p) for p in exc.problems]),
                                True)
            return
        await self._apply(new, text.encode("utf-8"), message.seq)

    async def _apply(self, new: Config, data: bytes, seq: int) -> None:
        old, old_data = self.config, self.path.read_bytes()
        within = managing_uplink(old).manage.rollback_after
        try:
            new = await self.hooks.apply_config(new)
        except Exception as exc:
            log.error("management: config seq %d refused by the reload plan: %s", seq, exc)
            await self._publish("config/state", self._state("rejected", seq, [f"config/set: {exc}"]), True)
            return
        # Remembered before the file changes: a restart inside the window still rolls back.
        self.hooks.remember(TRIAL_KEY, json.dumps({"seq": seq, "rollback_after": within}))
        replace_keeping_previous(self.path, data)
        self.config, self.config_hash = new, config_hash(data)
        log.info("management: config seq %d applied (%s); keeping it if the managing broker answers within %gs",
                 seq, self.config_hash[:12], within)
        await self._follow(new)
        self._changed.set()
        await self._confirm_or_roll_back(seq, within, old, old_data)

    async def _confirm_or_roll_back(self, seq: int, within: float, old: Config, old_data: bytes) -> None:
        if await self._reconnected(within):
            self.hooks.remember(TRIAL_KEY, None)
            await self._publish("config/state", self._state("applied", seq), True)
            return
        log.error("management: the managing broker was not reachable within %gs of config seq %d; rolling back",
                  within, seq)
        old = await self.hooks.apply_config(old)
        replace_keeping_previous(self.path, old_data)
        self.config, self.config_hash = old, config_hash(old_data)
        self.hooks.remember(TRIAL_KEY, None)
        await self._follow(old)
        self._changed.set()
        await self._publish("config/state", self._state("rolled_back", seq), True)

    async def _resume_trial(self) -> None:
        """A config on trial when the daemon stopped (a crash, a power cut): the
        window starts again now, and the previous file is what a rollback restores."""
        trial = self.hooks.recall(TRIAL_KEY)
        if not trial:
            return
        trial = json.loads(trial)
        old_data = previous_path(self.path).read_bytes()
        old = await asyncio.to_thread(parse_config, old_data.decode("utf-8"), str(self.path))
        log.warning("management: config seq %s was on trial at the last stop; confirming it again", trial["seq"])
        await self._confirm_or_roll_back(trial["seq"], trial["rollback_after"], old, old_data)

    async def _reconnected(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._connected():
                return True
            await asyncio.sleep(0.2)
        return False
