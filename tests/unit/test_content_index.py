"""What a node offers (``swift.content_index``): persisted atomically, never a changed file."""

from __future__ import annotations

import os

from swift.content_index import ContentIndex, Holding
from swift.planning import RangeSet

LABEL = "ab" * 32
PIECE = 1 << 20


def holding_of(path, **kw) -> Holding:
    st = os.stat(path)
    fields = dict(label=LABEL, path=str(path), size=st.st_size, piece_size=PIECE,
                  done=RangeSet([(0, st.st_size)]),
                  hashes={i: "c" * 64 for i in range(-(-st.st_size // PIECE))},
                  inode=st.st_ino, mtime_ns=st.st_mtime_ns)
    fields.update(kw)
    return Holding(**fields)


def test_a_recorded_file_is_offered_and_survives_a_restart(tmp_path):
    f = tmp_path / "disk.iso"
    f.write_bytes(b"x" * (PIECE + 10))
    ContentIndex(tmp_path / "state").record(holding_of(f))
    again = ContentIndex(tmp_path / "state")  # a restarted node
    assert again.offered(LABEL) == holding_of(f)
    assert again.offered(LABEL).offered_ranges() == [(0, PIECE + 10)]


def test_an_edited_moved_or_deleted_file_is_never_offered(tmp_path):
    index = ContentIndex(tmp_path / "state")
    f = tmp_path / "f.bin"
    f.write_bytes(b"a" * 100)
    index.record(holding_of(f))
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # edited (same size)
    assert index.offered(LABEL) is None
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert index.offered(LABEL) is not None
    f.rename(tmp_path / "moved.bin")
    assert index.offered(LABEL) is None
    (tmp_path / "moved.bin").unlink()
    assert index.offered(LABEL) is None


def test_a_replaced_file_of_the_same_size_is_not_offered(tmp_path):
    index = ContentIndex(tmp_path / "state")
    f = tmp_path / "f.bin"
    f.write_bytes(b"a" * 100)
    index.record(holding_of(f))
    other = tmp_path / "other"
    other.write_bytes(b"b" * 100)
    os.utime(other, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns))
    other.replace(f)  # another inode under the old name and time
    assert index.offered(LABEL) is None


def test_private_content_and_a_node_without_sharing_offer_nothing(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"a" * 100)
    ContentIndex(tmp_path / "s").record(holding_of(f, private=True, why_private="cookies"))
    assert ContentIndex(tmp_path / "s").offered(LABEL) is None
    assert ContentIndex(tmp_path / "s").get(LABEL).why_private == "cookies"
    ContentIndex(tmp_path / "s").record(holding_of(f))
    assert ContentIndex(tmp_path / "s", enabled=False).offered(LABEL) is None


def test_an_in_flight_download_offers_only_its_hashed_done_pieces(tmp_path):
    part = tmp_path / "f.bin.part"
    part.write_bytes(bytes(3 * PIECE))
    index = ContentIndex(tmp_path / "state")
    index.record(holding_of(part, mtime_ns=None, done=RangeSet([(0, 2 * PIECE + 5)]),
                            hashes={0: "d" * 64}))
    part.write_bytes(bytes(3 * PIECE))  # written on: the time changes, the inode does not
    h = index.offered(LABEL)
    assert h is not None and h.offered_ranges() == [(0, PIECE)]
    index.update(LABEL, hashes={0: "d" * 64, 1: "e" * 64})
    assert index.offered(LABEL).offered_ranges() == [(0, 2 * PIECE)]


def test_two_indexes_on_one_state_directory_keep_each_others_records(tmp_path):
    f, g = tmp_path / "f", tmp_path / "g"
    f.write_bytes(b"1" * 10)
    g.write_bytes(b"2" * 10)
    node, get = ContentIndex(tmp_path / "s"), ContentIndex(tmp_path / "s")
    node.holdings()
    get.record(holding_of(f))  # a get hands its file to the running node
    node.record(holding_of(g, label="cd" * 32))
    assert {h.label for h in node.holdings()} == {LABEL, "cd" * 32}
    assert node.remove("cd" * 4)[0].path == str(g)
    assert [h.label for h in get.holdings()] == [LABEL]


def test_a_damaged_index_offers_nothing_and_is_replaced_on_the_next_record(tmp_path, caplog):
    state = tmp_path / "s"
    state.mkdir()
    (state / "shares.json").write_text('{"version": 1, "holdings": [{"label": 7}]}')
    index = ContentIndex(state)
    assert index.holdings() == [] and "ignoring the share index" in caplog.text
    f = tmp_path / "f"
    f.write_bytes(b"1")
    index.record(holding_of(f))
    assert [h.label for h in ContentIndex(state).holdings()] == [LABEL]


# -- a download in flight that stopped -----------------------------------------------------------
SECOND = 1_000_000_000


def stopped_part(tmp_path, published_ns: int):
    """A part file whose download published last at ``published_ns``, written just before."""
    part = tmp_path / "f.bin.part"
    part.write_bytes(bytes(2 * PIECE))
    os.utime(part, ns=(published_ns, published_ns - SECOND // 10))
    return part, holding_of(part, mtime_ns=None, done=RangeSet([(0, PIECE)]), hashes={0: "d" * 64},
                            fetching=RangeSet([(PIECE, 2 * PIECE)]), updated_ns=published_ns)


def test_a_stopped_downloads_fetching_hint_is_ignored_and_a_running_ones_passed_on(tmp_path):
    published = 1_000 * SECOND
    _, h = stopped_part(tmp_path, published)
    assert list(h.fetching_now(published + SECOND)) == [(PIECE, 2 * PIECE)]
    assert not h.stopped(published + 2 * SECOND)
    assert h.stopped(published + 3 * SECOND)
    assert h.fetching_now(published + 3 * SECOND).total == 0
    assert holding_of(tmp_path / "f.bin.part", fetching=RangeSet([(0, 5)]),
                      updated_ns=published).fetching_now(published).total == 0  # finished
    assert holding_of(tmp_path / "f.bin.part", mtime_ns=None, fetching=RangeSet([(0, 5)]))\
        .fetching_now(published).total == 0  # no publication time: no hint


def test_a_stopped_downloads_done_pieces_stay_offered_while_nobody_writes_its_part_file(tmp_path):
    published = 1_000 * SECOND
    part, h = stopped_part(tmp_path, published)
    much_later = published + 3600 * SECOND
    assert h.still_matches(os.stat(part), much_later)  # killed: its bytes are still its own
    st = os.stat(part)
    os.utime(part, ns=(st.st_atime_ns, published + 2 * SECOND))  # its own last writes
    assert h.still_matches(os.stat(part), much_later)
    os.utime(part, ns=(st.st_atime_ns, published + 10 * SECOND))  # another run writes it
    assert not h.still_matches(os.stat(part), much_later)
    assert h.still_matches(os.stat(part), published + SECOND)  # while it runs: inode and size


def test_recording_a_holding_drops_another_one_of_the_same_path(tmp_path):
    """A part file started over for another version of the file (the inode may be reused)
    belongs to the new download alone."""
    part = tmp_path / "f.bin.part"
    part.write_bytes(bytes(PIECE))
    index = ContentIndex(tmp_path / "state")
    index.record(holding_of(part, mtime_ns=None))
    other = tmp_path / "g.bin"
    other.write_bytes(b"g")
    index.record(holding_of(other, label="ee" * 32))
    index.record(holding_of(part, label="cd" * 32, mtime_ns=None, done=RangeSet()))
    assert {h.label for h in index.holdings()} == {"cd" * 32, "ee" * 32}


def test_a_download_withdraws_only_its_own_holding(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * 10)
    index = ContentIndex(tmp_path / "state")
    index.record(holding_of(f, holder="1" * 64))
    index.drop(LABEL, "2" * 64)  # another download's: recorded meanwhile
    assert index.get(LABEL) is not None
    index.drop(LABEL, "1" * 64)
    assert index.get(LABEL) is None


def test_a_download_that_stopped_before_it_had_a_piece_is_not_answered_for(tmp_path):
    """It is neither a copy nor a member starting the file: nobody places itself around it."""
    published = 1_000 * SECOND
    _, h = stopped_part(tmp_path, published)
    assert h.answers(published + 10 * SECOND)  # it offers piece 0
    empty = holding_of(tmp_path / "f.bin.part", mtime_ns=None, done=RangeSet(), hashes={},
                       updated_ns=published)
    assert empty.answers(published + SECOND)  # just recorded: a member starting
    assert not empty.answers(published + 3 * SECOND)


def test_piece_digests_live_apart_and_a_publication_writes_only_the_new_ones(tmp_path):
    """The index stays small whatever the files' sizes; digests are 32 bytes a piece in a
    file of their own, written in place as a download hashes pieces."""
    import json
    from swift.content_index import HASHES_DIR, INDEX_NAME
    part = tmp_path / "big.part"
    with open(part, "wb") as f:
        f.truncate(4096 * PIECE)  # a 4 GiB file, sparse
    state = tmp_path / "state"
    node, get = ContentIndex(state), ContentIndex(state)
    get.record(holding_of(part, mtime_ns=None, done=RangeSet(), hashes={}))
    digests = state / HASHES_DIR / f"{LABEL}.sha256"
    assert digests.stat().st_size == 4096 * 32
    get.update(LABEL, done=RangeSet([(0, 2 * PIECE)]), hashes={0: "a" * 64, 1: "b" * 64})
    assert node.offered(LABEL).offered_ranges() == [(0, 2 * PIECE)]
    # a piece given up is unknown again, and a new digest for it replaces the old one
    get.update(LABEL, done=RangeSet([(0, PIECE)]), hashes={0: "a" * 64})
    assert node.get(LABEL).hashes == {0: "a" * 64}
    get.update(LABEL, done=RangeSet([(0, 2 * PIECE)]), hashes={0: "a" * 64, 1: "f" * 64})
    assert node.get(LABEL).hashes == {0: "a" * 64, 1: "f" * 64}
    # every piece hashed: the index itself is still a few hundred bytes
    get.update(LABEL, done=RangeSet([(0, 4096 * PIECE)]),
               hashes={i: f"{i + 1:064x}" for i in range(4096)})
    assert len(node.get(LABEL).hashes) == 4096 and node.get(LABEL).hashes[4095] == f"{4096:064x}"
    assert (state / INDEX_NAME).stat().st_size < 1024
    assert "hashes" not in json.loads((state / INDEX_NAME).read_text())["holdings"][0]
    # removing the holding removes its digests
    node.remove(LABEL)
    assert not digests.exists() and get.get(LABEL) is None


def test_an_index_written_with_inline_digests_is_still_read_and_moved_apart(tmp_path):
    import json
    from swift.content_index import HASHES_DIR, INDEX_NAME
    f = tmp_path / "old.iso"
    f.write_bytes(b"x" * (PIECE + 1))
    h = holding_of(f)
    record = dict(h.to_json(), hashes={str(i): d for i, d in h.hashes.items()})
    state = tmp_path / "state"
    state.mkdir()
    (state / INDEX_NAME).write_text(json.dumps({"version": 1, "holdings": [record]}))
    index = ContentIndex(state)
    assert index.offered(LABEL) == h
    g = tmp_path / "other.iso"
    g.write_bytes(b"y")
    index.record(holding_of(g, label="cd" * 32))  # any change saves the index
    assert (state / HASHES_DIR / f"{LABEL}.sha256").exists()
    assert ContentIndex(state).offered(LABEL) == h
