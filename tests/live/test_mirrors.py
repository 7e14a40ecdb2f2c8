"""One file from several URLs on loopback: two scripted origins play two mirrors.

Each test runs the engine (``swift.download.Download``) in this process
against ``tests/http_origin.py`` origins: a mirror that serves wrong bytes
under piece hashes, one that answers 404, one that stalls, one with another
length, and an origin that names its mirrors and digest in its headers
(RFC 6249 / RFC 3230). The file must come out right every time, and the bad
mirror must be named.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import pytest

from swift import download
from swift.engine.report import ChecksumMismatch, DownloadError
from swift.piecehash import PieceHashes
from tests import http_origin as o

MiB = 1 << 20
PIECE = 256 << 10
FILE = os.urandom(4 * MiB)
SHA = hashlib.sha256(FILE).hexdigest()
#: Another file of the same length: every piece the bad mirror serves is wrong, so the
#: test does not depend on which ranges the scheduler gives it.
BAD = bytes(b ^ 0x5A for b in FILE)
#: The longest any gate below waits for its condition before it lets the request go on anyway.
GATE = 20.0


def _pieces(data: bytes = FILE) -> PieceHashes:
    return PieceHashes("sha256", PIECE, len(data),
                       tuple(hashlib.sha256(data[i:i + PIECE]).hexdigest()
                             for i in range(0, len(data), PIECE)))


def _options(tmp_path: Path, **kw) -> download.Options:
    return download.Options(directory=tmp_path, record_interval=0.2, **kw)


def _run(url: str, opts: download.Options) -> tuple[download.Report, list[str]]:
    notes: list[str] = []
    report = download.Download(url, opts, [], notice=notes.append).run()
    return report, notes


def _served_range(event: threading.Event) -> o.Rule:
    """Set ``event`` once a range request other than the probe's is answered."""
    def rule(req: o.Request) -> bool:
        if (req.headers.get("Range") or "bytes=0-0") != "bytes=0-0":
            event.set()
        return False
    return rule


def _wait_for(event: threading.Event) -> o.Rule:
    """Hold every range request but the probe's until ``event`` is set (a condition, not a time)."""
    def rule(req: o.Request) -> bool:
        if (req.headers.get("Range") or "") != "bytes=0-0":
            event.wait(GATE)
        return False
    return rule


def test_a_mirror_serving_wrong_bytes_is_named_and_its_pieces_fetched_again(tmp_path):
    served = threading.Event()
    # the first URL is asked first (both unmeasured, it ranks first); the good mirror
    # holds its answers until the bad one has served a range, so the bad one serves
    with o.Origin({"/f": BAD}, {"/f": [_served_range(served)]}) as bad, \
            o.Origin({"/f": FILE}, {"/f": [_wait_for(served)]}) as good:
        opts = _options(tmp_path, mirrors=((good.url("/f"), 2),), pieces=_pieces(),
                        expected_size=len(FILE), piece_size=PIECE)
        report, notes = _run(bad.url("/f"), opts)
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA
    assert report.bad_pieces >= 1
    named = [n for n in notes if "failed its sha256 hash: fetched again" in n]
    assert named and all(bad.url("/f") in n for n in named), notes
    entry = next(m for m in report.mirrors if m["url"] == bad.url("/f"))
    assert entry["bad_pieces"] >= 1


def test_a_mirror_that_answers_404_is_left_out_and_the_download_completes(tmp_path):
    with o.Origin({"/f": FILE}) as good, o.Origin({}) as gone:
        report, notes = _run(good.url("/f"), _options(tmp_path, mirrors=((gone.url("/f"), 1),)))
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA
    assert "404" in report.left_out[gone.url("/f")]
    assert any(f"mirror {gone.url('/f')} left out" in n for n in notes)


def test_a_first_url_that_answers_404_leaves_the_file_to_its_mirror(tmp_path):
    with o.Origin({"/f": FILE}) as good, o.Origin({}) as gone:
        # a Metalink's best URL may be the bad one: the next one takes over
        report, notes = _run(gone.url("/f"), _options(tmp_path, mirrors=((good.url("/f"), 1),)))
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA
    assert "404" in report.left_out[gone.url("/f")] and Path(report.path).name == "f"


def test_a_mirror_that_stalls_is_left_out_and_the_download_completes(tmp_path):
    release = threading.Event()

    def stall(req: o.Request) -> bool:
        release.wait(GATE)
        return False

    try:
        with o.Origin({"/f": FILE}) as good, o.Origin({"/f": FILE}, {"/f": [stall]}) as stuck:
            report, notes = _run(good.url("/f"), _options(tmp_path, mirrors=((stuck.url("/f"), 1),),
                                                          timeout=(2.0, 0.5)))
            release.set()
    finally:
        release.set()
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA
    assert stuck.url("/f") in report.left_out and report.bytes_by_source == {"local": len(FILE)}


def test_mirrors_that_disagree_on_the_length_are_refused_by_name(tmp_path):
    with o.Origin({"/f": FILE}) as good, o.Origin({"/f": FILE + b"x"}) as odd:
        report, notes = _run(good.url("/f"), _options(tmp_path, mirrors=((odd.url("/f"), 1),),
                                                      checksum=f"sha256:{SHA}"))
    why = report.left_out[odd.url("/f")]
    assert why == f"it says the file has {len(FILE) + 1} bytes, not {len(FILE)}"
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA


def test_without_a_hash_a_mirror_with_another_validator_is_not_used(tmp_path):
    with o.Origin({"/f": FILE}) as first, o.Origin({"/f": o.File(FILE, etag='"other"')}) as other:
        report, _ = _run(first.url("/f"), _options(tmp_path, mirrors=((other.url("/f"), 1),)))
    assert "no hash proves it is the same file" in report.left_out[other.url("/f")]
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA


def _link_and_digest(mirror: str, data: bytes) -> o.Rule:
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()

    def rule(req: o.Request) -> bool:
        req.extra["Link"] = f"<{mirror}>; rel=duplicate; pri=1"
        req.extra["Digest"] = f"SHA-256={digest}"
        return False
    return rule


def test_link_duplicate_and_digest_headers_are_honoured(tmp_path):
    with o.Origin({"/f": FILE}) as mirror:
        with o.Origin({"/f": FILE}, {"/f": [_link_and_digest(mirror.url("/f"), FILE)]}) as origin:
            report, notes = _run(origin.url("/f"), _options(tmp_path))
    assert any("sha256 digest" in n for n in notes)
    assert [m["url"] for m in report.mirrors] == [origin.url("/f"), mirror.url("/f")]
    assert all(m["used"] for m in report.mirrors)
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA


def test_a_wrong_digest_header_fails_the_file_and_no_mirrors_ignores_it(tmp_path):
    with o.Origin({"/f": FILE}) as mirror:
        with o.Origin({"/f": FILE}, {"/f": [_link_and_digest(mirror.url("/f"), b"other")]}) as origin:
            (tmp_path / "a").mkdir()
            (tmp_path / "b").mkdir()
            with pytest.raises(ChecksumMismatch, match="sha256 checksum mismatch"):
                _run(origin.url("/f"), _options(tmp_path / "a"))
            asked = len(mirror.statuses())
            report, _ = _run(origin.url("/f"), _options(tmp_path / "b", header_mirrors=False))
    assert asked > 0 and report.mirrors == [] and len(mirror.statuses()) == asked
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA
