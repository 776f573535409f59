"""Logs (issue 5): no timestamps of our own under systemd, JSON on request,
repeated identical errors rate-limited so a dead sensor cannot fill the SD card."""

from __future__ import annotations

import json
import logging

import pytest

from gateway import logs


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class FakeTime:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _capture(filter_):
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    handler.addFilter(filter_)
    logger = logging.getLogger("test.repeats")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, records


def test_repeated_identical_errors_are_held_back_and_counted():
    now = FakeTime()
    log, seen = _capture(logs.RepeatFilter(window=60, now=now))
    for _ in range(500):
        log.error("sensor %s: %s", "river-1", "no answer")
        now.t += 0.1  # 50 s of a dead sensor
    log.error("sensor %s: %s", "snow-1", "no answer")  # a different message passes
    assert seen == ["sensor river-1: no answer", "sensor snow-1: no answer"]
    now.t += 20
    log.error("sensor %s: %s", "river-1", "no answer")
    assert seen[-1] == "sensor river-1: no answer (repeated 499 more times in 70s)"


def test_info_messages_are_never_held_back():
    log, seen = _capture(logs.RepeatFilter(window=60, now=FakeTime()))
    for _ in range(3):
        log.info("reading")
    assert seen == ["reading"] * 3


def test_no_timestamps_under_systemd(monkeypatch, capsys):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    logs.setup("info", "text")
    logging.getLogger("gateway.test").warning("hello")
    assert capsys.readouterr().err == "WARNING gateway.test: hello\n"


def test_json_logs(monkeypatch, capsys):
    logs.setup("info", "json")
    logging.getLogger("gateway.test").error("broken %d", 7)
    doc = json.loads(capsys.readouterr().err)
    assert doc["level"] == "error" and doc["message"] == "broken 7" and doc["logger"] == "gateway.test"


def test_messages_go_to_the_stderr_of_the_moment(monkeypatch):
    """A command run in-process (tests, the web page's probe) must not keep the
    stderr it was set up with: that stream may be closed by the time a warning comes."""
    import io
    import sys
    logs.setup("info", "text")
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("gateway.test").warning("after the swap")
    assert later.getvalue().endswith("WARNING gateway.test: after the swap\n")
