"""Every server habit in one table: behaviour → the sha256 of the saved file, or one error line.

Each row starts the scripted origin (``tests/http_origin.py``) with the rules
of one real-server habit, runs ``node.py get`` as a user would (alone, and
where helpers matter with two helpers fetching from 127.0.0.2 and
127.0.0.3), and checks the outcome: the file's sha256, the name it was saved
under, or the one error line and no file. No curl or aria2c is needed; the
same habits are the rows of the README's "Misbehaving servers".

Every run must also end without a traceback, without library text in its
last line, and without a password in anything it printed or reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import pytest

from tests import http_origin as o
from tests.helpers import prompt_node, sha256_file, start_helpers, have_ipv6, self_signed_certificate

KiB, MiB = 1 << 10, 1 << 20
FILE = os.urandom(3 * MiB + 12_345)  # over the one-request threshold (1 MiB): ranges are planned
SHA = hashlib.sha256(FILE).hexdigest()
GZ = b"\x1f\x8b\x08" + os.urandom(2 * MiB)
NEW = o.File(os.urandom(len(FILE)), etag=None, last_modified="Tue, 02 Jan 2024 00:00:00 GMT")
SAME_DATE = o.File(os.urandom(len(FILE)))  # another file, with FILE's length and Last-Modified
INTERNALS = re.compile(r"Traceback|HTTPS?ConnectionPool|Max retries exceeded|Caused by|urllib3|"
                       r"requests\.exceptions|ProtocolError|IncompleteRead|SSLError\(|NewConnectionError|"
                       r"object at 0x")
PASSWORD = "p%3Ass%20wd"


@dataclass
class Row:
    """One habit: the origin's files and rules, the URL path, and what must come out."""

    files: dict
    rules: dict = field(default_factory=dict)
    path: str = "/f"
    args: list = field(default_factory=list)
    sha: str | None = SHA                # the saved file's sha256 (None: no file)
    also: tuple = ()                     # other acceptable sha256s (a replaced file)
    error: str | None = None             # regex of the one error line (with sha: acceptable too)
    name: str | None = None              # the saved name, when no -o is given
    helpers: bool = False                # also run with two helpers
    with_helpers: str | None = None      # regex the helper run's report must match (notices, left out)
    with_alone: str | None = None        # regex the run alone's report must match
    rate: int = 0                        # bytes/s per answer
    host: str = "127.0.0.1"
    userinfo: str = ""
    tls: bool = False


ROWS = {
    "baseline": Row({"/f": FILE}, helpers=True),
    "ranges ignored (200 always)": Row({"/f": FILE}, {"/f": [o.ranges_ignored]}),
    "one backend in three ignores Range": Row({"/f": FILE}, {"/f": [o.every_nth_range_ignored(3)]},
                                               helpers=True),
    "If-Range with an ETag gets 200": Row({"/f": FILE}, {"/f": [o.if_range_etag_gives_200]}, helpers=True),
    "ranges honoured for the probe only": Row({"/f": FILE}, {"/f": [o.ranges_only_for_the_first_request]},
                                              with_alone=r"ranges are unusable here: downloading in one "
                                                         r"plain stream"),
    "Content-Range bytes a-b/*": Row({"/f": FILE}, {"/f": [o.unknown_total]}),
    "weak ETag only": Row({"/f": FILE}, {"/f": [o.weak_etag_only]}),
    "HEAD 405": Row({"/f": FILE}, {"/f": [o.head_refused]}),
    "HEAD length differs": Row({"/f": FILE}, {"/f": [o.head_length_differs]}),
    "signed URL expires": Row({"/f": FILE}, {"*": [o.signed_redirect(1.0)]}, rate=1 * MiB, helpers=True),
    "URL bound to the requester's address": Row(  # slow enough that the helpers are asked
        {"/f": FILE}, {"*": [o.address_bound_redirect]}, helpers=True, rate=MiB,
        with_helpers=r'"left_out": \{\s*"127\.0\.0\.1:\d+": "the origin refuses it what it gives this machine'),
    "cookie set on a redirect": Row({"/f": FILE}, {"*": [o.cookie_on_redirect]}, path="/early/f",
                                    helpers=True, with_helpers=r"cookies the server set.*runs on this "
                                                               r"machine alone"),
    "User-Agent required, not given": Row({"/f": FILE}, {"/f": [o.browser_user_agent_only]}, sha=None,
                                          error=r"the server answered 403 Forbidden for http://"),
    "User-Agent required, -U": Row({"/f": FILE}, {"/f": [o.browser_user_agent_only]},
                                   args=["-U", "Mozilla/5.0 x"], helpers=True),
    "User-Agent required, --header": Row({"/f": FILE}, {"/f": [o.browser_user_agent_only]},
                                         args=["--header", "User-Agent: Mozilla/5.0 x"]),
    "Content-Disposition filename*": Row(
        {"/cd": FILE}, {"/cd": [o.content_disposition("attachment; filename*=UTF-8''%e2%82%ac%20rates.txt")]},
        path="/cd", name="€ rates.txt"),
    "Content-Encoding x-gzip": Row({"/p.tar.gz": GZ}, {"/p.tar.gz": [o.content_encoding("x-gzip")]},
                                   path="/p.tar.gz", sha=hashlib.sha256(GZ).hexdigest(), helpers=True),
    "chunked bodies with ranges": Row({"/f": FILE}, {"/f": [o.chunked_bodies]}),
    "empty file, 416 with bytes */0": Row({"/e": b""}, path="/e", sha=hashlib.sha256(b"").hexdigest()),
    "empty file, 416 without Content-Range": Row({"/e": b""}, {"/e": [o.empty_416_without_content_range]},
                                                 path="/e", sha=hashlib.sha256(b"").hexdigest()),
    "empty file, Range ignored": Row({"/e": b""}, {"/e": [o.ranges_ignored]}, path="/e",
                                     sha=hashlib.sha256(b"").hexdigest()),
    "one-byte file": Row({"/one": b"Z"}, path="/one", sha=hashlib.sha256(b"Z").hexdigest()),
    "two connections per client, else 503": Row({"/f": FILE}, {"/f": [o.per_client_limit(2)]},
                                                rate=4 * MiB),
    "416 for a range past the end": Row({"/f": FILE}, {"/f": [o.past_end_416]}),
    "reset mid-body": Row({"/f": FILE}, {"/f": [o.reset_every_nth(3)]}, helpers=True),
    "URL typed with a space": Row({"/my file.bin": FILE}, path="/my file.bin"),
    "URL with a Unicode path": Row({"/données €uro.bin": FILE}, path="/données €uro.bin",
                                   name="données €uro.bin"),
    "IPv6 literal": Row({"/f": FILE}, host="::1"),
    "credentials in the URL": Row({"/f": FILE}, {"*": [o.basic_auth("us@er", "p:ss wd")]},
                                  userinfo=f"us%40er:{PASSWORD}", helpers=True,
                                  with_helpers=r"credentials in the URL.*runs on this machine alone"),
    "HTTPS self-signed, no CA": Row({"/f": FILE}, tls=True, sha=None,
                                    error=r"the certificate of 127\.0\.0\.1 is not trusted .*"
                                          r"--ca-certificate FILE.*--insecure"),
    "HTTPS self-signed, --ca-certificate": Row({"/f": FILE}, tls=True, args=["--ca-certificate", "{cert}"],
                                               helpers=True),
    "HTTPS self-signed, --insecure": Row({"/f": FILE}, tls=True, args=["--insecure"]),
    "Last-Modified only, file replaced": Row(
        {"/f": o.File(FILE, last_modified="Mon, 01 Jan 2024 00:00:00 GMT")},
        {"/f": [o.no_etag, o.replaced_after(3, NEW)]},
        also=(hashlib.sha256(NEW.body).hexdigest(),), error=r"the file changed on the server"),
    "206 without Content-Range": Row({"/f": FILE}, {"/f": [o.no_content_range_on_206]}),
    "Content-Range bytes=a-b/N": Row({"/f": FILE}, {"/f": [o.malformed_content_range]}),
    "ETag per CDN edge, same bytes": Row({"/f": FILE}, {"/f": [o.etag_per_connection(2)]},
                                         helpers=True),
    "ETag per CDN edge, replaced by one of the same length and date": Row(
        {"/f": FILE}, {"/f": [o.replaced_after(3, SAME_DATE), o.etag_per_connection(2)]},
        also=(hashlib.sha256(SAME_DATE.body).hexdigest(),), error=r"the file changed on the server"),
    "206 capped at 256 KiB": Row({"/f": FILE}, {"/f": [o.capped_ranges(256 * KiB)]}, helpers=True),
    "206 Content-Length one short": Row({"/f": FILE}, {"/f": [o.content_length_off_by(-1)]},
                                        helpers=True),
    "206 Content-Length one over": Row({"/f": FILE}, {"/f": [o.content_length_off_by(1)]}),
}
# (over 4 GiB needs a real server and 4 GiB of disk per run: the compatibility suite's case 28)




@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def _run(cluster, disc: str, url: str, row: Row, out: Path | None, report: Path, cert: str | None,
         peers: bool) -> tuple[int, str]:
    args = [a.replace("{cert}", cert or "") for a in row.args]
    get_extra = [*(["-o", str(out)] if out else []), "--report", str(report), *args]
    if not peers:
        get_extra.append("--no-peers")
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                                                            "SSL_CERT_FILE")}
    proc = cluster.get(disc, url, get_extra=get_extra, env=env)
    return proc.wait(120), proc.output()


def _judge(row: Row, code: int, output: str, saved: Path | None, report: Path) -> None:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    assert "Traceback" not in output, output
    assert not INTERNALS.search(last), last
    assert PASSWORD not in output, output
    if report.exists():
        assert PASSWORD not in report.read_text(), report.read_text()
    if code == 0:
        assert row.sha is not None, f"exit 0 where an error was expected: {output}"
        assert saved is not None and saved.exists(), output
        assert sha256_file(saved) in (row.sha, *row.also), output
        return
    assert row.error is not None, f"exit {code}: {output}"
    assert last.startswith("error: ") and re.search(row.error, last), last
    assert saved is None or not saved.exists()


@pytest.mark.parametrize("behaviour", list(ROWS))
def test_every_server_habit_ends_in_the_right_file_or_one_clear_line(behaviour, cluster, tmp_path,
                                                                    request):
    row = ROWS[behaviour]
    if row.host == "::1" and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    cert = request.getfixturevalue("certificate") if row.tls else None
    with o.Origin(row.files, row.rules, host=row.host, tls=cert, rate=row.rate) as origin:
        url = origin.url(row.path, userinfo=row.userinfo)
        disc = cluster.discovery()
        modes = [False, True] if row.helpers else [False]
        for peers in modes:
            if peers:
                start_helpers(cluster, disc, 2)
            where = tmp_path / ("helpers" if peers else "alone")
            where.mkdir()
            report = where / "report.json"
            out = None if row.name else where / "file.bin"
            code, output = _run(cluster, f"127.0.0.1:{disc.port}", url, row, out, report,
                                cert[0] if cert else None, peers)
            saved = out
            if row.name and code == 0:
                saved = Path(json.loads(report.read_text())["path"])
                assert saved.name == row.name, saved
            _judge(row, code, output, saved, report)
            expected = row.with_helpers if peers else row.with_alone
            if expected:
                assert re.search(expected, report.read_text()), report.read_text()


@pytest.mark.parametrize("args,words", [
    (["--header", "no colon here"], "expected 'Name: value'"),
    (["--header", "Range: bytes=0-1"], "set by swift itself"),
    (["--load-cookies", "/nonexistent/cookies.txt"], "no such file"),
    (["--ca-certificate", "/nonexistent/ca.pem"], "no such readable file"),
])
def test_a_bad_request_option_is_a_one_line_usage_error(cluster, args, words):
    proc = cluster.get("127.0.0.1:1", "http://127.0.0.1:1/f", get_extra=["--no-peers", *args])
    code, output = proc.wait(60), proc.output()
    last = output.strip().splitlines()[-1]
    assert code == 2 and "error:" in last and words in last and "Traceback" not in output, output


def test_the_prompt_takes_the_same_request_options(cluster, tmp_path):
    """``get URL -U UA --header ...`` at the prompt shapes every request of that download;
    a password typed in a URL is never echoed."""
    rules = {"*": [o.browser_user_agent_only, o.needs_header("X-Token", "t1"),
                   o.basic_auth("us@er", "p:ss wd")]}
    with o.Origin({"/f": FILE}, rules) as origin:
        disc = cluster.discovery()
        with prompt_node(cluster, f"127.0.0.1:{disc.port}", directory=tmp_path) as (node, type_):
            url = origin.url("/f", userinfo=f"us%40er:{PASSWORD}")
            type_(f"get {url} -o f.bin --no-peers -U 'Mozilla/5.0 x' --header 'X-Token: t1'")
            node.wait_for(r"\[1\] done: ", timeout=60)
            type_("quit")
            assert node.wait(15) == 0
        assert sha256_file(tmp_path / "f.bin") == SHA
        assert PASSWORD not in node.output(), node.output()


def test_with_a_shared_secret_helpers_get_the_secrets_over_the_private_channel(tmp_path):
    """Credentials in the URL and a cookie the server set reach the helpers, whose
    connections are private (TLS between members), so they do their share."""
    import secrets as _secrets

    from swift.auth import load_secret
    from swift.membership import DiscoveryClient
    from swiftlab.cluster import Cluster, wait_until

    secret = tmp_path / "secret"
    secret.write_text(_secrets.token_hex(16))
    secret.chmod(0o600)
    work = tmp_path / "work"
    work.mkdir()
    rules = {"*": [o.basic_auth("us@er", "p:ss wd"), o.cookie_on_redirect]}
    with o.Origin({"/f": FILE * 4}, rules, rate=4 * MiB) as origin, \
            Cluster(work, secret_file=secret) as cluster:
        disc = cluster.discovery()
        for i in range(2):
            d = work / f"helper{i}"
            d.mkdir()
            cluster.node(f"127.0.0.1:{disc.port}", name=f"helper{i}", directory=d,
                         extra=["--allow-private", "--source-address", f"127.0.0.{2 + i}"])
        member = DiscoveryClient("127.0.0.1", disc.port, name="test", secret=load_secret(secret),
                                 timeout=2.0)
        wait_until(lambda: len(member.list_peers()) == 2, 20, "helpers registered")
        report = tmp_path / "report.json"
        proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/early/f", userinfo=f"us%40er:{PASSWORD}"),
                           get_extra=["-o", str(tmp_path / "f.bin"), "--report", str(report)])
        code, output = proc.wait(120), proc.output()
        assert code == 0, output
        assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(FILE * 4).hexdigest()
        data = json.loads(report.read_text())
        helpers = {k: v for k, v in data["bytes_by_source"].items() if k != "local"}
        assert len(helpers) == 2 and all(v > 0 for v in helpers.values()), (data, output)
        assert not data.get("left_out") and "alone" not in " ".join(data["notices"]), data
        # the helpers' requests carried the credentials and the cookie: no 401/403 from them
        assert {client for _, status, client in origin.log if status == 206} >= {"127.0.0.2", "127.0.0.3"}
        assert not [s for _, s, c in origin.log if c != "127.0.0.1" and s in (401, 403)], origin.log
        assert PASSWORD not in output and PASSWORD not in report.read_text()


def _plain_without_validators(cut: Callable[[int], bool]):
    """No ranges and no validators (nothing proves a new answer is the same file);
    full answers for which ``cut(n)`` holds (n: the path's request count) reset
    after a third of the body."""
    def rule(req: o.Request) -> bool:
        req.ignore_range = True
        req.drop |= {"ETag", "Last-Modified", "Accept-Ranges"}
        if req.file is not None and cut(req.count):
            req.cut_after = len(req.file.body) // 3
        return False
    return rule


@pytest.mark.parametrize("cut,tries,code", [(lambda n: n == 1, None, 0), (lambda n: True, "2", 1)])
def test_a_plain_stream_that_breaks_starts_over_within_the_tries(cluster, tmp_path, cut, tries, code):
    """As wget does without ranges: a broken stream is fetched again from byte 0, and
    --tries counts whole restarts (a server that always breaks ends the download)."""
    with o.Origin({"/f": FILE}, {"/f": [_plain_without_validators(cut)]}) as origin:
        disc = cluster.discovery()
        out = tmp_path / "f.bin"
        proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/f"),
                           get_extra=["--no-peers", "-o", str(out), *(["--tries", tries] if tries else [])])
        assert proc.wait(60) == code, proc.output()
        output = proc.output()
        assert "starting over (try 2 of" in output, output
        assert "Traceback" not in output
        if code == 0:
            assert sha256_file(out) == SHA
        else:
            assert not out.exists() and "connection" in output.strip().splitlines()[-1], output


def test_a_server_without_ranges_is_asked_once(cluster, tmp_path):
    """Its 200 to the probe is the download: no second GET (a file generated per
    request, or a server slow to start, is not paid for twice)."""
    with o.Origin({"/f": FILE}, {"/f": [o.ranges_ignored]}) as origin:
        disc = cluster.discovery()
        out = tmp_path / "f.bin"
        proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/f"), get_extra=["-o", str(out)])
        assert proc.wait(60) == 0, proc.output()
        assert sha256_file(out) == SHA
        assert [status for path, status, _ in origin.log if path == "/f"] == [200], origin.log
