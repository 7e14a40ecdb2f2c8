"""swift.nodeapp's pure parts: the summary line, URLs as curl takes them, the get parser, --limit-rate."""

from __future__ import annotations

import argparse
import time

import pytest

from swift.download import Report
from swift.membership import Peer
from swift.getargs import add_get_arguments, with_scheme
from swift.engine.rate_limit import RateLimit
from swift.nodeapp import alone_note, peer_names, summary
from swift.prompt import _looks_like_url, get_parser

MiB = 1 << 20


def report(**kw) -> Report:
    base = dict(url="http://h/f.iso", path="f.iso", size=96 * MiB, seconds=4.0, mode="parallel",
                bytes_by_source={"local": 32 * MiB, "127.0.0.1:6001": 40 * MiB, "[::1]:6002": 24 * MiB})
    return Report(**{**base, **kw})


def test_the_summary_names_helpers_and_uses_binary_units():
    names = peer_names([Peer("127.0.0.1", 6001, "kitchen"), Peer("::1", 6002, "attic")])
    line = summary(report(), names)
    assert line == ("done: f.iso  96.0 MiB in 4.0 s (24.0 MiB/s); "
                    "by machine: kitchen 40.0 MiB, local 32.0 MiB, attic 24.0 MiB")


def test_the_summary_says_resumed_bytes_and_a_verified_checksum():
    line = summary(report(resumed_bytes=48 * MiB), {}, checksum="SHA256:" + "0" * 64)
    # this run's bytes over this run's time, and said so
    assert "done: f.iso  96.0 MiB (48.0 MiB resumed); this run: 48.0 MiB in 4.0 s (12.0 MiB/s);" in line
    assert line.endswith("; sha256 checksum verified")


def test_a_download_without_helpers_says_whether_it_passed_over_this_machines_nodes():
    assert alone_note([]) == "no peers known: downloading alone with several connections"
    assert alone_note(["h2"]) == ("no helpers: h2 runs on this machine and shares its link; "
                                  "downloading alone with several connections")
    assert alone_note(["h2", "h3"]).startswith("no helpers: h2, h3 run on this machine and share ")


@pytest.mark.parametrize("typed,url", [
    ("example.com/f.iso", "http://example.com/f.iso"), ("10.0.0.5:8000/x", "http://10.0.0.5:8000/x"),
    ("https://h/x", "https://h/x"), ("  http://h/x ", "http://h/x"),
])
def test_a_url_without_a_scheme_is_http_as_in_curl(typed, url):
    assert with_scheme(typed) == url


@pytest.mark.parametrize("word,looks", [("example.com/f", True), ("host.lan", True), ("h:80/x", True),
                                        ("jobs", False), ("quti", False), ("-o", False), ("/x", False)])
def test_what_the_prompt_takes_for_a_url(word, looks):
    assert _looks_like_url(word) is looks


def test_one_parser_builder_for_the_command_line_and_the_prompt():
    cli = argparse.ArgumentParser()
    add_get_arguments(cli)
    args = cli.parse_args(["a", "b", "-i", "list.txt", "--tries", "3", "-o", "-"])
    assert (args.urls, str(args.input_file), args.tries, str(args.output)) == (["a", "b"], "list.txt", 3, "-")
    prompt = get_parser()
    args = prompt.parse_args(["http://h/x", "-o", "out.bin", "--checksum", "md5:" + "a" * 32])
    assert (args.url, str(args.output), args.force) == ("http://h/x", "out.bin", False)
    for bad in (["http://h/x", "--report", "r.json"], ["http://h/x", "--checksum", "md5:zz"],
                ["http://h/x", "--mirror", "ftp://h/x"]):
        with pytest.raises(ValueError):
            prompt.parse_args(bad)
    from swift.prompt import _items  # no URL is a usage error too, once -M is ruled out
    with pytest.raises(ValueError, match="give a URL"):
        _items(prompt.parse_args([]))
    (item,) = _items(prompt.parse_args(["h/x", "--mirror", "h2/x"]))
    assert (item.url, item.mirrors) == ("http://h/x", (("http://h2/x", 1),))
def test_rate_limit_lets_a_burst_through_then_paces_to_the_rate():
    limit = RateLimit(1000)  # 1000 B/s, burst 250 B
    assert limit.charge(250, now=0.0) == 0.0
    assert limit.charge(500, now=0.0) == pytest.approx(0.5)   # in debt by 500 B
    assert limit.charge(0, now=0.5) == 0.0                     # paid back
    assert limit.charge(1000, now=1.5) == pytest.approx(0.75)  # refilled to the burst only


def test_rate_limit_long_run_rate_is_the_rate():
    limit, now, sent = RateLimit(2 << 20), 0.0, 0
    while sent < 20 << 20:
        now += limit.charge(256 << 10, now)
        sent += 256 << 10
    assert sent / now == pytest.approx(2 << 20, rel=0.03)  # the first burst comes free


def test_a_closed_rate_limit_never_waits():
    limit = RateLimit(1)
    limit.close()
    started = time.monotonic()
    limit.take(1 << 20)  # would be 12 days at 1 B/s
    assert time.monotonic() - started < 1


def test_a_download_without_a_front_end_of_its_own_is_said_with_its_number_in_every_line():
    """One started over the RPC: the node's front end (the prompt, --serve-only) says its
    start, notes, stop and end as the prompt says its own."""
    from types import SimpleNamespace
    from swift.nodeapp import (CANCELLED, ENDED, NOTICE, PAUSED, RESUMED, STARTED, DownloadEntry,
                               NodeApp)
    said: list[str] = []
    node = SimpleNamespace(say=said.append, listeners=lambda: [])
    node.download_event = lambda entry, kind, text: NodeApp.download_event(node, entry, kind, text)
    entry = DownloadEntry(node, 7, "http://127.0.0.1:1/f.iso", None, {}, True, None)
    for kind, text in [(STARTED, "http://127.0.0.1:1/f.iso"), (NOTICE, "no peers known"),
                       (PAUSED, "the partial download is kept in f.iso.part (resume 7 goes on)"),
                       (RESUMED, "http://127.0.0.1:1/f.iso"), (CANCELLED, "kept"),
                       (ENDED, "done: f.iso  1.0 MiB in 1.0 s (1.0 MiB/s)")]:
        entry._emit(kind, text)
    assert said == ["[7] started http://127.0.0.1:1/f.iso", "[7] note: no peers known",
                    "[7] paused; the partial download is kept in f.iso.part (resume 7 goes on)",
                    "[7] resumed http://127.0.0.1:1/f.iso", "[7] cancelled; kept",
                    "[7] done: f.iso  1.0 MiB in 1.0 s (1.0 MiB/s)"]


class _StoppedStream:
    """A plain stream's Download after a pause: it had 3 MiB, its part file may be gone."""

    def __init__(self, path):
        self.path, self.size, self.state, self.plain_stream, self.done_bytes = path, 8 * MiB, "running", True, 3 * MiB

    def done_ranges(self):
        return [(0, 3 * MiB)]

    def bytes_by_source(self):
        return {"local": 3 * MiB}


def _paused_entry(path):
    from types import SimpleNamespace
    from swift.nodeapp import PAUSED, DownloadEntry
    node = SimpleNamespace(say=lambda line: None, listeners=lambda: [], directory=path.parent)
    node.download_event = lambda *a: None
    entry = DownloadEntry(node, 2, "http://127.0.0.1:1/s.bin", None, {}, True, None)
    entry._download, entry._stopped_as = _StoppedStream(path), PAUSED
    entry._ended.set()
    return entry


def test_a_paused_plain_stream_whose_part_was_removed_shows_nothing_kept(tmp_path):
    from swift.rpc.aria2 import Aria2
    entry = _paused_entry(tmp_path / "s.bin")  # no s.bin.part: the stream removed it
    assert entry.status().state == "paused" and entry.status().done == 0
    assert entry.detail().ranges == []
    shown = Aria2(None).status(entry)
    assert shown["completedLength"] == "0" and shown["bitfield"] == "00000000", shown


def test_a_paused_download_whose_part_is_kept_shows_its_ranges(tmp_path):
    (tmp_path / "s.bin.part").write_bytes(b"")
    entry = _paused_entry(tmp_path / "s.bin")
    assert entry.status().done == 3 * MiB and entry.detail().ranges == [(0, 3 * MiB)]
