"""hil/ble_replay: the simulated beacons send bytes the driver's decoders read
back to the model's values, and the committed sample replay is reproducible."""

import json
from pathlib import Path

from drivers.ble_beacon.advert import from_json
from drivers.ble_beacon.aggregate import Aggregator
from drivers.ble_beacon.frames import decode_eddystone, decode_ibeacon, decode_ruuvi
from hil import ble_replay

SAMPLE = Path(__file__).resolve().parents[1] / "hil" / "ble" / "sample.jsonl"


def test_encoded_frames_decode_to_the_model_values():
    b = decode_ibeacon(ble_replay.ibeacon("26d0b944-a286-3a7f-3b5f-3d86268ecc45", 103, 3, -59))
    assert (b.uuid, b.major, b.minor, b.tx_power) == ("26d0b944-a286-3a7f-3b5f-3d86268ecc45", 103, 3, -59)
    uid = decode_eddystone(ble_replay.eddystone_uid(-18, bytes(range(10)), bytes(range(6))))
    assert (uid.tx_power_0m, uid.namespace, uid.instance) == (-18, "00010203040506070809", "000102030405")
    tlm = decode_eddystone(ble_replay.eddystone_tlm(2840, -3.5, 77, 1094.8))
    assert (tlm.battery_mv, tlm.temperature, tlm.adv_count, tlm.uptime_s) == (2840, -3.5, 77, 1094.8)
    r = decode_ruuvi(ble_replay.ruuvi_v5(24.3, 53.49, 100044, (4, -4, 1036), 2.977, 4, 66, 205, "CB:B8:33:4C:88:4F"))
    assert (r.temperature, r.humidity, r.pressure, r.battery, r.tx_power, r.mac) == \
        (24.3, 53.49, 100044, 2.977, 4, "CB:B8:33:4C:88:4F")
    # The encoder writes the Ruuvi spec's own valid vector.
    assert ble_replay.ruuvi_v5(24.3, 53.49, 100044, (4, -4, 1036), 2.977, 4, 66, 205, "CB:B8:33:4C:88:4F").hex() == \
        "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"


def test_the_committed_sample_is_what_the_generator_makes(tmp_path):
    out = tmp_path / "sample.jsonl"
    assert ble_replay.main(["--seed", "3", "--duration", "30", "--out", str(out)]) == 0
    assert out.read_text() == SAMPLE.read_text()


def test_the_sample_holds_every_beacon_kind_and_some_garbage():
    adverts = [from_json(line) for line in SAMPLE.read_text().splitlines()]
    ts = [a.t for a in adverts]
    assert ts == sorted(ts) and 29 < ts[-1] < 30
    aggregator = Aggregator()
    kinds = set().union(*(b.frames for b in aggregator.window(adverts)))
    assert kinds == {"IBeacon", "EddystoneUID", "EddystoneTLM", "RuuviV5"}
    assert aggregator.counts["bad_frames"] == 6 and aggregator.counts["ignored"] == 30
    assert all(json.loads(line)["address"].isupper() for line in SAMPLE.read_text().splitlines()[:5])
