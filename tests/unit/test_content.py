"""swift.content: what a file is (ContentIdentity), apart from where it came from (Provenance)."""

from __future__ import annotations

import pytest

from swift import http, storage
from swift.content import ContentIdentity, Provenance
from swift.engine import target

SHA = "sha256:" + "ab" * 32


def probe(url, final=None, size=1000, etag='"v1"', last_modified=None, encoding=""):
    return http.ProbeResult(url, final or url, size, True, http.Validator(etag, last_modified),
                            encoding=encoding)


def test_one_file_under_two_urls_is_one_content_and_two_provenances():
    a = target.content_identity(probe("http://a.test/x.iso"))
    b = target.content_identity(probe("http://mirror.test/pub/x.iso"))
    assert a == b and a.same_content(b) and a.canonical() == b.canonical()
    assert b"a.test" not in a.canonical() and b"mirror" not in a.canonical()  # never the URL
    ia = target.identity("http://a.test/x.iso", probe("http://a.test/x.iso"))
    assert ia.content == a and ia.provenance == Provenance("http://a.test/x.iso", "http://a.test/x.iso")


@pytest.mark.parametrize("other", [
    ContentIdentity(1001, "", '"v1"'),          # another length
    ContentIdentity(1000, "gzip", '"v1"'),      # another coding
    ContentIdentity(1000, "", '"v2"'),          # another version
    ContentIdentity(1000, "", None, "Tue, 01 Dec 2026 10:00:00 GMT"),
])
def test_another_length_coding_or_validator_is_other_content(other):
    assert not ContentIdentity(1000, "", '"v1"').same_content(other)


def test_no_strong_validator_means_no_identity_to_share_under():
    weakless = target.content_identity(probe("http://a.test/x", etag=None))  # a weak ETag is dropped
    assert not weakless.shareable and not weakless.same_content(weakless)
    with pytest.raises(ValueError):
        ContentIdentity(10, "", 'W/"x"')
    assert ContentIdentity(10, "", None, "Tue, 01 Dec 2026 10:00:00 GMT").shareable


def test_a_trusted_digest_is_the_identity_whatever_the_validators():
    a = ContentIdentity.of(1000, "", '"v1"', None, "SHA256:" + "AB" * 32)
    b = ContentIdentity.of(1000, "", None, None, SHA)
    assert a.digest == SHA and a.shareable and b.shareable
    assert a.same_content(b) and a.canonical() == b.canonical()
    assert not a.same_content(ContentIdentity.of(1000, "", '"v1"', None, "sha256:" + "cd" * 32))


def test_the_resume_identity_keeps_its_record_fields_and_splits_into_its_two_parts():
    ident = storage.FileIdentity("http://a.test/x", "http://cdn.test/x", 1000, '"v1"', None)
    assert ident.content == ContentIdentity(1000, "", '"v1"', None)
    assert storage.FileIdentity.of(ident.content, ident.provenance) == ident
    assert ident.provenance.urls == {"http://a.test/x", "http://cdn.test/x"}
