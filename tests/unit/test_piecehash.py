"""Per-piece SHA-256 while bytes arrive (``swift.piecehash``): any order, bounded memory."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings, strategies as st

from swift import piecehash
from swift.piecehash import MAX_PIECES, MIN_PIECE, PieceHasher, piece_size_for, pieces_within
from tests.helpers import examples

KiB = 1 << 10


def blocks_of(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [(a, data[a:b]) for a, b in zip(points, points[1:]) if b > a]


def expected(data: bytes, piece: int) -> dict[int, str]:
    return {i: hashlib.sha256(data[i * piece:(i + 1) * piece]).hexdigest()
            for i in range(-(-len(data) // piece))}


def test_piece_size_is_one_mib_up_to_4_gib_and_doubles_beyond():
    assert piece_size_for(0) == MIN_PIECE
    assert piece_size_for(4096 * MIN_PIECE) == MIN_PIECE
    assert piece_size_for(4096 * MIN_PIECE + 1) == 2 * MIN_PIECE
    for size in (1, 10 << 30, 1 << 40, (1 << 50) + 7):
        piece = piece_size_for(size)
        assert -(-size // piece) <= MAX_PIECES and piece & (piece - 1) == 0


def test_blocks_in_order_give_every_piece_its_sha256_and_hold_nothing():
    data = random.Random(1).randbytes(5 * 64 * KiB + 100)
    hasher = PieceHasher(len(data), 64 * KiB)
    done = []
    for offset in range(0, len(data), 10_000):
        done += hasher.feed(offset, data[offset:offset + 10_000])
        assert hasher.pending_bytes <= 10_000
    assert dict(done) == expected(data, 64 * KiB) == hasher.digests
    assert hasher.pending_bytes == 0 and not hasher.lost


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.lists(st.integers(0, 1 << 20), max_size=30),
       st.randoms(use_true_random=False), st.integers(1, 700))
def test_any_order_and_split_of_blocks_gives_the_same_digests(data, cuts, rnd, piece):
    blocks = blocks_of(data, cuts)
    rnd.shuffle(blocks)
    hasher = PieceHasher(len(data), piece, max_pending=len(data))
    for offset, block in blocks:
        hasher.feed(offset, block)
    assert hasher.digests == expected(data, piece)
    assert hasher.pending_bytes == 0


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.lists(st.integers(0, 1 << 20), max_size=20),
       st.randoms(use_true_random=False))
def test_a_byte_given_twice_by_a_race_is_hashed_once(data, cuts, rnd):
    blocks = blocks_of(data, cuts)
    doubled = blocks + rnd.sample(blocks, len(blocks) // 2)
    rnd.shuffle(doubled)
    hasher = PieceHasher(len(data), 256, max_pending=4 * len(data))
    for offset, block in doubled:
        hasher.feed(offset, block)
    assert hasher.digests == expected(data, 256)


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(min_size=1, max_size=4000), st.lists(st.integers(0, 1 << 20), max_size=40),
       st.randoms(use_true_random=False), st.integers(0, 1500))
def test_pending_bytes_never_pass_the_bound_and_a_piece_over_it_is_lost_not_wrong(
        data, cuts, rnd, bound):
    blocks = blocks_of(data, cuts)
    rnd.shuffle(blocks)
    hasher = PieceHasher(len(data), 512, max_pending=bound)
    for offset, block in blocks:
        hasher.feed(offset, block)
        assert hasher.pending_bytes <= bound
    want = expected(data, 512)
    for index, digest in hasher.digests.items():
        assert digest == want[index]
    assert set(hasher.digests) | hasher.lost == set(want)


def test_discarded_bytes_lose_every_piece_they_touch():
    data = bytes(range(256)) * 16  # 4 KiB, pieces of 1 KiB
    hasher = PieceHasher(len(data), 1024)
    hasher.feed(0, data[:3000])
    assert set(hasher.digests) == {0, 1}
    hasher.discard(1000, 2100)  # a liar's bytes, written then dropped
    hasher.feed(1000, b"\0" * 1100)
    hasher.feed(3000, data[3000:])
    assert set(hasher.digests) == {3} and hasher.lost == {0, 1, 2}


def test_bytes_outside_the_file_are_refused():
    with pytest.raises(ValueError):
        PieceHasher(10, MIN_PIECE).feed(8, b"abc")


def test_pieces_within_names_only_whole_pieces():
    size, piece = 10 * 100 + 50, 100
    assert pieces_within([(0, 250), (300, 1050)], size, piece) == [0, 1, 3, 4, 5, 6, 7, 8, 9, 10]
    assert pieces_within([(50, 199)], size, piece) == []
    assert piecehash.piece_range(10, size, piece) == (1000, 1050)


def test_what_a_hasher_computed_is_a_piece_hashes_that_checks_the_same_bytes():
    """One module, two directions: hashes computed while bytes arrive (sharing) and
    trusted hashes a file is checked against (a Metalink's pieces)."""
    data = random.Random(3).randbytes(3 * 1024 + 10)
    hasher = PieceHasher(len(data), 1024)
    hasher.feed(0, data)
    trusted = piecehash.PieceHashes("sha256", 1024, len(data),
                                    tuple(hasher.digests[i] for i in range(hasher.count)))
    assert all(trusted.check(i, data[i * 1024:(i + 1) * 1024]) for i in range(hasher.count))
    assert not trusted.check(0, b"\0" * 1024)


def test_a_digest_read_back_elsewhere_is_taken_only_for_a_piece_nothing_was_fed_to():
    hasher = PieceHasher(3 * MIN_PIECE)
    assert hasher.known(0, "a" * 64) and hasher.digests[0] == "a" * 64
    assert not hasher.known(0, "b" * 64)  # already hashed
    hasher.feed(MIN_PIECE, b"x" * 10)  # bytes of piece 1 arrived: they decide
    assert not hasher.known(1, "b" * 64) and 1 not in hasher.digests
    hasher.discard(2 * MIN_PIECE, 2 * MIN_PIECE + 1)  # piece 2 was given up
    assert not hasher.known(2, "b" * 64) and 2 not in hasher.digests
    assert hasher.settled(0) and hasher.settled(2) and not hasher.settled(1)
    with pytest.raises(ValueError):
        hasher.known(3, "a" * 64)
