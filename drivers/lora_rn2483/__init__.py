"""Microchip RN2483 / RN2903 in raw radio mode (command
reference DS40001784G §2.5).

Setup on every open: `mac pause` (is it there? stops the LoRaWAN stack),
`radio set mod lora`, `freq`, `sf`, `bw`, `cr`, `prlen`, `pwr`, `wdt 0` (no
watchdog cut-off while waiting), then `radio rx 0` (continuous receive, one
packet). After each `radio_rx  <hex>` the driver asks `radio get rssi` and
`radio get snr`, then re-arms with `radio rx 0`; a `radio_err` re-arms too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.lora_common import FrameError, LoraModemDriver, Packet, Reply, modem_text

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_NUMBER = re.compile(r"[+-]?\d{1,10}")
_ERRORS = {"busy", "invalid_param", "err", "not_joined", "no_free_ch", "silent", "frame_counter_err_rejoin_needed",
           "mac_paused", "keys_not_init"}


@dataclass(frozen=True)
class RadioError:
    """`radio_err`: reception failed or timed out (or the watchdog fired)."""


@dataclass(frozen=True)
class Event:
    text: str  # e.g. radio_tx_ok


def parse_line(line: bytes) -> Packet | Reply | RadioError | Event:
    """One line from the module (without CRLF). Raises FrameError for anything else."""
    text = modem_text(line)
    words = text.split()
    if words[0] == "radio_rx":
        # Modules print two spaces after radio_rx, the manual one: split on whitespace.
        if len(words) != 2 or not _HEX.fullmatch(words[1]):
            raise FrameError(f"radio_rx without a hex payload: {text[:60]!r}")
        return Packet(bytes.fromhex(words[1]))
    if text == "radio_err":
        return RadioError()
    if text == "ok" or _NUMBER.fullmatch(text):
        return Reply(text)
    if text in _ERRORS:
        return Reply(text, ok=False)
    if words[0] in ("RN2483", "RN2903"):
        return Reply(text)  # sys get ver, also printed at power-up
    if words[0] in ("radio_tx_ok", "accepted", "denied", "mac_tx_ok", "mac_err"):
        return Event(text)
    raise FrameError(f"not an RN2483 line: {text[:40]!r}")


class Rn2483(LoraModemDriver):
    summary = "Microchip RN2483/RN2903 raw LoRa radio: radio rx 0, radio_rx lines, RSSI/SNR asked per packet"
    default_baudrate = 57600

    parse_line = staticmethod(parse_line)

    def setup(self) -> None:
        o = self.options
        self.require_answer("mac pause")
        for setting in ("mod lora", f"freq {o.frequency}", f"sf sf{o.spreading_factor}", f"bw {o.bandwidth}",
                        f"cr {o.coding_rate}", f"prlen {o.preamble}", f"pwr {o.tx_power}", "wdt 0"):
            self.command(f"radio set {setting}")
        self.command("radio rx 0")

    def _number(self, command: str) -> int | None:
        reply = self.command(command)
        if reply is None or not reply.ok or not _NUMBER.fullmatch(reply.text):
            return None
        return int(reply.text)

    def on_packet(self, packet: Packet) -> None:
        # The module reports the link quality of the last packet only when asked.
        rssi, snr = self._number("radio get rssi"), self._number("radio get snr")
        super().on_packet(Packet(packet.payload, rssi, snr))
        self.command("radio rx 0")

    def on_event(self, event) -> None:
        if isinstance(event, RadioError):
            self.count("modem_errors", "radio_err (no packet before the timeout, or a bad one): listening again")
            self.command("radio rx 0")

    def handle_line(self, line: bytes) -> Reply | None:
        reply = super().handle_line(line)
        if line.strip().startswith(b"radio_rx"):
            try:
                parse_line(line)
            except FrameError:
                self.command("radio rx 0")  # a mangled receive line still ended the reception
        return reply
