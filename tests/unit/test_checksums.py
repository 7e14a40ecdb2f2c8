"""Checksums: parsing ``ALGO:HEX`` and hashing a file that a stop request can interrupt."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from swift.checksums import DigestStopped, file_digest, parse_checksum


def test_a_checksum_is_parsed_and_a_bad_one_says_what_is_expected():
    assert parse_checksum(" SHA256 : " + "A" * 64) == ("sha256", "a" * 64)
    with pytest.raises(ValueError, match="a md5 checksum is 32 hex digits"):
        parse_checksum("md5:abc")
    with pytest.raises(ValueError, match="ALGO:HEX"):
        parse_checksum("crc32:00000000")


def test_file_digest_is_the_files_hash(tmp_path):
    path = tmp_path / "f"
    data = bytes(range(256)) * 10_000
    path.write_bytes(data)
    assert file_digest(path, "sha1") == hashlib.sha1(data).hexdigest()


def test_hashing_a_huge_file_ends_within_a_second_of_a_stop_request(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 << 30)  # 64 GiB of holes: minutes to hash, no disk used
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(DigestStopped, match="stopped while computing the sha256 checksum"):
            file_digest(path, "sha256", stop)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 1.3
