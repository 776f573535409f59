"""A city's fleet against its clustered broker (issue 12): N simulated gateways,
each the real MqttTransport + Delivery + Buffer (its own SQLite file and
backlog), many per process, against a three-node RabbitMQ cluster (MQTT plugin,
quorum queues) started here on loopback. The whole cluster loses power, stays
down for `--outage` seconds, comes back; everyone reconnects and drains.

Measured: connection attempts and accepted connections per second, readings
acknowledged per second (what the broker takes in), backlog per gateway over
time, time until each gateway (and the fleet) is current again, readings lost
at a durable subscriber (must be 0: asserted) and duplicates.

    .venv/bin/python -m bench.fleet --gateways 500 --plot docs/fleet.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing as mp
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.buffer import Buffer
from gateway.config import MqttUplinkConfig
from gateway.delivery import Delivery
from gateway.sdk import Reading, Value
from gateway.uplinks.mqtt import MqttTransport
from tests.rabbitmq import RabbitCluster

SAMPLE = 0.25  # seconds between samples of the fleet's counters


def gateway_id(g: int) -> str:
    return f"fleet-{g:04d}"


def reading(g: int, n: int) -> Reading:
    now = time.time()
    return Reading(sensor=f"river-{n % 3}", kind="river_level", observed_at=now,
                   values={"water_level": Value(1.0 + n / 1e4, "m"), "distance": Value(4.0, "m")},
                   id=f"{gateway_id(g)}.river-{n % 3}.{int(now * 1000)}.{n % 1_000_000:06d}", gateway=gateway_id(g))


class Unit:
    """One simulated gateway: buffer, transport and delivery worker, as in the daemon."""

    def __init__(self, g: int, tmp: Path, args, urls: list[str]):
        self.g, self.n = g, 0
        self.buffer = Buffer(tmp / f"{gateway_id(g)}.db", ["city"], gateway=gateway_id(g))
        config = MqttUplinkConfig(name="city", type="mqtt", url=urls[g % len(urls):] + urls[:g % len(urls)],
                                  reconnect_max=f"{args.reconnect_max}s", drain_rate=args.drain_rate, batch=args.batch)
        self.transport = MqttTransport(config, gateway_id(g))
        self.delivery = Delivery(self.buffer, self.transport, config.reconnect_max)
        self.attempts: list[float] = []  # when each connection attempt started, when a broker accepted one
        self.connects: list[float] = []
        self._timestamp(self.transport.link)

    def _timestamp(self, link) -> None:
        """Stamp attempts and accepted connections as they happen (sampling counters from 125
        gateways sharing one busy loop would bunch them)."""
        attempt, on_connect = link._attempt, link._on_connect

        async def stamped_attempt():
            self.attempts.append(time.time())
            return await attempt()

        def stamped_connect(client, userdata, flags, reason_code, properties):
            if not reason_code.is_failure:
                self.connects.append(time.time())
            on_connect(client, userdata, flags, reason_code, properties)

        link._attempt, link._on_connect = stamped_attempt, stamped_connect

    def produce(self, count: int = 1) -> None:
        for _ in range(count):
            self.buffer.append(reading(self.g, self.n))
            self.n += 1
        self.buffer.commit()

    @property
    def pending(self) -> int:
        return self.buffer.last_seq - self.buffer.acked["city"]


async def run_units(gs: range, args, urls: list[str], phase, out: Path) -> None:
    tmp = out.parent / f"{out.stem}-buffers"
    tmp.mkdir()
    units = [Unit(g, tmp, args, urls) for g in gs]
    for u in units:
        u.produce(args.backlog)  # what piled up before the bench starts
    tasks = []
    for u in units:
        await u.transport.start()
        tasks.append(asyncio.create_task(u.transport.run()))
        tasks.append(asyncio.create_task(u.delivery.run()))
    samples, t0 = [], time.time()

    async def live():
        while phase.value < 3:
            for u in units:
                u.produce()
            await asyncio.sleep(1.0 / args.rate)

    producer = asyncio.create_task(live())
    while phase.value < 3:  # 0 warm-up, 1 outage, 2 back, 3 stop producing
        await asyncio.sleep(SAMPLE)
        pend = [u.pending for u in units]
        samples.append({"t": time.time(), "attempts": sum(u.transport.link.attempts_total for u in units),
                        "connects": sum(u.transport.link.connects_total for u in units),
                        "acked": sum(u.delivery.sent_total for u in units), "pending": pend,
                        "connected": sum(u.transport.connected for u in units)})
    await producer
    deadline = time.monotonic() + 600
    while any(u.pending for u in units) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for u in units:
        await u.transport.stop()
        u.buffer.close()
    out.write_text(json.dumps({"t0": t0, "samples": samples, "appended": {gateway_id(u.g): u.n for u in units},
                               "attempts": [t for u in units for t in u.attempts],
                               "connects": [t for u in units for t in u.connects],
                               "left": sum(u.pending for u in units)}))


def child(gs: range, args, urls: list[str], phase, out: str) -> None:
    logging.basicConfig(level=logging.ERROR, filename=f"{out}.log")
    asyncio.run(run_units(gs, args, urls, phase, Path(out)))


class Archive:
    """The city's durable subscriber: clean session off, QoS 1 (a quorum queue on every node)."""

    def __init__(self, port: int):
        self.ids: dict[str, int] = {}
        self.received = 0
        self.lock = threading.Lock()
        self.arrivals: list[float] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="city-archive", clean_session=False)
        self.client.reconnect_delay_set(0.5, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("city/+/+", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/status"):
            return
        docs = json.loads(msg.payload)
        with self.lock:
            for doc in docs if isinstance(docs, list) else [docs]:
                self.ids[doc["id"]] = self.ids.get(doc["id"], 0) + 1
                self.received += 1

    def distinct(self) -> int:
        with self.lock:
            return len(self.ids)


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="citygw-fleet-"))
    cluster = RabbitCluster(workdir / "rabbit").start()
    try:
        archive = Archive(cluster.nodes[-1].mqtt_port)
        time.sleep(2)  # subscribed: its quorum queue exists before anyone publishes
        urls = [n.url for n in cluster.nodes]
        ctx = mp.get_context("spawn")  # not fork: this process runs the archive's network thread
        phase = ctx.Value("i", 0)
        outs = [workdir / f"out-{p}.json" for p in range(args.processes)]
        shares = [range(p, args.gateways, args.processes) for p in range(args.processes)]
        procs = [ctx.Process(target=child, args=(s, args, urls, phase, str(o)), daemon=True)
                 for s, o in zip(shares, outs)]
        for p in procs:
            p.start()
        time.sleep(args.warmup)
        assert all(p.is_alive() for p in procs), "a fleet process died: see its log beside the results"
        marks = {"outage": time.time()}
        phase.value = 1
        cluster.kill_all()
        time.sleep(args.outage)
        marks["restart"] = time.time()
        marks["back"] = cluster.restart_all()  # the first node accepting MQTT again
        marks["all_nodes"] = time.time()
        phase.value = 2
        time.sleep(args.reconnect_max + args.after)
        phase.value = 3
        for p in procs:
            p.join(900)
        results = [json.loads(o.read_text()) for o in outs]
        appended = {k: v for r in results for k, v in r["appended"].items()}
        expected = sum(appended.values())
        deadline = time.monotonic() + 300
        while archive.distinct() < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        archive.client.loop_stop()
        return summarize(args, results, marks, archive, expected)
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def summarize(args, results: list[dict], marks: dict, archive: Archive, expected: int) -> dict:
    series = merge(results)
    # Service is back when the cluster accepts its first connection again: a node listens well before
    # the cluster serves MQTT (it answers "server unavailable" until its nodes found each other).
    outage_connects = next(s["connects"] for s in series if s["t"] >= marks["outage"])
    marks["serving"] = next((s["t"] for s in series if s["t"] >= marks["restart"]
                             and s["connects"] > outage_connects), marks["back"])
    events = {k: sorted(t for r in results for t in r[k]) for k in ("attempts", "connects")}
    marks["serving"] = next((t for t in events["connects"] if t >= marks["restart"]), marks["serving"])
    back = marks["serving"]
    connects = binned(events["connects"], back, since=marks["restart"])
    storm = max(connects.values(), default=0)
    current = time_until_current(series, back)
    lost = expected - archive.distinct()
    return {"gateways": args.gateways, "processes": args.processes, "backlog": args.backlog,
            "live_per_gateway_per_s": args.rate, "outage_s": args.outage, "reconnect_max_s": args.reconnect_max,
            "drain_rate": args.drain_rate, "cluster_restart_s": round(marks["back"] - marks["restart"], 1),
            "all_nodes_after_s": round(marks["all_nodes"] - marks["back"], 1),
            "serving_after_s": round(marks["serving"] - marks["back"], 1),
            "expected": expected, "received": archive.received, "lost": lost,
            "duplicates": archive.received - archive.distinct(),
            "peak_connects_per_s": storm, "peak_connects_share": round(storm / args.gateways, 3),
            "fleet_current_after_s": current["fleet"], "gateway_current_p50_s": current["p50"],
            "gateway_current_p90_s": current["p90"],
            "peak_acked_per_s_after_return": max(per_second(series, "acked", back, since=marks["restart"]).values(),
                                                 default=0), "_series": series, "_marks": marks,
            "_current": current["each"], "_events": events}


def binned(times: list[float], zero: float, since: float | None = None) -> dict[int, int]:
    """How many events fell in each whole second (seconds counted from `zero`)."""
    out: dict[int, int] = {}
    for t in times:
        if since is None or t >= since:
            out[math.floor(t - zero)] = out.get(math.floor(t - zero), 0) + 1
    return out


def per_second(series: list[dict], key: str, zero: float, since: float | None = None) -> dict[int, int]:
    """How much a cumulative counter grew in each whole second (seconds counted from `zero`)."""
    out: dict[int, int] = {}
    for a, b in zip(series, series[1:]):
        if since is None or b["t"] >= since:
            second = math.floor(b["t"] - zero)
            out[second] = out.get(second, 0) + b[key] - a[key]
    return out


def merge(results: list[dict], step: float = 0.5) -> list[dict]:
    """The children's samples on one time grid: each child sampled on its own clock (a busy loop
    samples late), so each grid point takes every child's last sample at or before it."""
    start = max(r["samples"][0]["t"] for r in results)
    end = min(r["samples"][-1]["t"] for r in results)
    cursors = [0] * len(results)
    out = []
    t = start
    while t <= end:
        rows = []
        for i, r in enumerate(results):
            samples = r["samples"]
            while cursors[i] + 1 < len(samples) and samples[cursors[i] + 1]["t"] <= t:
                cursors[i] += 1
            rows.append(samples[cursors[i]])
        out.append({"t": t, **{k: sum(r[k] for r in rows) for k in ("attempts", "connects", "acked", "connected")},
                    "pending": [p for r in rows for p in r["pending"]]})
        t += step
    return out


def time_until_current(series: list[dict], back: float) -> dict:
    after = [s for s in series if s["t"] >= back]
    each = [None] * len(after[0]["pending"]) if after else []
    for s in after:
        for g, p in enumerate(s["pending"]):
            if each[g] is None and p <= 3:  # current: no more than one live round behind
                each[g] = round(s["t"] - back, 2)
    done = sorted(x for x in each if x is not None)
    pick = (lambda q: done[min(len(done) - 1, int(q * len(done)))] if done else None)
    return {"each": each, "fleet": done[-1] if len(done) == len(each) and done else None,
            "p50": pick(0.5), "p90": pick(0.9)}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(10, 13), sharex=True)
    for run in runs:
        series, back, label = run["_series"], run["_marks"]["serving"], f"drain_rate={run['drain_rate'] or 'off'}"
        for ax, bins in ((axes[0], binned(run["_events"]["attempts"], back)),
                         (axes[1], binned(run["_events"]["connects"], back)), (axes[2], per_second(series, "acked", back))):
            xs = list(range(min(bins, default=0), max(bins, default=0) + 1))  # seconds without any count too
            ax.step(xs, [bins.get(x, 0) for x in xs], where="post", label=label, lw=0.8)
        t = [s["t"] - back for s in series]
        for q, style in ((0.5, "-"), (0.9, "--"), (1.0, ":")):
            axes[3].plot(t, [sorted(s["pending"])[min(len(s["pending"]) - 1, int(q * len(s["pending"])))]
                             for s in series], style, label=f"{label} p{int(q * 100)}", lw=0.8)
    for ax in axes:
        ax.axvspan(runs[0]["_marks"]["outage"] - runs[0]["_marks"]["serving"], 0, color="0.9")
    n = runs[0]["gateways"]
    axes[1].axhline(0.1 * n, color="red", lw=0.6, ls="--", label="10 % of the fleet")
    axes[0].set_ylabel("connection attempts per second")
    axes[1].set_ylabel("connections accepted per second")
    axes[2].set_ylabel("readings acknowledged per second")
    axes[3].set_ylabel("backlog per gateway")
    axes[3].set_xlabel("seconds since the cluster served MQTT again (grey: outage)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"{n} gateways; a 3-node RabbitMQ cluster killed, restarted {runs[0]['outage_s']:g} s later, "
                 f"serving MQTT again {runs[0]['serving_after_s'] + runs[0]['cluster_restart_s']:.0f} s later")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, default=500)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--backlog", type=int, default=60, help="readings each gateway holds before the start")
    ap.add_argument("--rate", type=float, default=0.5, help="live readings per gateway per second")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--outage", type=float, default=40.0)
    ap.add_argument("--reconnect-max", type=float, default=30.0)
    ap.add_argument("--drain-rate", type=float, action="append", default=None,
                    help="readings/s per gateway; repeat to compare (0: off); default: off and 5")
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--after", type=float, default=20.0, help="seconds after reconnect_max before stopping")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=Path("bench/results/fleet.json"))
    ap.add_argument("--keep", action="store_true", help="keep the cluster's and the gateways' files")
    ap.add_argument("--replot", type=Path, default=None, help="draw --plot again from a saved *-series.json")
    args = ap.parse_args(argv)
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.plot)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the cluster is stopped on the way out
    runs = []
    for rate in args.drain_rate or [0.0, 5.0]:
        args.drain_rate = rate or None
        result = run(args)
        runs.append(result)
        print(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}), flush=True)
        assert result["lost"] == 0, f"{result['lost']} readings lost"
        args.drain_rate = None
    if args.plot:
        plot(runs, args.plot)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.with_name(args.json.stem + "-series.json").write_text(json.dumps(runs))
    args.json.write_text(json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
