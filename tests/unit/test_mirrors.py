"""The mirror book: agreement before use, choice by rate within a connection limit, leaving out with a reason."""

from __future__ import annotations

import pytest

from swift.mirrors import JUDGE_BYTES, MAX_BAD_PIECES, MirrorBook

A, B, C = "http://127.0.0.1:1/f", "http://127.0.0.2:1/f", "http://127.0.0.3:1/f"


def _book(*urls, per_mirror=2, **kw) -> MirrorBook:
    book = MirrorBook(urls or (A, B), per_mirror=per_mirror, **kw)
    for url in book.urls():
        assert book.admit(url, size=100, expected_size=100, same_validator=True, hashed=False) is None
    return book


def test_a_mirror_that_disagrees_on_the_length_is_left_out_with_the_numbers():
    book = MirrorBook([A, B])
    assert book.admit(A, size=100, expected_size=100, same_validator=None, hashed=True) is None
    why = book.admit(B, size=99, expected_size=100, same_validator=None, hashed=True)
    assert why == "it says the file has 99 bytes, not 100"
    assert book.usable() == [A] and book.left_out() == {B: why}


def test_without_a_hash_the_validator_must_match_and_with_one_it_need_not():
    book = MirrorBook([A, B, C])
    assert "validator" in book.admit(A, size=1, expected_size=1, same_validator=False, hashed=False)
    assert "no validator" in book.admit(B, size=1, expected_size=1, same_validator=None, hashed=False)
    assert book.admit(C, size=1, expected_size=1, same_validator=False, hashed=True) is None
    assert book.usable() == [C]


def test_a_mirror_that_gives_no_length_is_not_used():
    book = MirrorBook([A])
    assert "length" in book.admit(A, size=None, expected_size=None, same_validator=True, hashed=True)


def test_connections_per_mirror_are_limited_and_unmeasured_mirrors_are_tried_first():
    book = _book(A, B, per_mirror=2)
    got = [book.acquire(0.0) for _ in range(5)]
    assert [g[0] for g in got[:4]].count(A) == 2 and [g[0] for g in got[:4]].count(B) == 2
    assert got[4] is None
    url, ticket = got[0]
    book.release(url, ticket, nbytes=10, seconds=1.0, ok=True)
    assert book.acquire(0.0)[0] == url


def test_the_fastest_measured_mirror_is_chosen_first():
    book = _book(A, B, per_mirror=4)
    a, ta = book.acquire(0.0)
    b, tb = book.acquire(0.0)
    book.release(a, ta, nbytes=JUDGE_BYTES, seconds=4.0, ok=True)
    book.release(b, tb, nbytes=JUDGE_BYTES, seconds=1.0, ok=True)
    assert book.acquire(1.0)[0] == B and book.usable()[0] == B


def test_a_mirror_that_served_a_bad_piece_is_avoided_while_another_is_free():
    book = _book(A, B, per_mirror=1)
    assert book.acquire(0.0, avoid=[A])[0] == B
    assert book.acquire(0.0, avoid=[A])[0] == A  # B is busy: A rather than nothing


def test_access_refusals_leave_out_at_once_other_faults_after_strikes():
    book = _book(A, B)
    assert book.failed(A, "404 Not Found", final=True) == "404 Not Found"
    assert book.failed(B, "connection reset", final=False) is None
    assert "2 failures in a row" in book.failed(B, "connection reset", final=False)
    assert book.usable() == [] and set(book.left_out()) == {A, B}


def test_a_success_clears_the_strikes():
    book = _book(A)
    book.failed(A, "reset", final=False)
    url, ticket = book.acquire(0.0)
    book.release(url, ticket, nbytes=5, seconds=0.1, ok=True)
    assert book.failed(A, "reset", final=False) is None


def test_two_bad_pieces_leave_a_mirror_out_and_name_the_last():
    book = _book(A, B)
    assert book.bad_piece(A, 3) is None
    why = book.bad_piece(A, 7)
    assert MAX_BAD_PIECES == 2 and "piece 7" in why and book.usable() == [B]
    assert book.summary()[0]["bad_pieces"] == 2


def test_a_much_slower_mirror_is_left_out_but_never_the_last_one():
    book = _book(A, B, C, per_mirror=4, slow_factor=8)
    for url, seconds in ((A, 1.0), (B, 20.0), (C, 2.0)):
        got, ticket = book.acquire(0.0)
        book.release(url, ticket, nbytes=JUDGE_BYTES, seconds=seconds, ok=True)
    out = book.judge(5.0)
    assert [u for u, _ in out] == [B] and "slower than the best" in out[0][1]
    alone = _book(A, per_mirror=1)
    u, t = alone.acquire(0.0)
    alone.release(u, t, nbytes=JUDGE_BYTES, seconds=100.0, ok=True)
    assert alone.judge(200.0) == []


def test_a_stalled_mirror_is_left_out_once_another_is_measured():
    book = _book(A, B, per_mirror=1, stall_after=10)
    a, ta = book.acquire(0.0)
    b, tb = book.acquire(0.0)
    assert book.judge(30.0) == []  # nobody measured yet: nothing to compare with
    book.release(b, tb, nbytes=JUDGE_BYTES, seconds=1.0, ok=True)
    book.progress(a, ta, 0, 0.0)
    assert book.judge(5.0) == []
    assert [u for u, _ in book.judge(10.0)] == [a]


def test_per_mirror_must_be_positive():
    with pytest.raises(ValueError):
        MirrorBook([A], per_mirror=0)


def test_a_helpers_jobs_spread_over_the_mirrors_and_secret_ones_stay_off_plain_links():
    from swift import http
    from swift.engine.sources.mirror import LockedBook, MirrorSources
    secret = "http://user:pw@127.0.0.3:1/f"
    book = LockedBook(_book(A, B, secret, per_mirror=4))
    probes = {u: http.ProbeResult(u, u, 100, True, http.Validator('"e"'), remote=http.RemoteFile(u))
              for u in (A, B, secret)}
    shared = MirrorSources(book, probes, notice=lambda text: None)
    assert sorted(shared.for_helpers(private=False)) == [A, B]
    assert secret in shared.for_helpers(private=True)
    firsts = [shared.take_for_helper("h1") for _ in range(4)]
    assert firsts.count(A) == 2 and firsts.count(B) == 2  # each helper's link to each mirror is its own
    shared.done_for_helper("h1", A)
    assert shared.take_for_helper("h1") == A
    assert shared.take_for_helper("h2") in (A, B)  # another helper counts from zero
