"""The node's prompt through a pseudo-terminal, as a user types at it."""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import time
from contextlib import contextmanager

import pytest

from swift.cluster import wait_until
from swift.origin import make_file

from .conftest import MiB, sha256_file


@contextmanager
def prompt_node(cluster, discovery: str, *, extra=(), directory=None, name="p"):
    master, slave = pty.openpty()
    try:
        node = cluster.node(discovery, serve_only=False, stdin=slave, extra=["--allow-private", *extra],
                            directory=directory, name=name)
        node.wait_for(r"type a URL to download it", timeout=20)
        yield node, lambda text: os.write(master, (text + "\n").encode())
    finally:
        os.close(master)
        os.close(slave)


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
        node.wait_for(r"\[2\] started", timeout=10)
        type_("quit")
        node.wait(20)
    assert not lines_matching(node, r"\[3\]")


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
