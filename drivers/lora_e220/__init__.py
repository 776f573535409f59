"""Ebyte E220 (also E22) in transparent UART mode with REG3 bit 7 "Enable RSSI
Byte" set (Ebyte E220 user manual p.17).

The UART carries no delimiter, length or checksum: a packet is the bytes that
arrive together, ended by an idle gap (`frame_gap`, 80 ms like the xreef
library), and its last byte is the RSSI, dBm = −(256 − RSSI).

The module is configured in mode 3 (M0 = M1 = 1, 9600 baud) by register writes,
which needs the M0/M1 pins; this driver only reads mode 0, so it sends nothing
and the radio keys document what the module must be set to.
"""

from __future__ import annotations

import logging
import time

from pydantic import Field

from drivers.lora_common import FrameError, LoraModemDriver, LoraOptions, Packet
from gateway.sdk.fields import Duration
from gateway.sdk.reading import Reading

log = logging.getLogger(__name__)

MAX_FRAME = 200 + 1  # the largest sub-packet, then the RSSI byte


class E220Options(LoraOptions):
    frame_gap: Duration = Field(0.08, description="UART idle time that ends a packet")


def parse_frame(frame: bytes) -> Packet:
    """The bytes of one packet as the module put them out. Raises FrameError."""
    if len(frame) < 2:
        raise FrameError(f"{len(frame)} byte(s): a packet needs at least one payload byte and the RSSI byte")
    if len(frame) > MAX_FRAME:
        raise FrameError(f"{len(frame)} bytes without an idle gap: more than a sub-packet (200 B) and RSSI")
    return Packet(frame[:-1], rssi=-(256 - frame[-1]))


class E220(LoraModemDriver):
    summary = "Ebyte E220 transparent mode: idle-gap packets with a trailing RSSI byte"
    Options = E220Options
    default_baudrate = 9600

    def open(self) -> None:
        super().open()
        o = self.options
        log.info("%s: E220 on %s is read in transparent mode; its registers must already match %d Hz, SF%d, "
                 "%d kHz (set in mode 3)", o.id, o.port, o.frequency, o.spreading_factor, o.bandwidth)

    def read(self, timeout: float) -> list[Reading]:
        deadline = time.monotonic() + timeout
        while not self._out and time.monotonic() < deadline:  # a babbling line must not hold read()
            frame = self.link.read_some(deadline)
            if not frame:
                break
            while len(frame) <= MAX_FRAME:
                more = self.link.read_some(time.monotonic() + self.options.frame_gap)
                if not more:
                    break
                frame += more
            try:
                self.on_packet(parse_frame(frame))
            except FrameError as exc:
                self.count("garbage", f"skipped a frame: {exc}")
        out, self._out = self._out, []
        return out
