"""Clock trust for the daemon (SPEC §3, see clock.py for how trust is judged):
while the clock is untrusted readings are flagged and deliveries wait (up to
`clock_hold`); once it is trusted the flagged readings of this run get their
true times, rebuilt from the monotonic offset, in the buffer.

The rewrite runs in chunks that yield to the event loop (a long rewrite must
not starve the watchdog), each chunk in one transaction with its progress
(memo "clock:rewrite": offset, seq range, next seq). A kill mid-way resumes at
the next start with the stored offset: the offset belongs to the run that
took those readings, so it stays right after a reboot too. Deliveries wait for
the rewrite, so no reading leaves with a time that is about to be corrected.

A run killed before its clock was trusted leaves memo "clock:unsynced" (boot
id, first seq): the next run of the same boot corrects those readings with its
own (monotonic times hold across processes, not across boots). Readings of an
earlier boot keep their flag, which stays true.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from gateway.buffer import Buffer
from gateway.clock import Clock, boot_id, corrected
from gateway.sdk.reading import epoch_ms

log = logging.getLogger(__name__)

MEMO = "clock:rewrite"
UNSYNCED = "clock:unsynced"  # a run taking flagged readings: its boot and first seq
FLAG = '"clock":"unsynced"'
CHUNK = 2000  # rows per transaction (about 0.1 s here), then the event loop runs


def _fixer(offset: float):
    def fix(rest: str):
        fixed = corrected(json.loads(rest), offset)
        if fixed is None:
            return None
        doc, true_time = fixed
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")), epoch_ms(true_time)
    return fix


class ClockCorrector:
    def __init__(self, clock: Clock, buffer: Buffer, *, hold: float, stopping: asyncio.Event, poll: float = 5.0):
        self.clock = clock
        self.buffer = buffer
        self.hold = hold
        self.stopping = stopping
        self.poll = poll  # seconds between clock checks while untrusted
        self.started = time.monotonic()
        self.synced = clock.synced()
        self.trusted = asyncio.Event()  # synced, and no rewrite left to do
        self.corrected_total = 0
        # Monotonic times are comparable within one boot: readings flagged by an earlier run of this boot
        # (killed before its clock was trusted) are corrected with this run's.
        earlier = self._earlier_run_of_this_boot()
        self.first_seq = buffer.last_seq + 1 if earlier is None else earlier
        self._catch_up = self.synced and earlier is not None
        if self.synced and not self._catch_up and MEMO not in buffer.recall(MEMO):
            self.trusted.set()
        if not self.synced:
            buffer.remember(UNSYNCED, json.dumps({"boot": boot_id(), "first": self.first_seq}))
            log.warning("the clock is not synchronised: readings are flagged \"clock\": \"unsynced\" and their "
                        "times corrected once it is; deliveries wait for it up to %gs", hold)

    def _earlier_run_of_this_boot(self) -> int | None:
        stored = self.buffer.recall(UNSYNCED).get(UNSYNCED)
        if stored is None:
            return None
        run = json.loads(stored)
        if run["boot"] is not None and run["boot"] == boot_id():
            return run["first"]
        log.warning("readings flagged \"unsynced\" by a run of an earlier boot keep their flag: their monotonic "
                    "times belong to that boot")
        self.buffer.remember(UNSYNCED, None)
        return None

    def is_synced(self) -> bool:
        return self.synced

    async def watch(self) -> None:
        """The supervised "clock" task: finish a rewrite a killed run left, wait for
        trust, correct this run's readings; then it is done. A restart after a
        crash picks the rewrite up from its memo."""
        await self._resume()
        if self._catch_up:  # trusted now, with an earlier run's flagged readings of this boot to correct
            self._plan()
            await self._resume()
        while not self.synced:
            await asyncio.sleep(self.poll)
            if self.clock.synced():
                self._plan()
                await self._resume()
        self.trusted.set()

    def _plan(self) -> None:
        offset = self.clock.wall() - time.monotonic()  # true wall time = monotonic + offset
        self.synced = True  # from here on readings are taken unflagged
        self.buffer.commit()  # the flagged readings so far are all in the file
        plan = {"offset": offset, "first": self.first_seq, "last": self.buffer.last_seq, "next": self.first_seq}
        self.buffer.remember(MEMO, json.dumps(plan))
        self.buffer.remember(UNSYNCED, None)  # the plan takes over, in the same commit
        self.buffer.commit()

    async def _resume(self) -> None:
        stored = self.buffer.recall(MEMO).get(MEMO)
        if stored is None:
            return
        plan = json.loads(stored)
        fix, count, started = _fixer(plan["offset"]), 0, time.monotonic()

        def progress(following: int) -> tuple[str, str | None]:
            done = following > plan["last"]
            return MEMO, None if done else json.dumps({**plan, "next": following})

        seq = plan["next"]
        while seq <= plan["last"]:
            seq, changed = self.buffer.rewrite(fix, seq, plan["last"], FLAG, limit=CHUNK, memo=progress)
            count += changed
            await asyncio.sleep(0)  # let sensors, deliveries and the watchdog run between chunks
        if seq == plan["next"]:  # an empty range: the memo still needs forgetting
            self.buffer.rewrite(fix, seq, seq - 1, FLAG, limit=1, memo=progress)
        self.corrected_total += count
        log.info("clock synchronised: corrected the time of %d buffered readings (%.1fs)",
                 count, time.monotonic() - started)

    async def gate(self) -> None:
        """Deliveries wait (at most clock_hold) for a trusted clock and its rewrite,
        so readings leave with corrected times; stopping ends the wait."""
        if self.trusted.is_set():
            return
        waits = [asyncio.ensure_future(self.trusted.wait()), asyncio.ensure_future(self.stopping.wait())]
        remaining = self.hold - (time.monotonic() - self.started)
        await asyncio.wait(waits, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not self.trusted.is_set() and not self.stopping.is_set():
            log.warning("clock still not synchronised after %gs: delivering readings flagged \"unsynced\"", self.hold)
