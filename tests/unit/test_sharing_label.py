"""What content is shared under (``swift.content``): the normalised URL, the label, what is
private. Signed URLs of one object match; different files never."""

from __future__ import annotations

import pytest

from swift.content import ContentIdentity, identity_digest, label, private_reasons, url_key

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


def key(url, size=10, coding="", etag='"e1"', last_modified=None, digest=None):
    return ContentIdentity.of(size, coding, etag, last_modified, digest), url_key(url)


def test_length_coding_validator_and_url_all_enter_the_label():
    base = label(*key("http://h/f?token=1")[:1], b"k", key("http://h/f?token=1")[1])
    same = label(*key("http://h/f?token=2")[:1], b"k", key("http://h/f?token=2")[1])
    others = [key("http://h/f", size=11), key("http://h/f", coding="gzip"),
              key("http://h/f", etag='"e2"'), key("http://h/g"),
              key("http://h/f", etag=None, last_modified="Tue, 01 Jan 2030 00:00:00 GMT")]
    assert base == same
    labels = {label(i, b"k", u) for i, u in others} | {base}
    assert len(labels) == len(others) + 1


def test_a_trusted_digest_is_the_label_whatever_the_url():
    a, ua = key("http://mirror-a/f", digest="SHA256:AB")
    b, ub = key("http://mirror-b/g", etag=None, digest="sha256:ab")
    assert label(a, None, ua) == label(b, None, ub)


def test_the_label_depends_on_the_secret_and_hides_the_url():
    ident, u = key("http://h/secret-name.iso")
    one, two, open_pool = label(ident, b"one", u), label(ident, b"two", u), label(ident, None, u)
    assert len({one, two, open_pool}) == 3
    assert all(len(x) == 64 and "secret-name" not in x for x in (one, two, open_pool))


def test_credentials_cookies_and_private_answers_are_private():
    assert private_reasons([], None) == []
    assert private_reasons([], "public, max-age=60") == []
    assert private_reasons(["credentials in the URL"], None) == ["credentials in the URL"]
    assert private_reasons([], "max-age=0, Private") == ["the server marked it Cache-Control: private"]
    assert private_reasons([], 'no-store, private="Set-Cookie"') == [
        "the server marked it Cache-Control: private", "the server marked it Cache-Control: no-store"]


@pytest.mark.parametrize("checksum, digest", [
    ("sha256:" + "AB" * 32, "sha256:" + "ab" * 32),
    ("SHA-256:" + "ab" * 32, "sha256:" + "ab" * 32),
    ("sha512:" + "cd" * 64, "sha512:" + "cd" * 64),
    ("md5:" + "ab" * 16, None),       # chosen-prefix collisions: never a name on its own
    ("sha1:" + "ab" * 20, None),
    ("sha256:abc", None),             # not a whole digest
    ("", None),
    (None, None),
])
def test_only_a_whole_sha256_or_sha512_names_content(checksum, digest):
    assert identity_digest(checksum) == digest
