"""Pure parts of the HTTP layer: URL checks, header parsing, retry policy."""

import pytest

from swift import httpclient as h


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "https://localhost:8443/a%20b?q=1",
                                 "HTTP://[::1]:8080/"])
def test_check_url_accepts(url):
    assert h.check_url(url) == url


@pytest.mark.parametrize("url,words", [
    ("ftp://127.0.0.1/x", "unsupported URL scheme 'ftp'"),
    ("file:///etc/passwd", "unsupported URL scheme 'file'"),
    ("javascript:alert(1)", "unsupported URL scheme"),
    ("127.0.0.1/x", "malformed URL"),
    ("http://", "no host name"),
    ("http://[::1/x", "malformed URL"),
    ("http://127.0.0.1:99999/", "malformed URL"),
    ("http://127.0.0.1/a b", "malformed URL"),
])
def test_check_url_refuses(url, words):
    with pytest.raises(h.HttpError, match=words.replace("(", r"\(")):
        h.check_url(url)


def test_content_range():
    assert h.parse_content_range("bytes 0-99/1000") == (0, 100, 1000)
    assert h.parse_content_range("bytes 5-5/*") == (5, 6, None)
    for bad in (None, "", "bytes 10-5/100", "bytes 0-100/100", "items 0-1/2", "bytes */100"):
        assert h.parse_content_range(bad) is None


def test_retry_after():
    assert h.parse_retry_after("3") == 3.0
    assert h.parse_retry_after(None) is None
    assert h.parse_retry_after("soon") is None
    assert h.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_retry_policy_honours_retry_after_with_a_ceiling():
    p = h.RetryPolicy(attempts=4, first_delay=0.5, max_delay=30)
    assert [p.delay(i, None) for i in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert p.delay(0, 5) == 5
    assert p.delay(0, 3600) == 30


def test_with_retries_gives_up_clearly():
    calls = []

    def action():
        calls.append(1)
        raise h.RetryableError("the server answered 503", retry_after=0)

    with pytest.raises(h.HttpError, match="503"):
        h.with_retries(action, policy=h.RetryPolicy(attempts=3, first_delay=0), what="x",
                       sleep=lambda s: None)
    assert len(calls) == 3


def test_with_retries_does_not_retry_permanent_errors():
    calls = []

    def action():
        calls.append(1)
        raise h.HttpError("the server answered 404 Not Found")

    with pytest.raises(h.HttpError, match="404"):
        h.with_retries(action, policy=h.RetryPolicy(attempts=5), what="x", sleep=lambda s: None)
    assert len(calls) == 1
