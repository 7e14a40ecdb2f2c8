"""The node's prompt through a pseudo-terminal, as a user types at it."""

from __future__ import annotations

import re
import signal
import socket
import time
from contextlib import contextmanager

from swiftlab.cluster import wait_until
from swiftlab.origin import make_file

from tests.helpers import MiB, prompt_node, sha256_file, terminal_node


@contextmanager
def silent_discovery():
    """A discovery address that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def lines_matching(node, pattern: str) -> list[int]:
    return [i for i, line in enumerate(node.output().splitlines()) if re.search(pattern, line)]


def test_typing_a_url_never_waits_on_a_discovery_that_hangs(cluster, origin, origin_root):
    digest = make_file(origin_root / "h.bin", 2 * MiB, seed=31)
    with silent_discovery() as address, prompt_node(cluster, address) as (node, type_):
        typed = time.monotonic()
        type_(origin.url("/h.bin"))
        node.wait_for(r"\[1\] started", timeout=5)
        type_("jobs")  # answered while the download still waits for discovery
        node.wait_for(r"\[1\] http://\S+  starting", timeout=5)
        assert time.monotonic() - typed < 2.0, "the prompt waited on discovery"
        node.wait_for(r"\[1\] done: ", timeout=60)
        type_("quit")
        assert node.wait(15) == 0
    assert sha256_file(cluster.workdir / "h.bin") == digest
    started, note = lines_matching(node, r"\[1\] started")[0], lines_matching(node, r"\[1\] note: ")[0]
    assert started < note, "a job's notes come after its started line"


def test_the_same_url_to_the_same_place_says_which_job_has_it(cluster, origin, origin_root):
    make_file(origin_root / "twice.bin", 16 * MiB, seed=32)
    origin.configure(conn_rate=MiB)
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        url = origin.url("/twice.bin")
        type_(url)
        node.wait_for(r"\[1\] started", timeout=10)
        type_(url)
        node.wait_for(re.escape(url) + r": already downloading as \[1\]", timeout=10)
        type_(f"get {url} -o elsewhere.bin")  # another place is another download
        node.wait_for(r"note: \[2\] has the same URL as \[1\]", timeout=10)
        node.wait_for(r"\[2\] started", timeout=10)
        for name in ("twice.bin", "elsewhere.bin"):
            wait_until((cluster.workdir / f"{name}.part.swift").exists, 20, f"{name} under way")
        type_("quit")
        node.wait_for(r"\[1\], \[2\] still running: wait for them \(w\), cancel them", timeout=10)
        type_("c")
        assert node.wait(20) == 0
    assert not lines_matching(node, r"\[3\]")
    for n, name in ((1, "twice.bin"), (2, "elsewhere.bin")):
        assert lines_matching(node, rf"\[{n}\] cancelled; the partial download is kept in .*{name}.part")


def test_a_missing_download_directory_is_created_and_said_once(cluster, origin, origin_root):
    make_file(origin_root / "d.bin", 4096, seed=33)
    disc = cluster.discovery()
    directory = cluster.workdir / "not" / "yet"
    with prompt_node(cluster, f"127.0.0.1:{disc.port}", directory=directory) as (node, type_):
        type_(origin.url("/d.bin"))
        node.wait_for(r"\[1\] done: ", timeout=30)
        type_("quit")
        assert node.wait(15) == 0
    assert (directory / "d.bin").exists()
    assert len(lines_matching(node, "created the download directory")) == 1


def test_ctrl_c_shows_the_intro_only_once(cluster):
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        for n in (1, 2):
            node.send(signal.SIGINT)
            wait_until(lambda: len(lines_matching(node, "type quit to exit")) == n, 10, f"Ctrl-C {n}")
        type_("jobs")
        node.wait_for("no downloads yet", timeout=10)
        type_("quit")
        assert node.wait(15) == 0
    assert len(lines_matching(node, "type a URL to download it")) == 1


def test_a_bad_get_line_is_one_error_and_the_prompt_goes_on(cluster):
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        type_("get http://127.0.0.1:1/x --checksum md5:zz")
        node.wait_for(r"error: argument --checksum: .*usage: get URL", timeout=10)
        type_("get http://127.0.0.1:1/x -o")
        node.wait_for(r"error: argument -o/--output: expected one argument", timeout=10)
        type_("get http://127.0.0.1:1/x -o -")  # standard output is the prompt's own screen
        node.wait_for(r"error: argument -o/--output: '-' \(standard output\) is for 'node.py get'",
                      timeout=10)
        type_("jobs")
        node.wait_for("no downloads yet", timeout=10)
        type_("quit")
        assert node.wait(15) == 0


def test_sigterm_at_the_prompt_ends_the_node_within_two_seconds_keeping_the_record(cluster, origin,
                                                                                  origin_root):
    make_file(origin_root / "long.bin", 64 * MiB, seed=34)
    origin.configure(conn_rate=MiB)
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        type_(origin.url("/long.bin"))
        record = cluster.workdir / "long.bin.part.swift"
        wait_until(record.exists, 20, "the download to run")
        started = time.monotonic()
        node.send(signal.SIGTERM)
        assert node.wait(10) == 143, node.output()
        assert time.monotonic() - started < 2.0
    assert record.exists() and (cluster.workdir / "long.bin.part").exists()
    assert "Traceback" not in node.output()


def test_pause_and_resume_go_on_from_where_it_stopped(cluster, origin, origin_root):
    digest = make_file(origin_root / "pr.bin", 24 * MiB, seed=35)
    origin.configure(conn_rate=2 * MiB)
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        type_(origin.url("/pr.bin"))
        record = cluster.workdir / "pr.bin.part.swift"
        wait_until(record.exists, 20, "the download to run")
        type_("pause 1")
        node.wait_for(r"\[1\] paused; the partial download is kept in .*pr\.bin\.part \(resume 1", timeout=10)
        type_("jobs")
        node.wait_for(r"\[1\] http://\S+  paused", timeout=10)
        type_(origin.url("/pr.bin"))  # a paused job still holds its place
        node.wait_for(r"already downloading as \[1\] \(paused: resume 1\)", timeout=10)
        type_("resume 1")
        node.wait_for(r"\[1\] resumed ", timeout=10)
        # pause and resume at once: the resume waits for the stop in progress
        mark = len(node.lines)
        type_("pause 1")
        type_("resume 1")
        node.wait_for(r"\[1\] paused; ", timeout=10, start=mark)
        node.wait_for(r"\[1\] resumed ", timeout=10, start=mark)
        assert not any("can be resumed" in line for line in node.lines[mark:]), node.output()
        origin.configure(conn_rate=None)
        node.wait_for(r"\[1\] done: .* resumed", timeout=60)
        type_("resume 1")
        node.wait_for(r"\[1\] is done: only a paused or cancelled download can be resumed", timeout=10)
        type_("pause 7")
        node.wait_for(r"there is no download \[7\] \(see jobs\)", timeout=10)
        type_("pause x")
        node.wait_for(r"usage: pause N", timeout=10)
        type_("quit")
        assert node.wait(15) == 0
    assert sha256_file(cluster.workdir / "pr.bin") == digest


def test_pausing_a_plain_stream_says_its_data_is_gone(cluster, origin, origin_root):
    """A server without byte ranges cannot resume: the stop says so, not "nothing written"."""
    digest = make_file(origin_root / "plain.bin", 8 * MiB, seed=38)
    origin.configure(path="/plain.bin", ignore_ranges=True)
    origin.configure(conn_rate=2 * MiB)
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        type_(origin.url("/plain.bin"))
        wait_until(lambda: (cluster.workdir / "plain.bin.part").exists(), 20, "the stream to run")
        wait_until(lambda: (cluster.workdir / "plain.bin.part").stat().st_size > 0, 20, "bytes to arrive")
        type_("quit")  # the question promises no resume either
        node.wait_for(r"\[1\] still running: wait for it \(w\), cancel it \(a server without byte "
                      r"ranges cannot resume: its data is removed\) \(c\), or stay", timeout=10)
        type_("s")
        node.wait_for(r"staying; the downloads go on", timeout=10)
        type_("pause 1")
        node.wait_for(r"\[1\] paused; what had arrived is removed: this server cannot resume a download "
                      r"\(no byte ranges\) \(resume 1 starts over\)", timeout=10)
        type_("jobs")  # and jobs agrees: nothing is kept
        node.wait_for(r"\[1\] \S+/plain\.bin  paused 0% 0 B", timeout=10)
        origin.configure(conn_rate=None)
        type_("resume 1")
        node.wait_for(r"\[1\] done: ", timeout=60)
        type_("quit")
        assert node.wait(15) == 0
    assert sha256_file(cluster.workdir / "plain.bin") == digest


def test_cancel_keeps_the_partial_file_and_quit_then_leaves_at_once(cluster, origin, origin_root):
    make_file(origin_root / "c.bin", 32 * MiB, seed=36)
    origin.configure(conn_rate=MiB)
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        type_(origin.url("/c.bin"))
        wait_until((cluster.workdir / "c.bin.part.swift").exists, 20, "the download to run")
        type_("cancel 1")
        node.wait_for(r"\[1\] cancelled; the partial download is kept in .*c\.bin\.part", timeout=10)
        type_("quit")  # nothing runs: no question
        assert node.wait(15) == 0
    assert (cluster.workdir / "c.bin.part").exists()


def test_a_url_without_a_scheme_is_taken_as_http(cluster, origin, origin_root):
    digest = make_file(origin_root / "noscheme.bin", 64 * 1024, seed=37)
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        type_(origin.url("/noscheme.bin").removeprefix("http://"))
        node.wait_for(r"\[1\] started http://127\.0\.0\.1:\d+/noscheme\.bin", timeout=10)
        node.wait_for(r"\[1\] done: ", timeout=30)
        type_("quti")
        node.wait_for(r"unknown command 'quti'", timeout=10)
        type_("quit")
        assert node.wait(15) == 0
    assert sha256_file(cluster.workdir / "noscheme.bin") == digest


def test_quit_from_a_pipe_waits_for_the_downloads_and_says_so(cluster, origin, origin_root, tmp_path):
    digest = make_file(origin_root / "piped.bin", 6 * MiB, seed=38)
    origin.configure(conn_rate=2 * MiB)
    disc = cluster.discovery()
    script = tmp_path / "input.txt"
    script.write_text(f"{origin.url('/piped.bin')}\nquit\n")
    with open(script) as stdin:
        node = cluster.node(f"127.0.0.1:{disc.port}", serve_only=False, stdin=stdin,
                            extra=["--allow-private"], name="piped")
        assert node.wait(60) == 0, node.output()
    node.wait_for(r"waiting for \[1\] to finish before leaving \(input is not a terminal; "
                  r"Ctrl-C cancels it, keeping its partial file\)", timeout=1)
    node.wait_for(r"\[1\] done: ", timeout=1)
    assert sha256_file(cluster.workdir / "piped.bin") == digest


def test_live_progress_appears_above_the_line_being_typed(cluster, origin, origin_root):
    make_file(origin_root / "live.bin", 48 * MiB, seed=39)
    origin.configure(conn_rate=MiB)
    disc = cluster.discovery()
    with terminal_node(cluster, f"127.0.0.1:{disc.port}") as (proc, type_, screen):
        type_(origin.url("/live.bin") + "\r")
        wait_until(lambda: "[1] started" in screen(), 10, "the download")
        type_("jo")  # half a command, not yet entered
        progress = re.compile(r"\r\x1b\[K(?:\x1b\[1A\r\x1b\[K)?\[1\] \d+% [\d.]+ MiB at [\d.]+ [KM]iB/s\r?\n"
                              r"swift> jo")
        wait_until(lambda: len(progress.findall(screen())) >= 2, 15, "two progress updates")
        assert "\x1b[1A" in screen(), "the progress line is updated in place"
        type_("bs\r")  # the typed line was kept: "jo" + "bs"
        wait_until(lambda: re.search(r"\[1\] http://\S+  running", screen()), 10, "jobs output")
        type_("quit\r")
        wait_until(lambda: "still running: wait for it (w)" in screen(), 10, "the question")
        type_("s\r")
        wait_until(lambda: "staying; the downloads go on" in screen(), 10, "staying")
        type_("\x04")  # Ctrl-D asks the same question
        wait_until(lambda: screen().count("still running: wait for it (w)") == 2, 10, "the question")
        type_("c\r")
        assert proc.wait(15) == 0
    assert "[1] cancelled; the partial download is kept in" in screen()


def test_ctrl_c_while_a_piped_quit_waits_cancels_and_leaves(cluster, origin, origin_root, tmp_path):
    make_file(origin_root / "slowpipe.bin", 32 * MiB, seed=40)
    origin.configure(conn_rate=MiB)
    disc = cluster.discovery()
    script = tmp_path / "input.txt"
    script.write_text(f"{origin.url('/slowpipe.bin')}\nquit\n")
    with open(script) as stdin:
        node = cluster.node(f"127.0.0.1:{disc.port}", serve_only=False, stdin=stdin,
                            extra=["--allow-private"], name="piped")
        node.wait_for(r"waiting for \[1\] to finish before leaving", timeout=20)
        wait_until((cluster.workdir / "slowpipe.bin.part.swift").exists, 20, "the download to run")
        started = time.monotonic()
        node.send(signal.SIGINT)
        assert node.wait(10) == 130, node.output()  # Ctrl-C exits 130 everywhere
        assert time.monotonic() - started < 2.0
    node.wait_for(r"cancelling; the partial file is kept: the same get resumes it", timeout=1)
    node.wait_for(r"\[1\] cancelled; the partial download is kept in .*slowpipe\.bin\.part", timeout=1)
