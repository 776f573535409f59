"""What the four LoRa serial-modem drivers share: the config keys (radio
settings valid in Japan's 920 MHz band, payload format, node names), payload
decoding into values, and a line-based modem driver that runs the modem's setup
on open and turns receive lines into `lora_node` readings.

A modem's own parser is a pure function from one line (bytes) to a Packet, a
Reply or a modem-specific event, raising FrameError for anything else.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, StringConstraints, field_validator

from drivers import cayenne_lpp
from gateway.sdk.driver import DeviceError, Driver, SensorOptions
from gateway.sdk.serial_link import SerialLink
from gateway.sdk.fields import Strict
from gateway.sdk.reading import Reading, Value

log = logging.getLogger(__name__)

# ARIB STD-T108: 920 MHz band channel centres run from 920.6 to 928.0 MHz on a
# 200 kHz grid; 20 mW (13 dBm) is the limit for the specified low-power stations
# these modems are sold as in Japan.
JP_FREQ_MIN, JP_FREQ_MAX = 920_600_000, 928_000_000
JP_TX_POWER_MAX = 13

# Names from the air become NGSI-LD attribute names (and entity ids, MQTT topic
# levels): NGSI-LD allows letters, digits and '_' in a short name (ETSI GS CIM 009
# §4.6.2); a letter first keeps it a valid JSON-LD term. Anything else is refused.
AIR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}", re.ASCII)
# A node (or a forger) cannot make the gateway keep an unbounded number of names:
# at most this many distinct value names per node and distinct nodes per modem.
MAX_NAMES_PER_NODE = 32
MAX_NODES = 256


class FrameError(ValueError):
    """A line or frame from the modem that is not in its wire format."""


@dataclass(frozen=True)
class Packet:
    """One received radio packet."""

    payload: bytes
    rssi: int | None = None
    snr: float | None = None
    node: str | None = None  # sender id when the modem reports one (ES920LR)


@dataclass(frozen=True)
class Reply:
    """A modem's answer to a command: `ok` false for its error replies."""

    text: str
    ok: bool = True


# --- config ------------------------------------------------------------------------------------

ValueName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


def _node_key(value: Any) -> Any:
    # YAML reads an unquoted 0002 as the number 2; node ids are compared without
    # leading zeros (see canonical_node), so both spellings name the same node.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


NodeId = Annotated[str, BeforeValidator(_node_key), StringConstraints(pattern=r"^[0-9A-Fa-f]{1,8}$")]


def canonical_node(node: str) -> str:
    return node.upper().lstrip("0") or "0"


class NodeOptions(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
    channels: dict[Annotated[int, Field(ge=0, le=255)], ValueName] = {}


class LoraOptions(SensorOptions):
    """Keys of every LoRa modem driver."""

    port: str = Field(description="serial device, e.g. /dev/serial/by-id/usb-…")
    baudrate: int | None = Field(None, description="serial speed (default: the modem's own)")
    frequency: int = Field(923_200_000, description="Hz, 920.6–928.0 MHz (ARIB STD-T108 channels)")
    spreading_factor: int = Field(10, ge=7, le=12)
    bandwidth: Literal[125, 250, 500] = Field(125, description="kHz")
    coding_rate: Literal["4/5", "4/6", "4/7", "4/8"] = "4/5"
    preamble: int = Field(8, ge=6, le=65535, description="symbols")
    tx_power: int = Field(13, ge=0, le=JP_TX_POWER_MAX, description="dBm (13 dBm = 20 mW, the ARIB limit)")
    payload: Literal["cayenne_lpp", "json", "hex"] = "cayenne_lpp"
    nodes: dict[NodeId, NodeOptions] = {}
    node_id_bytes: int = Field(0, ge=0, le=4, description="leading payload bytes that carry the sender's id "
                                                          "(modems that report no sender)")

    @field_validator("frequency")
    @classmethod
    def _in_band(cls, v: int) -> int:
        if not JP_FREQ_MIN <= v <= JP_FREQ_MAX:
            raise ValueError(f"frequency {v} Hz is outside Japan's 920 MHz band, {JP_FREQ_MIN}–{JP_FREQ_MAX} Hz")
        if (v - JP_FREQ_MIN) % 100_000:
            raise ValueError(f"frequency {v} Hz is off the 920 MHz band's 100 kHz raster (e.g. 923200000)")
        return v

    @field_validator("nodes")
    @classmethod
    def _unique_nodes(cls, v: dict[str, NodeOptions]) -> dict[str, NodeOptions]:
        seen: dict[str, str] = {}
        for key in v:
            other = seen.setdefault(canonical_node(key), key)
            if other != key:
                raise ValueError(f"nodes {other!r} and {key!r} are the same node id")
        return v


# --- payload -----------------------------------------------------------------------------------

@dataclass
class Decoded:
    values: dict[str, Value]
    quality: str = "ok"
    error: str | None = None


def _finite_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond any float: 1 followed by 309 zeros
        return False


def _json_values(payload: bytes) -> Decoded:
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Decoded({}, "error", f"payload is not JSON: {str(exc)[:80]}")
    if not isinstance(doc, dict):
        return Decoded({}, "error", "payload is JSON but not an object")
    # Text, booleans and nested objects are no measurement and are left out; a number
    # that is not a finite float (1e999, an integer of 400 digits) is a broken one.
    numbers = {k: v for k, v in doc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    values = {k: Value(v) for k, v in numbers.items() if AIR_NAME.fullmatch(k) and _finite_number(v)}
    refused = [k for k in doc if not AIR_NAME.fullmatch(k)]
    if refused:
        return Decoded(values, "error", f"field name {refused[0][:40]!r} is not an attribute name "
                                        "(a letter, then letters, digits or _, at most 64)")
    broken = [k for k, v in numbers.items() if not _finite_number(v)]
    if broken:
        return Decoded(values, "error", f"value of {broken[0]!r} is out of range")
    return Decoded(values)


def decode_payload(payload: bytes, fmt: str, channels: dict[int, str]) -> Decoded:
    """A packet's payload as values. A payload that does not decode gives what
    could be read and quality `error` with the reason; nothing is guessed."""
    if fmt == "hex":
        return Decoded({"payload": Value(payload.hex().upper())})
    if fmt == "json":
        return _json_values(payload)
    try:
        fields, error = cayenne_lpp.decode(payload), None
    except cayenne_lpp.LppError as exc:
        fields, error = exc.fields, str(exc)
    values = {}
    for f in fields:
        name = channels.get(f.channel)
        name = f"{name}_{f.part}" if name and f.part else name or f.default_name()
        values[name] = Value(f.value, f.unit)
    return Decoded(values, "error" if error else "ok", error)


# --- the line-based modem driver ------------------------------------------------------------------

class LoraModemDriver(Driver):
    """A modem that talks in CRLF lines: setup commands on open, then receive
    lines. Subclasses set `default_baudrate`, implement `parse_line` and
    `setup`, and may override `on_event` for modem-specific lines."""

    Options = LoraOptions
    event_driven = True
    kind = "lora_node"
    default_baudrate: ClassVar[int] = 115200
    command_timeout: ClassVar[float] = 1.0
    terminator: ClassVar[bytes] = b"\r\n"

    def __init__(self, options: LoraOptions, devices=None):
        super().__init__(options, devices)
        self.options: LoraOptions = options
        self.link = SerialLink(options.port, options.baudrate or self.default_baudrate)
        self.counts: Counter[str] = Counter()  # frames, garbage, bad_frames, modem_errors
        self._out: list[Reading] = []
        self._awaiting: str | None = None  # the command whose reply is awaited
        self._nodes = {canonical_node(k): v for k, v in options.nodes.items()}
        self._names: dict[str, set[str]] = {}  # node heard -> the value names it has sent

    # --- to implement ---

    @staticmethod
    def parse_line(line: bytes) -> Any:
        raise NotImplementedError

    def setup(self) -> None:
        """Send the modem's setup commands (runs on every open)."""

    def on_event(self, event: Any) -> None:
        """A parsed line that is neither a Packet nor a Reply."""

    # --- lifecycle ---

    def open(self) -> None:
        self.link.open()
        self._out = []
        try:
            self.setup()
        except BaseException:
            self.link.close()
            raise

    def close(self) -> None:
        self.link.close()

    def read(self, timeout: float) -> list[Reading]:
        deadline = time.monotonic() + timeout
        # The deadline is checked here too: a babbling device must not keep read() from returning.
        while not self._out and time.monotonic() < deadline:
            line = self.link.read_until(self.terminator, deadline)
            if line is None:
                break
            self.handle_line(line)
        out, self._out = self._out, []
        return out

    # --- lines ---

    def handle_line(self, line: bytes) -> Reply | None:
        """Parse one line; packets become readings, replies are returned."""
        if not line.strip():
            return None
        try:
            event = self.parse_line(line)
        except FrameError as exc:
            self.count("garbage", f"skipped a line that is not {self.name or 'modem'} output: {exc}")
            return None
        except Exception as exc:  # a parser bug on hostile input must not cost the port (issue 13)
            self.count("garbage", f"skipped a line the parser failed on: {type(exc).__name__}: {str(exc)[:80]}")
            return None
        if isinstance(event, Packet):
            self.on_packet(event)
        elif isinstance(event, Reply):
            if not event.ok:
                if self._awaiting is None:
                    self.count("modem_errors", f"modem said {event.text!r} unasked")
                else:
                    self.counts["modem_errors"] += 1  # command() logs it with the command
            return event
        else:
            self.on_event(event)
        return None

    def command(self, text: str, timeout: float | None = None) -> Reply | None:
        """Send a command and wait for the modem's reply (None if it gave none).
        Receive lines that arrive meanwhile are kept as readings."""
        self.link.write(text.encode("ascii") + self.terminator)
        deadline = time.monotonic() + (timeout or self.command_timeout)
        self._awaiting = text
        try:
            while True:
                line = self.link.read_until(self.terminator, deadline)
                if line is None:
                    log.warning("%s on %s: no answer to %r", self.options.id, self.options.port, text)
                    return None
                reply = self.handle_line(line)
                if reply is not None:
                    if not reply.ok:
                        log.warning("%s on %s: %r answered %r", self.options.id, self.options.port, text, reply.text)
                    return reply
        finally:
            self._awaiting = None

    def require_answer(self, text: str, attempts: int = 1) -> Reply:
        """A command whose silence (after `attempts` tries) means the modem is not there."""
        for _ in range(attempts):
            reply = self.command(text)
            if reply is not None:
                return reply
        raise DeviceError(f"modem on {self.options.port} does not answer {text!r} "
                          f"(wrong port or baudrate {self.link.baudrate}?)")

    def count(self, what: str, message: str) -> None:
        self.counts[what] += 1
        n = self.counts[what]
        # Log the 1st, 2nd, 4th, 8th … occurrence: visible, but garbage cannot flood the log.
        if n & (n - 1) == 0:
            log.warning("%s on %s: %s (%s so far: %d)", self.options.id, self.options.port, message, what, n)

    # --- packets to readings ---

    def on_packet(self, packet: Packet) -> None:
        self.counts["frames"] += 1
        self._out.append(self.to_reading(packet))

    def to_reading(self, packet: Packet) -> Reading:
        o = self.options
        payload, node = packet.payload, packet.node
        if node is None:
            node = payload[:o.node_id_bytes].hex().upper() or "0"
            payload = payload[o.node_id_bytes:]
        config = self._nodes.get(canonical_node(node))
        if len(packet.payload) < o.node_id_bytes and packet.node is None:
            decoded = Decoded({}, "error",
                              f"packet of {len(packet.payload)} bytes has no {o.node_id_bytes}-byte node id")
        else:
            try:
                decoded = decode_payload(payload, o.payload, config.channels if config else {})
            except Exception as exc:  # whatever a payload does to a decoder, it is one error reading
                decoded = Decoded({}, "error", f"payload does not decode: {type(exc).__name__}")
        device: str | None = self.device_name(node)
        decoded, device = self._bounded(canonical_node(node), config is not None, decoded, device)
        if decoded.error:
            self.count("bad_frames", f"node {node}: {decoded.error}")
        values = dict(decoded.values)
        if packet.rssi is not None:
            values["rssi"] = Value(packet.rssi, "dBm")
        if packet.snr is not None:
            values["snr"] = Value(packet.snr, "dB")
        return self.reading(values, quality=decoded.quality, error=decoded.error, device=device)

    def _bounded(self, node: str, configured: bool, decoded: Decoded, device: str | None) -> tuple[Decoded, str | None]:
        """At most MAX_NODES unconfigured nodes and MAX_NAMES_PER_NODE value names per
        node: every new name is a new attribute or entity at the broker, and memory here."""
        names = self._names.get(node)
        if names is None:
            if not configured and sum(1 for n in self._names if n not in self._nodes) >= MAX_NODES:
                return Decoded({}, "error", f"more than {MAX_NODES} nodes heard; node {node[:8]} not kept"), None
            names = self._names[node] = set()
        new = [k for k in decoded.values if k not in names]
        room = MAX_NAMES_PER_NODE - len(names)
        names.update(new[:max(room, 0)])
        if len(new) > room:
            kept = {k: v for k, v in decoded.values.items() if k in names}
            return Decoded(kept, "error", f"node sent more than {MAX_NAMES_PER_NODE} value names; "
                                          f"{new[max(room, 0)][:40]!r} not kept"), device
        return decoded, device

    def device_name(self, node: str) -> str:
        """The configured name of a node, else its id."""
        config = self._nodes.get(canonical_node(node))
        return config.name if config else node


def signed_int(text: str) -> int:
    """A decimal integer with optional sign, as modems print RSSI and SNR."""
    if not re.fullmatch(r"[+-]?\d{1,6}", text):
        raise FrameError(f"not an integer: {text[:20]!r}")
    return int(text)


def modem_text(line: bytes) -> str:
    """A modem's reply or event line (without CRLF) as text; FrameError for line noise."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise FrameError("line is not ASCII") from None
    if not text or not text.isprintable():
        raise FrameError(f"empty or unprintable line: {text[:40]!r}")
    return text
