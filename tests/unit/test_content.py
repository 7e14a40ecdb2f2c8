"""Content identity, labels and privacy (``swift.content``): signed URLs match, different files never."""

from __future__ import annotations

import pytest

from swift.content import ContentIdentity, label, private_reasons, url_key

S3 = ("https://bucket.s3.amazonaws.com/iso/disk.iso?X-Amz-Algorithm=AWS4-HMAC-SHA256"
      "&X-Amz-Credential={c}&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600"
      "&X-Amz-SignedHeaders=host&X-Amz-Signature={s}")


def test_two_signatures_of_one_object_have_one_url_key():
    assert url_key(S3.format(c="AKIA1", s="aa11")) == url_key(S3.format(c="AKIA2", s="bb22")) == \
        "https://bucket.s3.amazonaws.com/iso/disk.iso"


@pytest.mark.parametrize("url", [
    "https://cdn.example/f.bin?Expires=1&Signature=abc&Key-Pair-Id=K",
    "https://cdn.example/f.bin?token=xyz",
    "https://cdn.example/f.bin?sv=2024&se=2026&sig=abc%3D",
    "HTTPS://CDN.example:443/f.bin#frag",
    "https://user:pw@cdn.example/f.bin",
])
def test_signing_parameters_case_port_credentials_and_fragment_leave_the_key(url):
    assert url_key(url) == "https://cdn.example/f.bin"


def test_other_query_parameters_stay_in_their_order():
    assert url_key("http://h/get?file=b&v=2&Signature=x") == "http://h/get?file=b&v=2"
    assert url_key("http://h/get?v=2&file=b") != url_key("http://h/get?file=b&v=2")
    assert url_key("http://h/get?file=a") != url_key("http://h/get?file=b")


def test_no_validator_or_no_length_means_no_identity():
    assert ContentIdentity.of("http://h/f", 10, "", None, None) is None
    assert ContentIdentity.of("http://h/f", None, "", '"e"', None) is None


def test_length_coding_and_validator_all_enter_the_label():
    base = ContentIdentity.of("http://h/f?token=1", 10, "", '"e1"', None)
    same = ContentIdentity.of("http://h/f?token=2", 10, "", '"e1"', None)
    others = [ContentIdentity.of("http://h/f", 11, "", '"e1"', None),
              ContentIdentity.of("http://h/f", 10, "gzip", '"e1"', None),
              ContentIdentity.of("http://h/f", 10, "", '"e2"', None),
              ContentIdentity.of("http://h/g", 10, "", '"e1"', None),
              ContentIdentity.of("http://h/f", 10, "", None, "Tue, 01 Jan 2030 00:00:00 GMT")]
    assert label(base, b"k") == label(same, b"k")
    labels = {label(x, b"k") for x in others} | {label(base, b"k")}
    assert len(labels) == len(others) + 1


def test_a_trusted_digest_is_the_identity_whatever_the_url():
    a = ContentIdentity.of("http://mirror-a/f", 10, "", '"x"', None, digest="SHA256:AB")
    b = ContentIdentity.of("http://mirror-b/g", 10, "", None, None, digest="sha256:ab")
    assert a == b and label(a, None) == label(b, None)


def test_the_label_depends_on_the_secret_and_hides_the_url():
    ident = ContentIdentity.of("http://h/secret-name.iso", 10, "", '"e"', None)
    one, two, open_pool = label(ident, b"one"), label(ident, b"two"), label(ident, None)
    assert len({one, two, open_pool}) == 3
    assert all(len(x) == 64 and "secret-name" not in x for x in (one, two, open_pool))


def test_credentials_cookies_and_private_answers_are_private():
    assert private_reasons([], None) == []
    assert private_reasons([], "public, max-age=60") == []
    assert private_reasons(["credentials in the URL"], None) == ["credentials in the URL"]
    assert private_reasons([], "max-age=0, Private") == ["the server marked it Cache-Control: private"]
    assert private_reasons([], 'no-store, private="Set-Cookie"') == [
        "the server marked it Cache-Control: private", "the server marked it Cache-Control: no-store"]
