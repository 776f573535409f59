import logging

from gateway.logring import LogRing


def test_log_ring_keeps_recent_lines_bounded_and_filtered_by_level():
    ring = LogRing(capacity=3)
    log = logging.getLogger("test.ring")
    log.addHandler(ring)
    log.setLevel(logging.DEBUG)
    try:
        for i in range(5):
            log.warning("line %d", i)
        log.debug("not kept: below the ring's level")
        lines = ring.lines()
        assert [e["line"] for e in lines] == ["WARNING test.ring: line 2", "WARNING test.ring: line 3",
                                              "WARNING test.ring: line 4"]
        assert ring.lines(level=logging.ERROR) == []
        assert all(e["level"] == "warning" and e["at"].endswith("Z") for e in lines)
    finally:
        log.removeHandler(ring)
