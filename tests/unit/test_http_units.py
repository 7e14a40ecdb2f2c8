"""Pure parts of the HTTP layer: URLs, headers and the range contract, error
translation by type, the retry value, the request profile. No sockets."""

import errno
import socket
import ssl
import threading
import weakref

import pytest
from hypothesis import given, strategies as st
import requests
import urllib3.exceptions as u3

from swift import errors
from swift.errors import ErrorCode
from swift.http import failures, headers as hd, url as u
from swift.http.profile import RequestProfile, load_cookies, parse_header
from swift.http.retry import Passthrough, Retry, call_with_retry
from swift.sessions import BlockedAddress


# -- URLs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("typed,sent", [
    ("http://127.0.0.1/x", "http://127.0.0.1/x"),
    ("https://localhost:8443/a%20b?q=1", "https://localhost:8443/a%20b?q=1"),
    ("HTTP://[::1]:8080/", "http://[::1]:8080/"),
    ("http://[::1]:8080/f.bin", "http://[::1]:8080/f.bin"),
    ("  http://127.0.0.1/my file.bin \n", "http://127.0.0.1/my%20file.bin"),
    ("http://127.0.0.1/données €uro.bin", "http://127.0.0.1/donn%C3%A9es%20%E2%82%ACuro.bin"),
    ("http://127.0.0.1/a\tb", "http://127.0.0.1/ab"),
    ("http://127.0.0.1/x?a=1 2&b=é#frag", "http://127.0.0.1/x?a=1%202&b=%C3%A9#frag"),
    ("http://bücher.example/", "http://xn--bcher-kva.example/"),
    ("http://127.0.0.1", "http://127.0.0.1/"),
    ("http://us%40er:p%3Ass@127.0.0.1:81/f", "http://us%40er:p%3Ass@127.0.0.1:81/f"),
    ("http://127.0.0.1/sig?x=a%2Fb&y=[1]", "http://127.0.0.1/sig?x=a%2Fb&y=[1]"),
])
def test_a_url_is_encoded_as_a_browser_would_and_a_correct_one_is_unchanged(typed, sent):
    assert u.normalize_url(typed) == sent
    assert u.normalize_url(sent) == sent


@pytest.mark.parametrize("typed,words", [
    ("ftp://127.0.0.1/x", "unsupported URL scheme 'ftp'"),
    ("file:///etc/passwd", "unsupported URL scheme 'file'"),
    ("javascript:alert(1)", "unsupported URL scheme"),
    ("127.0.0.1/x", "malformed URL '127.0.0.1/x': no scheme"),
    ("not a url", "malformed URL 'not a url': no scheme"),
    ("http://", "no host name"),
    ("http:///nohost", "no host name"),
    ("http:nohost/x", "expected http:// followed by a host name"),
    ("http://[::1/x", "the '[' of an IPv6 address is not closed"),
    ("http://[zz::1]/x", "is not an IPv6 address"),
    ("http://127.0.0.1:99999/", "the port 99999 is out of range (1-65535)"),
    ("http://127.0.0.1:8o/", "the port '8o' is not a number"),
    ("http://127.0.0.1/a\x01b", "control character"),
    ("http://ex ample.com/", "contains characters a host name cannot have"),
])
def test_a_malformed_url_says_what_is_wrong_in_it(typed, words):
    with pytest.raises(errors.UsageError, match=words.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")) as exc:
        u.normalize_url(typed)
    assert exc.value.code in (ErrorCode.BAD_URL, ErrorCode.UNSUPPORTED_SCHEME)


def test_a_password_is_never_shown():
    url = "http://us%40er:p%3Ass%20wd@127.0.0.1:81/f?x=1"
    assert u.redact_url(url) == "http://us%40er:***@127.0.0.1:81/f?x=1"
    assert u.redact_url("http://127.0.0.1/f") == "http://127.0.0.1/f"
    assert u.redact_url("http://tok@127.0.0.1/f") == "http://tok@127.0.0.1/f"
    assert u.split_credentials(url) == ("http://127.0.0.1:81/f?x=1", "us%40er", "p%3Ass%20wd")
    with pytest.raises(errors.UsageError) as exc:
        u.normalize_url("http://user:secret@127.0.0.1:99999/")
    assert "secret" not in str(exc.value)


# -- headers and the range contract -------------------------------------------------------------------
def test_content_range():
    assert hd.parse_content_range("bytes 0-99/1000") == (0, 100, 1000)
    assert hd.parse_content_range("bytes 5-5/*") == (5, 6, None)
    for bad in (None, "", "bytes 10-5/100", "bytes 0-100/100", "items 0-1/2", "bytes */100",
                "bytes=0-99/1000"):
        assert hd.parse_content_range(bad) is None
    assert hd.parse_unsatisfied_range("bytes */0") == 0
    assert hd.parse_unsatisfied_range(None) is None


def test_retry_after():
    assert hd.parse_retry_after("3") == 3.0
    assert hd.parse_retry_after(None) is None
    assert hd.parse_retry_after("soon") is None
    assert hd.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


V = hd.Validator('"v1"', "Mon, 01 Jan 2024 00:00:00 GMT")
GOOD = {"Content-Range": "bytes 10-19/100", "Content-Length": "10", "ETag": '"v1"'}


def check(status, headers, **kw):
    kw.setdefault("size", 100)
    kw.setdefault("validator", V)
    return hd.check_range_answer(status, headers, 10, 20, **kw)


def code_of(status, headers, **kw):
    try:
        span = check(status, headers, **kw)
    except errors.SwiftError as exc:
        return type(exc).__name__, exc.code
    assert span is not None
    return None


@pytest.mark.parametrize("status,headers,expected", [
    (206, GOOD, None),
    (206, {**GOOD, "ETag": None}, None),  # a validator the answer does not report is no evidence
    (206, {"Content-Range": "bytes 10-19/100"}, None),
    (206, {**GOOD, "Content-Range": "bytes 10-19/101"}, ("FileChanged", ErrorCode.FILE_CHANGED)),
    (206, {**GOOD, "ETag": '"v2"'}, ("ValidatorMismatch", ErrorCode.RANGE_MISMATCH)),
    (206, {**GOOD, "ETag": 'W/"v2"'}, None),  # a weak tag is not a validator
    (206, {"Content-Range": "bytes 10-18/100"}, None),  # less than asked: RFC 9110 section 15.3.7
    (206, {"Content-Range": "bytes 0-29/100", "Content-Length": "30"}, None),  # coalesced
    (206, {**GOOD, "Content-Range": "bytes 11-19/100"}, ("OriginError", ErrorCode.RANGE_MISMATCH)),
    (206, {**GOOD, "Content-Range": "bytes 0-9/100"}, ("OriginError", ErrorCode.RANGE_MISMATCH)),
    (206, {**GOOD, "Content-Range": None}, ("OriginError", ErrorCode.RANGE_MISMATCH)),
    (206, {**GOOD, "Content-Range": "bytes=10-19/100"}, ("OriginError", ErrorCode.RANGE_MISMATCH)),
    (206, {**GOOD, "Content-Length": "11"}, ("OriginError", ErrorCode.LENGTHS_DISAGREE)),
    (206, {**GOOD, "Content-Length": "9"}, ("OriginError", ErrorCode.LENGTHS_DISAGREE)),
    (206, {"Content-Range": "bytes 10-18/100", "Content-Length": "10"},
     ("OriginError", ErrorCode.LENGTHS_DISAGREE)),
    (206, {**GOOD, "Content-Encoding": "gzip"}, ("OriginError", ErrorCode.ENCODING_CHANGED)),
    (200, {"Content-Length": "100", "ETag": '"v1"'}, ("OriginError", ErrorCode.RANGE_IGNORED)),
    (200, {"Content-Length": "100"}, ("OriginError", ErrorCode.RANGE_IGNORED)),
    (200, {"Content-Length": "100", "ETag": '"v2"'}, ("ValidatorMismatch", ErrorCode.RANGE_MISMATCH)),
    (200, {"Content-Length": "90", "ETag": '"v1"'}, ("FileChanged", ErrorCode.FILE_CHANGED)),
])
def test_each_range_answer_gets_its_verdict(status, headers, expected):
    headers = {k: v for k, v in headers.items() if v is not None}
    assert code_of(status, headers) == expected


@pytest.mark.parametrize("content_range,span", [
    ("bytes 10-19/100", (10, 20)), ("bytes 10-14/100", (10, 15)), ("bytes 0-99/100", (0, 100)),
    ("bytes 5-10/100", (5, 11)),
])
def test_a_206_says_which_span_it_encloses(content_range, span):
    assert check(206, {"Content-Range": content_range}) == span


def test_a_206_may_not_start_more_than_the_lead_before_what_was_asked():
    size = 4 * hd.MAX_LEAD
    far = {"Content-Range": f"bytes 0-{size - 1}/{size}"}
    with pytest.raises(errors.OriginError) as caught:
        hd.check_range_answer(206, far, hd.MAX_LEAD + 1, size, size=size, validator=V)
    assert caught.value.code is ErrorCode.RANGE_MISMATCH
    assert hd.check_range_answer(206, far, hd.MAX_LEAD, size, size=size, validator=V) == (0, size)


def test_an_etag_proven_to_name_the_same_bytes_is_accepted_and_no_other():
    edge = {**GOOD, "ETag": '"edge1"'}
    assert code_of(206, edge, aliases=frozenset({'"edge1"'})) is None
    assert code_of(206, edge, aliases=frozenset({'"edge2"'})) == ("ValidatorMismatch",
                                                                 ErrorCode.RANGE_MISMATCH)


def test_last_modified_is_the_validator_only_without_an_etag():
    lm_only = hd.Validator(None, "Mon, 01 Jan 2024 00:00:00 GMT")
    other = {"Content-Range": "bytes 10-19/100", "Last-Modified": "Tue, 02 Jan 2024 00:00:00 GMT"}
    assert code_of(206, other, validator=lm_only) == ("ValidatorMismatch", ErrorCode.RANGE_MISMATCH)
    assert code_of(206, {**other, "ETag": '"v1"'}) is None  # the ETag agrees; dates may differ


def test_the_range_contract_counts_in_the_encoded_bytes():
    gz = {**GOOD, "Content-Encoding": "x-gzip"}
    assert code_of(206, gz, encoding="x-gzip") is None
    assert code_of(206, GOOD, encoding="x-gzip") == ("OriginError", ErrorCode.ENCODING_CHANGED)
    assert hd.content_coding(" GZIP ") == "gzip" and hd.content_coding("identity") == ""


# -- errors by type -------------------------------------------------------------------------------
def chain(*excs):
    """outer(inner(...)) linked the way requests and urllib3 link them"""
    for outer, inner in zip(excs, excs[1:]):
        outer.__cause__ = inner
    return excs[0]


URL = "https://user:hunter2@files.example:8443/f.bin"


@pytest.mark.parametrize("exc,code,words", [
    (chain(requests.exceptions.ConnectionError("HTTPConnectionPool(host=...): Max retries exceeded"),
           u3.NewConnectionError(None, "Failed to establish"), ConnectionRefusedError(111, "x")),
     ErrorCode.CONNECTION_REFUSED, "connection refused by files.example:8443"),
    (chain(requests.exceptions.ConnectionError("anything at all"), socket.gaierror(-2, "whatever")),
     ErrorCode.DNS_FAILED, "cannot resolve host name 'files.example'"),
    (chain(requests.exceptions.SSLError("HTTPSConnectionPool ... Max retries exceeded"),
           ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")),
     ErrorCode.TLS_UNTRUSTED, "the certificate of files.example is not trusted"),
    (requests.exceptions.SSLError("wrong version number"), ErrorCode.TLS_FAILED, "TLS handshake"),
    (requests.exceptions.ConnectTimeout("x"), ErrorCode.CONNECT_TIMEOUT, "timed out connecting"),
    (requests.exceptions.ReadTimeout("x"), ErrorCode.READ_TIMEOUT, "stopped sending"),
    (chain(u3.ProtocolError("Connection broken: IncompleteRead(5 bytes read)"),
           ConnectionResetError(104, "x")), ErrorCode.CONNECTION_RESET, "broke off"),
    (requests.exceptions.ChunkedEncodingError("x"), ErrorCode.CONNECTION_RESET, "broke off"),
    (requests.exceptions.InvalidSchema("x"), ErrorCode.UNSUPPORTED_SCHEME, "unsupported URL scheme"),
    (requests.exceptions.TooManyRedirects("x"), ErrorCode.TOO_MANY_REDIRECTS, "redirected too many"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), ErrorCode.NETWORK, "network is unreachable"),
    (chain(requests.exceptions.ConnectionError("HTTPConnectionPool(host=...): Max retries exceeded"),
           u3.NewConnectionError(None, "Failed to establish"),
           OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")),
     ErrorCode.NETWORK, "cannot connect to files.example: cannot assign requested address"),
    (chain(requests.exceptions.ConnectionError("x"), u3.ConnectTimeoutError(None, "timed out")),
     ErrorCode.CONNECT_TIMEOUT, "timed out connecting"),
    (BlockedAddress("files.example", "10.0.0.1"), ErrorCode.ADDRESS_BLOCKED, "refusing to fetch"),
])
def test_library_errors_become_plain_words_chosen_by_type(exc, code, words):
    error = failures.translate(exc, URL)
    assert error.code is code and words in str(error)
    for internal in ("Pool", "Max retries", "Caused by", "IncompleteRead", "hunter2", "urllib3"):
        assert internal not in str(error)


def test_message_text_does_not_decide_the_kind():
    # a reset whose text happens to say "refused" is still a reset
    exc = chain(u3.ProtocolError("refused"), ConnectionResetError(104, "name or service not known"))
    assert failures.translate(exc, URL).code is ErrorCode.CONNECTION_RESET


def test_an_unknown_exception_is_a_bug_not_a_network_error():
    assert failures.translate(KeyError("x"), URL) is None


def test_statuses_are_sorted_by_what_to_do():
    assert failures.status_error(503, "", URL, "7").code is ErrorCode.SERVER_BUSY
    assert failures.status_error(503, "", URL, "7").retry_after == 7
    assert failures.status_error(403, "Forbidden", URL).code is ErrorCode.ACCESS_DENIED
    assert failures.status_error(400, "", URL).code is ErrorCode.HTTP_STATUS
    assert "hunter2" not in str(failures.status_error(404, "", URL))


def test_errors_survive_pickling_with_their_code():
    import pickle
    e = pickle.loads(pickle.dumps(errors.OriginError("x", ErrorCode.SERVER_BUSY, status=503)))
    assert (type(e), e.code, e.status, str(e)) == (errors.OriginError, ErrorCode.SERVER_BUSY, 503, "x")
    f = pickle.loads(pickle.dumps(errors.FileChanged("size 1 became 2")))
    assert str(f) == "the file changed on the server (size 1 became 2)"


# -- retry --------------------------------------------------------------------------------------------
BUSY = errors.OriginError("the server answered 503", ErrorCode.SERVER_BUSY, retry_after=None)


def test_retry_is_a_value_and_increment_returns_a_new_one():
    r = Retry(attempts=4, first_delay=0.5, max_delay=30)
    delays = []
    for _ in range(3):
        r2 = r.increment(BUSY)
        assert r2 is not r and r.failures + 1 == r2.failures
        r = r2
        delays.append(r.delay(BUSY))
    assert delays == [0.5, 1.0, 2.0]
    with pytest.raises(errors.OriginError):
        r.increment(BUSY)
    assert r.reset().failures == 0


def test_retry_honours_retry_after_with_a_ceiling():
    r = Retry(max_delay=30).increment(BUSY)
    assert r.delay(errors.OriginError("x", ErrorCode.SERVER_BUSY, retry_after=5)) == 5
    assert r.delay(errors.OriginError("x", ErrorCode.SERVER_BUSY, retry_after=3600)) == 30


@pytest.mark.parametrize("code", [ErrorCode.TLS_UNTRUSTED, ErrorCode.DNS_FAILED,
                                  ErrorCode.CONNECTION_REFUSED, ErrorCode.ADDRESS_BLOCKED,
                                  ErrorCode.FILE_CHANGED, ErrorCode.ACCESS_DENIED])
def test_what_will_not_mend_is_not_retried(code):
    with pytest.raises(errors.SwiftError):
        Retry(attempts=5).increment(errors.SwiftError("x", code))


def test_the_loop_gives_up_clearly_after_the_budget():
    calls = []

    def action():
        calls.append(1)
        raise BUSY

    with pytest.raises(errors.OriginError, match="503"):
        call_with_retry(action, Retry(attempts=3, first_delay=0), url=URL, wait=lambda s: False)
    assert len(calls) == 3


def test_the_loop_translates_and_stops_at_once_on_a_certificate():
    calls = []

    def action():
        calls.append(1)
        raise chain(requests.exceptions.SSLError("HTTPSConnectionPool"), ssl.SSLCertVerificationError(1, "x"))

    with pytest.raises(errors.NetworkError, match="--ca-certificate FILE.*--insecure"):
        call_with_retry(action, Retry(attempts=5), url=URL, wait=lambda s: False)
    assert len(calls) == 1


def test_progress_restarts_the_budget_and_bugs_and_passthroughs_propagate():
    n = {"calls": 0}
    moved = iter([True, True, True, True, False, False])

    def action():
        n["calls"] += 1
        raise BUSY

    with pytest.raises(errors.OriginError):
        call_with_retry(action, Retry(attempts=2, first_delay=0), url=URL, wait=lambda s: False,
                        progressed=lambda: next(moved))
    assert n["calls"] == 5  # four failures after progress, then one in a row more than allowed
    with pytest.raises(KeyError):
        call_with_retry(lambda: {}["x"], Retry(), url=URL, wait=lambda s: False)

    def deliver_fails():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise Passthrough() from exc
    with pytest.raises(OSError, match="No space"):
        call_with_retry(deliver_fails, Retry(), url=URL, wait=lambda s: False)


def test_a_stop_cancels_the_wait():
    stop = threading.Event()

    def action():
        stop.set()
        raise BUSY

    with pytest.raises(errors.Cancelled):
        call_with_retry(action, Retry(first_delay=60), url=URL, stop=stop)


# -- no reference cycles: a failure must not keep a response (and its pool's sockets) alive ---------
class _Response:
    """Stands for a response, and so for the connection pool it names (whose idle sockets
    close only when the pool is freed)."""


def _failing_read(alive: list) -> None:
    """A read that fails as ``iter_body``'s does (a SwiftError from the library's), in a
    frame that holds its response, as a range fetch's does."""
    response = _Response()  # noqa: F841
    alive.append(weakref.ref(response))
    try:
        raise requests.exceptions.ConnectionError("read failed")
    except requests.exceptions.ConnectionError as exc:
        raise errors.NetworkError("reading from files.example failed",
                                  ErrorCode.CONNECTION_RESET) from exc


def _refusing_answer(alive: list) -> None:
    response = _Response()  # noqa: F841
    alive.append(weakref.ref(response))
    raise errors.OriginError("the server answered 404", ErrorCode.ACCESS_DENIED, status=404)


def test_a_retried_failure_frees_its_response_without_the_cycle_collector(no_collector):
    alive: list = []

    def action():
        if not alive:
            _failing_read(alive)
        return "done"

    assert call_with_retry(action, Retry(first_delay=0), url=URL, wait=lambda s: False) == "done"
    assert alive and alive[0]() is None, "the failed read's response is kept by a reference cycle"


@pytest.mark.parametrize("fail", [_failing_read, _refusing_answer])
def test_a_failure_given_up_on_frees_its_responses_once_handled(no_collector, fail):
    alive: list = []
    try:
        call_with_retry(lambda: fail(alive), Retry(attempts=2, first_delay=0), url=URL,
                        wait=lambda s: False)
    except errors.SwiftError:
        pass
    assert alive and all(ref() is None for ref in alive), "a response is kept by a reference cycle"


def test_a_passthrough_frees_its_response_once_handled(no_collector):
    alive: list = []

    def deliver_fails():
        response = _Response()  # noqa: F841
        alive.append(weakref.ref(response))
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise Passthrough() from exc

    try:
        call_with_retry(deliver_fails, Retry(), url=URL, wait=lambda s: False)
    except OSError:
        pass
    assert alive and alive[0]() is None, "the response is kept by a reference cycle"


# -- the request profile ------------------------------------------------------------------------------
COOKIES_TXT = """# Netscape HTTP Cookie File
127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc123
.example.com\tTRUE\t/\tTRUE\t2147483647\ttoken\tzzz
"""


def test_headers_user_agent_and_referer(tmp_path):
    p = RequestProfile.build(headers=["X-A: 1", "user-agent: curl/8", "Authorization: Bearer t0k"],
                             referer="http://127.0.0.1/page")
    h = p.request_headers()
    assert h["user-agent"] == "curl/8" and "User-Agent" not in h
    assert h["X-A"] == "1" and h["Referer"] == "http://127.0.0.1/page"
    assert RequestProfile.build(user_agent="Mozilla/5.0 x", headers=["User-Agent: y"]) \
        .request_headers()["User-Agent"] == "Mozilla/5.0 x"
    assert RequestProfile().request_headers() == {"User-Agent": "swift-downloader"}


@pytest.mark.parametrize("line,words", [
    ("no colon", "expected 'Name: value'"),
    (": v", "expected 'Name: value'"),
    ("Bad Name: v", "not a valid HTTP field name"),
    ("X: a\r\nInjected: 1", "control character"),
    ("Range: bytes=0-1", "set by swift itself"),
    ("Accept-Encoding: gzip", "set by swift itself"),
])
def test_bad_headers_are_refused_with_a_reason(line, words):
    with pytest.raises(errors.UsageError, match=words):
        parse_header(line)


def test_secrets_are_known_and_never_shown(tmp_path):
    jar_file = tmp_path / "cookies.txt"
    jar_file.write_text(COOKIES_TXT)
    p = RequestProfile.build(headers=["Authorization: Bearer t0k", "X-Trace: 7"],
                             cookie_file=str(jar_file))
    assert [c.name for c in p.cookies] == ["session", "token"]
    assert p.secrets("http://u:pw@127.0.0.1/") == ["the Authorization header", "cookies from a cookie file",
                                                    "credentials in the URL"]
    assert RequestProfile.build(headers=["X-Trace: 7"]).secrets("http://127.0.0.1/") == []
    shown = repr(p) + str(p.redacted())
    assert "t0k" not in shown and "abc123" not in shown and "zzz" not in shown
    public = p.peer_headers(private=False, cookie_header="session=abc123")
    assert ["X-Trace", "7"] in public and not any(n.lower() in ("authorization", "cookie") for n, _ in public)
    private = p.peer_headers(private=True, cookie_header="session=abc123")
    assert ["Authorization", "Bearer t0k"] in private and ["Cookie", "session=abc123"] in private


@pytest.mark.parametrize("name", ["X-Api-Key", "PRIVATE-TOKEN", "Job-Token", "X-Auth-Token",
                                  "X-JFrog-Art-Api", "Ocp-Apim-Subscription-Key", "X-Session-Id",
                                  "X-Amz-Security-Token", "x-client-secret"])
def test_a_header_named_for_a_credential_is_a_secret_kept_from_open_helpers_and_logs(name):
    p = RequestProfile.build(headers=[f"{name}: s3cr3t", "Accept-Language: de"])
    assert p.secrets() == [f"the {name} header"]  # so the file is never offered either
    public = p.peer_headers(private=False)
    assert ["Accept-Language", "de"] in public and not any("s3cr3t" in v for _, v in public)
    assert [name, "s3cr3t"] in p.peer_headers(private=True)
    assert "s3cr3t" not in repr(p) + str(p.redacted())


def test_headers_that_carry_no_credential_are_not_secrets():
    from swift.http.profile import is_secret_header
    assert not any(is_secret_header(n) for n in ["Accept", "Accept-Language", "X-Trace", "DNT",
                                                 "Keep-Alive", "X-Requested-With", "Origin"])


def test_an_account_credential_in_the_query_is_a_secret_and_a_signed_urls_signature_is_not():
    from swift import content
    from swift.http import redact_url
    from swift.http.url import secret_query_parameters
    p = RequestProfile.build()
    url = "https://h/f.iso?Access_Token=abc&x=1&api%5Fkey=k"
    assert secret_query_parameters(url) == ["Access_Token", "api%5Fkey"]
    assert p.secrets(url) == ["a credential in the URL's query (Access_Token, api%5Fkey)"]
    # so the file is never offered (content.private_reasons takes these secrets as they are)
    assert content.private_reasons(p.secrets(url), None)
    signed = "https://b.s3.amazonaws.com/f.iso?X-Amz-Signature=s&X-Amz-Expires=60&token=t&sig=x"
    assert p.secrets(signed) == [] and secret_query_parameters("https://h/f?access_token") \
        == ["access_token"]
    # and its value is never printed
    assert redact_url(url) == "https://h/f.iso?Access_Token=***&x=1&api%5Fkey=***"
    assert redact_url("https://u:pw@h/f?x=1") == "https://u:***@h/f?x=1"
    assert redact_url(signed) == signed
    assert "abc" not in redact_url("ht tp://[bad/f?access_token=abc", strict=False)


def test_bad_cookie_and_ca_files_say_so(tmp_path):
    with pytest.raises(errors.UsageError, match="no such file"):
        RequestProfile.build(cookie_file=str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("not cookies at all\n")
    with pytest.raises(errors.UsageError, match="not a Netscape cookies.txt"):
        load_cookies(str(bad))
    with pytest.raises(errors.UsageError, match="--ca-certificate"):
        RequestProfile.build(ca_file=str(tmp_path / "none.pem"))
    assert RequestProfile.build(insecure=True).verify is False
    assert RequestProfile().verify is True


def test_a_helper_gets_secrets_only_over_a_private_connection():
    from swift.http import RemoteFile
    t = RemoteFile("http://us%40er:p%3Ass%20wd@127.0.0.1:81/f",
               profile=RequestProfile.build(headers=["X-Trace: 1"], user_agent="Mozilla/5.0 x"))
    assert t.secrets() == ["credentials in the URL"]
    t.jar.set("dl", "7f3a", domain="127.0.0.1", path="/")
    assert t.secrets() == ["credentials in the URL", "cookies the server set"]
    url, public = t.for_peer(private=False)
    assert url == "http://127.0.0.1:81/f"
    assert sorted(public) == [["User-Agent", "Mozilla/5.0 x"], ["X-Trace", "1"]]
    url, private = t.for_peer(private=True)
    assert url == "http://127.0.0.1:81/f"
    assert ["Cookie", "dl=7f3a"] in private
    assert ["Authorization", "Basic dXNAZXI6cDpzcyB3ZA=="] in private  # what requests would send
    assert "p%3Ass" not in repr(t) and "***" in repr(t)
    assert RemoteFile("http://127.0.0.1/f").secrets() == []


def test_a_range_request_keeps_its_own_headers_whatever_it_is_given():
    from swift.http.rangefetch import range_headers
    given = [["X-Token", "t"], ["range", "bytes=0-"], ["IF-RANGE", '"forged"'], ["Accept-Encoding", "gzip"],
             ["Transfer-Encoding", "chunked"]]
    assert range_headers(given, 10, 20, None) == {"X-Token": "t", "Range": "bytes=10-19",
                                                  "Accept-Encoding": "identity"}
    assert range_headers({"X-Token": "t"}, 0, 1, '"v1"')["If-Range"] == '"v1"'


def test_a_range_the_server_ignored_is_asked_again_at_once():
    ignored = errors.OriginError("ignored", ErrorCode.RANGE_IGNORED, status=200)
    r = Retry(first_delay=0.5).increment(ignored)
    assert r.delay(ignored) == 0.0 and r.delay(BUSY) == 0.5


# -- multipart/byteranges, read as it streams -------------------------------------------------------
from swift.http import multipart as mp  # noqa: E402
from swift.http.samefile import SAMPLE_SIZE, SameFile  # noqa: E402

BODY = (b"preamble\r\n--b0\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 5-9/20"
        b"\r\n\r\n01234\r\n--b0\r\nContent-Range: bytes 10-11/20\r\n\r\nab\r\n--b0--\r\nepilogue")


def _parts(body: bytes, n: int, boundary: bytes = b"b0"):
    out = list(mp.iter_parts([body[i:i + n] for i in range(0, len(body), n)], boundary))
    return ([x for x in out if isinstance(x, mp.Part)], b"".join(x for x in out if isinstance(x, bytes)))


@given(st.integers(1, len(BODY)))
def test_a_multipart_body_reads_the_same_in_blocks_of_any_size(n):
    assert _parts(BODY, n) == ([mp.Part(5, 10, 20), mp.Part(10, 12, 20)], b"01234ab")


@pytest.mark.parametrize("body", [
    BODY.replace(b"bytes 5-9/20", b"bytes 5-10/20"),         # a part longer than its range says
    BODY.replace(b"bytes 10-11/20", b"bytes 10-13/20"),      # a body that ends inside a part
    BODY.replace(b"Content-Range: bytes 5-9/20", b"X: y"),   # a part without Content-Range
    BODY.replace(b"--b0", b"--zz"),                          # another boundary
])
def test_a_malformed_multipart_body_is_a_range_mismatch(body):
    with pytest.raises(errors.OriginError) as caught:
        _parts(body, 7)
    assert caught.value.code is ErrorCode.RANGE_MISMATCH


def test_the_boundary_comes_from_the_content_type():
    assert mp.boundary_of({"Content-Type": 'multipart/byteranges; boundary="a b"'}) == b"a b"
    assert mp.boundary_of({"Content-Type": "multipart/byteranges;boundary=x1"}) == b"x1"
    assert mp.boundary_of({"Content-Type": "application/octet-stream"}) is None
    with pytest.raises(errors.OriginError):
        mp.boundary_of({"Content-Type": "multipart/byteranges"})


# -- one file, several ETags ---------------------------------------------------------------------------
def test_the_sample_is_the_first_contiguous_bytes_written():
    same = SameFile(V)
    same.wrote(100, b"x" * 10)
    same.wrote(500, b"y" * (SAMPLE_SIZE - 1))   # not contiguous: starts again here
    assert same.sample() is None
    same.wrote(499 + SAMPLE_SIZE, b"zz")
    assert same.sample() == (500, b"y" * (SAMPLE_SIZE - 1) + b"z")


def test_a_short_body_is_a_sample_once_it_ends():
    same = SameFile(V)
    same.wrote(0, b"tiny")
    assert same.sample() is None
    same.finish()
    assert same.sample() == (0, b"tiny")


def test_another_etag_is_an_alias_only_when_its_bytes_are_the_samples():
    same = SameFile(V)
    same.wrote(0, b"a" * SAMPLE_SIZE)
    edge1, edge2 = hd.Validator('"edge1"'), hd.Validator('"edge2"')
    assert not same.accepts(edge1) and same.prove(edge1, 0, b"a" * SAMPLE_SIZE) is True
    assert same.accepts(edge1) and same.per_edge and same.aliases == frozenset({'"edge1"'})
    assert same.prove(edge2, 0, b"b" * SAMPLE_SIZE) is False      # other bytes: the file changed
    assert not same.accepts(edge2)
    assert same.prove(edge2, 1, b"a" * SAMPLE_SIZE) is None       # another range proves nothing


def test_another_etag_with_another_date_too_is_never_an_alias():
    same = SameFile(V)
    same.wrote(0, b"a" * SAMPLE_SIZE)
    both = hd.Validator('"edge1"', "Tue, 02 Jan 2024 00:00:00 GMT")
    assert same.prove(both, 0, b"a" * SAMPLE_SIZE) is None and not same.accepts(both)
    assert same.prove(both, 0, b"b" * SAMPLE_SIZE) is False


def test_without_an_etag_another_date_is_an_alias_only_by_the_same_bytes():
    lm_only = SameFile(hd.Validator(None, "Mon, 01 Jan 2024 00:00:00 GMT"))
    other = hd.Validator(None, "Tue, 02 Jan 2024 00:00:00 GMT")
    lm_only.wrote(0, b"q")
    lm_only.finish()
    assert not lm_only.accepts(other)
    assert lm_only.prove(other, 0, b"q") is True and lm_only.accepts(other)


def test_if_range_is_dropped_once_etags_are_known_to_differ_per_edge():
    from swift.http.remote import RemoteFile
    remote = RemoteFile("http://files.example/f", final_url="http://files.example/f")
    same = remote.same_file(V)
    assert remote.if_range(V) == V.etag
    same.wrote(0, b"s")
    same.finish()
    same.prove(hd.Validator('"edge1"'), 0, b"s")
    assert remote.if_range(V) is None


def test_lengths_that_disagree_twice_give_the_ranges_up():
    from swift.http.remote import LENGTH_STRIKES, RemoteFile
    remote = RemoteFile("http://files.example/f")
    assert [remote.lengths_disagreed() for _ in range(LENGTH_STRIKES)] == \
        [False] * (LENGTH_STRIKES - 1) + [True]
