"""The output file, its resume record and the final rename, in temp dirs
(and, as root, in a tiny or read-only tmpfs for a full disk)."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import stat
import threading
from pathlib import Path

import pytest

from swift import storage
from swift.storage import (MAX_RECORD_BYTES, PART_SUFFIX, RECORD_SUFFIX, PartFile, ResumeRecord,
                           StorageError, check_writable, finalize, part_path, record_path,
                           record_path_of_part)
from tests.helpers import make_record, no_temp_files, prepare


KiB, MiB = 1 << 10, 1 << 20


# -- paths ---------------------------------------------------------------------------------------

def test_paths(tmp_path):
    final = tmp_path / "f.iso"
    assert PART_SUFFIX == ".part" and RECORD_SUFFIX == ".part.swift"
    assert part_path(final) == tmp_path / "f.iso.part"
    assert record_path(final) == tmp_path / "f.iso.part.swift"
    assert record_path_of_part(part_path(final)) == record_path(final)
    # a file really called "x.part" has its own part and record
    assert record_path(tmp_path / "x.part") == tmp_path / "x.part.part.swift"


# -- the part file --------------------------------------------------------------------------------

def test_pwrite_in_any_order(tmp_path):
    part = tmp_path / "f.part"
    blocks = [(i * 1000, bytes([65 + i % 26]) * 1000) for i in range(50)]
    random.Random(7).shuffle(blocks)
    with PartFile.open(part, 50_000) as f:
        for offset, data in blocks:
            f.pwrite(offset, data if offset % 2000 else memoryview(data))
        f.sync()
    expected = b"".join(bytes([65 + i % 26]) * 1000 for i in range(50))
    assert part.read_bytes() == expected


def test_concurrent_pwrites_at_different_offsets(tmp_path):
    part = tmp_path / "f.part"
    size, block = 4 * MiB, 64 * KiB
    expected = random.Random(1).randbytes(size)
    offsets = list(range(0, size, block))
    random.Random(2).shuffle(offsets)
    errors = []
    with PartFile.open(part, size) as f:
        def worker(mine):
            try:
                for off in mine:
                    f.pwrite(off, memoryview(expected)[off:off + block])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
        threads = [threading.Thread(target=worker, args=(offsets[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
    assert not errors
    assert part.read_bytes() == expected


def test_open_creates_with_the_size(tmp_path):
    part = tmp_path / "new.part"
    with PartFile.open(part, 1 * MiB) as f:
        assert f.size == 1 * MiB and not f.closed
    assert part.stat().st_size == 1 * MiB
    assert part.read_bytes() == bytes(1 * MiB)
    assert f.closed


def test_preallocation_reserves_blocks(tmp_path):
    part = tmp_path / "big.part"
    fd = os.open(part, os.O_RDWR | os.O_CREAT)
    try:
        if not storage._preallocate(fd, 8 * MiB):
            pytest.skip("this file system cannot preallocate")
        st = os.fstat(fd)
        assert st.st_size == 8 * MiB and st.st_blocks * 512 >= 8 * MiB
    finally:
        os.close(fd)


def test_without_fallocate_the_file_is_extended_sparsely(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_preallocate", lambda fd, size: False)
    part = tmp_path / "sparse.part"
    part.write_bytes(b"head")
    with PartFile.open(part, 1 * MiB):
        pass
    assert part.stat().st_size == 1 * MiB and part.read_bytes()[:4] == b"head"


def test_open_keeps_existing_data(tmp_path):
    part = tmp_path / "f.part"
    part.write_bytes(b"xyz" + bytes(7))
    for preallocate in (True, False):
        with PartFile.open(part, 20, preallocate=preallocate):
            pass
        assert part.read_bytes() == b"xyz" + bytes(17)
    with PartFile.open(part, None):  # unknown size: left as it is
        pass
    assert part.read_bytes() == b"xyz" + bytes(17)
    with PartFile.open(part, 2):  # a longer file is cut to the size
        pass
    assert part.read_bytes() == b"xy"


def test_pwrite_outside_the_file_is_a_bug(tmp_path):
    with PartFile.open(tmp_path / "f.part", 10) as f:
        with pytest.raises(ValueError):
            f.pwrite(8, b"abc")
        with pytest.raises(ValueError):
            f.pwrite(-1, b"a")
        f.pwrite(7, b"abc")
        f.pwrite(10, b"")
    with PartFile.open(tmp_path / "g.part", None) as g:  # unknown size: anything goes
        g.pwrite(100, b"x")
    assert (tmp_path / "g.part").stat().st_size == 101
    with pytest.raises(ValueError):
        PartFile.open(tmp_path / "h.part", -1)


def test_write_after_close_fails_cleanly(tmp_path):
    part = tmp_path / "f.part"
    f = PartFile.open(part, 10)
    f.close()
    f.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        f.pwrite(0, b"a")
    with pytest.raises(StorageError, match="closed"):
        f.sync()
    assert part.read_bytes() == bytes(10)


def test_starting_the_writeback_is_best_effort_and_never_raises(tmp_path, monkeypatch):
    f = PartFile.open(tmp_path / "f.part", 10)
    f.pwrite(0, b"abc")
    assert f.start_writeback() is (storage._libc.sync_file_range is not None)
    monkeypatch.setattr(storage._libc, "sync_file_range", lambda *args: -1)  # a refusing kernel
    assert f.start_writeback() is False
    f.close()
    assert f.start_writeback() is False  # closed: nothing to start, and no error either
    monkeypatch.setattr(storage._libc, "sync_file_range", None)  # not Linux
    assert PartFile.open(tmp_path / "g.part", 10).start_writeback() is False


def test_close_waits_for_a_write_in_progress(tmp_path, monkeypatch):
    part = tmp_path / "f.part"
    f = PartFile.open(part, 10)
    entered, release = threading.Event(), threading.Event()
    real_pwrite = os.pwrite

    def slow_pwrite(fd, data, offset):
        entered.set()
        assert release.wait(10)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(storage.os, "pwrite", slow_pwrite)
    outcome = []
    writer = threading.Thread(target=lambda: outcome.append(f.pwrite(0, b"late")))
    writer.start()
    assert entered.wait(10)
    closer = threading.Thread(target=f.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() must wait for the write in progress"
    release.set()
    writer.join(10)
    closer.join(10)
    assert outcome == [None] and f.closed
    assert part.read_bytes()[:4] == b"late"


@pytest.mark.parametrize("code,words", [
    (errno.ENOSPC, "no space left on device while writing"),
    (errno.EDQUOT, "disk quota exceeded while writing"),
    (errno.EIO, "input/output error"),
    (errno.EROFS, "read-only file system"),
    (errno.EACCES, "permission denied"),
])
def test_write_errors_name_the_path_and_the_cause(tmp_path, monkeypatch, code, words):
    part = tmp_path / "f.part"

    def failing(fd, data, offset):
        raise OSError(code, os.strerror(code))

    with PartFile.open(part, 10) as f:
        monkeypatch.setattr(storage.os, "pwrite", failing)
        with pytest.raises(StorageError) as info:
            f.pwrite(0, b"a")
        monkeypatch.undo()
    message = str(info.value)
    assert words in message and str(part) in message and "kept" in message
    assert info.value.path == part and info.value.errno == code


def test_short_writes_are_continued(tmp_path, monkeypatch):
    part = tmp_path / "f.part"
    real_pwrite = os.pwrite

    def one_byte_at_a_time(fd, data, offset):
        return real_pwrite(fd, bytes(data[:1]), offset)

    with PartFile.open(part, 6) as f:
        monkeypatch.setattr(storage.os, "pwrite", one_byte_at_a_time)
        f.pwrite(0, b"abcdef")
        monkeypatch.undo()
    assert part.read_bytes() == b"abcdef"


def test_refuses_symlinks_and_special_files(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "link.part"
    link.symlink_to(victim)
    with pytest.raises(StorageError, match="symbolic link") as info:
        PartFile.open(link, 100)
    assert str(link) in str(info.value)
    assert victim.read_bytes() == b"precious" and link.is_symlink()
    fifo = tmp_path / "fifo.part"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="not a regular file"):
        PartFile.open(fifo, 100)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "dir.part").mkdir()
    with pytest.raises(StorageError):
        PartFile.open(tmp_path / "dir.part", 100)


def test_open_in_a_missing_directory(tmp_path):
    with pytest.raises(StorageError, match="no such file or directory") as info:
        PartFile.open(tmp_path / "nope" / "f.part", 10)
    assert str(tmp_path / "nope" / "f.part") in str(info.value)


# -- the resume record ----------------------------------------------------------------------------


def test_record_round_trip_and_no_temp_files(tmp_path):
    rec = make_record()
    path = record_path(tmp_path / "f")
    rec.save(path)
    assert ResumeRecord.load(path) == rec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.part.swift"]
    # saving again replaces it, still without leftovers
    rec2 = make_record(etag=None, last_modified=None, done=[(0, 100)])
    rec2.save(path)
    assert ResumeRecord.load(path) == rec2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.part.swift"]
    assert json.loads(path.read_text())["format"] == storage.RECORD_FORMAT


def test_record_ranges_touching_merge_but_unsorted_or_overlapping_are_refused(tmp_path):
    path = tmp_path / "f.part.swift"
    make_record(done=[(0, 10), (10, 25), (50, 60), (90, 100)]).save(path)
    assert list(ResumeRecord.load(path).done) == [(0, 25), (50, 60), (90, 100)]
    for bad in ([(50, 60), (0, 10)], [(0, 10), (5, 20)]):  # only a damaged record has these
        with pytest.raises(ValueError, match="out of order or overlaps"):
            make_record(done=bad)
    make_record(size=0, done=[]).save(path)
    assert ResumeRecord.load(path) == make_record(size=0, done=[])


@pytest.mark.parametrize("changes", [dict(size=-1), dict(done=[(0, 101)]), dict(done=[(5, 5)]),
                                     dict(done=[(-1, 3)]), dict(version=2), dict(url=None),
                                     dict(etag=5), dict(done=[(0, 1.5)]), dict(done=[(0, 1, 2)])])
def test_saving_a_bad_record_is_refused(tmp_path, changes):
    path = tmp_path / "f.part.swift"
    with pytest.raises(ValueError):
        make_record(**changes).save(path)
    assert not path.exists() and no_temp_files(tmp_path)


def good_json(**changes) -> bytes:
    obj = {"format": storage.RECORD_FORMAT, "version": 1, "url": "u", "final_url": "u",
           "size": 10, "etag": None, "last_modified": None, "done": [[0, 5]]}
    obj.update(changes)
    return json.dumps(obj).encode()


@pytest.mark.parametrize("content", [
    b"", b"{", b"[]", b"null", b"\xff\xfe garbage", b'{"version": 1}', good_json(version=99),
    good_json(format="something-else"), good_json(done=[[0, 11]]), good_json(done=[[3, 3]]),
    good_json(done=[[0, "5"]]), good_json(done={"0": 5}), good_json(done=[[0, True]]),
    good_json(size=True), good_json(size=-5), good_json(size=1.5), good_json(size=2 ** 64),
    good_json(url=5), good_json(etag=[]), good_json(version=True),
    json.dumps({k: v for k, v in json.loads(good_json()).items() if k != "done"}).encode(),
    b"[" * 100_000 + b"]" * 100_000,  # deep nesting must not crash the loader
    b'{"format": "swift-resume-record", "version": 1, "size": 1' + b"0" * 10_000 + b"}",
])
def test_damaged_records_are_ignored_with_a_warning(tmp_path, caplog, content):
    path = tmp_path / "f.part.swift"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="swift.storage"):
        assert ResumeRecord.load(path) is None
    assert str(path) in caplog.text


def test_the_good_json_is_accepted(tmp_path):
    path = tmp_path / "f.part.swift"
    path.write_bytes(good_json())
    assert ResumeRecord.load(path) == ResumeRecord(1, "u", "u", 10, None, None, [(0, 5)])


def test_absent_record_is_none_without_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert ResumeRecord.load(tmp_path / "absent.part.swift") is None
    assert caplog.text == ""


def test_oversized_directory_and_fifo_records_are_ignored(tmp_path, caplog, monkeypatch):
    big = tmp_path / "big.part.swift"
    with open(big, "wb") as f:
        f.truncate(MAX_RECORD_BYTES + 1)
    fifo = tmp_path / "fifo.part.swift"
    os.mkfifo(fifo)  # opening must not block waiting for a writer
    directory = tmp_path / "dir.part.swift"
    directory.mkdir()
    with caplog.at_level(logging.WARNING, logger="swift.storage"):
        for path in (big, fifo, directory):
            assert ResumeRecord.load(path) is None
    assert "larger than" in caplog.text and "not a regular file" in caplog.text


def test_failed_save_keeps_the_old_record_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "f.part.swift"
    old = make_record()
    old.save(path)

    def broken_replace(src, dst):
        raise OSError(errno.EIO, "boom")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(StorageError) as info:
        make_record(done=[(0, 100)]).save(path)
    monkeypatch.undo()
    assert str(path) in str(info.value) and "input/output error" in str(info.value)
    assert ResumeRecord.load(path) == old
    assert no_temp_files(tmp_path)


# -- finalize ---------------------------------------------------------------------------------------


def fallback_to_link(monkeypatch):
    monkeypatch.setattr(storage, "_renameat2_noreplace", lambda src, dst: False)


def fallback_to_checked_rename(monkeypatch):
    fallback_to_link(monkeypatch)

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(storage.os, "link", no_links)


STRATEGIES = {"renameat2": lambda mp: None, "link": fallback_to_link,
              "checked-rename": fallback_to_checked_rename}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_finalize_renames_and_removes_the_record(tmp_path, monkeypatch, strategy):
    STRATEGIES[strategy](monkeypatch)
    part, final = prepare(tmp_path)
    assert finalize(part, final, overwrite=False) == final
    assert final.read_text() == "new" and final.stat().st_nlink == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.iso"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_finalize_never_overwrites(tmp_path, monkeypatch, strategy):
    STRATEGIES[strategy](monkeypatch)
    final = tmp_path / "f.iso"
    final.write_text("precious")
    (tmp_path / "f (1).iso.part").write_text("another download")
    part, _ = prepare(tmp_path)
    got = finalize(part, final, overwrite=False)
    assert got == tmp_path / "f (2).iso" and got.read_text() == "new"
    assert final.read_text() == "precious"
    assert (tmp_path / "f (1).iso.part").read_text() == "another download"
    assert not part.exists() and not record_path(final).exists()


def test_finalize_does_not_replace_a_dangling_symlink_or_directory(tmp_path):
    final = tmp_path / "f.iso"
    final.symlink_to(tmp_path / "elsewhere")
    part, _ = prepare(tmp_path)
    assert finalize(part, final, overwrite=False).name == "f (1).iso"
    assert final.is_symlink() and not (tmp_path / "elsewhere").exists()
    (tmp_path / "d").mkdir()
    part, final = prepare(tmp_path, "d")
    assert finalize(part, final, overwrite=False).name == "d (1)"
    assert (tmp_path / "d").is_dir()


def test_finalize_with_overwrite(tmp_path):
    part, final = prepare(tmp_path)
    final.write_text("old")
    assert finalize(part, final, overwrite=True) == final and final.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.iso"]
    (tmp_path / "d").mkdir()
    part, final = prepare(tmp_path, "d")
    with pytest.raises(StorageError, match="is a directory"):
        finalize(part, final, overwrite=True)
    assert part.exists() and record_path(final).exists()


def test_finalize_a_missing_part(tmp_path):
    with pytest.raises(StorageError) as info:
        finalize(tmp_path / "gone.part", tmp_path / "gone", overwrite=False)
    assert str(tmp_path / "gone.part") in str(info.value)


def test_finalize_failure_keeps_part_and_record(tmp_path, monkeypatch):
    part, final = prepare(tmp_path)

    def broken(src, dst):
        raise OSError(errno.EIO, "boom")

    monkeypatch.setattr(storage, "_rename_noreplace", broken)
    with pytest.raises(StorageError, match="input/output error"):
        finalize(part, final, overwrite=False)
    assert part.read_text() == "new" and record_path(final).exists() and not final.exists()


def test_finalize_when_a_file_appears_during_the_rename(tmp_path, monkeypatch):
    """Another program creates the final name between our look and our rename."""
    part, final = prepare(tmp_path)
    real = storage._rename_noreplace
    calls = []

    def racing(src, dst):
        if not calls:
            Path(dst).write_text("sneaked in")
        calls.append(Path(dst).name)
        return real(src, dst)

    monkeypatch.setattr(storage, "_rename_noreplace", racing)
    got = finalize(part, final, overwrite=False)
    assert calls == ["f.iso", "f (1).iso"]
    assert got.name == "f (1).iso" and got.read_text() == "new"
    assert final.read_text() == "sneaked in"


# -- writable directories ------------------------------------------------------------------------------

def test_check_writable(tmp_path):
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    with pytest.raises(StorageError, match="does not exist") as info:
        check_writable(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is not a directory"):
        check_writable(tmp_path / "file")


def test_saving_a_100000_fragment_record_holds_no_list_per_range(tmp_path):
    import gc
    import tracemalloc
    from swift.planning import RangeSet
    n, size = 100_000, 1 << 40
    step = size // n
    done = RangeSet.from_json([[k * step, k * step + 10] for k in range(n)], size)
    record = make_record(size=size, done=done)
    path = tmp_path / "f.part.swift"
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        record.save(path)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"{peak} bytes to save {n} ranges"
    assert ResumeRecord.load(path) == record


def test_one_download_lock_per_output_path_names_its_holder(tmp_path):
    final = tmp_path / "same.bin"
    with storage.DownloadLock.acquire(final) as held:
        assert held.path == tmp_path / "same.bin.part.swift.lock"
        assert held.path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(storage.Busy, match=rf"same.bin is being downloaded by another swift "
                                               rf"process \(pid {os.getpid()}\)"):
            storage.DownloadLock.acquire(final)  # another open file: refused, in-process too
        assert sorted(p.name for p in tmp_path.iterdir()) == ["same.bin.part.swift.lock"]
    assert list(tmp_path.iterdir()) == []  # released: the lock file is gone
    storage.DownloadLock.acquire(final).release()  # and free again


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    final = tmp_path / "f"
    storage.lock_path(final).write_text("99999999\n")  # no one holds a lock on it
    with storage.DownloadLock.acquire(final) as held:
        assert held.path.read_text() == f"{os.getpid()}\n"


def test_a_long_name_gets_a_short_lock_file(tmp_path):
    final = tmp_path / ("n" * 250)
    path = storage.lock_path(final)
    assert path.parent == tmp_path and len(path.name) < 60 and path.name.startswith(".swift-")
    with storage.DownloadLock.acquire(final):
        assert path.exists()


def test_free_space_is_checked_up_front_and_the_message_says_how_much(tmp_path):
    available = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    storage.check_free_space(tmp_path, 1, tmp_path / "f.part")  # fits
    with pytest.raises(storage.StorageError, match=r"no space left on device for .*f\.part "
                                                   r"\(.* needed, .* free\); free some space") as info:
        storage.check_free_space(tmp_path, available + (1 << 40), tmp_path / "f.part")
    assert info.value.errno == errno.ENOSPC and info.value.code.value == "storage"
    assert list(tmp_path.iterdir()) == []  # nothing was created to find out


def test_the_origin_mark_names_the_url_and_the_version(tmp_path):
    from swift.storage import FileIdentity, mark_origin, same_origin
    f = tmp_path / "data.bin"
    f.write_bytes(b"x" * 10)
    this = FileIdentity("http://h/a/data.bin?token=secret", "http://h/a/data.bin", 10, '"v1"', None)
    assert not same_origin(f, this)  # no mark: no proof
    assert mark_origin(f, this)
    assert same_origin(f, this)
    assert b"secret" not in os.getxattr(f, "user.swift.origin")  # a hash of the URL, not the URL
    for other in (FileIdentity("http://h/b/data.bin", "http://h/b/data.bin", 10, '"v1"', None),
                  FileIdentity(this.url, this.final_url, 11, '"v1"', None),
                  FileIdentity(this.url, this.final_url, 10, '"v2"', None),
                  FileIdentity(this.url, this.final_url, 10, '"v1"', "Tue, 01 Dec 2026 00:00:00 GMT")):
        assert not same_origin(f, other), other
    os.setxattr(f, "user.swift.origin", b"{not json")
    assert not same_origin(f, this)
