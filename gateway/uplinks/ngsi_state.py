"""State of the NGSI-LD uplink that outlives it: per entity, the newest time
upserted, kept in the buffer."""

from __future__ import annotations

from gateway.buffer import Buffer
from gateway.uplinks.base import TransientError


class NewestUpserted:
    """Per entity, the observedAt (ms) of the newest reading upserted, kept in
    the buffer so that no restart or reload lets an older one overwrite it.

    Written after the broker accepted, in the next commit with the cursor. One
    window remains: a backlog drain sends again before that commit, and a crash
    then leaves the broker ahead of what the buffer says; the restart would
    resend the earlier send's upsert over the later one. So an upsert for an
    entity whose last advance is not yet committed commits first (during drains
    only: in steady operation a commit comes between two sends anyway)."""

    def __init__(self, buffer: Buffer | None, uplink: str):
        self.buffer, self.prefix = buffer, f"ngsi:{uplink}:"
        self._ms: dict[str, int] = {}
        self._uncommitted: set[str] = set()
        if buffer is not None:
            for key, value in buffer.recall(self.prefix).items():
                if value.isdigit():
                    self._ms[key[len(self.prefix):]] = int(value)
            buffer.on_commit(self._uncommitted.clear)

    def get(self, entity_id: str) -> int:
        return self._ms.get(entity_id, -1)

    def advance(self, entity_id: str, ms: int) -> None:
        if ms > self._ms.get(entity_id, -1):
            self._ms[entity_id] = ms
            if self.buffer is not None:
                self.buffer.remember(self.prefix + entity_id, str(ms))
                self._uncommitted.add(entity_id)

    def commit_before(self, entity_ids: set[str]) -> None:
        """Make the newest upserted of these entities durable before they are upserted again."""
        if self.buffer is None or self._uncommitted.isdisjoint(entity_ids):
            return
        if not self.buffer.commit():
            raise TransientError("the buffer cannot write: holding upserts until it can")
        self._uncommitted.clear()

    def close(self) -> None:
        if self.buffer is not None:
            self.buffer.off_commit(self._uncommitted.clear)
