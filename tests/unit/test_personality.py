"""The generative origin's pure parts: personalities, what a plain GET returns, the judge."""

from __future__ import annotations

import gzip
import random

import pytest

from swiftlab.personality import AXES, Personality, judge, refusal_kind


def test_every_axis_value_is_drawn_and_the_undecidable_pair_never():
    rng = random.Random(5)
    drawn = [Personality.draw(rng) for _ in range(3000)]
    for axis, values in AXES.items():
        assert {getattr(p, axis) for p in drawn} == set(values), axis
    assert not [p for p in drawn if p.failures == "early-close" and p.lengths == "missing"]


def test_a_value_off_its_axis_is_refused():
    with pytest.raises(ValueError, match="ranges must be one of"):
        Personality(ranges="sometimes")
    with pytest.raises(ValueError, match="cannot be told"):
        Personality(failures="early-close", lengths="missing")


def test_the_plain_get_body_is_the_file_as_served():
    p = Personality(size=5000, seed=9)
    assert len(p.body) == 5000 and p.body == p.content
    gz = Personality(size=5000, seed=9, coding="gzip")
    assert gzip.decompress(gz.body) == p.content and gz.body != p.content


@pytest.fixture
def saved(tmp_path):
    return tmp_path / "f.bin"


def test_the_right_bytes_are_right_and_any_other_bytes_wrong(saved):
    saved.write_bytes(b"abc")
    assert judge(0, "done", saved, b"abc").outcome == "right"
    assert judge(0, "done", saved, b"abd").outcome == "wrong"
    saved.unlink()
    assert judge(0, "done", saved, b"abc").outcome == "wrong"


def test_a_refusal_is_one_error_line_and_no_file(saved):
    assert judge(1, "note: x\nerror: the server answered 503", saved, b"x").outcome == "refused"
    assert judge(1, "it broke", saved, b"x").outcome == "unclear"
    assert judge(1, "Traceback (most recent call last):\nerror: x", saved, b"x").outcome == "unclear"
    assert judge(1, "error: urllib3 said no", saved, b"x").outcome == "unclear"
    saved.write_bytes(b"half")
    assert judge(1, "error: reset", saved, b"x").outcome == "wrong"
    assert judge(None, "", saved, b"x").outcome == "hang"


def test_refusals_of_one_kind_share_a_kind():
    a = refusal_kind("error: the server answered 429 Too Many Requests for http://127.0.0.1:4/m1/f")
    b = refusal_kind("error: the server answered 503 Too Many Requests for http://127.0.0.1:9/m0/f")
    assert a == b == "the server answered N Too Many Requests for URL"
