"""Command-line helpers that need no process: URL files and habits of other tools."""

from __future__ import annotations

from swift.cli import parse_node_args, read_url_file


def test_a_url_file_may_start_with_a_byte_order_mark_and_use_crlf(tmp_path):
    f = tmp_path / "urls.txt"
    f.write_bytes(b"\xef\xbb\xbfhttp://127.0.0.1:1/a\r\n# a comment\r\n\r\n  http://127.0.0.1:1/b  \r\n")
    assert read_url_file(f) == ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"]


def test_wget_and_aria2c_continue_flag_is_accepted():
    args = parse_node_args(["--discovery", "127.0.0.1:1", "get", "-c", "http://127.0.0.1:1/a"])
    assert args.continue_ is True and args.urls == ["http://127.0.0.1:1/a"]
    args = parse_node_args(["--discovery", "127.0.0.1:1", "get", "--continue", "http://127.0.0.1:1/a"])
    assert args.continue_ is True
