"""Safe file names from remote input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from swift.names import (choose_name, filename_from_content_disposition, filename_from_url,
                         free_path, numbered, safe_name)

HOSTILE = ["../../etc/passwd", "/etc/passwd", "..\\..\\win.ini", "foo\x00bar", "a\r\nb",
           "x" * 10_000 + ".iso", "....", "..", ".", "", " ", "a\u2215b", "c\uff0fd", "-rf",
           "\u202egnp.exe", "CON", "nul.txt", "dir/", "%2e%2e%2fx"]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_names_stay_inside(raw, tmp_path):
    name = safe_name(raw)
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert all(ord(c) >= 32 and c != "\x7f" for c in name)
    assert len(name.encode()) <= 255
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_long_names_keep_their_extension():
    assert safe_name("x" * 1000 + ".iso").endswith(".iso")


@given(st.text(max_size=400))
def test_safe_name_property(text):
    name = safe_name(text)
    assert name and name not in (".", "..")
    assert not any(c in name for c in "/\\\x00")
    assert len(name.encode("utf-8")) <= 255
    assert Path("/d", name).parent == Path("/d")


@pytest.mark.parametrize("header,expected", [
    ('attachment; filename="a b.txt"', "a b.txt"),
    ("attachment; filename=plain.bin", "plain.bin"),
    ("attachment; filename*=UTF-8''%E2%82%AC%20rates.txt", "€ rates.txt"),
    ("attachment; filename*=iso-8859-1'en'%A3%20rates.txt", "£ rates.txt"),
    ('attachment; filename="fallback.txt"; filename*=UTF-8\'\'real.txt', "real.txt"),
    ('ATTACHMENT;FILENAME="q\\"uote.txt"', 'q"uote.txt'),
    ("inline", None),
    ("", None),
])
def test_content_disposition(header, expected):
    assert filename_from_content_disposition(header) == expected


def test_url_names():
    assert filename_from_url("http://h/a/b%20c.iso?x=1#f") == "b c.iso"
    assert filename_from_url("http://h/") is None
    assert choose_name("http://h/", None, None) == "download"
    assert choose_name("http://h/x.bin", "http://h/y.bin", None) == "y.bin"
    assert choose_name("http://h/x.bin", None, 'attachment; filename="../../evil.sh"') == "evil.sh"


def test_free_path_numbering(tmp_path):
    assert numbered("archive.tar.gz", 2) == "archive (2).tar.gz"
    assert numbered("noext", 1) == "noext (1)"
    (tmp_path / "f.iso").write_text("x")
    (tmp_path / "f (1).iso.part").write_text("x")
    assert free_path(tmp_path, "f.iso").name == "f (2).iso"
