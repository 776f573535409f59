"""The simulated rig: every real driver against a simulator at its own seam.

    python -m hil.rig -c config/hil.yaml [--time-scale 60] [--every 5]

Reads the config, starts the simulator each sensor needs (a pseudo-terminal at
the sensor's `port` for the serial distance sensors and the LoRa modems, a
simulated SMBus / gpiozero MockFactory for the I2C and GPIO drivers; BLE
beacons use `adapter: replay:FILE`), then runs `gateway run` in this process.
The drivers are the field code: only the hardware is simulated, at its wire level.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from gateway.config import ConfigError, load_config
from hil import buses
from hil.distance_devices import A02yyuwDevice, MaxbotixDevice, Scene, Sr50aDevice
from hil.lora_modems import E220Sim, Es920lrSim, LppNode, Rak3172Sim, Rn2483Sim

LORA = {"lora_rak3172": Rak3172Sim, "lora_rn2483": Rn2483Sim, "lora_e220": E220Sim, "lora_es920lr": Es920lrSim}


def start_serial_sims(config, time_scale: float, seed: int) -> list:
    sims = []
    for n, s in enumerate(config.sensors):
        port = getattr(s, "port", None)
        if port is None:
            continue
        Path(port).parent.mkdir(parents=True, exist_ok=True)
        if s.driver in ("maxbotix", "a02yyuw", "sr50a"):
            scene = Scene(s.kind, s.mount_height, seed=seed + n, time_scale=time_scale)
            sim = {"maxbotix": lambda: MaxbotixDevice(port, scene, range_m=s.range_m, seed=seed + n),
                   "a02yyuw": lambda: A02yyuwDevice(port, scene, seed=seed + n),
                   "sr50a": lambda: Sr50aDevice(port, scene, seed=seed + n)}[s.driver]()
        elif s.driver in LORA:
            sim = LORA[s.driver](port)
        else:
            continue
        sim.start()
        sims.append(sim)
    return sims


def transmit_forever(sims: list, every: float, seed: int, stop: threading.Event) -> None:
    """Simulated LoRa field nodes: each modem hears one node's LPP frame every `every` seconds."""
    lora = [(sim, LppNode(seed + i)) for i, sim in enumerate(sims) if type(sim) in LORA.values()]
    while not stop.wait(every):
        for sim, node in lora:
            payload = node.payload()
            sim.transmit(payload.hex().upper().encode() if isinstance(sim, Es920lrSim) else payload)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.rig", description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", default="config/hil.yaml")
    p.add_argument("--time-scale", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--every", type=float, default=5.0, help="seconds between a LoRa node's packets")
    p.add_argument("--seed", type=int, default=0)
    args, rest = p.parse_known_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    buses.SimDevices.time_scale, buses.SimDevices.seed = args.time_scale, args.seed  # for `devices: sim` sensors
    sims = start_serial_sims(config, args.time_scale, args.seed)
    stop = threading.Event()
    threading.Thread(target=transmit_forever, args=(sims, args.every, args.seed, stop), daemon=True).start()
    from gateway.cli import main as gateway_main
    try:
        return gateway_main(["run", "-c", args.config, *rest])
    finally:
        stop.set()
        for sim in sims:
            sim.stop()


if __name__ == "__main__":
    raise SystemExit(main())
