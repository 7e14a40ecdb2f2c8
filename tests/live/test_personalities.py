"""Drawn servers: for any personality, the right file or one clear line, never worse.

The generative origin (``swiftlab.personality``) plays a server whose habits
are drawn by hypothesis from independent axes (range support, lengths,
validators, redirects, failures, content coding) and a size from 0 bytes to a
few MiB. For every drawn server, ``node.py get`` alone and with two helpers
must end in one of two ways: the file at the final name is exactly the bytes
a plain GET returns, or the exit is non-zero with one clear ``error:`` line
and no file at the final name. Never a wrong file, never a traceback, never a
run past its deadline.

CI runs a bounded, fixed set of examples (derandomized, so a run is
repeatable); ``SWIFT_PERSONALITIES=N`` draws N fresh ones instead, and
``bench/personalities.py`` runs thousands and counts the outcomes. A failure
hypothesis shrinks becomes a named row of ``REGRESSIONS`` below.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swiftlab.personality import AXES, SIZES, Personality, PersonalityOrigin, judge
from tests.helpers import start_helpers

#: Seconds one run may take before it counts as a hang. The slowest refusals
#: drawn so far (every answer stalls for 3 s, a signed URL expires meanwhile:
#: five whole restarts, each with its own tries) took 110 s on a loaded machine.
DEADLINE = 240
#: The request timeout given to swift (``--timeout``): a stall of 3 s trips it.
READ_TIMEOUT = "2"
DRAWN = int(os.environ.get("SWIFT_PERSONALITIES", "0"))


@st.composite
def personalities(draw) -> Personality:
    axes = {axis: draw(st.sampled_from(values)) for axis, values in AXES.items()}
    if axes["failures"] == "early-close" and axes["lengths"] == "missing":
        axes["lengths"] = draw(st.sampled_from([v for v in AXES["lengths"] if v != "missing"]))
    return Personality(**axes, size=draw(st.sampled_from(SIZES)),
                       cap=draw(st.sampled_from([64 * 1024, 256 * 1024, 1 << 20])),
                       every=draw(st.integers(2, 5)), ttl=draw(st.sampled_from([1.0, 2.0, 5.0])),
                       seed=draw(st.integers(0, 1 << 20)))


def _run(cluster, discovery: str | None, p: Personality, where: Path, *, right: bool = False) -> None:
    """Run ``get`` on a fresh origin of ``p``; the verdict must be acceptable (with
    ``right``: the right file, a refusal is not enough)."""
    where.mkdir(parents=True, exist_ok=True)
    out = where / "file.bin"
    out.unlink(missing_ok=True)
    with PersonalityOrigin(p) as origin:
        extra = ["-o", str(out), "--timeout", READ_TIMEOUT]
        if discovery is None:
            extra.append("--no-peers")
        proc = cluster.get(discovery or "127.0.0.1:1", origin.url(), get_extra=extra)
        try:
            code = proc.wait(DEADLINE)
        except Exception:  # subprocess.TimeoutExpired: a hang
            code = None
        finally:
            proc.kill()
        verdict = judge(code, proc.output(), out, origin.body)
    ok = verdict.outcome == "right" if right else verdict.acceptable
    assert ok, f"{verdict.outcome}: {verdict.detail}\n{p!r}\n{proc.output()[-3000:]}"


def _examples(ci: int):
    if DRAWN:
        return settings(max_examples=DRAWN, deadline=None, database=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture,
                                               HealthCheck.too_slow])
    return settings(max_examples=ci, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_examples(ci=10)
@given(p=personalities())
def test_a_drawn_server_gives_the_right_file_or_one_clear_line(cluster, tmp_path, p):
    _run(cluster, None, p, tmp_path / "alone")


@_examples(ci=4)
@given(p=personalities())
def test_a_drawn_server_gives_the_right_file_or_one_clear_line_with_helpers(cluster, tmp_path, p):
    if not hasattr(cluster, "personality_discovery"):
        disc = cluster.discovery()
        start_helpers(cluster, disc, 2)
        cluster.personality_discovery = f"127.0.0.1:{disc.port}"
    _run(cluster, cluster.personality_discovery, p, tmp_path / "helpers")


#: Servers drawn runs refused (each shrunk to what matters) where curl and aria2c
#: get the file, then the three kinds a single server case once showed: an ETag
#: per edge, capped 206s, a Content-Length one short. Each must give the right file.
REGRESSIONS = {
    "a signed URL expires while the server answers 503 to the new redirect":
        Personality(ranges="ignored-some", lengths="chunked", validators="none", redirects="signed",
                    failures="busy", size=1, every=3, ttl=1.0, seed=1),
    "a signed URL expires, and resolving it again meets a 503 every time it is asked first":
        Personality(ranges="if-range-200", lengths="chunked", redirects="signed", failures="busy",
                    size=200_000, every=3, ttl=2.0, seed=4),
    "an ETag per edge with multipart answers and resets (the sample comes as multipart too)":
        Personality(ranges="multipart", lengths="chunked", validators="per-connection",
                    failures="resets", size=SIZES[-1], seed=5),
    "lengths that lie give ranges up after the signed URL they used expired":
        Personality(ranges="exact", lengths="over-by-one", validators="weak", redirects="signed",
                    coding="gzip", size=SIZES[-1], ttl=1.0, seed=6),
    "no ranges, an ETag per edge and a reset: the plain stream resumes by comparing bytes":
        Personality(ranges="ignored-all", validators="per-connection", redirects="mirrors",
                    failures="resets", size=SIZES[-1], every=2, seed=7),
    "an ETag per edge with capped answers and resets":
        Personality(ranges="capped", validators="per-connection", failures="resets",
                    size=SIZES[-1], cap=256 * 1024, every=3, seed=2),
    "Content-Length one short with a Last-Modified only":
        Personality(lengths="short-by-one", validators="last-modified", size=SIZES[-1], seed=3),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_a_server_a_drawn_run_refused_now_gives_the_right_file(cluster, tmp_path, name):
    _run(cluster, None, REGRESSIONS[name], tmp_path, right=True)
