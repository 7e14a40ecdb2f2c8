"""The engine's sharing policy, pure: what a ``held`` answer offers, the identity of a
probe, and taking back what a forging LAN copy wrote (``Scheduler.forget``)."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest

from swift import protocol
from swift.content import label
from swift.content_index import ContentIndex
from swift.engine.sharing import Publisher, held_ranges, identity_of
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


def test_the_identity_is_the_probe_or_a_sha256_or_sha512_checksum():
    identity, key = identity_of(probe().url, probe(), None)
    assert key == "http://h/f.iso" and identity.etag == '"e"'
    assert identity_of(probe().url, probe(validator=Validator(None, None)), None) is None
    by_digest, _ = identity_of(probe().url, probe(validator=Validator(None, None)),
                               "SHA256:" + "AB" * 32)
    assert by_digest.digest == "sha256:" + "ab" * 32
    assert identity_of(probe().url, probe(), "sha-512:" + "CD" * 64)[0].digest == "sha512:" + "cd" * 64
    assert identity_of(probe().url, probe(), "md5:" + "ab" * 16)[0].digest is None
    assert identity_of(probe().url, probe(), "sha1:" + "ab" * 20)[0].digest is None


def test_with_a_digest_neither_the_url_nor_the_validator_nor_the_mirror_enters_the_label():
    """Two members that fetched one file from two mirrors (other URLs, ETags, one without
    a validator at all) share it when the same digest is checked."""
    digest = "sha256:" + "ab" * 32
    first = probe()
    mirror = probe(url="http://mirror.example:8080/pub/other-name.iso",
                   final_url="http://mirror.example:8080/pub/other-name.iso",
                   validator=Validator(None, "Tue, 01 Jan 2030 00:00:00 GMT"))
    no_host = probe(url="http:///f.iso", validator=Validator(None, None))
    labels = set()
    for p in (first, mirror, no_host):
        shared = identity_of(p.url, p, digest)
        assert shared is not None and shared[1] == ""
        labels.add(label(shared[0], b"k", shared[1]))
    assert len(labels) == 1
    other_size = identity_of(first.url, probe(size=9 * MiB), digest)
    assert label(other_size[0], b"k", "") not in labels
    assert identity_of(first.url, first, None)[1] != ""  # without one, the URL counts again


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


# -- pieces resumed from an earlier run ------------------------------------------------------------
def publisher_of(tmp_path, data: bytes) -> tuple[Publisher, Path]:
    part = tmp_path / "f.bin.part"
    part.write_bytes(data)
    index = ContentIndex(tmp_path / "state")
    return Publisher(index, "ab" * 32, part, len(data), private=[], name="f.bin"), part


def test_resumed_pieces_are_read_back_and_hashed_and_a_partial_one_completes_with_the_new_bytes(
        tmp_path):
    data = random.Random(7).randbytes(5 * MiB + 123)
    publisher, part = publisher_of(tmp_path, data)
    resumed = RangeSet([(0, 2 * MiB + 10), (3 * MiB, 5 * MiB + 123)])
    publisher.start(resumed)
    hashing = publisher.hash_resumed(part, resumed, threading.Event())
    assert hashing.wait(30)
    want = {i: hashlib.sha256(data[i * MiB:(i + 1) * MiB]).hexdigest() for i in range(6)}
    assert publisher.hasher.digests == {i: want[i] for i in (0, 1, 3, 4, 5)}
    assert hashing.read_bytes == resumed.total and hashing.hashed == 5
    publisher.written(2 * MiB + 10, memoryview(data[2 * MiB + 10:3 * MiB]))  # the workers' part
    assert publisher.hasher.digests[2] == want[2]
    publisher.publish(RangeSet([(0, len(data))]))
    assert ContentIndex(tmp_path / "state").offered("ab" * 32).offered_ranges() == [(0, len(data))]


def test_new_bytes_written_before_the_resumed_prefix_is_read_complete_the_piece_too(tmp_path):
    data = random.Random(8).randbytes(3 * MiB)
    publisher, part = publisher_of(tmp_path, data)
    publisher.written(MiB + 500, memoryview(data[MiB + 500:2 * MiB]))  # waits for its prefix
    assert publisher.hasher.pending_bytes == MiB - 500
    hashing = publisher.hash_resumed(part, RangeSet([(0, MiB + 500)]), threading.Event())
    assert hashing.wait(30)
    assert publisher.hasher.digests == {i: hashlib.sha256(data[i * MiB:(i + 1) * MiB]).hexdigest()
                                        for i in (0, 1)}
    assert publisher.hasher.pending_bytes == 0


def test_a_resumed_piece_that_cannot_be_read_is_not_offered_and_a_stop_ends_the_reading(tmp_path):
    data = bytes(3 * MiB)
    publisher, part = publisher_of(tmp_path, data)
    with open(part, "r+b") as f:
        f.truncate(MiB + MiB // 2)  # the record says more is there than the file holds
    hashing = publisher.hash_resumed(part, RangeSet([(0, 3 * MiB)]), threading.Event())
    assert hashing.wait(30)
    assert set(publisher.hasher.digests) == {0} and {1, 2} <= publisher.hasher.lost
    stop = threading.Event()
    stop.set()  # the download ended first
    (tmp_path / "other").mkdir()
    other, part = publisher_of(tmp_path / "other", data)
    stopped = other.hash_resumed(part, RangeSet([(0, 3 * MiB)]), stop)
    stopped.wait(30)
    assert stopped.read_bytes == 0 and other.hasher.digests == {}
    assert publisher.hash_resumed(part, RangeSet(), stop) is None  # nothing resumed


def test_a_withdrawn_download_is_no_longer_offered(tmp_path):
    publisher, part = publisher_of(tmp_path, bytes(MiB))
    publisher.start(RangeSet([(0, MiB)]))
    assert ContentIndex(tmp_path / "state").get("ab" * 32) is not None
    publisher.withdraw()
    assert ContentIndex(tmp_path / "state").get("ab" * 32) is None


# -- a digest the origin gives -------------------------------------------------------------------
def test_a_mirror_whose_digest_header_names_other_bytes_is_left_out():
    from swift.download import _other_digest
    checksum = "sha256:" + "ab" * 32
    assert _other_digest(probe(digest=("sha256", "ab" * 32)), checksum) is None
    assert _other_digest(probe(digest=("sha512", "cd" * 64)), checksum) is None  # not comparable
    assert _other_digest(probe(), checksum) is None
    assert "names other bytes" in _other_digest(probe(digest=("sha256", "cd" * 32)), checksum)
    assert "md5 digest" in _other_digest(probe(digest=("md5", "cd" * 16)), "md5:" + "ab" * 16)
    assert _other_digest(probe(digest=("sha256", "cd" * 32)), None) is None


def test_a_mismatch_of_the_servers_digest_names_the_server(tmp_path):
    from swift.engine import verify
    from swift.engine.report import ChecksumMismatch
    f = tmp_path / "f"
    f.write_bytes(b"data")
    with pytest.raises(ChecksumMismatch) as caught:
        verify.checksum(f, "sha256:" + "ab" * 32, named_by="the server's Repr-Digest/Digest header",
                        again="run again with --no-mirrors")
    line = str(caught.value)
    assert line.startswith(f"sha256 checksum mismatch: the server's Repr-Digest/Digest header "
                           f"says {'ab' * 32}, its bytes hash to {hashlib.sha256(b'data').hexdigest()}")
    assert "--no-mirrors" in line and "\n" not in line


def test_a_download_unshared_while_it_runs_is_not_offered_again_when_it_finishes(tmp_path):
    data = random.Random(9).randbytes(2 * MiB)
    publisher, part = publisher_of(tmp_path, data)
    publisher.start(RangeSet())
    assert [h.path for h in publisher.index.holdings()] == [str(part.absolute())]
    assert publisher.index.remove(str(part))  # the user's "unshare PATH" at the prompt
    publisher.written(0, memoryview(data))
    publisher.publish(RangeSet([(0, len(data))]))
    final = tmp_path / "f.bin"
    part.rename(final)
    publisher.finished(final)
    assert publisher.index.holdings() == []
    # a download never withdrawn is offered from its final name, as ever
    (tmp_path / "again").mkdir()
    again, part2 = publisher_of(tmp_path / "again", data)
    again.start(RangeSet())
    again.written(0, memoryview(data))
    part2.rename(tmp_path / "again" / "f.bin")
    again.finished(tmp_path / "again" / "f.bin")
    assert [h.complete for h in again.index.holdings()] == [True]
