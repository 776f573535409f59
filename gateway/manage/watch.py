"""`gateway fleet watch`: one line per gateway from its retained `health`,
redrawn as messages arrive: what an operations room looks at first."""

from __future__ import annotations

import json
import queue
import sys
import time
from datetime import datetime, timezone


def _age(stamp: str | None) -> str:
    if not stamp:
        return "-"
    try:
        then = datetime.fromisoformat(stamp.rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return "?"
    age = max(0.0, time.time() - then)
    return f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}m" if age < 7200 else f"{age / 3600:.0f}h"


def row(gateway: str, h: dict) -> str:
    sensors = h.get("sensors") or {}
    bad = [f"{sid}:{s.get('state')}" for sid, s in sensors.items() if s.get("state") != "ok"]
    uplinks = h.get("uplinks") or {}
    down = [name for name, u in uplinks.items() if not u.get("connected")]
    pending = sum(u.get("pending") or 0 for u in uplinks.values())
    host = h.get("host") or {}
    flags = [f for f, on in (("UNDERVOLTAGE", host.get("undervoltage")), ("THROTTLED", host.get("throttled")),
                             ("CLOCK", host.get("clock") == "unsynced")) if on]
    temp = host.get("cpu_temperature_c")
    free = (h.get("buffer") or {}).get("disk_free_bytes")
    return (f"{gateway:<24} {_age(h.get('at')):>5} {h.get('version') or '?':<9} "
            f"{len(sensors) - len(bad)}/{len(sensors):<4} {','.join(bad) or '-':<28} "
            f"{len(uplinks) - len(down)}/{len(uplinks):<3} {pending:>8} "
            f"{'-' if free is None else f'{free / 1e9:.1f}G':>6} {'-' if temp is None else f'{temp:.0f}C':>5} "
            f"{' '.join(flags) or '-'}")


HEADER = (f"{'gateway':<24} {'age':>5} {'version':<9} {'ok':<6} {'sensors not ok':<28} {'up':<5} {'pending':>8} "
          f"{'free':>6} {'cpu':>5} host")


def print_table(healths: dict[str, dict], out=sys.stdout) -> None:
    print(HEADER, file=out)
    for gateway in sorted(healths):
        print(row(gateway, healths[gateway]), file=out)
    out.flush()


def watch(client, once: bool) -> int:
    prefix = client.prefix.format(gateway="+")
    head, _, tail = client.prefix.partition("{gateway}")
    client.subscribe(f"{prefix}/health")
    healths: dict[str, dict] = {}
    quiet_since = time.monotonic()
    try:
        while True:
            try:
                topic, body, _ = client.messages.get(timeout=0.5)
            except queue.Empty:
                if once and time.monotonic() - quiet_since > 1.0:
                    print_table(healths)
                    return 0
                continue
            quiet_since = time.monotonic()
            gateway = topic.removeprefix(head).removesuffix(tail + "/health")
            try:
                healths[gateway] = json.loads(body)
            except ValueError:
                continue
            if not once:
                print("\033[2J\033[H", end="")  # redraw in place
                print_table(healths)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()
