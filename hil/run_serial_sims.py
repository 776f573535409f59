"""Start the simulated serial distance sensors at given link paths, so a
config (e.g. config/hil.yaml) can point `port:` at them; runs until SIGINT or
SIGTERM. See hil/README.md.

    python -m hil.run_serial_sims --maxbotix /tmp/hil/maxbotix \\
        --a02yyuw /tmp/hil/a02yyuw --sr50a /tmp/hil/sr50a --time-scale 60
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from hil.distance_devices import A02yyuwDevice, MaxbotixDevice, Scene, Sr50aDevice


def build(args: argparse.Namespace) -> list:
    river = Scene("river_level", args.river_mount, seed=args.seed, time_scale=args.time_scale)
    snow = Scene("snow_depth", args.snow_mount, seed=args.seed, time_scale=args.time_scale)
    devices = []
    if args.maxbotix:
        devices.append(MaxbotixDevice(args.maxbotix, river, range_m=args.range_m, seed=args.seed))
    if args.a02yyuw:
        devices.append(A02yyuwDevice(args.a02yyuw, river, seed=args.seed))
    if args.sr50a:
        devices.append(Sr50aDevice(args.sr50a, snow, seed=args.seed, answer_delay=args.sr50a_delay))
    return devices


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.run_serial_sims", description=__doc__.split("\n\n")[0])
    p.add_argument("--maxbotix", type=Path, help="link path for a MaxBotix HRXL (streams R#### lines)")
    p.add_argument("--a02yyuw", type=Path, help="link path for an A02YYUW (streams FF H L SUM frames)")
    p.add_argument("--sr50a", type=Path, help="link path for an SR50A (answers p33)")
    p.add_argument("--range-m", type=int, choices=(5, 10), default=5, help="MaxBotix model range")
    p.add_argument("--river-mount", type=float, default=4.5, help="m above the gauge datum (maxbotix, a02yyuw)")
    p.add_argument("--snow-mount", type=float, default=2.0, help="m above the ground (sr50a)")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--sr50a-delay", type=float, default=1.0, help="s per SR50A measurement")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    devices = build(args)
    if not devices:
        p.error("name at least one of --maxbotix, --a02yyuw, --sr50a")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for d in devices:
        d.link.parent.mkdir(parents=True, exist_ok=True)
        d.start()
        print(f"{type(d).__name__} at {d.link}", flush=True)
    stop.wait()
    for d in devices:
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
