"""The test origin's pure parts (swiftlab.origin): generated files, Range parsing, sizes, the
token bucket on a fake clock.
"""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from swiftlab.origin import BLOCK, RangeNotSatisfiable, TokenBucket, make_file, parse_range, parse_size
from tests.helpers import MiB


def test_make_file_is_deterministic_and_returns_its_sha256(tmp_path):
    size = 3 * MiB + 5
    a = make_file(tmp_path / "a", size, seed=4)
    b = make_file(tmp_path / "b", size, seed=4)
    c = make_file(tmp_path / "c", size, seed=5)
    data = (tmp_path / "a").read_bytes()
    assert a == b != c
    assert len(data) == size and hashlib.sha256(data).hexdigest() == a
    assert data == (tmp_path / "b").read_bytes()
    # every 4 KiB piece is unique: a piece written at the wrong offset never hashes the same
    pieces = [data[i:i + 4096] for i in range(0, size, 4096)]
    assert len(set(pieces)) == len(pieces)
    # and not only at the stamps: the bulk of each block differs too
    assert data[64:4096] != data[BLOCK + 64:BLOCK + 4096]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1])
def test_make_file_sizes(tmp_path, size):
    digest = make_file(tmp_path / "x", size, seed="s")
    data = (tmp_path / "x").read_bytes()
    assert len(data) == size and hashlib.sha256(data).hexdigest() == digest


def test_make_file_is_fast(tmp_path):
    started = time.monotonic()
    make_file(tmp_path / "big", 64 * MiB)
    assert 64 * MiB / (time.monotonic() - started) > 100e6  # ~600 MB/s here; loose for a busy machine


def test_parse_size():
    assert parse_size("256M") == 256 * MiB
    assert parse_size("1G") == 1 << 30
    assert parse_size("64KiB") == 64 << 10
    assert parse_size("1.5m") == 3 * MiB // 2
    assert parse_size("1000") == 1000
    with pytest.raises(Exception):
        parse_size("lots")


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-9", (0, 10)),
    ("bytes=5-", (5, 100)),
    ("bytes=-10", (90, 100)),
    ("bytes=-1000", (0, 100)),
    ("bytes=90-1000", (90, 100)),
    ("Bytes = 1-2", (1, 3)),
    ("bytes=99-99", (99, 100)),
    ("bytes=5-4", None),            # invalid: ignored, whole body
    ("bytes=0-1,5-6", None),        # several ranges: whole body
    ("items=0-1", None),
    ("bytes=a-b", None),
    ("bytes=+1-2", None),
    ("bytes=1_0-20", None),
    ("bytes=", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header, size", [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100),
                                          ("bytes=0-", 0), ("bytes=-5", 0)])
def test_parse_range_unsatisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_token_bucket_runs_in_debt_at_the_exact_rate():
    now = [100.0]
    bucket = TokenBucket(1000, burst=500, clock=lambda: now[0])
    assert bucket.reserve(500) == 0              # the burst
    assert bucket.reserve(1000) == pytest.approx(1.0)
    assert bucket.reserve(1000) == pytest.approx(2.0)  # queued behind the first taker
    now[0] += 3.0                                 # the debt is paid exactly
    assert bucket.reserve(0) == 0
    now[0] += 100.0                               # idle time refills only up to the burst
    assert bucket.reserve(1000) == pytest.approx(0.5)
    bucket.set_rate(2000)                         # the debt is kept, paid at the new rate
    assert bucket.reserve(0) == pytest.approx(0.25)


def test_token_bucket_take_gives_up_when_stopping():
    from swiftlab.origin import Stopping
    stop = threading.Event()
    stop.set()
    bucket = TokenBucket(10, burst=1)
    with pytest.raises(Stopping):
        bucket.take(1000, stop)
