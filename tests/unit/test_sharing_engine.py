"""The engine's sharing policy, pure: what a ``held`` answer offers, the identity of a
probe, and taking back what a forging LAN copy wrote (``Scheduler.forget``)."""

from __future__ import annotations

from swift import protocol
from swift.engine.sharing import held_ranges, identity_of
from swift.http import ProbeResult, Validator
from swift.planning import RangeSet, Scheduler

MiB = 1 << 20
H = "a" * 64


def probe(**kw) -> ProbeResult:
    fields = dict(url="http://h/f.iso?X-Amz-Signature=1", final_url="http://h/f.iso", size=8 * MiB,
                  ranges=True, validator=Validator('"e"', None))
    fields.update(kw)
    return ProbeResult(**fields)


def test_only_whole_hashed_pieces_inside_the_ranges_are_offered():
    held = protocol.Held(H, 8 * MiB + 5, MiB, [[0, 3 * MiB + 7], [4 * MiB, 8 * MiB + 5]],
                         [[0, H], [2, H], [4, H], [5, H], [8, H]])
    ranges, hashes = held_ranges(held, 8 * MiB + 5)
    assert list(ranges) == [(0, MiB), (2 * MiB, 3 * MiB), (4 * MiB, 6 * MiB), (8 * MiB, 8 * MiB + 5)]
    assert set(hashes) == {0, 2, 4, 5, 8}


def test_an_answer_for_another_size_or_piece_size_offers_nothing():
    held = protocol.Held(H, 8 * MiB, MiB, [[0, 8 * MiB]], [[i, H] for i in range(8)])
    assert held_ranges(held, 9 * MiB)[0].total == 0
    held = protocol.Held(H, 8 * MiB, 2 * MiB, [[0, 8 * MiB]], [[i, H] for i in range(4)])
    assert held_ranges(held, 8 * MiB)[0].total == 0


def test_the_identity_is_the_probe_or_a_sha256_checksum():
    identity, key = identity_of(probe().url, probe(), None)
    assert key == "http://h/f.iso" and identity.etag == '"e"'
    assert identity_of(probe().url, probe(validator=Validator(None, None)), None) is None
    by_digest, _ = identity_of(probe().url, probe(validator=Validator(None, None)),
                               "SHA256:" + "AB" * 32)
    assert by_digest.digest == "sha256:" + "ab" * 32
    assert identity_of(probe().url, probe(), "md5:" + "ab" * 16)[0].digest is None


def test_forget_requeues_a_forgers_finished_bytes_and_never_a_running_assignment():
    sched = Scheduler(100, piece_size=10, min_split=10)
    first = sched.assign("copy@a")
    sched.claim(first.assignment_id, first.end - first.start)
    sched.commit(first.assignment_id, first.end - first.start)
    sched.finished(first.assignment_id)
    running = sched.assign("local")
    gone = sched.forget("copy@a", RangeSet([(0, 100)]))
    assert list(gone) == [(first.start, first.end)]
    assert sched.done.total == 0
    assert sched.bytes_by_source().get("copy@a", 0) == 0
    # everything is still handed out exactly once
    seen = RangeSet([(running.start, running.end)])
    while (piece := sched.assign("local")) is not None and not sched.complete:
        assert not seen.overlaps(piece.start, piece.end)
        seen.add(piece.start, piece.end)
        if seen.total == 100:
            break
    assert seen.total == 100
