"""The `gateway` command (SPEC §1). Messages go to stderr; probe and buffer
data go to stdout."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sqlite3
import sys
import time

from gateway import __version__, logs, registry
from gateway.config import DEFAULT_CONFIG, Config, ConfigError, load_config

log = logging.getLogger("gateway")


DEFAULTS = {"config": None, "log_level": "info", "log_format": "text"}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (got {value})")
    return value


def _parser() -> argparse.ArgumentParser:
    # The common options may stand before or after the subcommand; SUPPRESS keeps
    # a subcommand's parser from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help=f"config file (default: $GATEWAY_CONFIG, then {DEFAULT_CONFIG})")
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"])
    common.add_argument("--log-format", default=argparse.SUPPRESS, choices=["text", "json"])
    p = argparse.ArgumentParser(prog="gateway", parents=[common], description="City Edge Gateway")
    p.add_argument("--version", action="version", version=f"city-edge-gateway {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common], help="run the daemon until SIGTERM/SIGINT")
    sub.add_parser("check", parents=[common], help="validate the config, print every problem")
    probe = sub.add_parser("probe", parents=[common], help="read one sensor with its real driver; sends nothing")
    probe.add_argument("sensor")
    probe.add_argument("--count", type=_positive_int, default=1, help="readings to take (default 1)")
    buf = sub.add_parser("buffer", parents=[common], help="inspect the buffer")
    bsub = buf.add_subparsers(dest="action", required=True)
    stats = bsub.add_parser("stats", parents=[common], help="pending, oldest age, dead letters per uplink")
    stats.add_argument("--json", action="store_true")
    dead = bsub.add_parser("dead", parents=[common], help="list dead letters with their reasons")
    dead.add_argument("--retry", action="store_true", help="move them back to pending")
    sub.add_parser("drivers", parents=[common], help="list installed drivers and their config keys")
    status = sub.add_parser("status", parents=[common], help="ask the running daemon: sensors, uplinks, buffer")
    status.add_argument("--json", action="store_true")
    scan = sub.add_parser("scan", parents=[common], help="find serial ports, I2C chips or BLE beacons")
    ssub = scan.add_subparsers(dest="what", required=True)
    sser = ssub.add_parser("serial", parents=[common], help="serial ports with USB ids (and paths given)")
    sser.add_argument("paths", nargs="*", help="more ports to check, e.g. a pseudo-terminal")
    sser.add_argument("--json", action="store_true")
    si2c = ssub.add_parser("i2c", parents=[common], help="I2C addresses that answer, known chips named")
    si2c.add_argument("--bus", type=int, default=1, help="bus number (default 1: /dev/i2c-1 on a Pi)")
    sble = ssub.add_parser("ble", parents=[common], help="BLE beacons nearby, decoded")
    sble.add_argument("--seconds", type=float, default=10.0, help="how long to listen (default 10)")
    sble.add_argument("--adapter", default="hci0", help="hci0, or replay:FILE to decode a recording")
    sble.add_argument("--record", metavar="FILE", help="write what is heard to a replay file instead")
    from gateway.manage import fleet, update
    fleet.add_parser(sub, common)
    update.add_parser(sub, common)
    return p


def _load(path: str) -> Config:
    return load_config(path)


def cmd_check(args) -> int:
    # The problems are plain `FILE:LINE: key.path: message` lines (SPEC §1), for
    # editors and people; the verdict is a log record, so it follows --log-format.
    try:
        config = _load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        log.error("%s: %d problem%s", args.config, len(exc.problems), "" if len(exc.problems) == 1 else "s")
        return 2
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    log.info("%s: valid (%d sensors, %d uplinks)%s", args.config, len(config.sensors), len(config.uplinks),
             f", {len(config.warnings)} warning{'s' if len(config.warnings) > 1 else ''}" if config.warnings else "")
    return 0


def cmd_run(args) -> int:
    from gateway.service import Gateway
    return asyncio.run(Gateway(_load(args.config)).run())


def cmd_probe(args) -> int:
    from gateway.probe import probe
    config = _load(args.config)
    return probe(config, args.sensor, args.count)


def cmd_buffer(args) -> int:
    """A second process beside the daemon: reads read-only, `dead --retry` writes
    one small change; neither ever moves, replaces or creates a buffer file."""
    from gateway import bufferfile
    config = _load(args.config)
    path = config.storage.path
    retry = args.action == "dead" and args.retry
    try:
        conn = bufferfile.open_for_change(path) if retry else bufferfile.open_for_reading(path)
    except bufferfile.NoBuffer:  # the same report, all zeros, without creating a file the daemon's user should own
        print(f"no buffer at {path} yet (the gateway has not run with this config)", file=sys.stderr)
        conn = sqlite3.connect(":memory:")
        conn.executescript(bufferfile.SCHEMA)
    except bufferfile.BufferUnavailable as exc:
        print(f"gateway buffer: {exc}", file=sys.stderr)
        return 1
    try:
        _buffer_action(args, conn, [u.name for u in config.uplinks])
    except sqlite3.Error as exc:
        busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        print(f"gateway buffer: {path}: {bufferfile.describe(exc)}"
              + ("; the running gateway is writing a large change: nothing was changed, try again" if busy else ""),
              file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


def _buffer_action(args, conn: sqlite3.Connection, uplinks: list[str]) -> None:
    from gateway import bufferfile
    if args.action == "stats":
        data = bufferfile.stats(conn, uplinks)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            _print_stats(data)
    elif args.retry:
        moved = bufferfile.retry_dead_letters(conn)
        print(f"{moved} dead letters moved back to pending", file=sys.stderr)
    else:
        for d in bufferfile.dead_letters(conn):
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.at_ms / 1000))
            state = "retrying" if d.retry else "dead"
            print(f"{at}\t{d.uplink}\t{bufferfile.reading_id(d.body)}\t{state}\t{d.reason}")


def _print_stats(data: dict) -> None:
    print(f"{'uplink':<20} {'pending':>10} {'oldest pending':>16} {'dead letters':>13}")
    for name, u in data["uplinks"].items():
        age = "-" if u["oldest_pending_age_s"] is None else f"{u['oldest_pending_age_s']:.1f}s"
        print(f"{name:<20} {u['pending']:>10} {age:>16} {u['dead_letters']:>13}")
    b = data["buffer"]
    print(f"buffer: {b['readings']} readings ({b['file_bytes'] / 1e6:.1f} MB), {b['evictions']} evicted, "
          f"{b['appended']} appended in all")
    if data["sensors"]:
        print(f"\n{'sensor':<20} {'state':<10} {'failures':>8}  detail")
        for sid, s in data["sensors"].items():
            print(f"{sid:<20} {s['state']:<10} {s['failures']:>8}  {s['detail'] or ''}")


def cmd_drivers(args) -> int:
    from gateway.config import sensor_model
    from gateway.keydoc import describe_keys
    from gateway.sdk.driver import SensorOptions
    print("Keys every sensor takes:")
    for line in describe_keys(SensorOptions):
        print("    " + line)
    base = set(SensorOptions.model_fields)
    for name in sorted(registry.available()):
        print()
        try:
            cls = registry.load(name)
        except registry.DriverLoadError as exc:
            cause = exc.__cause__
            why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            print(f"{name}  BROKEN, cannot be used ({registry.available()[name]}): {why}")
            continue
        print(f"{name}  {cls.summary}".rstrip())
        # The driver's own keys first, then the pipeline's (distance sensors).
        for line in describe_keys(sensor_model(cls), skip=base, first=list(cls.Options.model_fields)):
            print("    " + line)
    from gateway.config import UPLINK_TYPES, ServiceSection, WebSection
    print("\nUplinks (uplinks: - name: ..., type: TYPE, and these keys):")
    for kind, model in UPLINK_TYPES.items():
        print(f"\n{kind}  {(model.__doc__ or '').strip().splitlines()[0] if model.__doc__ else ''}".rstrip())
        for line in describe_keys(model, skip={"name", "type"}):
            print("    " + line)
    print("\nservice: (how the daemon lives on the Pi)")
    for line in describe_keys(ServiceSection, skip={"web"}) + ["web:"] + ["    " + x for x in describe_keys(WebSection)]:
        print("    " + line)
    return 0


def cmd_status(args) -> int:
    from gateway import status
    if os.path.exists(args.config) and not os.access(args.config, os.R_OK):  # 0640 root:gateway on a Pi
        print(f"no permission to read {args.config}: run as root or as a member of the gateway's group",
              file=sys.stderr)
        return 1
    try:
        path = status.socket_path(_load(args.config))
    except ConfigError:
        path = status.socket_path_lenient(args.config)
        print(f"note: {args.config} does not validate (`gateway check`); asking the daemon at {path}", file=sys.stderr)
    except PermissionError:  # a user outside the group may not see every path the config names
        path = status.socket_path_lenient(args.config)
    try:
        data = status.query(path)
    except status.StatusUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        status.print_table(data)
    return 0 if data["healthy"] else 1


def cmd_scan(args) -> int:
    from gateway import scan
    if args.what == "serial":
        ports = scan.scan_serial(args.paths)
        if args.json:
            print(json.dumps(scan.as_dicts(ports), indent=2))
        else:
            scan.print_serial(ports)
        return 0
    if args.what == "i2c":
        from smbus2 import SMBus
        try:
            bus = SMBus(args.bus)
        except OSError as exc:
            print(f"cannot open /dev/i2c-{args.bus}: {exc.strerror or exc} (I2C enabled in raspi-config? "
                  f"user in the i2c group?)", file=sys.stderr)
            return 1
        with bus:
            scan.print_i2c(args.bus, scan.scan_i2c(bus))
        return 0
    tool = registry.scan_tool("ble")  # the driver's own tool, found like the driver: the core imports no driver
    if tool is None:
        print("gateway scan ble: not available in this installation (the ble_beacon driver is not installed)",
              file=sys.stderr)
        return 1
    return tool(args.seconds, adapter=args.adapter, record_to=args.record)


def cmd_fleet(args) -> int:
    from gateway.manage import fleet
    return fleet.main(args)


def cmd_update(args) -> int:
    from gateway.manage import update
    return update.main(args)


COMMANDS = {"fleet": cmd_fleet, "update": cmd_update, "run": cmd_run, "check": cmd_check, "probe": cmd_probe, "buffer": cmd_buffer, "drivers": cmd_drivers,
            "status": cmd_status, "scan": cmd_scan}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for key, default in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, default)
    if args.config is None:
        args.config = os.environ.get("GATEWAY_CONFIG") or str(DEFAULT_CONFIG)
    logs.setup(args.log_level, args.log_format)
    if args.command == "run":
        logs.limit_repeats()
    # `kill -USR1 <pid>` writes every thread's stack to stderr: a hung daemon can be diagnosed in the field.
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (ValueError, OSError, AttributeError):  # stderr without a file descriptor (embedded, captured)
        pass
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"config {args.config} is invalid; `gateway check -c {args.config}` lists the problems", file=sys.stderr)
        return 2
    except PermissionError as exc:  # a user outside the gateway's group: a sentence, not a traceback
        where = f" for {exc.filename}" if exc.filename else ""
        print(f"gateway {args.command}: no permission{where}: run as root or as a member of the gateway's group",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
