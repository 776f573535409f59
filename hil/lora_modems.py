"""Simulated LoRa serial modems behind pseudo-terminals, speaking the wire
formats of their manuals (see each driver's README): they answer the setup commands as the
real modules do (including their error replies) and put a packet from a
simulated node on the wire only while the modem is listening, as a radio would.

    python -m hil.lora_modems --rak3172 /tmp/lora/rak --rn2483 /tmp/lora/rn \
        --e220 /tmp/lora/e220 --es920lr /tmp/lora/es920 --every 5

starts them at those paths with one node each sending Cayenne LPP temperature
(channel 1) and humidity (channel 2) every few seconds, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import signal
import threading
import time
from pathlib import Path

from hil.models import Snowpack
from hil.pty_device import PtyDevice

__all__ = ["Rak3172Sim", "Rn2483Sim", "E220Sim", "Es920lrSim", "LppNode", "lpp_temperature_humidity"]


class ModemSim(PtyDevice):
    """A line-command modem. `fail_next(prefix, reply)` makes the next command
    starting with `prefix` answer `reply` (a modem error) instead."""

    def __init__(self, link, terminator: bytes = b"\r\n"):
        super().__init__(link, terminator)
        self._failures: list[tuple[str, str]] = []
        self.dropped = 0  # packets sent while the modem was not listening
        self.reset()

    def start(self) -> "ModemSim":
        self.reset()  # plugging in powers the module up afresh
        return super().start()

    def reset(self) -> None:
        """Power-up state."""

    def reply(self, text: str) -> None:
        self.send(text.encode("ascii") + b"\r\n")

    def fail_next(self, prefix: str, reply: str) -> None:
        self._failures.append((prefix, reply))

    def garbage(self, data: bytes = b"\x00\xfe\x13#garbage!\r\n") -> None:
        self.send(data)

    def inject(self, raw: bytes) -> None:
        """Put captured bytes on the wire as they are (testcases)."""
        self.send(raw)

    def commands(self) -> list[str]:
        return [c.decode("ascii", "replace") for c in self.received]

    @property
    def listening(self) -> bool:
        return False

    def on_command(self, command: bytes) -> None:
        text = command.decode("ascii", "replace").strip()
        for i, (prefix, reply) in enumerate(self._failures):
            if text.startswith(prefix):
                del self._failures[i]
                self.reply(reply)
                return
        self.answer(text)

    def answer(self, text: str) -> None:
        raise NotImplementedError


class Rak3172Sim(ModemSim):
    """RUI3 AT commands; `legacy=True` prints the pre-RUI3 two-line receive form."""

    def __init__(self, link, legacy: bool = False):
        super().__init__(link)
        self.legacy = legacy

    def reset(self) -> None:
        self.nwm = 1  # LoRaWAN after a factory reset
        self.p2p: str | None = None
        self.receiving = False

    @property
    def listening(self) -> bool:
        return self.receiving

    def answer(self, text: str) -> None:
        if text == "AT":
            return self.reply("OK")
        if text == "AT+NWM=?":
            self.reply(f"AT+NWM={self.nwm}")
            return self.reply("OK")
        if text == "AT+NWM=0":
            self.reply("OK")
            if self.nwm != 0:  # RUI3 restarts into the new work mode
                self.nwm = 0
                self.reply("RAKwireless RAK3172 Example")
                self.reply("------------------------------------------------------")
                self.reply("Current Work Mode: LoRa P2P.")
            return
        if text.startswith("AT+P2P="):
            fields = text[len("AT+P2P="):].split(":")
            if self.nwm != 0:
                return self.reply("AT_MODE_NO_SUPPORT")  # P2P settings only in P2P mode
            if self.receiving:
                return self.reply("AT_BUSY_ERROR")
            if len(fields) != 6 or not all(f.isdigit() for f in fields) or not 7 <= int(fields[1]) <= 12:
                return self.reply("AT_PARAM_ERROR")
            self.p2p = text[len("AT+P2P="):]
            return self.reply("OK")
        if text.startswith("AT+PRECV="):
            value = text[len("AT+PRECV="):]
            if not value.isdigit() or self.nwm != 0:
                return self.reply("AT_PARAM_ERROR")
            self.receiving = int(value) != 0
            return self.reply("OK")
        self.reply("AT_ERROR")

    def transmit(self, payload: bytes, rssi: int = -60, snr: int = 11) -> bool:
        if not self.receiving:
            self.dropped += 1
            return False
        if self.legacy:
            self.send(f"+EVT:RXP2P, RSSI {rssi}, SNR {snr}\r\n+EVT:{payload.hex().upper()}\r\n".encode())
        else:
            self.send(f"+EVT:RXP2P:{rssi}:{snr}:{payload.hex().upper()}\r\n".encode())
        return True


class Rn2483Sim(ModemSim):
    """RN2903 raw radio commands (the RN2483 has the same grammar on 433/868 MHz)."""

    BAND = (902_000_000, 928_000_000)

    def __init__(self, link):
        super().__init__(link)
        self.last_rssi, self.last_snr = -128, -128

    def reset(self) -> None:
        self.paused = False
        self.armed = False
        self.settings: dict[str, str] = {}

    @property
    def listening(self) -> bool:
        return self.armed

    def _valid(self, key: str, value: str) -> bool:
        checks = {
            "mod": lambda v: v in ("lora", "fsk"),
            "freq": lambda v: v.isdigit() and self.BAND[0] <= int(v) <= self.BAND[1],
            "sf": lambda v: re.fullmatch(r"sf(7|8|9|10|11|12)", v) is not None,
            "bw": lambda v: v in ("125", "250", "500"),
            "cr": lambda v: v in ("4/5", "4/6", "4/7", "4/8"),
            "prlen": lambda v: v.isdigit() and int(v) <= 65535,
            "pwr": lambda v: re.fullmatch(r"-?\d+", v) is not None and 2 <= int(v) <= 20,
            "wdt": lambda v: v.isdigit(),
        }
        return key in checks and checks[key](value)

    def answer(self, text: str) -> None:
        words = text.split()
        if text == "sys get ver":
            return self.reply("RN2903 1.0.5 Nov 06 2015 10:45:27")
        if text == "mac pause":
            self.paused = True
            return self.reply("4294967245")
        if words[:2] == ["radio", "set"] and len(words) == 4:
            if not self.paused:
                return self.reply("busy")  # the LoRaWAN stack owns the radio
            if self.armed:
                return self.reply("busy")
            if not self._valid(words[2], words[3]):
                return self.reply("invalid_param")
            self.settings[words[2]] = words[3]
            return self.reply("ok")
        if text == "radio rx 0":
            if not self.paused or self.armed:
                return self.reply("busy")
            self.armed = True
            return self.reply("ok")
        if text == "radio get rssi":
            return self.reply(str(self.last_rssi))
        if text == "radio get snr":
            return self.reply(str(self.last_snr))
        self.reply("invalid_param")

    def transmit(self, payload: bytes, rssi: int = -60, snr: int = 9) -> bool:
        if not self.armed:
            self.dropped += 1
            return False
        self.armed = False
        self.last_rssi, self.last_snr = rssi, snr
        self.send(b"radio_rx  " + payload.hex().upper().encode() + b"\r\n")  # two spaces, as modules print
        return True

    def inject(self, raw: bytes) -> None:
        if raw.startswith(b"radio_"):
            self.armed = False  # a receive line ends the reception, as on the module
        self.send(raw)

    def receive_error(self) -> bool:
        """The reception ended without a packet (`radio_err`)."""
        if not self.armed:
            return False
        self.armed = False
        self.send(b"radio_err\r\n")
        return True


class E220Sim(PtyDevice):
    """Transparent mode with the RSSI byte: a packet is its bytes plus one RSSI
    byte in a single burst; silence between packets is the frame boundary."""

    listening = True
    dropped = 0

    def transmit(self, payload: bytes, rssi: int = -75) -> bool:
        if not -255 <= rssi <= -1:
            raise ValueError("E220 RSSI byte covers -255..-1 dBm")
        self.send(payload + bytes([256 + rssi]))
        return True

    def garbage(self, data: bytes = b"\x07") -> None:
        self.send(data)  # a lone byte: no payload before the RSSI byte


class Es920lrSim(ModemSim):
    """Processor-mode commands, then operation mode with ASCII output, RSSI
    and source id on. In operation mode a written line is data to send."""

    def __init__(self, link, pan_id: str = "0001"):
        self.pan_id = pan_id
        super().__init__(link)
        self.sent: list[str] = []

    def reset(self) -> None:
        self.mode = "boot"
        self.settings: dict[str, str] = {}

    @property
    def listening(self) -> bool:
        return self.mode == "operation"

    CHECKS = {
        "node": r"[12]", "bw": r"[3-6]", "sf": r"(7|8|9|10|11|12)", "channel": r"([1-9]|[12]\d|3[0-8])",
        "panid": r"[0-9A-F]{4}", "ownid": r"[0-9A-F]{4}", "dstid": r"[0-9A-F]{4}", "power": r"-?\d{1,2}",
        "rssi": r"[12]", "rcvid": r"[12]", "ack": r"[12]",
    }

    def answer(self, text: str) -> None:
        if self.mode == "operation":
            self.sent.append(text)
            return
        if self.mode == "boot":
            if text == "2":
                self.mode = "processor"
                return self.reply("OK")
            return self.reply("NG 001")
        if text == "start":
            self.mode = "operation"
            return self.reply("OK")
        key, _, value = text.partition(" ")
        pattern = self.CHECKS.get(key)
        if pattern is None:
            return self.reply("NG 001")  # unknown command
        if not re.fullmatch(pattern, value) or (key == "power" and not -4 <= int(value) <= 13):
            return self.reply("NG 100")  # bad value
        self.settings[key] = value
        if key == "panid":
            self.pan_id = value
        self.reply("OK")

    def transmit(self, data: bytes, rssi: int = -75, node: str = "0002") -> bool:
        if self.mode != "operation":
            self.dropped += 1
            return False
        self.send(f"{rssi & 0xFFFF:04X}{self.pan_id}{node}".encode() + data + b"\r\n")
        return True


# --- simulated nodes ------------------------------------------------------------------------------

def lpp_temperature_humidity(temperature: float, humidity: float, temp_channel: int = 1,
                             hum_channel: int = 2) -> bytes:
    """A node's Cayenne LPP frame: temperature (0x67, 0.1 °C) and humidity (0x68, 0.5 %)."""
    t = round(temperature * 10).to_bytes(2, "big", signed=True)
    return bytes([temp_channel, 0x67]) + t + bytes([hum_channel, 0x68, round(humidity * 2)])


class LppNode:
    """A field node reporting air temperature and humidity from the snowpack model's daily cycle."""

    def __init__(self, seed: int = 0):
        self.model = Snowpack(seed=seed)
        self.start = time.monotonic()

    def payload(self, time_scale: float = 600.0) -> bytes:
        t = (time.monotonic() - self.start) * time_scale
        temp = self.model.temperature(t)
        humidity = max(0.0, min(100.0, 80 - 2 * temp))
        return lpp_temperature_humidity(temp, humidity)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.lora_modems", description=__doc__.split("\n\n")[0])
    p.add_argument("--rak3172", help="link path for a simulated RAK3172")
    p.add_argument("--rak3172-legacy", action="store_true", help="two-line receive form of pre-RUI3 firmware")
    p.add_argument("--rn2483", help="link path for a simulated RN2483/RN2903")
    p.add_argument("--e220", help="link path for a simulated E220")
    p.add_argument("--es920lr", help="link path for a simulated ES920LR")
    p.add_argument("--every", type=float, default=5.0, help="seconds between a node's packets")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sims = []
    if args.rak3172:
        sims.append(Rak3172Sim(args.rak3172, legacy=args.rak3172_legacy))
    if args.rn2483:
        sims.append(Rn2483Sim(args.rn2483))
    if args.e220:
        sims.append(E220Sim(args.e220))
    if args.es920lr:
        sims.append(Es920lrSim(args.es920lr))
    if not sims:
        p.error("give at least one of --rak3172, --rn2483, --e220, --es920lr")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    nodes = [LppNode(args.seed + i) for i in range(len(sims))]
    for sim in sims:
        Path(sim.link).parent.mkdir(parents=True, exist_ok=True)
        sim.start()
        print(f"{type(sim).__name__} at {sim.link}", flush=True)
    try:
        while not stop.wait(args.every):
            for sim, node in zip(sims, nodes):
                payload = node.payload()
                sim.transmit(payload.hex().upper().encode() if isinstance(sim, Es920lrSim) else payload)
    finally:
        for sim in sims:
            sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
