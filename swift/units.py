"""Bytes, rates, counts and durations: how swift prints them and how it reads them. Pure.

One unit family everywhere, binary (IEC 80000-13): ``B``, ``KiB``, ``MiB``,
``GiB``, ``TiB``, and rates in the same units per second (``MiB/s``). The
progress line, the summary, the report and every notice use
:func:`human_bytes` / :func:`human_rate`, so a number read in one place can
be compared with a number read in another.

Sizes and rates typed by a user (``--size 10M``, ``--limit-rate 1.5MiB``)
are read by :func:`parse_size` / :func:`parse_rate`. As in curl, wget and
aria2c, a suffix ``K``, ``M``, ``G`` or ``T`` is a power of 1024, whether it
is written ``M``, ``MiB`` or ``MB`` (the one family again: ``10M`` is the
10.0 MiB the progress line will show). Every parser raises ``ValueError``
with a message that says what was expected; the command line turns that
into a one-line usage error.
"""

from __future__ import annotations

import re

#: Binary prefixes, smallest first; each step is a factor of 1024.
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
#: The largest size or rate accepted (2**60 B, 1 EiB): far beyond any real
#: file, small enough that every arithmetic on it stays exact in an int64.
MAX_SIZE = 1 << 60
#: The longest duration accepted: a week. Longer waits are surely typos, and
#: every wait must fit the platform's timeout limit (``threading.TIMEOUT_MAX``).
MAX_SECONDS = 7 * 24 * 3600.0
_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE | re.ASCII)
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE | re.ASCII)
_SECOND_FACTORS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut to a readable length."""
    return repr(text if len(text or "") <= 40 else text[:37] + "...")


def human_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``160.0 MiB``: at most four significant figures, binary units."""
    n = float(n)
    for unit in UNITS:
        if abs(n) < 1024 or unit == UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(bytes_per_second: float) -> str:
    """``8.0 MiB/s``: :func:`human_bytes` per second."""
    return f"{human_bytes(bytes_per_second)}/s"


def human_seconds(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 01 min``: for an ETA or a duration."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def parse_size(text: str) -> int:
    """``"10"`` → 10, ``"10K"`` → 10240, ``"1.5GiB"`` → 1610612736, ``"2MB"`` → 2097152.

    A number of bytes, with an optional binary suffix ``K/M/G/T/P`` (optionally
    followed by ``iB`` or ``B``, any case). Rounded down to whole bytes.
    ValueError for anything else, negative numbers included.
    """
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError(f"not a size: {_shown(text)} (expected a number of bytes, "
                         f"optionally with K, M, G or T, e.g. 10M or 1.5GiB)")
    value = float(m.group(1)) * _FACTORS[m.group(2).lower()]
    if not value <= MAX_SIZE:
        raise ValueError(f"too large: {_shown(text)} (at most {human_bytes(MAX_SIZE)})")
    return int(value)


def parse_rate(text: str) -> int:
    """A rate in bytes per second: :func:`parse_size`, with an optional ``/s`` (``"2M"``, ``"2MiB/s"``).

    Zero is refused: a rate of nothing would never finish.
    """
    raw = text or ""
    body = raw.strip()
    if body.lower().endswith("/s"):
        body = body[:-2]
    try:
        rate = parse_size(body)
    except ValueError:
        raise ValueError(f"not a rate: {_shown(raw)} (expected bytes per second, "
                         f"optionally with K, M or G, e.g. 2M or 500K)") from None
    if rate <= 0:
        raise ValueError(f"a rate must be more than 0 bytes per second, not {_shown(raw)}")
    return rate


def parse_seconds(text: str) -> float:
    """A positive duration: ``"15"``, ``"1.5"``, ``"500ms"``, ``"2m"``, ``"1h"`` → seconds (float).

    ValueError for zero, negative, infinite or malformed values.
    """
    m = _SECONDS.match(text or "")
    if not m:
        raise ValueError(f"not a duration: {_shown(text)} (expected seconds, e.g. 15 or 2.5, "
                         f"or with ms, s, m or h)")
    seconds = float(m.group(1)) * _SECOND_FACTORS[m.group(2) and m.group(2).lower()]
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"a duration must be more than 0 and at most {MAX_SECONDS:.0f} "
                         f"seconds, not {_shown(text)}")
    return seconds


def parse_count(text: str, *, low: int = 1, high: int | None = None) -> int:
    """A whole number within ``low..high`` (``high`` None: no upper bound); ValueError otherwise."""
    raw = (text or "").strip()
    if not re.fullmatch(r"[+-]?[0-9]+", raw):
        raise ValueError(f"not a whole number: {_shown(text)}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"must be {bounds}, not {value}")
    return value
