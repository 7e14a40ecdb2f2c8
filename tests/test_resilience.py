"""Crash resistance on real processes: every fault ends in a right file or a clear error.

Faults are injected with signals (SIGKILL, SIGSTOP), with an origin told to
misbehave on cue, a fake peer that lies, and a tiny tmpfs. The origin's
byte counters show how much was fetched twice. With SWIFT_FAULT_REPORT set,
each test appends its measurements (JSON lines) to that file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from swift import protocol, server, wire
from swiftlab.cluster import wait_until
from swift.membership import DiscoveryClient
from swiftlab.origin import make_file
from swift.storage import ResumeRecord

from tests.helpers import MiB, live_keys, sha256_file, start_helpers

CAP = 8 * MiB


def record(test: str, seconds: float, size: int, origin_bytes: int, **extra) -> None:
    line = dict(test=test, seconds=round(seconds, 2), file_size=size, origin_bytes=origin_bytes,
                extra_bytes=origin_bytes - size, **extra)
    print(json.dumps(line))
    path = os.environ.get("SWIFT_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def served(origin, origin_root, name: str, size: int, seed: int) -> str:
    digest = make_file(origin_root / name, size, seed=seed)
    origin.configure(host_rate=CAP)
    return digest


def path_bytes(origin, name: str) -> int:
    return origin.stats()["bytes_by_path"].get(f"/{name}", 0)


def ip_bytes(origin, ip: str) -> int:
    return origin.stats()["bytes_by_client"].get(ip, 0)


def start_get(cluster, disc, origin, name, *get_args, extra=()):
    report = cluster.workdir / f"{name}.report.json"
    proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url(f"/{name}"),
                       extra=["--source-address", "127.0.0.1", *extra],
                       get_extra=["--report", str(report), *get_args])
    return proc, report


# -- peers failing ---------------------------------------------------------------------------
def test_peer_killed_mid_transfer(cluster, origin, origin_root):
    size = 64 * MiB
    digest = served(origin, origin_root, "k.bin", size, 31)
    disc = cluster.discovery()
    helpers = start_helpers(cluster, disc, 3)
    proc, report = start_get(cluster, disc, origin, "k.bin", "--piece-size", "4M")
    wait_until(lambda: ip_bytes(origin, "127.0.0.3") > 4 * MiB, 30, "helper 2 mid-transfer")
    helpers[1].kill()
    assert proc.wait(120) == 0, proc.output()
    assert sha256_file(cluster.workdir / "k.bin") == digest
    data = json.loads(report.read_text())
    # only the dead peer's unreceived remainder is fetched again: at most one piece
    assert path_bytes(origin, "k.bin") <= size + 4 * MiB + 1
    record("peer killed", data["seconds"], size, path_bytes(origin, "k.bin"),
           ideal=round(size / (4 * CAP), 2))


def test_peer_frozen_is_abandoned_and_ignored_when_it_wakes(cluster, origin, origin_root):
    size = 48 * MiB
    digest = served(origin, origin_root, "s.bin", size, 32)
    disc = cluster.discovery()
    helpers = start_helpers(cluster, disc, 3)
    proc, report = start_get(cluster, disc, origin, "s.bin", "--piece-size", "4M",
                             extra=["--peer-timeout", "3"])
    wait_until(lambda: ip_bytes(origin, "127.0.0.2") > 2 * MiB, 30, "helper 1 mid-transfer")
    frozen_at = time.monotonic()
    helpers[0].send(signal.SIGSTOP)
    try:
        assert proc.wait(120) == 0, proc.output()
        elapsed = time.monotonic() - frozen_at
        assert sha256_file(cluster.workdir / "s.bin") == digest
    finally:
        helpers[0].send(signal.SIGCONT)
    # the peer wakes up: whatever it still sends goes nowhere; the file stays right
    wait_until(lambda: helpers[0].popen.poll() is None and live_keys(disc.port), 10, "peer alive")
    assert sha256_file(cluster.workdir / "s.bin") == digest
    assert not (cluster.workdir / "s.bin.part").exists()
    data = json.loads(report.read_text())
    record("peer frozen (SIGSTOP), --peer-timeout 3", data["seconds"], size,
           path_bytes(origin, "s.bin"), after_freeze=round(elapsed, 2))


def test_keepalives_hold_a_job_while_the_origin_is_slow(cluster, origin, origin_root):
    """A stall longer than --peer-timeout but shorter than the read timeout is not a dead peer."""
    size = 8 * MiB
    digest = make_file(origin_root / "w.bin", size, seed=33)
    disc = cluster.discovery()
    start_helpers(cluster, disc, 1)
    # the helper's first range request stalls 5 s after 64 KiB; the requester waits 3 s per frame
    origin.configure(path="/w.bin", stall_after=64 << 10, stall_seconds=5, count=2)
    proc, report = start_get(cluster, disc, origin, "w.bin", "--piece-size", "8M",
                             extra=["--peer-timeout", "3", "--slots", "1"])
    assert proc.wait(120) == 0, proc.output()
    assert sha256_file(cluster.workdir / "w.bin") == digest
    assert "no frame for" not in proc.output()


def test_slow_peer_costs_no_bytes_twice(cluster, origin, origin_root):
    size = 48 * MiB
    digest = make_file(origin_root / "t.bin", size, seed=34)
    origin.configure(host_rate=CAP, host_rates={"127.0.0.4": CAP / 10})
    disc = cluster.discovery()
    start_helpers(cluster, disc, 3)
    proc, report = start_get(cluster, disc, origin, "t.bin")
    assert proc.wait(120) == 0, proc.output()
    assert sha256_file(cluster.workdir / "t.bin") == digest
    data = json.loads(report.read_text())
    fetched = path_bytes(origin, "t.bin")
    assert fetched <= size + 2 * MiB, fetched  # shrunk jobs stop within a block or two
    record("slow peer (1/10)", data["seconds"], size, fetched,
           ideal=round(size / (3.1 * CAP), 2))


class LyingPeer:
    """A node that speaks the protocol but answers every job wrongly, in turn.

    Its lies are about counts and framing, which swift must catch. A peer
    that sends wrong *content* with the right counts is what --checksum is
    for (see the security tests), so when it hangs up mid-job it has sent
    true bytes (read from the origin's own file).
    """

    def __init__(self, disc_port: int, original: Path):
        self.mode = 0
        self.jobs = 0
        self.original = original
        self.srv = server.FramedServer(("127.0.0.1", 0), name="liar", secret=None, idle_timeout=30,
                                       max_connections=32, serve_connection=self.serve)
        self.srv.start()
        self.disc = DiscoveryClient("127.0.0.1", disc_port, name="liar", secret=None)
        self.disc.request(protocol.Heartbeat("127.0.0.1", self.srv.port, "liar", 2))

    def serve(self, srv, conn: wire.Connection) -> None:
        while True:
            msg = conn.recv()
            if not isinstance(msg, protocol.Fetch):
                return
            self.jobs += 1
            n = msg.end - msg.start
            mode = self.mode % 5
            self.mode += 1
            if mode == 0:  # too few bytes, then claims it is done
                conn.send_data(os.urandom(min(n, 1000)))
                conn.send(protocol.Done(msg.job_id, min(n, 1000)))
            elif mode == 1:  # an error from "the origin"
                conn.send(protocol.Error("origin", "made-up failure"))
            elif mode == 2:  # garbage that is not a frame at all
                conn.sock.sendall(b"\xff" * 64)
                return
            elif mode == 3:  # true bytes, then it hangs up mid-job (a crash)
                with open(self.original, "rb") as f:
                    f.seek(msg.start)
                    conn.send_data(f.read(min(n, 5000)))
                return
            else:  # more bytes than asked for
                conn.send_data(os.urandom(min(n + 4096, 1 << 20)))
                conn.send(protocol.Done(msg.job_id, n + 4096))

    def close(self) -> None:
        self.srv.stop()


def test_peer_that_keeps_failing_is_left_out(cluster, origin, origin_root):
    size = 24 * MiB
    digest = served(origin, origin_root, "l.bin", size, 35)
    disc = cluster.discovery()
    start_helpers(cluster, disc, 1)
    liar = LyingPeer(disc.port, origin_root / "l.bin")
    try:
        wait_until(lambda: len(live_keys(disc.port)) == 2, 10, "liar registered")
        proc, report = start_get(cluster, disc, origin, "l.bin", "--piece-size", "2M")
        assert proc.wait(120) == 0, proc.output()
    finally:
        liar.close()
    assert sha256_file(cluster.workdir / "l.bin") == digest
    assert f"peer 127.0.0.1:{liar.srv.port} left out" in proc.output()
    data = json.loads(report.read_text())
    assert f"127.0.0.1:{liar.srv.port}" not in data["bytes_by_source"] or \
        data["bytes_by_source"][f"127.0.0.1:{liar.srv.port}"] < 2 * MiB
    record("lying peer", data["seconds"], size, path_bytes(origin, "l.bin"), liar_jobs=liar.jobs)


def test_every_peer_gone(cluster, origin, origin_root):
    size = 40 * MiB
    digest = served(origin, origin_root, "g.bin", size, 36)
    disc = cluster.discovery()
    helpers = start_helpers(cluster, disc, 3)
    proc, report = start_get(cluster, disc, origin, "g.bin", "--piece-size", "4M")
    wait_until(lambda: path_bytes(origin, "g.bin") > size // 3, 30, "a third of the file")
    for h in helpers:
        h.kill()
    assert proc.wait(120) == 0, proc.output()
    assert sha256_file(cluster.workdir / "g.bin") == digest
    data = json.loads(report.read_text())
    assert path_bytes(origin, "g.bin") <= size + 3 * 4 * MiB + 1
    record("every peer killed", data["seconds"], size, path_bytes(origin, "g.bin"))


# -- the requester dies ---------------------------------------------------------------------------
def check_record_is_true(workdir: Path, name: str, original: Path) -> int:
    rec = ResumeRecord.load(workdir / f"{name}.part.swift")
    assert rec is not None
    claimed = 0
    with open(workdir / f"{name}.part", "rb") as part, open(original, "rb") as src:
        for start, end in rec.done:
            part.seek(start)
            src.seek(start)
            assert part.read(end - start) == src.read(end - start), (start, end)
            claimed += end - start
    return claimed


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.7])
def test_requester_killed_then_resumed(cluster, origin, origin_root, fraction):
    size = 40 * MiB
    digest = served(origin, origin_root, "r.bin", size, 37)
    origin.configure(host_rate=4 * MiB)  # about 3 s in all, so each moment can be hit
    disc = cluster.discovery()
    start_helpers(cluster, disc, 2)
    proc, _ = start_get(cluster, disc, origin, "r.bin")
    wait_until(lambda: path_bytes(origin, "r.bin") > size * fraction, 30, "part of the file")
    wait_until(lambda: (cluster.workdir / "r.bin.part.swift").exists(), 10, "a resume record")
    proc.kill()
    assert not (cluster.workdir / "r.bin").exists(), "finished before the kill: nothing to resume"
    # helpers notice at once and stop fetching
    time_killed = time.monotonic()
    before = path_bytes(origin, "r.bin")
    wait_until(lambda: _settled(origin, "r.bin"), 6, "helpers to stop fetching")
    stopped_after = time.monotonic() - time_killed
    claimed = check_record_is_true(cluster.workdir, "r.bin", origin_root / "r.bin")
    origin.reset_stats()
    proc2, report = start_get(cluster, disc, origin, "r.bin")
    assert proc2.wait(120) == 0, proc2.output()
    assert "resuming" in proc2.output()
    assert sha256_file(cluster.workdir / "r.bin") == digest
    second = path_bytes(origin, "r.bin")
    assert second <= size - claimed + 2 * MiB, (second, size - claimed)
    record(f"requester killed at {fraction:.0%}, resumed", json.loads(report.read_text())["seconds"],
           size - claimed, second, claimed=claimed, fetched_before_kill=before,
           helpers_stopped_within=round(stopped_after, 2))


def _settled(origin, name: str, quiet: float = 0.5) -> bool:
    first = path_bytes(origin, name)
    time.sleep(quiet)  # sampling a counter twice, not synchronising with a process
    return path_bytes(origin, name) == first


def test_resume_after_the_file_changed_starts_over(cluster, origin, origin_root):
    size = 24 * MiB
    served(origin, origin_root, "c.bin", size, 38)
    disc = cluster.discovery()
    proc, _ = start_get(cluster, disc, origin, "c.bin")
    wait_until(lambda: (cluster.workdir / "c.bin.part.swift").exists(), 30, "a resume record")
    proc.kill()
    digest = make_file(origin_root / "c.bin", size, seed=99)  # a new version
    proc2, _ = start_get(cluster, disc, origin, "c.bin")
    assert proc2.wait(120) == 0, proc2.output()
    assert "changed on the server since the partial download" in proc2.output()
    assert sha256_file(cluster.workdir / "c.bin") == digest


def test_restart_discards_the_partial_download(cluster, origin, origin_root):
    size = 16 * MiB
    digest = served(origin, origin_root, "x.bin", size, 39)
    disc = cluster.discovery()
    proc, _ = start_get(cluster, disc, origin, "x.bin")
    wait_until(lambda: (cluster.workdir / "x.bin.part.swift").exists(), 30, "a resume record")
    proc.kill()
    origin.reset_stats()
    proc2, _ = start_get(cluster, disc, origin, "x.bin", "--restart")
    assert proc2.wait(120) == 0, proc2.output()
    assert "--restart" in proc2.output()
    assert sha256_file(cluster.workdir / "x.bin") == digest
    assert path_bytes(origin, "x.bin") >= size  # everything fetched again


# -- discovery dies --------------------------------------------------------------------------------
def test_discovery_dies_mid_download(cluster, origin, origin_root):
    size = 40 * MiB
    digest = served(origin, origin_root, "d.bin", size, 40)
    disc = cluster.discovery(lease=3)
    port = disc.port
    start_helpers(cluster, disc, 3)
    proc, report = start_get(cluster, disc, origin, "d.bin")
    wait_until(lambda: path_bytes(origin, "d.bin") > size // 4, 30, "a quarter of the file")
    disc.kill()
    assert proc.wait(120) == 0, proc.output()
    assert sha256_file(cluster.workdir / "d.bin") == digest
    data = json.loads(report.read_text())
    assert len(data["bytes_by_source"]) == 4  # the helpers kept working
    cluster.discovery(port=port, lease=3)
    wait_until(lambda: len(_keys(port)) == 3, 5, "nodes to re-register by themselves")


def _keys(port):
    try:
        return live_keys(port)
    except Exception:  # noqa: BLE001 - discovery may still be starting
        return set()


def test_prompt_keeps_the_peers_it_knew_when_discovery_is_gone(cluster, origin, origin_root):
    import pty
    digest = served(origin, origin_root, "q.bin", 16 * MiB, 41)
    disc = cluster.discovery()
    start_helpers(cluster, disc, 2)
    master, slave = pty.openpty()
    try:
        node = cluster.node(f"127.0.0.1:{disc.port}", serve_only=False, stdin=slave,
                            extra=["--allow-private"], name="asker")
        wait_until(lambda: len(live_keys(disc.port)) == 3, 10, "all registered")
        os.write(master, b"peers\n")
        node.wait_for(r"helper1", timeout=10)
        disc.kill()
        os.write(master, b"peers\n")
        node.wait_for(r"note: .*unreachable.*last known", timeout=10)
        os.write(master, (origin.url("/q.bin") + "\n").encode())
        node.wait_for(r"\[1\] done: .*127\.0\.0\.1:\d+ .*127\.0\.0\.1:\d+", timeout=60)
        os.write(master, b"quit\n")
        assert node.wait(20) == 0
    finally:
        os.close(master)
        os.close(slave)
    assert sha256_file(cluster.workdir / "q.bin") == digest


# -- the origin misbehaves -------------------------------------------------------------------------
def test_file_changes_mid_download(cluster, origin, origin_root):
    size = 32 * MiB
    served(origin, origin_root, "m.bin", size, 42)
    disc = cluster.discovery()
    start_helpers(cluster, disc, 2)
    origin.configure(path="/m.bin", change=256 << 10, count=2)  # the probe, then a range
    proc, _ = start_get(cluster, disc, origin, "m.bin")
    assert proc.wait(120) != 0
    assert "the file changed on the server" in proc.output().strip().splitlines()[-1]
    assert not (cluster.workdir / "m.bin").exists()


@pytest.mark.parametrize("fault", [
    dict(fail=503, count=3),
    dict(fail=429, retry_after="1", count=2),
    dict(reset_after=256 << 10, count=3),  # the probe, then two ranges
    dict(stall_after=256 << 10, stall_seconds=30, count=2),  # the probe, then a range
])
def test_origin_fails_for_a_while(cluster, origin, origin_root, fault):
    size = 8 * MiB
    digest = make_file(origin_root / "o.bin", size, seed=43)
    disc = cluster.discovery()
    started = time.monotonic()
    origin.configure(path="/o.bin", **fault)
    proc, report = start_get(cluster, disc, origin, "o.bin")
    assert proc.wait(120) == 0, proc.output()
    assert sha256_file(cluster.workdir / "o.bin") == digest
    record(f"origin fault {fault}", time.monotonic() - started, size, path_bytes(origin, "o.bin"))


def test_origin_fails_for_good(cluster, origin, origin_root):
    make_file(origin_root / "p.bin", 4 * MiB, seed=44)
    disc = cluster.discovery()
    origin.configure(path="/p.bin", fail=503)
    started = time.monotonic()
    proc, _ = start_get(cluster, disc, origin, "p.bin")
    assert proc.wait(120) != 0
    assert "503" in proc.output().strip().splitlines()[-1]
    record("origin 503 for good (gives up)", time.monotonic() - started, 0, 0)


# -- the disk -------------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmpfs):
    return tmpfs("8m")


def test_disk_full_then_space_freed(cluster, origin, origin_root, small_fs):
    size = 16 * MiB
    digest = served(origin, origin_root, "big.bin", size, 45)
    disc = cluster.discovery()
    proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/big.bin"), extra=["--dir", str(small_fs)])
    assert proc.wait(60) != 0
    last = proc.output().strip().splitlines()[-1]
    assert "no space left" in last and str(small_fs) in last, last
    assert not (small_fs / "big.bin").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    proc2 = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/big.bin"), extra=["--dir", str(small_fs)])
    assert proc2.wait(60) == 0, proc2.output()
    assert "done:" in proc2.output(), proc2.output()
    assert sha256_file(small_fs / "big.bin") == digest, os.listdir(small_fs)


def test_directory_not_writable(cluster, origin, origin_root, small_fs):
    make_file(origin_root / "n.bin", MiB * 2, seed=47)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    disc = cluster.discovery()
    proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/n.bin"), extra=["--dir", str(small_fs)])
    assert proc.wait(60) != 0
    last = proc.output().strip().splitlines()[-1]
    assert str(small_fs) in last and "read-only" in last, last
