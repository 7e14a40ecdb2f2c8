"""The HTTP layer against a scripted origin on loopback: each real-server habit, the
rule swift follows for it, and the bytes or the one error that come out."""

from __future__ import annotations

import os
import threading

import pytest
import requests

from swift import errors, names
from swift.errors import ErrorCode
from swift.http import RangeFetch, RequestProfile, Retry, RemoteFile, open_stream, probe
from swift.http.remote import IF_RANGE_STRIKES

from tests import http_origin as o

FAST = Retry(attempts=5, first_delay=0.01, max_delay=0.05)
DATA = os.urandom(300_000)
from tests.helpers import have_ipv6, http_objects_in_cycles, self_signed_certificate


def fetch_all(session, result, remote=None, *, piece=50_000, headers=None, retry=FAST):
    """Fetch the whole file in pieces the way the local workers do (one RemoteFile for
    all pieces: its sample of written bytes settles another edge's ETag); return the bytes."""
    remote = remote or result.remote
    out = bytearray(result.size)
    for start in range(0, result.size, piece):
        end = min(start + piece, result.size)
        got = bytearray()
        fetch = RangeFetch(session, result.final_url, result.size, result.validator, policy=retry,
                           encoding=result.encoding, remote=remote, headers=headers)
        n = fetch.run(start, lambda: end, lambda block: got.extend(block) or True)
        assert n == end - start
        out[start:end] = got
    return bytes(out)


@pytest.fixture
def session():
    s = requests.Session()
    yield s
    s.close()


def test_a_well_behaved_server(session):
    with o.Origin({"/f": DATA}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert (result.size, result.ranges, result.encoding) == (len(DATA), True, "")
        assert fetch_all(session, result) == DATA


def test_a_backend_that_ignores_range_now_and_then_is_retried(session):
    with o.Origin({"/f": DATA}, {"/f": [o.every_nth_range_ignored(3)]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert fetch_all(session, result) == DATA
        assert origin.statuses("/f").count(200) >= 2  # it happened, and was not written


def test_a_cdn_that_answers_200_to_if_range_gets_ranges_without_it(session):
    with o.Origin({"/f": DATA}, {"/f": [o.if_range_etag_gives_200]}) as origin:
        remote = RemoteFile(origin.url("/f"), jar=session.cookies)
        result = probe(session, remote, retry=FAST)
        assert fetch_all(session, result, remote) == DATA
        assert not remote.uses_if_range
        assert origin.statuses("/f").count(200) == IF_RANGE_STRIKES


def test_ranges_that_never_work_end_in_ranges_unusable(session):
    with o.Origin({"/f": DATA}, {"/f": [o.ranges_only_for_the_first_request]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert result.splittable
        with pytest.raises(errors.OriginError) as exc:
            fetch_all(session, result)
        assert exc.value.code is ErrorCode.RANGES_UNUSABLE
        # the engine's last step: one plain stream
        with open_stream(session, result.final_url, retry=FAST) as stream:
            assert b"".join(stream) == DATA


def test_a_replaced_file_is_called_changed_once_its_bytes_differ_from_those_written(session):
    new = o.File(os.urandom(len(DATA)), etag=None, last_modified="Tue, 02 Jan 2024 00:00:00 GMT")
    old = o.File(DATA, last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    with o.Origin({"/f": old}, {"/f": [o.no_etag, o.replaced_after(2, new)]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert result.validator.etag is None and result.validator.last_modified
        with pytest.raises(errors.FileChanged, match="Last-Modified.*bytes at offset 0 differ"):
            fetch_all(session, result)


def test_a_new_etag_for_the_same_bytes_becomes_an_alias_and_if_range_goes(session):
    """Two CDN edges, one per connection, each with its own strong ETag for the same bytes."""
    session.headers["Connection"] = "close"  # a connection per request: the edges take turns
    with o.Origin({"/f": DATA}, {"/f": [o.etag_per_connection(2)]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert fetch_all(session, result) == DATA
        assert result.remote.same_file(result.validator).aliases  # the other edge's ETag
        assert result.remote.if_range(result.validator) is None


def test_a_capped_server_is_asked_again_for_what_its_206_left_out(session):
    with o.Origin({"/f": DATA}, {"/f": [o.capped_ranges(10_000)]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert fetch_all(session, result, piece=100_000) == DATA
        assert origin.statuses("/f").count(206) == 1 + len(DATA) // 10_000


def test_multipart_byteranges_answers_are_read_part_by_part(session):
    with o.Origin({"/f": DATA}, {"/f": [o.multipart_ranges(3)]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert (result.size, result.ranges) == (len(DATA), True)  # from the first part's header
        assert fetch_all(session, result, piece=70_000) == DATA
        assert origin.statuses("/f").count(206) == 1 + -(-len(DATA) // 70_000)


def test_a_206_whose_lengths_disagree_is_never_read_and_twice_gives_ranges_up(session):
    with o.Origin({"/f": DATA}, {"/f": [o.content_length_off_by(-1)]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        with pytest.raises(errors.OriginError) as exc:
            fetch_all(session, result)
        assert exc.value.code is ErrorCode.RANGES_UNUSABLE


def test_an_etag_that_differs_once_is_not_a_change(session):
    """One backend of a load balancer reports another ETag for the same bytes."""
    def odd_backend(req):
        if req.count == 3:
            req.etag = '"other-backend"'
        return False
    with o.Origin({"/f": DATA}, {"/f": [odd_backend]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert fetch_all(session, result) == DATA


def test_an_expired_signed_url_is_resolved_again(session):
    now = [1000.0]
    with o.Origin({"/f": DATA}, {"*": [o.signed_redirect(10, clock=lambda: now[0])]}) as origin:
        remote = RemoteFile(origin.url("/f"), jar=session.cookies)
        result = probe(session, remote, retry=FAST)
        assert "/signed/f?" in result.final_url
        first = result.final_url
        got = fetch_all(session, result, remote, piece=100_000)
        now[0] += 60  # every signed URL so far has expired
        assert fetch_all(session, result, remote, piece=100_000) == got == DATA
        assert remote.final_url != first and remote.refreshes == 1
        assert remote.works(remote.final_url) and not remote.works(first)


def test_a_url_that_never_worked_is_not_refreshed_forever(session):
    now = [1000.0]
    always_expired = o.signed_redirect(-1, clock=lambda: now[0])
    with o.Origin({"/f": DATA}, {"*": [always_expired]}) as origin:
        remote = RemoteFile(origin.url("/f"), jar=session.cookies)
        with pytest.raises(errors.OriginError) as exc:
            probe(session, remote, retry=FAST)
        assert exc.value.code is ErrorCode.ACCESS_DENIED and "403" in str(exc.value)


def test_a_cookie_set_on_a_redirect_is_sent_with_every_range():
    with o.Origin({"/f": DATA}, {"*": [o.cookie_on_redirect]}) as origin:
        remote = RemoteFile(origin.url("/early/f"))
        probing = remote.session()
        result = probe(probing, remote, retry=FAST)
        probing.close()
        worker = remote.session()  # another session of the same download: the same jar
        try:
            assert fetch_all(worker, result, remote) == DATA
        finally:
            worker.close()


def test_the_profile_shapes_every_request(tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsid\ts3cr3t\n")
    rules = {"/f": [o.browser_user_agent_only, o.needs_header("Referer", "http://127.0.0.1/p"),
                    o.needs_cookie("sid", "s3cr3t")]}
    with o.Origin({"/f": DATA}, rules) as origin:
        plain = RemoteFile(origin.url("/f"))
        with plain.session() as s, pytest.raises(errors.OriginError, match="403"):
            probe(s, plain, retry=FAST)
        profile = RequestProfile.build(user_agent="Mozilla/5.0 x", referer="http://127.0.0.1/p",
                                       cookie_file=str(cookies))
        remote = RemoteFile(origin.url("/f"), profile=profile)
        with remote.session() as s:
            result = probe(s, remote, retry=FAST)
            assert fetch_all(s, result, remote) == DATA
            with open_stream(s, remote, retry=FAST) as stream:
                assert b"".join(stream) == DATA


def test_extra_headers_go_with_every_range_and_cannot_replace_ours(session):
    with o.Origin({"/f": DATA}, {"/f": [o.needs_header("X-Token", "t1")]}) as origin:
        headers = {"X-Token": "t1", "If-Range": '"forged"', "Range": "bytes=0-1"}
        remote = RemoteFile(origin.url("/f"), jar=session.cookies)
        session.headers["X-Token"] = "t1"  # the probe's session; a helper gets them per fetch
        result = probe(session, remote, retry=FAST)
        del session.headers["X-Token"]
        assert fetch_all(session, result, remote, headers=headers) == DATA


@pytest.mark.parametrize("rule", [o.empty_416_without_content_range, None])
def test_an_empty_file_is_a_valid_download(session, rule):
    with o.Origin({"/e": b""}, {"/e": [rule] if rule else []}) as origin:
        result = probe(session, origin.url("/e"), retry=FAST)
        if rule:
            assert not result.splittable  # no Content-Range: a plain GET says what is there
        else:
            assert (result.size, result.splittable) == (0, True)
        with open_stream(session, result.final_url, retry=FAST) as stream:
            assert b"".join(stream) == b"" and stream.size == 0


def test_a_url_typed_with_a_space_and_unicode_is_encoded(session):
    with o.Origin({"/my file.bin": DATA, "/données €.bin": DATA[:1000]}) as origin:
        result = probe(session, origin.url("/my file.bin"), retry=FAST)
        assert result.final_url.endswith("/my%20file.bin") and names.choose_name(result.url, result.final_url, result.content_disposition) == "my file.bin"
        assert probe(session, origin.url("/données €.bin"), retry=FAST).size == 1000


def test_an_ipv6_literal(session):
    if not have_ipv6():
        pytest.skip("no IPv6 loopback")
    with o.Origin({"/f": DATA}, host="::1") as origin:
        url = origin.url("/f")
        assert url.startswith("http://[::1]:")
        result = probe(session, url, retry=FAST)
        assert fetch_all(session, result) == DATA




def test_credentials_in_the_url_work_and_never_show(session):
    with o.Origin({"/f": DATA}, {"*": [o.basic_auth("us@er", "p:ss wd")]}) as origin:
        url = origin.url("/f", userinfo="us%40er:p%3Ass%20wd")
        result = probe(session, url, retry=FAST)
        assert fetch_all(session, result) == DATA
        with pytest.raises(errors.OriginError) as exc:
            probe(session, origin.url("/missing", userinfo="us%40er:p%3Ass%20wd"), retry=FAST)
        assert "404" in str(exc.value) and "p%3Ass" not in str(exc.value) and "***" in str(exc.value)


def test_a_reset_mid_body_resumes_at_the_first_missing_byte(session):
    with o.Origin({"/f": DATA}, {"/f": [o.reset_every_nth(3)]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert fetch_all(session, result, piece=100_000) == DATA
        with open_stream(session, result.final_url, retry=FAST) as stream:
            assert b"".join(stream) == DATA  # the same file (same ETag): read past what we had


def _cut_first(req) -> bool:
    """The first answer breaks off (a reset) after 100 kB."""
    if req.count == 1:
        req.cut_after = 100_000
    return False


def test_a_plain_stream_resumes_on_another_edges_etag_when_the_bytes_agree(session):
    session.headers["Connection"] = "close"  # a connection per request: the edges take turns
    with o.Origin({"/f": DATA}, {"/f": [o.ranges_ignored, o.etag_per_connection(2), _cut_first]}) as origin:
        with open_stream(session, origin.url("/f"), retry=FAST) as stream:
            assert b"".join(stream) == DATA
        assert origin.statuses("/f") == [200, 200]


def test_a_plain_stream_that_resumes_on_other_bytes_says_the_file_changed(session):
    session.headers["Connection"] = "close"
    new = o.File(os.urandom(len(DATA)))  # the same length and date, other bytes
    with o.Origin({"/f": DATA}, {"/f": [o.ranges_ignored, o.replaced_after(1, new),
                                        o.etag_per_connection(2), _cut_first]}) as origin:
        with pytest.raises(errors.FileChanged, match="bytes at offset 0 differ"):
            with open_stream(session, origin.url("/f"), retry=FAST) as stream:
                b"".join(stream)


def test_a_plain_stream_without_validators_is_not_spliced(session):
    cut_second = lambda req: setattr(req, "cut_after", 1000) or False  # noqa: E731
    with o.Origin({"/f": DATA}, {"/f": [o.no_etag, lambda r: setattr(r, "last_modified", None) or False,
                                        cut_second]}) as origin:
        with pytest.raises(errors.NetworkError, match="broke off"):
            with open_stream(session, origin.url("/f"), retry=FAST) as stream:
                b"".join(stream)


def test_a_content_coding_is_kept_as_served(session):
    gz = b"\x1f\x8b" + os.urandom(100_000)
    with o.Origin({"/p.tar.gz": gz}, {"/p.tar.gz": [o.content_encoding("x-gzip")]}) as origin:
        result = probe(session, origin.url("/p.tar.gz"), retry=FAST)
        assert result.encoding == "x-gzip"
        assert fetch_all(session, result, piece=30_000) == gz
        with open_stream(session, result.final_url, retry=FAST) as stream:
            assert b"".join(stream) == gz


def test_chunked_answers_with_ranges(session):
    with o.Origin({"/f": DATA}, {"/f": [o.chunked_bodies]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert result.splittable
        assert fetch_all(session, result) == DATA


def test_a_per_client_limit_is_waited_out(session):
    with o.Origin({"/f": DATA}, {"/f": [o.per_client_limit(1)]}) as origin:
        result = probe(session, origin.url("/f"), retry=Retry(attempts=8, first_delay=0.05))
        errors_seen: list[BaseException] = []
        parts = [bytearray(), bytearray()]

        def run(i):
            half = result.size // 2
            start, end = (0, half) if i == 0 else (half, result.size)
            fetch = RangeFetch(session, result.final_url, result.size, result.validator,
                               policy=Retry(attempts=8, first_delay=0.05, max_delay=1))
            try:
                fetch.run(start, lambda: end, lambda b: parts[i].extend(b) or True)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors_seen.append(exc)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors_seen and bytes(parts[0] + parts[1]) == DATA


@pytest.mark.parametrize("rule", [o.no_content_range_on_206, o.malformed_content_range,
                                  o.unknown_total, o.ranges_ignored])
def test_answers_that_cannot_be_planned_go_to_one_plain_stream(session, rule):
    with o.Origin({"/f": DATA}, {"/f": [rule]}) as origin:
        result = probe(session, origin.url("/f"), retry=FAST)
        assert not result.splittable
        with open_stream(session, result.final_url, retry=FAST) as stream:
            assert b"".join(stream) == DATA


def test_errors_are_one_plain_line(session):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(errors.NetworkError) as exc:
        probe(session, f"http://127.0.0.1:{port}/f", retry=FAST)
    assert exc.value.code is ErrorCode.CONNECTION_REFUSED
    assert str(exc.value) == f"connection refused by 127.0.0.1:{port}"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def test_an_untrusted_certificate_fails_at_once_and_says_what_to_do(certificate, monkeypatch):
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    with o.Origin({"/f": DATA}, tls=certificate) as origin:
        remote = RemoteFile(origin.url("/f"))
        with remote.session() as s, pytest.raises(errors.NetworkError) as exc:
            probe(s, remote, retry=Retry(attempts=5, first_delay=5))  # a retry would take 5 s
        assert exc.value.code is ErrorCode.TLS_UNTRUSTED
        assert str(exc.value).startswith("the certificate of 127.0.0.1 is not trusted")
        assert "--ca-certificate FILE" in str(exc.value) and "--insecure" in str(exc.value)
        for profile in (RequestProfile.build(ca_file=certificate[0]), RequestProfile.build(insecure=True)):
            remote = RemoteFile(origin.url("/f"), profile=profile)
            with remote.session() as s:
                result = probe(s, remote, retry=FAST)
                assert fetch_all(s, result, remote) == DATA


def test_a_ca_file_wins_over_the_environment(certificate, monkeypatch, tmp_path):
    other = tmp_path / "other.pem"
    other.write_text(open("/etc/ssl/certs/ca-certificates.crt").read()
                     if os.path.exists("/etc/ssl/certs/ca-certificates.crt") else "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    with o.Origin({"/f": DATA}, tls=certificate) as origin:
        remote = RemoteFile(origin.url("/f"), profile=RequestProfile.build(ca_file=certificate[0]))
        with remote.session() as s:
            assert probe(s, remote, retry=FAST).size == len(DATA)


def test_a_plain_stream_stops_at_once_when_aborted(session):
    with o.Origin({"/f": DATA * 20}, rate=200_000) as origin:
        stop = threading.Event()
        with open_stream(session, origin.url("/f"), retry=FAST, stop=stop) as stream:
            blocks = iter(stream)
            first = next(blocks)
            threading.Thread(target=stream.abort).start()
            with pytest.raises(errors.Cancelled):
                for _ in blocks:
                    pass
            assert stop.is_set() and 0 < len(first) < len(DATA) * 20


def test_a_url_only_this_machine_may_fetch_is_told_from_one_that_expired():
    now = [1000.0]
    rules = {"/b": [o.address_bound_redirect], "/bound/b": [o.address_bound_redirect],
             "/s": [o.signed_redirect(10, clock=lambda: now[0])],
             "/signed/s": [o.signed_redirect(10, clock=lambda: now[0])]}
    with o.Origin({"/b": DATA, "/s": DATA}, rules) as origin:
        bound = RemoteFile(origin.url("/b"))
        with bound.session() as s:
            result = probe(s, bound, retry=FAST)
        verdicts: list[bool] = []
        threads = [threading.Thread(target=lambda: verdicts.append(
            bound.refused_only_for_peer(result.final_url, size=len(DATA)))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # every slot of the helper gets the same answer, from one look at the origin
        assert verdicts == [True] * 4 and bound.refreshes == 1

        signed = RemoteFile(origin.url("/s"))
        with signed.session() as s:
            first = probe(s, signed, retry=FAST).final_url
        now[0] += 60
        assert not signed.refused_only_for_peer(first, size=len(DATA))
        assert signed.final_url != first  # expired for everyone: the next jobs carry a new URL


@pytest.mark.parametrize("fault", [dict(fail=503), dict(reset_after=20_000)])
@pytest.mark.parametrize("kind", ["range", "plain stream"])
def test_a_failure_met_and_retried_leaves_no_http_object_in_a_reference_cycle(
        origin, origin_root, no_collector, kind, fault):
    data = os.urandom(300_000)
    (origin_root / "f").write_bytes(data)
    with requests.Session() as s:
        result = probe(s, origin.url("/f"), retry=FAST)
        origin.configure(count=1, **fault)
        if kind == "range":
            got = bytearray()
            RangeFetch(s, result.final_url, result.size, result.validator, policy=FAST) \
                .run(0, lambda: len(data), lambda b: got.extend(b) or True)
        else:
            with open_stream(s, origin.url("/f"), retry=FAST) as blocks:
                got = bytearray(b"".join(blocks))
    assert bytes(got) == data
    assert not origin.config()["queued"].get("*"), "the fault met no request"
    assert http_objects_in_cycles() == []
