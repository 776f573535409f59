"""An id is never issued twice, whatever fails (SPEC §3, issue 9 defect 10): the
lease's ceiling counts only once it is on disk; while it cannot be written (a
real full tmpfs) no id is issued and readings wait, in order; no later start
can give an id again."""

from __future__ import annotations

import pytest

from gateway.ids import LEASE_MS, IdGenerator, IdStamper, IdsUnavailable
from tests.small_disk import small_disk  # noqa: F401  (fixture)
from tests.test_buffer import reading

T0 = 1_763_780_000.0


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_failed_lease_write_issues_no_id_and_no_later_start_repeats_one(small_disk):
    lease, clock = small_disk.path / "buffer.db.ids", Clock()
    first = IdGenerator("gw", lease, clock)
    issued = [first.next("s") for _ in range(100)]
    small_disk.fill()
    clock.t = T0 + LEASE_MS / 1000 + 1  # past the ceiling: the lease must grow, and the disk is full
    for _ in range(3):
        with pytest.raises(IdsUnavailable, match="No space left on device"):
            first.next("s")
    del first  # the daemon stops; it starts again while the disk is still full
    restarted = IdGenerator("gw", lease, Clock(clock.t))
    with pytest.raises(IdsUnavailable):
        restarted.next("s")
    small_disk.make_room()
    issued += [restarted.next("s") for _ in range(100)]
    again = IdGenerator("gw", lease, Clock(T0))  # the next start, its clock back at T0 (no RTC)
    issued += [again.next("s") for _ in range(100)]
    assert len(set(issued)) == len(issued) == 300


def test_a_start_at_the_end_of_a_lease_repeats_no_id(tmp_path):
    clock = Clock()
    first = IdGenerator("gw", tmp_path / "buffer.db.ids", clock)
    first.next("s")
    clock.t = T0 + LEASE_MS / 1000 - 0.001  # the lease's last millisecond
    last = [first.next("s") for _ in range(5)]
    second = IdGenerator("gw", tmp_path / "buffer.db.ids", Clock(clock.t))  # restarted within that millisecond
    assert not set(last) & {second.next("s") for _ in range(5)}


def test_readings_wait_for_their_ids_in_order_while_the_lease_cannot_be_written(small_disk):
    clock, out = Clock(), []
    stamp = IdStamper(IdGenerator("gw", small_disk.path / "buffer.db.ids", clock), out.append)
    for i in range(10):
        stamp(reading(i))
    small_disk.fill()
    clock.t += LEASE_MS / 1000
    for i in range(10, 30):
        stamp(reading(i))
    assert len(out) == 10 and len(stamp.held) == 20 and stamp.lost == 0, "held, not lost, not numbered"
    small_disk.make_room()
    stamp.flush()
    assert [r.values["water_level"].value for r in out] == [1.0 + i / 1000 for i in range(30)], "in order"
    assert len({r.id for r in out}) == 30 and not stamp.held
