"""The engine's parts without a network: the board, the record keeper, the control files.

A real Scheduler and a real part file in a temporary directory; peers and
origins are replaced by direct calls, as a worker would make them.
"""

from __future__ import annotations

import threading

import pytest

from swift import storage
from swift.engine.board import Board
from swift.engine.record_keeper import RecordKeeper
from swift.engine.report import DownloadError
from swift.planning import RangeSet, Scheduler, Shrink

MiB = 1 << 20


@pytest.fixture
def part(tmp_path):
    with storage.PartFile.open(tmp_path / "f.part", 8 * MiB) as p:
        yield p


def make_board(part, size=8 * MiB, **kw) -> Board:
    sched = Scheduler(size, piece_size=size, min_split=MiB, **kw)
    return Board(sched, part, clock=lambda: 0.0)


def test_a_split_tells_the_shrunk_jobs_carrier_outside_the_lock(part):
    board = make_board(part)
    first = board.next_piece("a")
    told: list[tuple[int, bool]] = []
    assert board.carry(first.assignment_id, lambda end: told.append((end, board.cond._is_owned())))
    board.write(first.assignment_id, "a", b"x" * MiB)
    second = board.next_piece("b")  # the queue is empty: a split of the first assignment
    assert second.shrink == Shrink(first.assignment_id, second.start)
    assert told == [(second.start, False)]
    assert board.end_of(first.assignment_id) == second.start


def test_a_block_for_a_job_given_up_on_is_dropped_not_written(part):
    board = make_board(part)
    piece = board.next_piece("a")
    board.write(piece.assignment_id, "a", b"y" * 1000)
    board.failed(piece.assignment_id, "a", "test")
    assert board.write(piece.assignment_id, "a", b"z" * 500) is False
    assert board.dropped == 500 and board.done_total() == 1000
    assert board.bytes_by_source() == {"a": 1000}


def test_a_liars_bytes_leave_done_and_its_count(part):
    board = make_board(part)
    piece = board.next_piece("liar")
    board.write(piece.assignment_id, "liar", b"l" * 4096)
    board.failed(piece.assignment_id, "liar", "lied", discard=True)
    assert board.done_total() == 0 and board.bytes_by_source() == {"liar": 0}
    assert board.dropped == 4096


def test_the_first_fatal_error_wins_and_stops_waiting_workers(part):
    board = make_board(part, size=MiB)
    board.next_piece("a")  # the only piece, too small to split: the next caller waits
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(board.next_piece("b")))
    waiter.start()
    board.fail_all(DownloadError("first"))
    board.fail_all(DownloadError("second"))
    waiter.join(5)
    assert not waiter.is_alive() and got == [None]
    assert str(board.error) == "first" and board.settled(0)


def test_no_worker_left_ends_with_a_true_message(part):
    board = make_board(part)
    board.workers_started(1)
    piece = board.next_piece("a")
    board.failed(piece.assignment_id, "a", "reset by peer")
    board.worker_ended()
    assert board.settled(0)
    assert "every source failed (a: reset by peer)" in str(board.error)
    assert "kept for resume" in str(board.error)


class _Order:
    def __init__(self):
        self.events: list[str] = []


class _Part:
    def __init__(self, order):
        self.order = order
        self.writebacks = 0

    def sync(self):
        self.order.events.append("sync")

    def start_writeback(self):
        self.writebacks += 1


class _Control(storage.ControlFile):
    path = None

    def __init__(self, order):
        self.order = order
        self.saved: list[RangeSet] = []

    def save(self, done):
        self.order.events.append("save")
        self.saved.append(done)


def test_the_record_keeper_flushes_before_it_records_and_keeps_its_interval(part):
    board = make_board(part)
    piece = board.next_piece("a")
    board.write(piece.assignment_id, "a", b"d" * 100)
    order = _Order()
    now = [0.0]
    control = _Control(order)
    keeper = RecordKeeper(board, _Part(order), control, 1.0, clock=lambda: now[0])
    keeper.tick()
    assert order.events == []  # not yet due
    now[0] = 1.0
    keeper.tick()
    assert order.events == ["sync", "save"] and list(control.saved[-1]) == [(0, 100)]
    keeper.tick()
    assert order.events == ["sync", "save"]  # the next one is a second later


def test_between_records_the_keeper_only_starts_the_writeback_at_its_own_interval(part):
    board = make_board(part)
    order = _Order()
    now = [0.0]
    fake = _Part(order)
    keeper = RecordKeeper(board, fake, _Control(order), 1.0, clock=lambda: now[0], writeback=0.25)
    for t, writebacks in ((0.1, 0), (0.25, 1), (0.4, 1), (0.5, 2), (0.75, 3)):
        now[0] = t
        keeper.tick()
        assert fake.writebacks == writebacks, t
    assert order.events == []  # a started writeback proves nothing: no flush, no record
    now[0] = 1.0
    keeper.tick()
    assert order.events == ["sync", "save"] and fake.writebacks == 3
    quiet = _Part(order)
    keeper = RecordKeeper(board, quiet, _Control(order), 1.0, clock=lambda: now[0], writeback=None)
    now[0] = 1.5
    keeper.tick()
    assert quiet.writebacks == 0


def test_a_record_that_cannot_be_saved_stops_the_download_with_the_disks_words(part):
    board = make_board(part)

    class Failing(_Control):
        def save(self, done):
            raise storage.StorageError("no space left on device while saving x")

    RecordKeeper(board, _Part(_Order()), Failing(_Order()), 1.0).save()
    assert board.stop.is_set() and "no space left" in str(board.error)


def test_the_null_control_file_keeps_nothing_and_the_resume_file_round_trips(tmp_path):
    null = storage.NullControlFile()
    null.save(RangeSet([(0, 5)]))
    null.remove()
    assert null.load() is None and not null.exists()
    ident = storage.FileIdentity("http://127.0.0.1/f", "http://127.0.0.1/f", 100, '"e"', None)
    rf = storage.ResumeFile(tmp_path / "f", ident)
    rf.save(RangeSet([(0, 10), (50, 60)]))
    assert rf.exists() and rf.path == tmp_path / "f.part.swift"
    assert list(rf.load().done) == [(0, 10), (50, 60)]
    other = storage.ResumeFile(tmp_path / "f", storage.FileIdentity("http://127.0.0.1/g", "", 100,
                                                                     None, None))
    assert other.load() is None  # another URL's record is not ours
    rf.remove()
    rf.remove()
    assert not rf.exists()


def _probe(size: int, etag: str | None = '"e"'):
    from swift import http
    return http.ProbeResult(url="http://127.0.0.1/f", final_url="http://127.0.0.1/f",
                            size=size, ranges=True, validator=http.Validator(etag, None))


def test_a_fragmented_record_forgets_its_small_pieces_and_says_so(tmp_path):
    from swift.engine import target
    from swift.engine.options import Options
    size = 64 * MiB
    final = tmp_path / "f"
    storage.part_path(final).write_bytes(b"")
    probe = _probe(size)
    control = storage.ResumeFile(final, target.identity(probe.url, probe))
    tiny = [(k * 4096, k * 4096 + 10) for k in range(target.FRAGMENTED + 5)]
    big = (32 * MiB, 48 * MiB)
    control.save(RangeSet(tiny + [big]))
    notices: list[str] = []
    done = target.resume_point(control, probe, final, Options(min_split=256 << 10), notices.append)
    assert list(done) == [big]
    assert f"holds {target.FRAGMENTED + 6} fragments" in notices[0]
    assert "resuming: 16.0 MiB of 64.0 MiB" in notices[1]


def test_a_few_small_pieces_are_all_resumed(tmp_path):
    from swift.engine import target
    from swift.engine.options import Options
    final = tmp_path / "f"
    storage.part_path(final).write_bytes(b"")
    probe = _probe(8 * MiB)
    control = storage.ResumeFile(final, target.identity(probe.url, probe))
    control.save(RangeSet([(0, 10), (100, 200)]))
    notices: list[str] = []
    done = target.resume_point(control, probe, final, Options(), notices.append)
    assert list(done) == [(0, 10), (100, 200)] and len(notices) == 1


def test_a_changed_file_starts_over_and_removes_the_old_part(tmp_path):
    from swift.engine import target
    from swift.engine.options import Options
    final = tmp_path / "f"
    storage.part_path(final).write_bytes(b"old")
    old = _probe(8 * MiB, etag='"old"')
    storage.ResumeFile(final, target.identity(old.url, old)).save(RangeSet([(0, 3)]))
    new = _probe(8 * MiB, etag='"new"')
    control = storage.ResumeFile(final, target.identity(new.url, new))
    notices: list[str] = []
    assert len(target.resume_point(control, new, final, Options(), notices.append)) == 0
    assert "changed on the server" in notices[0]
    assert not storage.part_path(final).exists() and not control.exists()


def test_a_race_won_by_the_backup_tells_the_silent_jobs_worker_to_stop(part):
    now = [0.0]
    sched = Scheduler(8 * MiB, piece_size=4 * MiB, min_split=MiB, race_after=4.0)
    board = Board(sched, part, clock=lambda: now[0])
    frozen, busy = board.next_piece("frozen"), board.next_piece("busy")
    told: list[int] = []
    board.carry(frozen.assignment_id, told.append)
    now[0] = 1.0
    board.write(frozen.assignment_id, "frozen", b"f" * MiB)
    for t in (2.0, 3.0, 5.0):
        now[0] = t
        board.write(busy.assignment_id, "busy", b"b" * (64 << 10))
    backup = board.next_piece("idle")  # frozen silent 4 s while busy progressed: raced
    assert (backup.start, backup.end) == (MiB, 4 * MiB)
    now[0] = 5.5
    assert board.write(backup.assignment_id, "idle", b"i" * 100)
    assert told == [MiB]  # its peer is told to stop where it was
    assert board.write(frozen.assignment_id, "frozen", b"late") is False  # a wake-up writes nothing
    assert board.bytes_by_source() == {"frozen": MiB, "busy": 3 * (64 << 10), "idle": 100}


@pytest.mark.parametrize("throttled", [False, True])
def test_local_workers_read_large_blocks_except_under_a_rate_limit(part, monkeypatch, throttled):
    """Each block costs Python work besides its copies: a local worker's blocks go
    straight to the file and may be larger than a helper's data frames; under
    ``--limit-rate`` they stay small, so the rate is kept in small steps."""
    from swift import http
    from swift.engine.sources import local
    from swift.engine.options import LOCAL_CHUNK, Options
    from swift.http.headers import Validator

    asked: list[int] = []

    class Fetch:  # delivers the whole range at once, as an origin would in blocks
        def __init__(self, session, url, size, validator, **kw):
            asked.append(kw["chunk_size"])

        def run(self, start, get_end, deliver):
            deliver(b"r" * (get_end() - start))
            return get_end() - start

    class Remote:
        final_url = "http://127.0.0.1/f"

        def session(self, source_address=None):
            return type("Session", (), {"close": lambda self: None})()

    monkeypatch.setattr(http, "RangeFetch", Fetch)
    board = make_board(part)
    probe = http.ProbeResult("http://127.0.0.1/f", "http://127.0.0.1/f", 8 * MiB, True,
                             Validator(etag='"e"', last_modified=None))
    opts = Options(throttle=(lambda n: None) if throttled else None)
    local.run_local(board, probe, Remote(), opts)
    assert board.complete()
    assert asked == [http.CHUNK_SIZE if throttled else LOCAL_CHUNK]
    assert LOCAL_CHUNK > http.CHUNK_SIZE


# -- target.already_complete -----------------------------------------------------------------------
def _probe_answer(size, etag='"v1"', url="http://origin.test/data.bin"):
    from swift import http
    return http.ProbeResult(url, url, size, True, http.Validator(etag, None))


def _complete(tmp_path, url="http://origin.test/data.bin", checksum=None, answer=None):
    from swift.engine import target
    asked = []

    def probe():
        asked.append(url)
        return answer or _probe_answer(4)
    return target.already_complete(url, output=None, directory=tmp_path, checksum=checksum,
                                   probe=probe), asked


def test_already_complete_asks_the_origin_only_when_a_file_of_that_name_exists(tmp_path):
    assert _complete(tmp_path) == (None, [])


def test_already_complete_needs_the_mark_of_this_url_and_validator_not_just_the_size(tmp_path):
    from swift.engine import target
    path = tmp_path / "data.bin"
    path.write_bytes(b"abcd")
    assert _complete(tmp_path)[0] is None  # same size, no proof
    if not storage.mark_origin(path, target.identity("http://origin.test/data.bin", _probe_answer(4))):
        pytest.skip("this file system keeps no user attributes")
    assert _complete(tmp_path)[0] == path
    assert _complete(tmp_path, answer=_probe_answer(4, etag='"v2"'))[0] is None  # replaced since
    assert _complete(tmp_path, url="http://other.test/data.bin")[0] is None  # another URL's data.bin


def test_already_complete_takes_a_matching_checksum_as_proof_and_a_wrong_one_as_none(tmp_path):
    import hashlib
    (tmp_path / "data.bin").write_bytes(b"abcd")
    good = "sha256:" + hashlib.sha256(b"abcd").hexdigest()
    assert _complete(tmp_path, checksum=good)[0] == tmp_path / "data.bin"
    assert _complete(tmp_path, checksum="sha256:" + "0" * 64)[0] is None


def test_already_complete_is_never_true_while_a_partial_download_of_it_is_under_way(tmp_path):
    import hashlib
    (tmp_path / "data.bin").write_bytes(b"abcd")
    storage.record_path(tmp_path / "data.bin").write_text("{}")
    assert _complete(tmp_path, checksum="sha256:" + hashlib.sha256(b"abcd").hexdigest())[0] is None
