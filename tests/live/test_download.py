"""The download engine through real ``node.py get`` processes: the lock, disk messages, stops."""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from swiftlab.cluster import wait_until
from swiftlab.origin import make_file

from tests.helpers import MiB, sha256_file


def test_a_second_get_to_the_same_output_is_refused_and_touches_nothing(cluster, origin, origin_root):
    digest = make_file(origin_root / "s.bin", 8 * MiB, seed=21)
    origin.configure(host_rate=MiB)  # about 8 s: the first is still running when the second starts
    disc = cluster.discovery()
    out = cluster.workdir / "out" / "same.bin"
    out.parent.mkdir()
    first = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/s.bin"), get_extra=["-o", str(out)])
    lock = out.with_name("same.bin.part.swift.lock")
    wait_until(lambda: lock.exists() and out.with_name("same.bin.part.swift").exists(), 20,
               "the first download's lock and record")
    before = sorted(p.name for p in out.parent.iterdir())
    second = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/s.bin"), get_extra=["-o", str(out)])
    code = second.wait(60)
    text = second.output()
    assert code == 1, text
    assert f"{out} is being downloaded by another swift process (pid {first.popen.pid})" in text
    assert "Traceback" not in text and "resuming" not in text
    assert sorted(p.name for p in out.parent.iterdir()) == before
    assert first.popen.poll() is None  # undisturbed
    origin.configure(host_rate=None)
    assert first.wait(60) == 0, first.output()
    assert sha256_file(out) == digest
    assert sorted(p.name for p in out.parent.iterdir()) == ["same.bin"]  # no stale files


# -- what a message says is on disk is true ---------------------------------------------------------
def _get(cluster, url: str, directory, *args: str):
    return cluster.get("127.0.0.1:1", url, extra=["--dir", str(directory)],
                       get_extra=["--no-peers", *args])


def _last_line(proc) -> str:
    return [line for line in proc.output().splitlines() if line.strip()][-1]


def _fill(directory) -> None:
    """Take every free byte of ``directory``'s file system."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for block in (64 * 1024, 512):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


@pytest.mark.parametrize("behaviour", [{"ignore_ranges": True}, {"omit_length": True}])
def test_a_full_disk_in_a_plain_stream_says_the_partial_is_removed(cluster, origin, origin_root,
                                                                   tmpfs, behaviour):
    make_file(origin_root / "p.bin", 12 * MiB, seed=22)
    origin.configure(path="/p.bin", **behaviour)
    origin.configure(host_rate=2 * MiB)
    disk = tmpfs("16m")
    get = _get(cluster, origin.url("/p.bin"), disk)
    wait_until(lambda: (disk / "p.bin.part").exists() and (disk / "p.bin.part").stat().st_size > 0,
               20, "the plain stream to write")
    _fill(disk)
    assert get.wait(60) == 1, get.output()
    last = _last_line(get)
    assert last.startswith("error:") and "no space left" in last, get.output()
    assert "the partial download was removed: without byte ranges it cannot be resumed" in last
    assert "kept" not in last and "Traceback" not in get.output()
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # true: nothing of ours is left


def test_a_plain_stream_too_big_for_the_disk_is_refused_before_the_first_byte(cluster, origin,
                                                                               origin_root, tmpfs):
    make_file(origin_root / "b.bin", 12 * MiB, seed=23)
    origin.configure(path="/b.bin", ignore_ranges=True)
    disk = tmpfs("8m")
    get = _get(cluster, origin.url("/b.bin"), disk)
    assert get.wait(60) == 1, get.output()
    last = _last_line(get)
    assert last.startswith("error:") and "no space left on device for" in last, get.output()
    assert "12.0 MiB needed" in last and "free some space and try again" in last
    assert "removed" not in last and "kept" not in last
    assert list(disk.iterdir()) == []


# -- a stop request ends the process within two seconds, the record true ------------------------------
def _record_is_true(final, original) -> int:
    from swift.storage import ResumeRecord, part_path, record_path
    rec = ResumeRecord.load(record_path(final))
    assert rec is not None
    with open(part_path(final), "rb") as part, open(original, "rb") as src:
        for start, end in rec.done:
            assert os.pread(part.fileno(), end - start, start) == os.pread(src.fileno(), end - start, start)
    return rec.done.total


@pytest.mark.parametrize("behaviour", [{}, {"stall_after": 2 * MiB, "stall_seconds": 60}])
def test_sigterm_ends_a_download_within_two_seconds_with_a_true_record(cluster, origin, origin_root,
                                                                       behaviour):
    make_file(origin_root / "t.bin", 32 * MiB, seed=24)
    origin.configure(path="/t.bin", **behaviour)
    origin.configure(host_rate=4 * MiB)
    get = _get(cluster, origin.url("/t.bin"), cluster.workdir)
    final = cluster.workdir / "t.bin"
    wait_until(lambda: _claims(final) > 0, 30, "a record that claims something")
    started = time.monotonic()
    os.kill(get.popen.pid, signal.SIGTERM)
    code = get.wait(10)
    assert time.monotonic() - started <= 2.0, get.output()
    assert code != 0 and "Traceback" not in get.output()
    assert _record_is_true(final, origin_root / "t.bin") > 0
    assert not (cluster.workdir / "t.bin.part.swift.lock").exists()


def test_sigterm_ends_a_plain_stream_within_two_seconds_and_says_it_is_removed(cluster, origin,
                                                                              origin_root):
    make_file(origin_root / "u.bin", 32 * MiB, seed=25)
    origin.configure(path="/u.bin", ignore_ranges=True, stall_after=MiB, stall_seconds=60)
    get = _get(cluster, origin.url("/u.bin"), cluster.workdir)
    part = cluster.workdir / "u.bin.part"
    wait_until(lambda: part.exists() and part.stat().st_size >= MiB, 30, "the stream to stall")
    started = time.monotonic()
    os.kill(get.popen.pid, signal.SIGTERM)
    code = get.wait(10)
    assert time.monotonic() - started <= 2.0, get.output()
    assert code != 0 and "Traceback" not in get.output()
    assert "cancelled; the partial download was removed" in _last_line(get)
    assert list(cluster.workdir.glob("u.bin*")) == []


def _claims(final) -> int:
    from swift.storage import ResumeRecord, record_path
    rec = ResumeRecord.load(record_path(final))
    return rec.done.total if rec else 0
