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
