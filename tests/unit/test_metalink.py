"""Metalink 4 documents, piece hashes, and the mirror and digest headers of RFC 6249 / 9530 / 3230.

Hostile documents (entity expansion, external entities, a 100 MB document,
``file://`` URLs, ``../`` names) each end in one clear line.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from swift import metalink
from swift.checksums import algorithm_of, hex_of_base64, parse_checksum, strongest
from swift.errors import ErrorCode, UsageError
from swift.http.mirrors import Duplicate, described_by, duplicates, origin_digest
from swift.piecehash import PieceHashes

NS = metalink.NAMESPACE
DATA = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(320))  # 10,240 bytes, no piece like another
PIECE = 4096


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pieces_xml(data: bytes = DATA, length: int = PIECE, algo: str = "sha-256") -> str:
    name = algo.replace("-", "")
    hashes = "".join(f"<hash>{hashlib.new(name, data[i:i + length]).hexdigest()}</hash>"
                     for i in range(0, len(data), length))
    return f'<pieces length="{length}" type="{algo}">{hashes}</pieces>'


def _doc(body: str, ns: str = NS) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><metalink xmlns="{ns}">{body}</metalink>'.encode()


def _file(name: str = "data.bin", urls: str = "<url>http://127.0.0.1:1/data.bin</url>",
          extra: str = "") -> str:
    return f'<file name="{name}">{urls}{extra}</file>'


def _refused(doc: bytes, match: str) -> str:
    with pytest.raises(UsageError) as info:
        metalink.parse(doc, "test.meta4")
    message = str(info.value)
    assert info.value.code is ErrorCode.BAD_METALINK
    assert "\n" not in message and "Traceback" not in message
    assert "test.meta4" in message and "nothing was downloaded" in message
    assert match in message, message
    return message


# -- a good document ------------------------------------------------------------------------

def test_a_full_document_gives_urls_by_priority_size_strongest_hash_and_pieces():
    urls = ('<url priority="2" location="de">http://127.0.0.2/d.bin</url>'
            '<url priority="1">https://127.0.0.1/d.bin</url>'
            '<url>http://127.0.0.3/d.bin</url>')
    extra = (f"<size>{len(DATA)}</size>"
             f'<hash type="md5">{hashlib.md5(DATA).hexdigest()}</hash>'
             f'<hash type="sha-256">{_sha256(DATA).upper()}</hash>'
             + _pieces_xml(algo="sha-1") + _pieces_xml())
    doc = metalink.parse(_doc(_file("d.bin", urls, extra)))
    (f,) = doc.files
    assert f.name == "d.bin" and f.size == len(DATA)
    assert [u.url for u in f.urls] == ["https://127.0.0.1/d.bin", "http://127.0.0.2/d.bin",
                                      "http://127.0.0.3/d.bin"]
    assert f.urls[1].location == "de" and f.urls[2].priority == metalink.LOWEST_PRIORITY
    assert f.checksum == f"sha256:{_sha256(DATA)}"
    assert f.pieces.algorithm == "sha256" and f.pieces.count == 3 and f.pieces.length == PIECE
    assert doc.notes == ()


def test_every_file_of_a_document_is_listed_in_order_and_subdirectories_are_kept():
    doc = metalink.parse(_doc(_file("b.iso") + _file("dir/a.iso")))
    assert [f.name for f in doc.files] == ["b.iso", "dir/a.iso"]


def test_non_http_urls_are_dropped_with_a_note_and_the_rest_kept():
    urls = ("<url>file:///etc/passwd</url><url>ftp://127.0.0.1/x</url>"
            "<url>http://127.0.0.1/x</url>")
    doc = metalink.parse(_doc(_file("x", urls, '<metaurl mediatype="torrent">http://127.0.0.1/x.torrent</metaurl>')))
    assert [u.url for u in doc.files[0].urls] == ["http://127.0.0.1/x"]
    (note,) = doc.notes
    assert "left out 3 URL(s)" in note and "file:" in note and "metaurl" in note


def test_unknown_hash_types_are_noted_and_ignored():
    doc = metalink.parse(_doc(_file(extra='<hash type="crc32">0000</hash>')))
    assert doc.files[0].checksum is None and "no hash swift can check" in doc.notes[0]


def test_piece_hashes_without_a_size_are_not_used_and_that_is_said():
    doc = metalink.parse(_doc(_file(extra=_pieces_xml())))
    assert doc.files[0].pieces is None and "no size is given" in doc.notes[0]


def test_a_metalink_is_recognised_by_media_type_or_name():
    assert metalink.looks_like_metalink("http://h/x", "application/metalink4+xml; charset=utf-8")
    assert metalink.looks_like_metalink("http://h/x.meta4?a=1", "application/octet-stream")
    assert metalink.looks_like_metalink("http://h/x.METALINK", None)
    assert not metalink.looks_like_metalink("http://h/x.iso", "application/octet-stream")


# -- hostile and malformed documents: one clear line each -----------------------------------

def test_billion_laughs_is_refused_before_any_expansion():
    lol = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i else "&lol;" * 10}">'
                     for i in range(10))
           + f']><metalink xmlns="{NS}"><file name="&lol9;"><url>http://127.0.0.1/x</url></file></metalink>')
    _refused(lol.encode(), "DTD")


def test_an_external_entity_is_refused():
    doc = (f'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           f'<metalink xmlns="{NS}"><file name="&x;"><url>http://127.0.0.1/x</url></file></metalink>')
    _refused(doc.encode(), "DTD")


def test_an_external_dtd_is_refused():
    doc = (f'<?xml version="1.0"?><!DOCTYPE metalink SYSTEM "http://127.0.0.1/evil.dtd">'
           f'<metalink xmlns="{NS}"/>')
    _refused(doc.encode(), "DTD")


def test_a_100_mb_document_is_refused_by_its_size_before_parsing():
    doc = b" " * (100 << 20)
    _refused(doc, "larger than 4 MiB")


def test_only_file_urls_is_one_line_naming_the_file():
    _refused(_doc(_file("x", "<url>file:///etc/shadow</url>")), "no http or https URL is given for 'x'")


@pytest.mark.parametrize("name, match", [
    ("../x", "leaves its directory"),
    ("a/../../x", "leaves its directory"),
    ("/etc/passwd", "absolute path"),
    ("\\\\server\\share", "absolute path"),
    ("C:evil", "absolute path"),
    ("a//b", "empty part"),
    ("x.part.swift", "not a safe name"),
    ("evil\u202egnp.exe", "not a safe name"),
    ("", "has no name"),
])
def test_unsafe_names_are_refused(name, match):
    _refused(_doc(_file(name)), match)


@pytest.mark.parametrize("doc, match", [
    (b"<metalink", "not well-formed XML"),
    (b"", "not well-formed XML"),
    (b"\xff\xfe\x00garbage", "XML"),
    (b'<metalink xmlns="http://www.metalinker.org/"/>', "Metalink 3.0"),
    (b"<html><body>hi</body></html>", "not a Metalink 4 document"),
    (_doc(""), "lists no file"),
    (_doc(_file() + _file()), "twice"),
    (_doc(_file(extra="<size>-5</size>")), "not a whole number"),
    (_doc(_file(extra='<hash type="sha-256">abc</hash>')), "hash of 'data.bin' is malformed"),
    (_doc(_file(urls='<url priority="0">http://127.0.0.1/x</url>')), "priority"),
    (_doc(_file(extra=f"<size>{len(DATA)}</size>" + _pieces_xml().replace(f'length="{PIECE}"', f'length="{PIECE * 2}"'))), "do not fit"),
    (_doc(_file(extra=f'<size>10</size><pieces length="0" type="sha-256"/>')), "piece length"),
])
def test_malformed_documents_are_one_line_each(doc, match):
    _refused(doc, match)


def test_too_many_files_are_refused(monkeypatch):
    monkeypatch.setattr(metalink, "MAX_FILES", 2)
    _refused(_doc(_file("a") + _file("b") + _file("c")), "more than 2 files")


# -- piece hashes ------------------------------------------------------------------------------

def _hashes(data: bytes = DATA, length: int = PIECE) -> PieceHashes:
    return PieceHashes("sha256", length, len(data),
                       tuple(_sha256(data[i:i + length]) for i in range(0, len(data), length)))


def test_a_piece_is_good_only_whole_and_with_its_own_bytes():
    h = _hashes()
    assert h.count == 3 and h.span(2) == (8192, len(DATA))
    assert h.check(0, DATA[:PIECE]) and h.check(2, DATA[8192:])
    assert not h.check(1, DATA[:PIECE])            # another piece's bytes
    assert not h.check(2, DATA[8192:-1])           # short
    bad = bytearray(DATA[PIECE:2 * PIECE])
    bad[100] ^= 1
    assert not h.check(1, bytes(bad))


def test_pieces_within_and_touching_a_range():
    h = _hashes()
    assert list(h.pieces_within(0, len(DATA))) == [0, 1, 2]
    assert list(h.pieces_within(1, 8192)) == [1]
    assert list(h.pieces_within(4096, 8191)) == []
    assert list(h.pieces_within(8192, len(DATA))) == [2]   # the short last piece
    assert list(h.touching(4095, 4097)) == [0, 1]
    assert list(h.touching(5, 5)) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"algorithm": "crc32"}, "unknown piece hash"),
    ({"length": 0}, "at least 1 byte"),
    ({"size": 0}, "at least 1 byte"),
    ({"digests": ("00" * 32,)}, "3 pieces, but 1"),
    ({"digests": ("zz" * 32,) * 3}, "hex digits"),
])
def test_piece_hashes_that_do_not_fit_the_file_are_refused(kwargs, match):
    base = dict(algorithm="sha256", length=PIECE, size=len(DATA), digests=("00" * 32,) * 3)
    with pytest.raises(ValueError, match=match):
        PieceHashes(**{**base, **kwargs})


# -- checksums ------------------------------------------------------------------------------

def test_hash_names_as_documents_and_headers_spell_them():
    assert algorithm_of("SHA-256") == "sha256" and algorithm_of("sha") == "sha1"
    assert algorithm_of("crc32") is None
    assert parse_checksum("sha-256:" + "a" * 64) == ("sha256", "a" * 64)
    assert strongest({"md5": "m", "sha1": "s"}) == ("sha1", "s")
    raw = hashlib.sha1(b"x").digest()
    assert hex_of_base64("sha1", base64.b64encode(raw).decode()) == raw.hex()
    with pytest.raises(ValueError, match="20 bytes"):
        hex_of_base64("sha1", base64.b64encode(raw[:5]).decode())


# -- RFC 6249 Link, RFC 9530 Repr-Digest, RFC 3230 Digest -----------------------------------

def test_duplicates_are_resolved_sorted_by_priority_and_bounded():
    link = ('<http://127.0.0.2/f.iso>; rel=duplicate; pri=2; geo=de, '
            '</mirror/f.iso>; rel="duplicate"; pri=1, '
            '<ftp://127.0.0.3/f.iso>; rel=duplicate, '
            '<http://127.0.0.4/f.iso>; rel=duplicate, '
            '<http://127.0.0.1/f.iso.meta4>; rel=describedby; type="application/metalink4+xml", '
            '<http://127.0.0.1/f.iso>; rel=duplicate')
    got = duplicates(link, "http://127.0.0.1/f.iso")
    assert got == [Duplicate("http://127.0.0.1/mirror/f.iso", 1),
                   Duplicate("http://127.0.0.2/f.iso", 2), Duplicate("http://127.0.0.4/f.iso")]
    assert described_by(link, "http://127.0.0.1/f.iso") == "http://127.0.0.1/f.iso.meta4"
    many = ", ".join(f"<http://127.0.0.1/{i}>; rel=duplicate" for i in range(100))
    assert len(duplicates(many, "http://127.0.0.1/f")) == 32
    assert duplicates(None, "http://127.0.0.1/f") == [] and duplicates("garbage <", "http://x/") == []


def test_repr_digest_is_preferred_to_digest_and_malformed_members_are_skipped():
    sha256 = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    sha512 = base64.b64encode(hashlib.sha512(b"x").digest()).decode()
    md5 = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    assert origin_digest({"Repr-Digest": f"sha-256=:{sha256}:, sha-512=:{sha512}:"}) == \
        ("sha512", hashlib.sha512(b"x").hexdigest())
    assert origin_digest({"Repr-Digest": f"sha-256=:{sha256}:", "Digest": f"SHA-512={sha512}"}) == \
        ("sha256", hashlib.sha256(b"x").hexdigest())
    assert origin_digest({"Digest": f"MD5={md5}, SHA-256={sha256}"}) == \
        ("sha256", hashlib.sha256(b"x").hexdigest())
    assert origin_digest({"Digest": "SHA-256=not base64!!, MD5=" + md5}) == \
        ("md5", hashlib.md5(b"x").hexdigest())
    assert origin_digest({"Repr-Digest": "sha-256=abc", "Content-Digest": f"sha-256=:{sha256}:"}) is None
    assert origin_digest({}) is None


# -- what one get downloads ---------------------------------------------------------------------

def test_a_metalink_becomes_one_item_per_file_with_its_mirrors_hash_and_name(tmp_path):
    from swift.getitems import items_of, read_metalink_file
    doc = tmp_path / "set.meta4"
    doc.write_bytes(_doc(_file("sub/d.bin", '<url priority="2">http://127.0.0.2/d</url>'
                                            '<url priority="1">http://127.0.0.1/d</url>',
                               f"<size>{len(DATA)}</size><hash type=\"sha-256\">{_sha256(DATA)}</hash>")))
    (item,) = items_of(read_metalink_file(doc))
    assert item.url == "http://127.0.0.1/d" and item.mirrors == (("http://127.0.0.2/d", 2),)
    assert item.checksum == f"sha256:{_sha256(DATA)}" and item.size == len(DATA)
    assert item.options()["file_name"] == "d.bin" and item.options()["expected_size"] == len(DATA)


def test_reading_a_metalink_file_is_bounded_and_a_missing_one_is_one_line(tmp_path):
    from swift.getitems import read_metalink_file
    with pytest.raises(UsageError, match="cannot read the Metalink file"):
        read_metalink_file(tmp_path / "none.meta4")
    big = tmp_path / "big.meta4"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # a sparse GiB: only MAX_DOCUMENT + 1 bytes are read
    with pytest.raises(UsageError, match="larger than 4 MiB"):
        read_metalink_file(big)


def test_a_subdirectory_is_never_created_through_a_symbolic_link(tmp_path):
    from swift.getitems import GetItem, place_of
    base = tmp_path / "dl"
    base.mkdir()
    assert place_of(GetItem("http://h/x", name="a/b/x.iso"), base) == base / "a" / "b"
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "link").symlink_to(outside)
    with pytest.raises(UsageError, match="symbolic link"):
        place_of(GetItem("http://h/x", name="link/new/x.iso"), base)
    assert list(outside.iterdir()) == []
