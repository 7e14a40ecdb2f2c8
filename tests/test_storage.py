"""The output file and its resume record, in temp dirs (tmpfs for a full disk)."""

from __future__ import annotations

import subprocess

import pytest

from swift.storage import (PartFile, ResumeRecord, StorageError, check_writable, finalize,
                           part_path, record_path)




def test_pwrite_in_any_order(tmp_path):
    part = tmp_path / "f.part"
    with PartFile.open(part, 30) as f:
        f.pwrite(20, b"c" * 10)
        f.pwrite(0, b"a" * 10)
        f.pwrite(10, memoryview(b"b" * 10))
        f.sync()
    assert part.read_bytes() == b"a" * 10 + b"b" * 10 + b"c" * 10


def test_open_keeps_existing_data(tmp_path):
    part = tmp_path / "f.part"
    part.write_bytes(b"xyz" + bytes(7))
    with PartFile.open(part, 10):
        pass
    assert part.read_bytes()[:3] == b"xyz"


def test_record_round_trip_and_no_temp_files(tmp_path):
    rec = ResumeRecord(1, "http://h/f", "http://h/f", 100, '"e"', None, [(0, 10), (20, 30)])
    path = record_path(tmp_path / "f")
    rec.save(path)
    assert ResumeRecord.load(path) == rec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.part.swift"]


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"version": 1}', b'{"version": 99}',
                                     b'{"version":1,"url":"u","final_url":"u","size":10,"etag":null,'
                                     b'"last_modified":null,"done":[[0,11]]}'])
def test_damaged_records_are_ignored(tmp_path, content):
    path = tmp_path / "f.part.swift"
    path.write_bytes(content)
    assert ResumeRecord.load(path) is None
    assert ResumeRecord.load(tmp_path / "absent") is None


def test_finalize_never_overwrites(tmp_path):
    final = tmp_path / "f.iso"
    final.write_text("precious")
    part = part_path(final)
    part.write_text("new")
    record_path(final).write_text("{}")
    got = finalize(part, final, overwrite=False)
    assert got.name == "f (1).iso" and got.read_text() == "new"
    assert final.read_text() == "precious"
    assert not part.exists() and not record_path(final).exists()
    part.write_text("newer")
    assert finalize(part, final, overwrite=True) == final and final.read_text() == "newer"


def test_missing_directory(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        check_writable(tmp_path / "nope")


@pytest.fixture
def tiny_tmpfs(tmpfs):
    return tmpfs("1m")


def test_full_disk_names_the_path_and_keeps_data(tiny_tmpfs):
    part = tiny_tmpfs / "big.part"
    with pytest.raises(StorageError) as exc:
        PartFile.open(part, 4 << 20)
    assert str(part) in str(exc.value) and "no space left" in str(exc.value)
    # without preallocation the error comes at the write, and earlier data stays
    rec = ResumeRecord(1, "u", "u", 4 << 20, None, None, [(0, 512 << 10)])
    rec.save(record_path(tiny_tmpfs / "big"))
    with PartFile.open(part, None, preallocate=False) as f:
        f.pwrite(0, b"a" * (512 << 10))
        with pytest.raises(StorageError, match="no space left"):
            f.pwrite(512 << 10, b"b" * (2 << 20))
    assert part.read_bytes()[: 512 << 10] == b"a" * (512 << 10)
    assert ResumeRecord.load(record_path(tiny_tmpfs / "big")) == rec


def test_read_only_directory(tiny_tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    with pytest.raises(StorageError) as exc:
        check_writable(tiny_tmpfs)
    assert str(tiny_tmpfs) in str(exc.value) and "read-only" in str(exc.value)
