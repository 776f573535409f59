"""RAKwireless RAK3172 with RUI3 firmware in LoRa P2P mode.

Setup on every open: `AT` (is it there?), `AT+NWM=?` and, unless already
P2P, `AT+NWM=0` (the module restarts: `AT` until it answers), `AT+PRECV=0`
(end a receive left running), `AT+P2P=freq:sf:bw:cr:preamble:txp`,
`AT+PRECV=65534` (receive until stopped). Packets arrive as
`+EVT:RXP2P:<rssi>:<snr>:<hex>`, or from pre-RUI3 firmware as two lines,
`+EVT:RXP2P, RSSI <r>, SNR <s>` then `+EVT:<hex>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.lora_common import FrameError, LoraModemDriver, Packet, Reply, modem_text, signed_int

CODING_RATES = {"4/5": 0, "4/6": 1, "4/7": 2, "4/8": 3}  # RUI3 P2P CR index
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class RxHeader:
    """First line of the pre-RUI3 two-line receive form."""

    rssi: int
    snr: int


@dataclass(frozen=True)
class RxData:
    """Second line of the two-line form: `+EVT:<hex>`."""

    payload: bytes


@dataclass(frozen=True)
class Event:
    """Any other status or event line (`+EVT:TXP2P DONE`, `+NWM:0`, an echo)."""

    text: str


def _hex(text: str) -> bytes:
    if not _HEX.fullmatch(text):
        raise FrameError(f"payload is not hex: {text[:40]!r}")
    return bytes.fromhex(text)


def _rssi_snr(text: str) -> tuple[int, int]:
    # Firmware differs in how it writes them; take the first two signed integers.
    numbers = _INT.findall(text)
    if len(numbers) < 2:
        raise FrameError(f"receive line without RSSI and SNR: {text[:60]!r}")
    return signed_int(numbers[0]), signed_int(numbers[1])


def parse_line(line: bytes) -> Packet | Reply | RxHeader | RxData | Event:
    """One line from the modem (without CRLF). Raises FrameError for anything else."""
    text = modem_text(line)
    if text == "OK":
        return Reply(text)
    if text.startswith("AT_") and "ERROR" in text:
        return Reply(text, ok=False)
    if text.startswith("+EVT:RXP2P:"):
        head, _, data = text[len("+EVT:RXP2P:"):].rpartition(":")
        rssi, snr = _rssi_snr(head)
        return Packet(_hex(data), rssi, snr)
    if text.startswith("+EVT:RXP2P,") or text.startswith("+EVT:RXP2P "):
        return RxHeader(*_rssi_snr(text[len("+EVT:RXP2P"):]))
    if text.startswith("+EVT:"):
        body = text[len("+EVT:"):]
        if body and _HEX.fullmatch(body):
            return RxData(bytes.fromhex(body))
        return Event(text)
    if text.startswith(("+", "AT", "RAKwireless", "Current Work Mode")) or set(text) == {"-"}:
        return Event(text)  # query answers, echoes, the banner printed at restart
    raise FrameError(f"not a RAK3172 line: {text[:40]!r}")


class Rak3172(LoraModemDriver):
    summary = "RAK3172 (RUI3) LoRa P2P modem: +EVT:RXP2P receive lines, Cayenne LPP/JSON/hex payloads"
    default_baudrate = 115200

    parse_line = staticmethod(parse_line)

    def __init__(self, options, devices=None):
        super().__init__(options, devices)
        self._header: RxHeader | None = None  # first line of a two-line receive
        self._events: list[str] = []  # status lines seen while a command ran (query answers)

    def open(self) -> None:
        self._header = None
        super().open()

    def setup(self) -> None:
        o = self.options
        self.require_answer("AT")
        self._events: list[str] = []
        self.command("AT+NWM=?")
        if "AT+NWM=0" not in self._events:
            # RUI3 restarts the module when the work mode changes: wait until it answers again.
            self.command("AT+NWM=0")
            self.require_answer("AT", attempts=5)
        self.command("AT+PRECV=0")
        self.command(f"AT+P2P={o.frequency}:{o.spreading_factor}:{o.bandwidth}:{CODING_RATES[o.coding_rate]}:"
                     f"{o.preamble}:{o.tx_power}")
        self.command("AT+PRECV=65534")

    def on_event(self, event) -> None:
        if isinstance(event, Event):
            if self._awaiting is not None:  # a query's answer; other status lines are only noted
                self._events.append(event.text)
        elif isinstance(event, RxHeader):
            if self._header is not None:
                self.count("bad_frames", "receive header without its data line")
            self._header = event
        elif isinstance(event, RxData):
            if self._header is None:
                self.count("garbage", "data line without a receive header")
                return
            header, self._header = self._header, None
            self.on_packet(Packet(event.payload, header.rssi, header.snr))
