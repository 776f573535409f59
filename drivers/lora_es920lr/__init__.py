"""EASEL ES920LR / ES920LR2 in ASCII mode with RSSI and source-id output on
(from public drivers; UNVERIFIED against EASEL's manual).

A received line is `RRRR PPPP SSSS <data>` without separators: RSSI as 16-bit
two's complement hex, PAN id, source id, then the data as text (hex text for
`payload: cayenne_lpp`).

Setup on every open, in processor mode: `2` (processor mode at the boot menu),
`node 1` (coordinator), `bw`, `sf`, `channel`, `panid`, `ownid`, `power`,
`rssi 1`, `rcvid 1`, then `start`. Each answers `OK` or `NG <code>`. A module
already in operation mode answers nothing: the driver says so and listens.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from drivers.lora_common import FrameError, LoraModemDriver, LoraOptions, Packet, Reply
from gateway.sdk.reading import Reading, Value

log = logging.getLogger(__name__)

Hex4 = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{4}$")]
BANDWIDTH_CODES = {125: 4, 250: 5, 500: 6}
_FIELDS = re.compile(rb"([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})(.*)", re.S)
FIRST_CHANNEL_HZ, CHANNEL_STEP_HZ, CHANNELS = 920_600_000, 200_000, 38


class Es920Options(LoraOptions):
    pan_id: Hex4 = Field("0001", description="PAN id shared with the nodes (4 hex digits)")
    own_id: Hex4 = Field("0000", description="this module's id (4 hex digits)")

    @model_validator(mode="after")
    def _channel_plan(self) -> "Es920Options":
        if self.bandwidth != 125:
            raise ValueError("es920lr: only bandwidth 125 kHz is supported "
                             "(its 250/500 kHz channel plan is unverified)")
        if (self.frequency - FIRST_CHANNEL_HZ) % CHANNEL_STEP_HZ:
            raise ValueError("es920lr: frequency must be a channel centre, 920.6 MHz + n × 200 kHz")
        return self

    @property
    def channel(self) -> int:
        return (self.frequency - FIRST_CHANNEL_HZ) // CHANNEL_STEP_HZ + 1


@dataclass(frozen=True)
class Event:
    text: str  # menu and banner text of the configuration mode


def parse_line(line: bytes) -> Packet | Reply | Event:
    """One line from the module (without CRLF). The payload of a Packet is the
    data field's bytes as sent. Raises FrameError for anything else."""
    stripped = line.strip(b"\r\n")
    if stripped == b"OK":
        return Reply("OK")
    if stripped.startswith(b"NG"):
        return Reply(stripped.decode("ascii", "replace"), ok=False)
    match = _FIELDS.fullmatch(stripped)
    if match:
        rssi = int(match.group(1), 16)
        rssi = rssi - 0x10000 if rssi & 0x8000 else rssi
        return Packet(match.group(4), rssi=rssi, node=match.group(3).decode("ascii").upper())
    try:
        text = stripped.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("line is not ASCII") from None
    if text.isprintable() and (text.startswith("Select") or "Mode" in text or text.startswith("ES920")):
        return Event(text)
    raise FrameError(f"not an ES920LR line: {text[:40]!r}")


class Es920lr(LoraModemDriver):
    summary = "EASEL ES920LR ASCII mode: RSSI, PAN id, source id and data per line"
    Options = Es920Options
    default_baudrate = 115200

    parse_line = staticmethod(parse_line)

    def setup(self) -> None:
        o = self.options
        if self.command("2") is None:
            log.warning("%s: ES920LR on %s did not answer the mode select; assuming it is already in operation "
                        "mode (settings not applied until it is reset)", o.id, o.port)
            return
        for command in ("node 1", f"bw {BANDWIDTH_CODES[o.bandwidth]}", f"sf {o.spreading_factor}",
                        f"channel {o.channel}", f"panid {o.pan_id.upper()}", f"ownid {o.own_id.upper()}",
                        f"power {o.tx_power}", "rssi 1", "rcvid 1", "start"):
            self.command(command)

    def to_reading(self, packet: Packet) -> Reading:
        # ASCII mode carries text; an LPP payload is written as hex text.
        if self.options.payload == "cayenne_lpp":
            try:
                packet = Packet(bytes.fromhex(packet.payload.decode("ascii")), packet.rssi, packet.snr, packet.node)
            except (UnicodeDecodeError, ValueError):
                self.count("bad_frames", f"node {packet.node}: data is not hex text")
                return self.reading({"rssi": Value(packet.rssi, "dBm")}, quality="error",
                                    error="data field is not hex text", device=self.device_name(packet.node))
        return super().to_reading(packet)

