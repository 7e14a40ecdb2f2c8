"""End to end: real discovery.py and node.py processes on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from swiftlab.cluster import program, wait_until
from swift.membership import DiscoveryError
from swiftlab.origin import make_file

from tests.helpers import MiB, live_keys, prompt_node, run_get, sha256_file, start_helpers


@pytest.mark.slow
def test_three_helpers_256mib(cluster, origin, origin_root):
    """The main path: 3 helpers and a requester, 256 MiB, every peer contributes."""
    digest = make_file(origin_root / "big.bin", 256 * MiB, seed=1)
    # a per-machine cap makes the split visible: each helper has its own address
    origin.configure(host_rate=80 * MiB)
    disc = cluster.discovery()
    helpers = start_helpers(cluster, disc, 3)
    report = cluster.workdir / "report.json"
    code, out = run_get(cluster, disc.port, origin.url("/big.bin"), "--report", str(report),
                        extra=["--source-address", "127.0.0.1"])
    assert code == 0, out
    assert sha256_file(cluster.workdir / "big.bin") == digest
    data = json.loads(report.read_text())
    by = data["bytes_by_source"]
    assert sum(by.values()) == 256 * MiB
    for node in helpers:
        assert by.get(f"127.0.0.1:{node.port}", 0) > 0, by
    assert "done:" in out and "by machine" in out
    # nothing left behind: no part or record at the requester, nothing on the helpers
    assert sorted(p.name for p in cluster.workdir.iterdir() if p.is_file()) == ["big.bin", "report.json"]
    for i in range(3):
        assert list((cluster.workdir / f"helper{i}").iterdir()) == []


def test_prompt_through_a_terminal(cluster, origin, origin_root, tmp_path):
    """Type two URLs: both download at once in the background; quit unregisters at once."""
    first = make_file(origin_root / "p.bin", 8 * MiB, seed=2)
    second = make_file(origin_root / "q.bin", 8 * MiB, seed=3)
    origin.configure(conn_rate=MiB)  # slow enough that the two overlap
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}", name="prompt-node") as (node, type_):
        wait_until(lambda: len(live_keys(disc.port)) == 1, 10, "node registered")
        type_(origin.url("/p.bin"))
        node.wait_for(r"\[1\] started", timeout=10)
        type_(f"get {origin.url('/q.bin')} -o second.bin")
        node.wait_for(r"\[2\] started", timeout=10)
        type_("jobs")
        node.wait_for(r"\[2\] http://\S+  (starting|running)", timeout=10)
        node.wait_for(r"\[1\] done: ", timeout=60)
        node.wait_for(r"\[2\] done: ", timeout=60)
        type_("quit")
        assert node.wait(15) == 0
    # unregistered at once, not after the lease
    assert live_keys(disc.port) == set()
    assert sha256_file(cluster.workdir / "p.bin") == first
    assert sha256_file(cluster.workdir / "second.bin") == second


def test_ctrl_c_at_the_prompt_keeps_the_node(cluster, origin, origin_root):
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}", name="n") as (node, type_):
        wait_until(lambda: len(live_keys(disc.port)) == 1, 10, "node registered")
        node.send(signal.SIGINT)
        node.wait_for(r"type quit to exit", timeout=10)
        assert node.popen.poll() is None
        type_("peers")
        node.wait_for(r"slots=\d+\s+\(this node\)", timeout=10)
        type_("\x04", end="")  # Ctrl-D: end of input, a clean exit
        assert node.wait(15) == 0
    assert live_keys(disc.port) == set()


def test_two_requesters_share_the_same_peers(cluster, origin, origin_root):
    a = make_file(origin_root / "a.bin", 48 * MiB, seed=3)
    b = make_file(origin_root / "b.bin", 48 * MiB, seed=4)
    origin.configure(host_rate=40 * MiB)
    disc = cluster.discovery()
    start_helpers(cluster, disc, 2)
    d1, d2 = cluster.workdir / "r1", cluster.workdir / "r2"
    d1.mkdir(), d2.mkdir()
    p1 = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/a.bin"), extra=["--dir", str(d1)])
    p2 = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/b.bin"), extra=["--dir", str(d2)])
    assert p1.wait(120) == 0, p1.output()
    assert p2.wait(120) == 0, p2.output()
    assert sha256_file(d1 / "a.bin") == a
    assert sha256_file(d2 / "b.bin") == b


def test_peers_command_and_serve_only_sigterm(cluster):
    disc = cluster.discovery()
    node = cluster.node(f"127.0.0.1:{disc.port}", name="lonely")
    wait_until(lambda: live_keys(disc.port), 10, "node registered")
    out = subprocess.run([*program("node"), "--discovery", f"127.0.0.1:{disc.port}", "peers"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert f"127.0.0.1:{node.port}" in out.stdout and "lonely" in out.stdout
    node.send(signal.SIGTERM)
    assert node.wait(15) == 0
    assert live_keys(disc.port) == set()
    disc.send(signal.SIGTERM)
    assert disc.wait(15) == 0


# -- fallbacks ------------------------------------------------------------------------------
@pytest.mark.parametrize("behaviour,notice", [
    ({"ignore_ranges": True}, "does not support byte ranges"),
    ({"omit_length": True}, "sends no length"),
])
def test_fallback_plain_stream(cluster, origin, origin_root, behaviour, notice):
    digest = make_file(origin_root / "f.bin", 6 * MiB, seed=5)
    origin.configure(path="/f.bin", **behaviour)
    disc = cluster.discovery()
    start_helpers(cluster, disc, 1)
    code, out = run_get(cluster, disc.port, origin.url("/f.bin"))
    assert code == 0, out
    assert notice in out and "one plain stream" in out
    assert sha256_file(cluster.workdir / "f.bin") == digest


def test_fallback_no_peers(cluster, origin, origin_root):
    digest = make_file(origin_root / "f.bin", 6 * MiB, seed=6)
    disc = cluster.discovery()
    code, out = run_get(cluster, disc.port, origin.url("/f.bin"))
    assert code == 0, out
    assert "no peers known: downloading alone with several connections" in out
    assert sha256_file(cluster.workdir / "f.bin") == digest


def test_fallback_discovery_unreachable(cluster, origin, origin_root):
    digest = make_file(origin_root / "f.bin", 6 * MiB, seed=7)
    disc = cluster.discovery()
    port = disc.port
    disc.kill()
    code, out = run_get(cluster, port, origin.url("/f.bin"))
    assert code == 0, out
    assert "unreachable" in out and "downloading alone" in out
    assert sha256_file(cluster.workdir / "f.bin") == digest


def test_fallback_small_file(cluster, origin, origin_root):
    digest = make_file(origin_root / "small.txt", 1000, seed=8)
    disc = cluster.discovery()
    start_helpers(cluster, disc, 1)
    code, out = run_get(cluster, disc.port, origin.url("/small.txt"))
    assert code == 0, out
    assert "small file" in out and "one request" in out
    assert sha256_file(cluster.workdir / "small.txt") == digest


def test_name_from_content_disposition_and_percent_decoding(cluster, origin, origin_root):
    make_file(origin_root / "a b.bin", 3000, seed=9)
    disc = cluster.discovery()
    code, out = run_get(cluster, disc.port, origin.url("/a%20b.bin"))
    assert code == 0, out
    assert (cluster.workdir / "a b.bin").exists()
    make_file(origin_root / "x.bin", 3000, seed=10)
    origin.configure(path="/x.bin", content_disposition='attachment; filename="report.pdf"')
    code, out = run_get(cluster, disc.port, origin.url("/x.bin"))
    assert code == 0, out
    assert (cluster.workdir / "report.pdf").exists()


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [404, 403, 500])
def test_http_errors(cluster, origin, origin_root, status):
    make_file(origin_root / "e.bin", 3 * MiB, seed=11)
    origin.configure(path="/e.bin", fail=status)
    disc = cluster.discovery()
    code, out = run_get(cluster, disc.port, origin.url("/e.bin"), timeout=120)
    assert code != 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("error:") and str(status) in last, out
    assert not (cluster.workdir / "e.bin").exists()


@pytest.mark.parametrize("url,words", [
    ("ftp://127.0.0.1/file", "unsupported URL scheme"),
    ("file:///etc/passwd", "unsupported URL scheme"),
    ("http://[::1/x", "malformed URL"),
    ("not a url", "malformed URL"),
    ("http:///nohost", "malformed URL"),
])
def test_bad_urls(cluster, url, words):
    disc = cluster.discovery()
    code, out = run_get(cluster, disc.port, url)
    assert code != 0
    assert words in out.strip().splitlines()[-1], out
    assert [p for p in cluster.workdir.iterdir()] == []


def test_connection_refused(cluster):
    import socket
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    disc = cluster.discovery()
    code, out = run_get(cluster, disc.port, f"http://127.0.0.1:{port}/f.bin")
    assert code != 0
    assert "connection refused" in out.strip().splitlines()[-1], out


def test_prompt_survives_errors(cluster, origin, origin_root):
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        type_("get ftp://127.0.0.1/x")
        node.wait_for(r"\[1\] error: unsupported URL scheme", timeout=20)
        type_(origin.url("/missing.bin"))
        node.wait_for(r"\[2\] error: .*404", timeout=20)
        make_file(origin_root / "ok.bin", 2 * MiB, seed=12)
        type_(f"request {origin.url('/ok.bin')}")
        node.wait_for(r"\[3\] done: ", timeout=30)
        type_("quit")
        assert node.wait(15) == 0


@pytest.mark.root  # it builds a network namespace: -m "not root" leaves it out
@pytest.mark.skipif(not (os.geteuid() == 0 and subprocess.run(["sh", "-c", "command -v ip"],
                    capture_output=True).returncode == 0), reason="needs root and iproute2")
def test_dns_failure(tmp_path):
    """Name resolution fails inside an empty network namespace: no query leaves the machine."""
    ns = f"swdns{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        out = subprocess.run(["ip", "netns", "exec", ns, *program("node"), "--dir", str(tmp_path),
                              "--discovery", "127.0.0.1:1", "get", "http://no-such-host.invalid/f"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        assert "cannot resolve host name 'no-such-host.invalid'" in out.stderr.strip().splitlines()[-1], out.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns])


# -- discovery soft state ------------------------------------------------------------------------
def test_lease_expiry_after_sigkill(cluster):
    disc = cluster.discovery(lease=3)
    node = cluster.node(f"127.0.0.1:{disc.port}")
    key = f"127.0.0.1:{node.port}"
    wait_until(lambda: key in live_keys(disc.port), 10, "registered")
    killed = time.monotonic()
    node.kill()
    wait_until(lambda: key not in live_keys(disc.port), 8, "lease expiry")
    assert time.monotonic() - killed <= 3 + 1.5


def test_discovery_restart_relearns_nodes(cluster):
    disc = cluster.discovery(lease=3)
    port = disc.port
    nodes = [cluster.node(f"127.0.0.1:{port}") for _ in range(2)]
    keys = {f"127.0.0.1:{n.port}" for n in nodes}
    wait_until(lambda: live_keys(port) == keys, 10, "registered")
    disc.kill()
    disc2 = cluster.discovery(port=port, lease=3)
    restarted = time.monotonic()
    wait_until(lambda: _safe_keys(port) == keys, 6, "re-registration")
    # one heartbeat interval is lease / 3 = 1 s; allow scheduling slack
    assert time.monotonic() - restarted <= 2.5
    assert disc2.popen.poll() is None


def _safe_keys(port: int) -> set[str]:
    try:
        return live_keys(port)
    except DiscoveryError:
        return set()


# -- the file on disk is the representation as served ------------------------------------------
@pytest.mark.parametrize("helpers,plain", [(0, False), (2, False), (0, True)])
def test_content_encoding_is_saved_as_served_never_decoded(cluster, origin, origin_root, helpers, plain):
    """A server that labels every answer ``Content-Encoding: gzip`` (Apache's
    ``AddEncoding x-gzip .gz``): the bytes on disk are exactly the bytes served,
    on the probe, local ranges, helpers' ranges and the plain stream alike."""
    import gzip as gz
    payload = gz.compress(os.urandom(3 * MiB), compresslevel=1)
    (origin_root / "pkg.tar.gz").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    origin.configure(path="/pkg.tar.gz", gzip=True, ignore_ranges=plain)
    disc = cluster.discovery()
    extra = []
    if helpers:
        start_helpers(cluster, disc, helpers)
        # a per-machine cap (each helper has its own address): alone, the
        # requester would need 3 s, so helpers' ranges are always part of it;
        # uncapped, loopback can finish 3 MiB before a helper is asked
        origin.configure(host_rate=MiB)
        extra = ["--source-address", "127.0.0.1"]
    report = cluster.workdir / "r.json"
    code, out = run_get(cluster, disc.port, origin.url("/pkg.tar.gz"), "--report", str(report),
                        "--checksum", f"sha256:{digest}", extra=extra)
    assert code == 0, out
    assert sha256_file(cluster.workdir / "pkg.tar.gz") == digest
    used = json.loads(report.read_text())["bytes_by_source"]
    if helpers:
        assert len([k for k, v in used.items() if v > 0]) >= 2, used


def test_checksum_mismatch_keeps_a_small_record_and_the_same_command_refetches(cluster, origin, origin_root):
    """After a mismatch the record names the whole file, rejected by that sum, in one
    short line (it once held one range per byte and grew without bound)."""
    digest = make_file(origin_root / "c.bin", 24 * MiB, seed=60)
    disc = cluster.discovery()
    wrong = "sha256:" + "0" * 64
    code, out = run_get(cluster, disc.port, origin.url("/c.bin"), "--checksum", wrong)
    assert code != 0 and "checksum mismatch" in out
    record = cluster.workdir / "c.bin.part.swift"
    assert record.stat().st_size < 1024
    saved = json.loads(record.read_text())
    assert (saved["done"], saved["rejected"]) == ([[0, 24 * MiB]], wrong)
    code, out = run_get(cluster, disc.port, origin.url("/c.bin"), "--checksum", wrong)
    assert code != 0 and "failed sha256 before (the same checksum): fetching it anew" in out, out
    code, out = run_get(cluster, disc.port, origin.url("/c.bin"), "--checksum", f"sha256:{digest}")
    assert code == 0, out
    assert sha256_file(cluster.workdir / "c.bin") == digest
