"""swift.units: one unit family for printing, and strict parsing of what users type."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from swift.units import (MAX_SECONDS, MAX_SIZE, human_bytes, human_rate, human_seconds, parse_count,
                         parse_rate, parse_seconds, parse_size)


@pytest.mark.parametrize("n,text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (160 << 20, "160.0 MiB"), (3 << 30, "3.0 GiB"), (5 << 40, "5.0 TiB"),
])
def test_human_bytes_uses_binary_units_only(n, text):
    assert human_bytes(n) == text


def test_a_rate_is_bytes_per_second_in_the_same_units():
    assert human_rate(8 << 20) == "8.0 MiB/s"
    assert human_rate(512) == "512 B/s"


@pytest.mark.parametrize("seconds,text", [(0.42, "0.4 s"), (12, "12 s"), (125, "2 min 05 s"),
                                          (7260, "2 h 01 min")])
def test_human_seconds(seconds, text):
    assert human_seconds(seconds) == text


@pytest.mark.parametrize("text,value", [
    ("10", 10), ("10K", 10 << 10), ("10k", 10 << 10), ("2M", 2 << 20), ("2MB", 2 << 20),
    ("2MiB", 2 << 20), ("2mib", 2 << 20), ("1.5GiB", 3 << 29), (" 3G ", 3 << 30), ("1T", 1 << 40),
    (".5K", 512), ("7B", 7),
])
def test_parse_size_reads_suffixes_as_powers_of_1024(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "abc", "1e5", "nan", "inf", "1 K B", "10X", "١٢",
                                  "9" * 400, "1.2.3", "K"])
def test_parse_size_refuses_anything_else_with_a_message(text):
    with pytest.raises(ValueError, match="size|large"):
        parse_size(text)


def test_parse_size_refuses_sizes_beyond_the_limit():
    assert parse_size("1024P") == MAX_SIZE
    with pytest.raises(ValueError, match="too large"):
        parse_size("1025P")


@pytest.mark.parametrize("text,value", [("2M", 2 << 20), ("2M/s", 2 << 20), ("500K/s", 500 << 10)])
def test_parse_rate(text, value):
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["0", "0M/s", "-2M", "fast", "/s"])
def test_parse_rate_refuses_zero_and_garbage(text):
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


@pytest.mark.parametrize("text,value", [("15", 15.0), ("2.5", 2.5), ("500ms", 0.5), ("2m", 120.0),
                                        ("1h", 3600.0), ("3s", 3.0)])
def test_parse_seconds(text, value):
    assert parse_seconds(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "x", "1e3", "nan", "", "9" * 30, "8d"])
def test_parse_seconds_refuses_zero_negative_huge_and_garbage(text):
    with pytest.raises(ValueError, match="duration"):
        parse_seconds(text)


def test_parse_seconds_has_an_upper_bound_that_every_wait_accepts():
    import threading
    assert MAX_SECONDS <= threading.TIMEOUT_MAX
    assert parse_seconds(f"{MAX_SECONDS:.0f}") == MAX_SECONDS


def test_parse_count_bounds():
    assert parse_count("4", low=1, high=64) == 4
    for bad in ("0", "65", "x", "1.5", ""):
        with pytest.raises(ValueError):
            parse_count(bad, low=1, high=64)


@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_a_printed_size_reads_back_within_its_rounding(n):
    number, unit = human_bytes(n).split()
    suffix = "" if unit == "B" else unit
    assert abs(parse_size(number + suffix) - n) <= max(1, n * 0.05 + 1)


@given(st.text(max_size=20))
def test_parsers_raise_only_value_error(text):
    for parse in (parse_size, parse_rate, parse_seconds, parse_count):
        try:
            parse(text)
        except ValueError:
            pass

