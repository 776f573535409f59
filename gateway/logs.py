"""Logging set-up: messages to stderr, text or JSON; under systemd the journal
adds its own timestamps, so ours are left out."""

from __future__ import annotations

import json
import logging
import os
import sys


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message comes, not the one at set-up
    (a command run in-process under a test's capture must not keep a closed stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RepeatFilter(logging.Filter):
    """Lets the first of identical warnings/errors through and holds back the
    repeats for `window` seconds; the next one after that says how many were
    held back. A dead sensor or an unreachable broker cannot fill the SD card."""

    def __init__(self, window: float = 60.0, now=None, max_keys: int = 1000):
        super().__init__()
        import time
        self.window = window
        self.now = now or time.monotonic
        self.max_keys = max_keys
        self.seen: dict[tuple, list] = {}  # key -> [first time of this window, repeats held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # A record may say it starts a new episode of a condition (`extra={"episode": n}`): the same
        # words after a recovery are news, not a repeat.
        key = (record.name, record.levelno, record.getMessage(), getattr(record, "episode", None))
        now = self.now()
        entry = self.seen.get(key)
        if entry is None or now - entry[0] >= self.window:
            held = entry[1] if entry else 0
            if held:
                record.msg = f"{record.getMessage()} (repeated {held} more times in {now - entry[0]:.0f}s)"
                record.args = None
            if entry is None and len(self.seen) >= self.max_keys:
                self._prune(now)
            self.seen[key] = [now, 0]
            return True
        entry[1] += 1
        return False

    def _prune(self, now: float) -> None:
        for key in [k for k, (t, _) in self.seen.items() if now - t >= self.window]:
            del self.seen[key]
        if len(self.seen) >= self.max_keys:
            self.seen.clear()


def limit_repeats(window: float = 60.0) -> RepeatFilter:
    """Attach a RepeatFilter to the root handlers (the daemon does; one-shot commands need not)."""
    f = RepeatFilter(window)
    for handler in logging.getLogger().handlers:
        handler.addFilter(f)
    return f
