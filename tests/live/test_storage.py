"""The output file against a real file system's limits, root only (skipped otherwise):
a tiny tmpfs that fills up or turns read-only, and a directory seen as another user
(a forked child with uid nobody)."""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from swift.storage import PartFile, ResumeRecord, StorageError, check_writable, finalize, part_path, record_path
from tests.helpers import MiB, is_root

KiB = 1 << 10


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".swift-")]


def make_record(**changes) -> ResumeRecord:
    fields = dict(version=1, url="http://127.0.0.1/f", final_url="http://127.0.0.1/g",
                  size=100, etag='"e"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT",
                  done=[(0, 10), (20, 30)])
    fields.update(changes)
    return ResumeRecord(**fields)


def prepare(directory: Path, name: str = "f.iso", data: str = "new") -> tuple[Path, Path]:
    final = directory / name
    part = part_path(final)
    part.write_text(data)
    make_record().save(record_path(final))
    return part, final


def run_as_nobody(func, *args) -> str:
    """``func(*args)`` in a forked child with uid/gid nobody; what it returns, as text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.write(write_end, str(func(*args)).encode())
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(write_end, f"CHILD FAILED: {exc!r}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)
        output = b""
        if ready:
            while chunk := os.read(read_end, 4096):
                output += chunk
    finally:
        os.close(read_end)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - already gone
            pass
        os.waitpid(pid, 0)
    return output.decode(errors="replace")


def check_writable_message(directory: Path) -> str:
    try:
        check_writable(directory)
    except StorageError as exc:
        return str(exc)
    return "WRITABLE"


def test_directory_without_write_permission(tmp_path):
    """As root, checked in a child running as nobody: root ignores permission bits."""
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        if is_root():
            # nobody must be able to reach the directory to find it locked
            reachable = Path(tempfile.mkdtemp(prefix="swift-test-"))
            try:
                os.chmod(reachable, 0o755)
                locked = reachable / "locked"
                locked.mkdir(mode=0o555)
                os.chmod(locked, 0o555)
                message = run_as_nobody(check_writable_message, locked)
            finally:
                os.chmod(locked, 0o755)
                shutil.rmtree(reachable)
        else:
            message = check_writable_message(locked)
        assert message == f"directory {locked} is not writable (permission denied)"
    finally:
        os.chmod(tmp_path / "locked", 0o755)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    if not is_root():
        pytest.skip("needs root to mount a tmpfs")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, timeout=30)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')[-200:]}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(directory: Path) -> None:
    """Use up all the space in ``directory``'s file system."""
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(64 * KiB))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def remount_read_only(mnt: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True,
                   timeout=30)


@pytest.mark.root
def test_no_room_for_a_new_download(tiny_tmpfs):
    part = tiny_tmpfs / "big.part"
    with pytest.raises(StorageError) as info:
        PartFile.open(part, 4 * MiB)
    message = str(info.value)
    assert str(part) in message and "no space left on device" in message and "4.0 MiB" in message
    assert info.value.errno == errno.ENOSPC
    assert not part.exists()  # we created it, nothing of value was in it


@pytest.mark.root
def test_no_room_to_grow_an_existing_part_keeps_its_data(tiny_tmpfs):
    part = tiny_tmpfs / "big.part"
    part.write_bytes(b"d" * (256 * KiB))
    with pytest.raises(StorageError, match="no space left.*partial download is kept"):
        PartFile.open(part, 4 * MiB)
    assert part.read_bytes() == b"d" * (256 * KiB)


@pytest.mark.root
def test_disk_full_while_writing_names_the_path_and_keeps_data_and_record(tiny_tmpfs):
    part = tiny_tmpfs / "big.part"
    rec = ResumeRecord(1, "u", "u", 4 * MiB, None, None, [(0, 512 * KiB)])
    rec.save(record_path(tiny_tmpfs / "big"))
    with PartFile.open(part, None, preallocate=False) as f:
        f.pwrite(0, b"a" * (512 * KiB))
        with pytest.raises(StorageError) as info:
            f.pwrite(512 * KiB, b"b" * (2 * MiB))
    message = str(info.value)
    assert message.startswith(f"no space left on device while writing {part}")
    assert "partial download is kept" in message and "resume" in message
    assert part.read_bytes()[:512 * KiB] == b"a" * (512 * KiB)
    assert ResumeRecord.load(record_path(tiny_tmpfs / "big")) == rec


@pytest.mark.root
def test_disk_full_while_saving_the_record_keeps_the_old_one(tiny_tmpfs):
    path = record_path(tiny_tmpfs / "f")
    old = make_record()
    old.save(path)
    fill(tiny_tmpfs)
    with pytest.raises(StorageError, match="no space left on device while saving the resume record"):
        make_record(done=[(0, 100)]).save(path)
    assert ResumeRecord.load(path) == old
    assert no_temp_files(tiny_tmpfs)


@pytest.mark.root
def test_read_only_directory(tiny_tmpfs):
    part, final = prepare(tiny_tmpfs)
    remount_read_only(tiny_tmpfs)
    with pytest.raises(StorageError) as info:
        check_writable(tiny_tmpfs)
    assert str(info.value) == f"directory {tiny_tmpfs} is not writable (read-only file system)"
    with pytest.raises(StorageError, match="read-only file system while opening"):
        PartFile.open(tiny_tmpfs / "new.part", 10)
    with pytest.raises(StorageError, match="read-only file system"):
        make_record(done=[]).save(record_path(final))
    with pytest.raises(StorageError, match="read-only file system") as info:
        finalize(part, final, overwrite=False)
    assert str(part) in str(info.value)
    assert part.read_text() == "new" and ResumeRecord.load(record_path(final)) == make_record()
    assert not final.exists()
