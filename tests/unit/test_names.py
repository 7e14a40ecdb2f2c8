"""Safe file names from remote input (URLs, Content-Disposition)."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given, settings, strategies as st

from swift.names import (DEFAULT_NAME, MAX_NAME_BYTES, choose_name,
                         companions, filename_from_content_disposition, filename_from_url,
                         free_path, is_taken, numbered, safe_name, split_extension)

HOSTILE = [
    "../../etc/passwd", "/etc/passwd", "..\\..\\win.ini", "C:\\Windows\\win.ini", "foo\x00bar",
    "\r\n", "a\r\nb", "x" * 10_000, "x" * 10_000 + ".iso", "é" * 5_000 + ".txt",
    "....", "..", ".", "", " ", " . . ", "\t", "dir/", "dir\\", "/", "//", "\\\\server\\share",
    unquote("%2e%2e%2f"), unquote("%2e%2e%2fetc%2fpasswd"), unquote("..%5c..%5cboot.ini"),
    "a\u2215b", "c\uff0fd", "\u2215etc\u2215passwd", "..\uff0f..\uff0fx", "\u2044\u29f8\uff3c",
    "-rf", "--help", "-", "\u202egnp.exe", "\ufeffbom.txt", "\u200b", "a\u2028b", "\x85\x9f\x7f",
    "CON", "nul.txt", "com1.tar.gz", "a<b>c:d\"e|f?g*h", "\udcff\udcfe.bin", ".bashrc",
    "x.part.swift", "NAME.PART.SWIFT", ".\x00.", "\x00", "trailing. . .", "\u3000lead\u3000",
]


def assert_safe(name: str, directory: Path | None = None) -> None:
    assert name and name not in (".", "..")
    assert not any(c in name for c in "/\\\x00")
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES <= 255
    assert name == name.strip() and not name.startswith((".", "-")) and not name.endswith(".")
    assert not name.lower().endswith(".part.swift")
    if directory is not None:
        assert (directory / name).resolve().parent == directory.resolve()
        assert Path(directory, name).parent == directory


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_names_land_as_one_base_name(raw, tmp_path):
    name = safe_name(raw)
    assert_safe(name, tmp_path)
    # and the name is really usable: a file can be created under it
    (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("raw,expected", [
    ("../../etc/passwd", "passwd"),
    ("/etc/passwd", "passwd"),
    ("..\\..\\win.ini", "win.ini"),
    ("foo\x00bar", "foobar"),
    ("\r\n", DEFAULT_NAME),
    ("..", DEFAULT_NAME), (".", DEFAULT_NAME), ("....", DEFAULT_NAME), ("", DEFAULT_NAME),
    (None, DEFAULT_NAME), ("dir/", DEFAULT_NAME), (unquote("%2e%2e%2f"), DEFAULT_NAME),
    ("a\u2215b", "a_b"), ("c\uff0fd", "c_d"),
    ("\u202egnp.exe", "gnp.exe"),
    ("-rf", "_rf"),
    (".bashrc", "bashrc"),
    ("CON", "_CON"), ("nul.txt", "_nul.txt"), ("Com1.tar.gz", "_Com1.tar.gz"),
    ("console.txt", "console.txt"),
    ("a<b>:c.txt", "a_b__c.txt"),
    ("report.pdf.part.swift", "report.pdf.part_swift"),
    ("\udcff.bin", "_.bin"),
    ("  spaced name .txt  ", "spaced name .txt"),
    ("日本語 ファイル.txt", "日本語 ファイル.txt"),
    ("e\u0301.txt", "\u00e9.txt"),  # NFC: one code point, as most systems store it
    (b"bytes\xff.bin", "bytes\ufffd.bin"),
])
def test_safe_name_examples(raw, expected):
    assert safe_name(raw) == expected


def test_default_is_used_when_nothing_survives():
    assert safe_name("..", default="fallback") == "fallback"
    assert safe_name("\x00\x01", default="") == ""


def test_long_names_are_cut_in_the_stem_and_keep_the_extension():
    name = safe_name("x" * 1000 + ".iso")
    assert name.endswith("x.iso") and len(name.encode()) <= MAX_NAME_BYTES
    name = safe_name("y" * 1000 + ".tar.gz")
    assert name.endswith("y.tar.gz") and len(name.encode()) <= MAX_NAME_BYTES
    # multi-byte characters are never cut in half
    name = safe_name("€" * 1000 + ".txt")
    assert name.endswith("€.txt") and len(name.encode()) <= MAX_NAME_BYTES
    name.encode("utf-8")  # valid text
    # no extension to keep: a plain cut
    assert safe_name("z" * 1000) == "z" * (MAX_NAME_BYTES - 1)


def test_reserved_names_still_fit_after_the_prefix():
    name = safe_name("CON." + "a" * 1000)
    assert name.startswith("_CON.") and len(name.encode()) <= MAX_NAME_BYTES


def test_the_resume_record_of_a_maximal_name_fits():
    name = safe_name("n" * 1000 + ".bin")
    assert len((name + ".part.swift").encode()) <= 255


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_safe_name_property(text):
    assert_safe(safe_name(text), Path("/d"))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=80)
       | st.lists(st.sampled_from(["/", "\\", ".", "..", " ", "\x00", "\u2215", "\uff0f", "-",
                                    "\u202e", "CON", "a", "é", ".part", ".swift", "\udc80"]),
                  max_size=30).map("".join))
def test_safe_name_property_with_nasty_pieces(text):
    assert_safe(safe_name(text), Path("/d"))


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=300), st.integers(min_value=1, max_value=100_000))
def test_numbered_names_are_safe_and_distinct(text, n):
    name = safe_name(text)
    other = numbered(name, n)
    assert_safe(other, Path("/d"))
    assert other != name and other != numbered(name, n + 1)


# -- Content-Disposition ------------------------------------------------------------------------

@pytest.mark.parametrize("header,expected", [
    ('attachment; filename="a b.txt"', "a b.txt"),
    ("attachment; filename=plain.bin", "plain.bin"),
    ("attachment;filename=plain.bin;", "plain.bin"),
    ("attachment ;  FileName = \"spaced.txt\" ", "spaced.txt"),
    ('ATTACHMENT;FILENAME="q\\"uote.txt"', 'q"uote.txt'),
    ('attachment; filename="semi;colon.txt"', "semi;colon.txt"),
    ('attachment; foo="x; filename=evil.txt"; filename=good.txt', "good.txt"),
    ('attachment; filename="unterminated.txt', "unterminated.txt"),
    ('filename="no-type.txt"', "no-type.txt"),
    ('inline; filename="inline.txt"', "inline.txt"),
    # RFC 5987 / 6266 extended values
    ("attachment; filename*=UTF-8''%E2%82%AC%20rates.txt", "€ rates.txt"),
    ("attachment; filename*=utf-8'en'%E2%82%AC.txt", "€.txt"),
    ("attachment; filename*=iso-8859-1'en'%A3%20rates.txt", "£ rates.txt"),
    ("attachment; FILENAME*=ISO-8859-1''%E9t%E9.txt", "été.txt"),
    ("attachment; filename*=\"UTF-8''quoted%20ext.txt\"", "quoted ext.txt"),
    # both: filename* wins, whatever the order
    ('attachment; filename="fallback.txt"; filename*=UTF-8\'\'real.txt', "real.txt"),
    ("attachment; filename*=UTF-8''real.txt; filename=\"fallback.txt\"", "real.txt"),
    # malformed or unsupported filename*: the plain one is used
    ("attachment; filename*=UTF-8%E2%82%AC.txt; filename=plain.txt", "plain.txt"),
    ("attachment; filename*=x-unknown''abc.txt; filename=plain.txt", "plain.txt"),
    ("attachment; filename*=UTF-8''; filename=plain.txt", "plain.txt"),
    ("attachment; filename*=UTF-8''%ZZbad.txt", "%ZZbad.txt"),
    ("attachment; filename*=UTF-8''%FF.txt", "\ufffd.txt"),
    # raw UTF-8 in the header, as HTTP libraries hand it over (decoded as Latin-1)
    ('attachment; filename="' + "€.txt".encode().decode("latin-1") + '"', "€.txt"),
    ('attachment; filename="caf\xe9.txt"', "caf\xe9.txt"),
    # nothing usable
    ("inline", None), ("attachment", None), ("", None), (None, None),
    ('attachment; filename=""', None), ("attachment; filename=", None), (";;;==;", None),
    ("attachment; filename*=UTF-8''", None),
])
def test_content_disposition(header, expected):
    assert filename_from_content_disposition(header) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_content_disposition_never_crashes(header):
    name = filename_from_content_disposition(header)
    assert name is None or isinstance(name, str)


# -- URLs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url,expected", [
    ("http://h/a/b%20c.iso?x=1#f", "b c.iso"),
    ("http://h/file.bin", "file.bin"),
    ("http://h/%E2%82%AC.txt", "€.txt"),
    ("http://h/%FF.bin", "\ufffd.bin"),
    ("http://h/a/..%2F..%2Fetc%2Fpasswd", "../../etc/passwd"),  # raw: safe_name's job
    ("http://h/", None), ("http://h", None), ("http://h/dir/", None), ("http://h/?q=1", None),
    ("http://[::1", None), ("", None), (None, None),
])
def test_filename_from_url(url, expected):
    assert filename_from_url(url) == expected


def test_choose_name_order_and_safety():
    # a directory's URL: its index page, named as wget and aria2c name it
    assert choose_name("http://h/", None, None) == "index.html"
    assert choose_name("http://h", None, None) == "index.html"
    assert choose_name("http://h/docs/?page=2", None, None) == "index.html"
    assert choose_name("http://h/short", "http://h/docs/", None) == "short"
    assert choose_name("http://h/", "http://h/docs/", 'inline; filename="guide.pdf"') == "guide.pdf"
    assert choose_name("http://h/x.bin", None, None) == "x.bin"
    assert choose_name("http://h/x.bin", "http://h/y.bin", None) == "y.bin"
    assert choose_name("http://h/x.bin", "http://h/", None) == "x.bin"
    assert choose_name("http://h/x.bin", "http://h/y.bin", 'attachment; filename="z.bin"') == "z.bin"
    assert choose_name("http://h/x.bin", None, 'attachment; filename="../../evil.sh"') == "evil.sh"
    # a content-disposition name with nothing usable falls through to the URL
    assert choose_name("http://h/x.bin", None, 'attachment; filename=".."') == "x.bin"
    assert choose_name("http://h/a/..%2F..%2Fetc%2Fpasswd", None, None) == "passwd"
    assert choose_name("http://h/%2e%2e", None, None) == DEFAULT_NAME


# -- free names ---------------------------------------------------------------------------------------

def test_split_extension():
    assert split_extension("archive.tar.gz") == ("archive", ".tar.gz")
    assert split_extension("v1.2.3.zip") == ("v1.2.3", ".zip")
    assert split_extension("README") == ("README", "")
    assert split_extension("x.tar") == ("x", ".tar")
    assert split_extension("noext.") == ("noext.", "")


def test_numbered():
    assert numbered("archive.tar.gz", 0) == "archive.tar.gz"
    assert numbered("archive.tar.gz", 2) == "archive (2).tar.gz"
    assert numbered("noext", 1) == "noext (1)"
    assert numbered("v1.2.3.zip", 3) == "v1.2.3 (3).zip"
    long = safe_name("x" * 1000 + ".iso")
    assert numbered(long, 12).endswith(" (12).iso")
    assert len(numbered(long, 12).encode()) <= MAX_NAME_BYTES


def test_free_path_numbering(tmp_path):
    assert free_path(tmp_path, "f.iso") == tmp_path / "f.iso"
    (tmp_path / "f.iso").write_text("x")
    assert free_path(tmp_path, "f.iso") == tmp_path / "f (1).iso"
    (tmp_path / "f (1).iso.part").write_text("x")  # a download in progress owns that name
    assert free_path(tmp_path, "f.iso").name == "f (2).iso"
    (tmp_path / "f (2).iso.part.swift").write_text("{}")
    assert free_path(tmp_path, "f.iso").name == "f (3).iso"
    (tmp_path / "f (3).iso").symlink_to(tmp_path / "nowhere")  # dangling links count too
    assert free_path(tmp_path, "f.iso").name == "f (4).iso"


def test_one_rule_says_whether_a_name_is_taken(tmp_path):
    final = tmp_path / "f.iso"
    assert [p.name for p in companions(final)] == ["f.iso", "f.iso.part", "f.iso.part.swift"]
    assert not is_taken(final)
    for companion in companions(final):
        companion.write_text("x")
        assert is_taken(final)
        assert not is_taken(final, ignore=set(companions(final)))
        companion.unlink()


def test_free_path_leaves_a_download_its_own_part_and_record(tmp_path):
    final = tmp_path / "f.iso"
    _, part, record = companions(final)
    part.write_text("x"), record.write_text("{}")
    assert free_path(tmp_path, "f.iso", ignore={part, record}) == final
    assert free_path(tmp_path, "f.iso").name == "f (1).iso"


def test_free_path_takes_a_name_that_is_ours_to_resume(tmp_path):
    final = tmp_path / "f.iso"
    companions(final)[1].write_text("partial")
    assert free_path(tmp_path, "f.iso", ours=lambda p: p == final) == final
    assert free_path(tmp_path, "f.iso", ours=lambda p: False).name == "f (1).iso"


def test_free_path_long_names_get_distinct_numbers(tmp_path):
    name = safe_name("L" * 1000 + ".tar.gz")
    seen = set()
    for _ in range(5):
        p = free_path(tmp_path, name)
        assert p.name not in seen
        seen.add(p.name)
        p.write_text("x")


def test_free_path_custom_taken_and_limit(tmp_path):
    asked = []

    def taken(p: Path) -> bool:
        asked.append(p.name)
        return len(asked) < 3

    assert free_path(tmp_path, "a.txt", taken=taken).name == "a (2).txt"
    assert asked == ["a.txt", "a (1).txt", "a (2).txt"]
    with pytest.raises(FileExistsError):
        free_path(tmp_path, "a.txt", taken=lambda p: True, limit=5)


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\\b", "a\x00b"])
def test_free_path_wants_a_base_name(tmp_path, bad):
    with pytest.raises(ValueError):
        free_path(tmp_path, bad)


# -- where -o writes (names.output_path) ------------------------------------------------------
def test_a_relative_output_goes_inside_the_download_directory_as_aria2c_puts_it():
    from swift.names import output_path
    assert output_path(Path("dl"), Path("x.iso")) == Path("dl/x.iso")
    assert output_path(Path("dl"), Path("sub/x.iso")) == Path("dl/sub/x.iso")
    assert output_path(Path("."), Path("x.iso")) == Path("x.iso")  # -d left at its default


def test_an_absolute_or_home_output_is_used_as_given():
    from swift.names import output_path
    assert output_path(Path("dl"), Path("/srv/x.iso")) == Path("/srv/x.iso")
    assert output_path(Path("dl"), Path("~/x.iso")) == Path("~/x.iso").expanduser()


def test_a_relative_output_may_not_climb_out_of_a_given_download_directory():
    from swift.names import output_path
    with pytest.raises(ValueError, match=r"climbs out of the download directory dl \('\.\.'\)"):
        output_path(Path("dl"), Path("../x.iso"))
    with pytest.raises(ValueError):
        output_path(Path("dl"), Path("sub/../../x.iso"))
    assert output_path(Path("."), Path("../x.iso"), confined=False) == Path("../x.iso")  # as curl
