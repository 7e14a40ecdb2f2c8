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
                                                          timeout=(2.0, 1.5)))
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


def test_a_mirror_whose_digest_header_names_other_bytes_is_left_out_before_it_serves(tmp_path):
    with o.Origin({"/f": BAD}, {"/f": [_link_and_digest("http://127.0.0.1:1/none", BAD)]}) as odd:
        with o.Origin({"/f": FILE}, {"/f": [_link_and_digest(odd.url("/f"), FILE)]}) as origin:
            report, _ = _run(origin.url("/f"), _options(tmp_path))
            served = [s for s in odd.statuses("/f") if s == 206]
    assert report.left_out[odd.url("/f")] == "its sha256 digest header names other bytes than the file's"
    assert len(served) == 1  # its probe only
    assert hashlib.sha256(Path(report.path).read_bytes()).hexdigest() == SHA


# -- node.py get: -M, --mirror, a URL that is a Metalink, hostile documents ----------------------

def _meta4(files: list[tuple[str, list[str], bytes]], *, pieces: bool = True) -> bytes:
    body = ""
    for name, urls, data in files:
        hashes = "".join(f"<hash>{hashlib.sha256(data[i:i + PIECE]).hexdigest()}</hash>"
                         for i in range(0, len(data), PIECE))
        body += (f'<file name="{name}"><size>{len(data)}</size>'
                 f'<hash type="sha-256">{hashlib.sha256(data).hexdigest()}</hash>'
                 + (f'<pieces length="{PIECE}" type="sha-256">{hashes}</pieces>' if pieces else "")
                 + "".join(f'<url priority="{i + 1}">{u}</url>' for i, u in enumerate(urls))
                 + "</file>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<metalink xmlns="urn:ietf:params:xml:ns:metalink">{body}</metalink>').encode()


def _get(cluster, *args: str, report: Path) -> tuple[int, str, dict | list]:
    from swiftlab.cluster import program
    import json
    proc = cluster.start([*program("node"), "--discovery", "127.0.0.1:1", "--dir", str(cluster.workdir),
                          "get", "--no-peers", "--report", str(report), *args], name="get")
    code, output = proc.wait(60), proc.output()
    assert "Traceback" not in output, output
    return code, output, json.loads(report.read_text()) if report.exists() else {}


def test_get_m_fetches_every_file_of_a_metalink_into_its_subdirectory(cluster, tmp_path):
    other = os.urandom(MiB + 5)
    with o.Origin({"/f": FILE, "/g": other}) as good, o.Origin({}) as gone:
        doc = tmp_path / "set.meta4"
        doc.write_bytes(_meta4([("f.bin", [gone.url("/f"), good.url("/f")], FILE),
                                ("sub/g.bin", [good.url("/g"), gone.url("/g")], other)]))
        code, output, report = _get(cluster, "-M", str(doc), report=tmp_path / "r.json")
    assert code == 0, output
    assert hashlib.sha256((cluster.workdir / "f.bin").read_bytes()).hexdigest() == SHA
    assert (cluster.workdir / "sub" / "g.bin").read_bytes() == other
    assert [r["ok"] for r in report] == [True, True] and report[0]["checksum"] == f"sha256:{SHA}"
    assert "404" in report[0]["left_out"][gone.url("/f")]
    code, output, report = _get(cluster, "-M", str(doc), report=tmp_path / "again.json")
    assert code == 0 and [r.get("already_complete") for r in report] == [True, True], output
    assert sorted(p.name for p in cluster.workdir.iterdir()) == ["f.bin", "sub"]


def test_get_with_mirror_options_uses_both_urls_and_names_the_file_after_the_first(cluster, tmp_path):
    with o.Origin({"/first.bin": FILE}) as one, o.Origin({"/other.bin": FILE}) as two:
        code, output, report = _get(cluster, one.url("/first.bin"), "--mirror", two.url("/other.bin"),
                                    "--max-connection-per-server", "2", report=tmp_path / "r.json")
    assert code == 0, output
    assert hashlib.sha256((cluster.workdir / "first.bin").read_bytes()).hexdigest() == SHA
    assert [m["url"] for m in report["mirrors"]] == [one.url("/first.bin"), two.url("/other.bin")]
    assert "by mirror:" in output


def test_a_url_answering_with_a_metalink_is_followed_by_name_and_by_media_type(cluster, tmp_path):
    with o.Origin({"/f": FILE}) as files:
        doc = _meta4([("f.bin", [files.url("/f")], FILE)], pieces=False)
        labelled = o.File(doc)

        def as_metalink(req: o.Request) -> bool:
            req.extra["Content-Type"] = "application/metalink4+xml"
            return False

        with o.Origin({"/list.meta4": doc, "/list": labelled}, {"/list": [as_metalink]}) as docs:
            code, output, _ = _get(cluster, docs.url("/list.meta4"), report=tmp_path / "a.json")
            assert code == 0 and "is a Metalink document" in output, output
            (cluster.workdir / "f.bin").unlink()
            code, output, _ = _get(cluster, docs.url("/list"), report=tmp_path / "b.json")
            assert code == 0 and "is a Metalink document" in output, output
    assert hashlib.sha256((cluster.workdir / "f.bin").read_bytes()).hexdigest() == SHA
    assert not (cluster.workdir / "list").exists() and not (cluster.workdir / "list.meta4").exists()


HOSTILE = {
    "entity expansion": ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
                         '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                         '<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="&b;">'
                         '<url>http://127.0.0.1:1/x</url></file></metalink>').encode(),
    "external entity": ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                        '<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="&x;">'
                        '<url>http://127.0.0.1:1/x</url></file></metalink>').encode(),
    "100 MB document": b"<" * (100 << 20),
    "file:// URLs": _meta4([("x.bin", ["file:///etc/passwd"], b"x")], pieces=False),
    "../ names": _meta4([("../../escaped.bin", ["http://127.0.0.1:1/x"], b"x")], pieces=False),
}
REASONS = {"entity expansion": "DTD", "external entity": "DTD", "100 MB document": "larger than 4 MiB",
           "file:// URLs": "no http or https URL", "../ names": "leaves its directory"}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_metalink_is_one_error_line_and_nothing_is_written(cluster, tmp_path, kind):
    doc = tmp_path / "evil.meta4"
    doc.write_bytes(HOSTILE[kind])
    before = set(tmp_path.parent.iterdir())
    code, output, _ = _get(cluster, "-M", str(doc), report=tmp_path / "r.json")
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, output
    assert "refusing the Metalink document" in lines[0] and REASONS[kind] in lines[0], lines
    assert list(cluster.workdir.iterdir()) == [] and set(tmp_path.parent.iterdir()) == before


def test_helpers_get_the_mirrors_with_their_jobs_and_fall_to_the_next_one(cluster, tmp_path):
    from swiftlab.cluster import program
    from tests.helpers import start_helpers
    import json
    helper_served = threading.Event()

    def helpers_refused(req: o.Request) -> bool:  # this mirror serves the requester only
        if req.client != "127.0.0.1" and (req.headers.get("Range") or "") != "bytes=0-0":
            return req.send(404, b"not here\n")
        return False

    def helpers_first(req: o.Request) -> bool:  # the requester's ranges wait for a helper's
        if req.client != "127.0.0.1" and (req.headers.get("Range") or "") != "bytes=0-0":
            helper_served.set()
        elif req.client == "127.0.0.1" and (req.headers.get("Range") or "") != "bytes=0-0":
            helper_served.wait(GATE)
        return False

    disc = cluster.discovery()
    start_helpers(cluster, disc, 2)
    with o.Origin({"/f": FILE}) as one, o.Origin({"/f": FILE}) as two:
        # a helper's first job starts at the mirror whose URL sorts first: make it the refusing one
        refusing, other = sorted((one, two), key=lambda origin: origin.url("/f"))
        refusing.rules = {"/f": [helpers_refused, helpers_first]}  # the requester waits at both
        other.rules = {"/f": [helpers_first]}
        report_path = tmp_path / "r.json"
        proc = cluster.start([*program("node"), "--discovery", f"127.0.0.1:{disc.port}", "--dir",
                              str(cluster.workdir), "get", one.url("/f"), "--mirror", two.url("/f"),
                              "--report", str(report_path)], name="get")
        code, output = proc.wait(60), proc.output()
        refused = [status for _, status, client in refusing.log if client != "127.0.0.1"]
        served = [status for _, status, client in other.log if client != "127.0.0.1"]
    assert code == 0 and "Traceback" not in output, output
    report = json.loads(report_path.read_text())
    assert hashlib.sha256((cluster.workdir / "f").read_bytes()).hexdigest() == SHA
    assert any(k != "local" and n > 0 for k, n in report["bytes_by_source"].items()), report
    assert 404 in refused and 206 in served, (refused, served)


def test_at_the_prompt_get_m_and_a_metalink_url_get_every_file(cluster, tmp_path):
    from tests.helpers import prompt_node
    other = os.urandom(MiB + 7)
    disc = cluster.discovery()
    with o.Origin({"/f": FILE, "/g": other}) as files:
        doc = _meta4([("f.bin", [files.url("/f")], FILE)])
        with o.Origin({"/list.meta4": _meta4([("g.bin", [files.url("/g")], other)])}) as docs:
            (tmp_path / "one.meta4").write_bytes(doc)
            with prompt_node(cluster, f"127.0.0.1:{disc.port}", directory=cluster.workdir) as (node, type_):
                mark = type_(f"get -M {tmp_path / 'one.meta4'} --no-peers")
                node.wait_for(r"\[1\] done: ", timeout=30, start=mark)
                mark = type_(f"get {docs.url('/list.meta4')} --no-peers")
                node.wait_for(r"is a Metalink document: getting its 1 file", timeout=30, start=mark)
                node.wait_for(r"\[2\] done: ", timeout=30, start=mark)
                type_("quit")
    assert hashlib.sha256((cluster.workdir / "f.bin").read_bytes()).hexdigest() == SHA
    assert (cluster.workdir / "g.bin").read_bytes() == other
    assert not (cluster.workdir / "list.meta4").exists()


def test_a_bad_piece_a_helper_fetched_names_the_helper_and_its_mirror(cluster, tmp_path):
    from swiftlab.cluster import program
    from tests.helpers import start_helpers
    import json
    helper_asked = threading.Event()

    def helpers_first(req: o.Request) -> bool:  # the requester's ranges wait for a helper's
        ranged = (req.headers.get("Range") or "bytes=0-0") != "bytes=0-0"
        if ranged and req.client != "127.0.0.1":
            helper_asked.set()
        elif ranged:
            helper_asked.wait(GATE)
        return False

    disc = cluster.discovery()
    start_helpers(cluster, disc, 1)
    with o.Origin({"/f": FILE}) as one, o.Origin({"/f": FILE}) as two:
        # a helper's first job starts at the mirror whose URL sorts first: make it the bad one
        bad, good = sorted((one, two), key=lambda origin: origin.url("/f"))
        bad.files["/f"] = o.File(BAD)
        for origin in (bad, good):
            origin.rules = {"/f": [helpers_first]}
        doc = tmp_path / "f.meta4"
        doc.write_bytes(_meta4([("f.bin", [good.url("/f"), bad.url("/f")], FILE)]))
        report_path = tmp_path / "r.json"
        proc = cluster.start([*program("node"), "--discovery", f"127.0.0.1:{disc.port}", "--dir",
                              str(cluster.workdir), "get", "-M", str(doc), "--report", str(report_path)],
                             name="get")
        code, output = proc.wait(60), proc.output()
    assert code == 0 and "Traceback" not in output, output
    assert hashlib.sha256((cluster.workdir / "f.bin").read_bytes()).hexdigest() == SHA
    report = json.loads(report_path.read_text())
    helper = next(k for k in report["bytes_by_source"] if k != "local")
    named = [n for n in report["notices"] if "failed its sha256 hash" in n]
    assert any(helper in n and bad.url("/f") in n for n in named), report["notices"]
