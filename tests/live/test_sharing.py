"""LAN sharing between real processes on loopback: a file fetched once serves the next member.

Each "machine" is a node with its own state directory (``SWIFT_STATE_DIR``)
and download directory; a ``get`` run with a machine's state directory hands
its file to that machine's node. The origin's byte counters say what the
internet paid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from swiftlab.cluster import wait_until
from swiftlab.origin import make_file

from tests.helpers import (Machine, MiB, is_root, live_keys, node_program, offered_bytes,
                           origin_bytes, sha256_file)

SIZE = 64 * MiB


class LoopbackCapture:
    """Every TCP payload on the loopback interface to or from ``ports``, while in a
    ``with`` block (root only: a raw packet socket, as tcpdump uses)."""

    def __init__(self, ports: set[int]):
        import socket
        import threading
        self.ports = ports
        self.payloads: list[bytes] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        import struct
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65536)
            except OSError:
                continue
            if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4, TCP
                continue
            ip = frame[14:]
            tcp = ip[(ip[0] & 0x0F) * 4:]
            src, dst = struct.unpack(">HH", tcp[:4])
            if src in self.ports or dst in self.ports:
                payload = tcp[(tcp[12] >> 4) * 4:]
                if payload:
                    self.payloads.append(bytes(payload))

    @property
    def data(self) -> bytes:
        return b"".join(self.payloads)


def test_a_second_members_download_of_a_finished_file_comes_from_the_lan(two_machines, origin,
                                                                          origin_root):
    alpha, beta = two_machines
    digest = make_file(origin_root / "disk.iso", SIZE, seed=16)
    code, out, _ = alpha.get(origin.url("/disk.iso"), "--no-peers")
    assert code == 0, out
    origin.reset_stats()
    if is_root():  # and a capture of the members' traffic shows no URL
        with LoopbackCapture({alpha.node.port, beta.node.port}) as capture:
            code, out, report = beta.get(origin.url("/disk.iso"))
        assert b"fetch_copy" in capture.data and b"held" in capture.data
        assert b"disk.iso" not in capture.data and str(origin.port).encode() not in capture.data
    else:
        code, out, report = beta.get(origin.url("/disk.iso"))
    assert code == 0, out
    assert sha256_file(beta.dir / "disk.iso") == digest
    paid = origin_bytes(origin, "/disk.iso")
    assert paid <= 0.02 * SIZE, (paid, out)
    assert sum(report["lan_bytes"].values()) >= 0.98 * SIZE, report
    assert 0 < report["first_lan_byte_s"] < report["seconds"], report
    assert "from LAN copies" in out and "alpha" in out, out


# -- lying members ---------------------------------------------------------------------------------
def corrupt_keeping_the_time(path: Path, offsets: list[int]) -> None:
    """Change bytes of ``path`` behind the index's back: same inode, size and mtime (what a
    lying member serves while its index still says the file is the one recorded)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def forge_hashes(machine: Machine, path: Path) -> None:
    """Rewrite the member's piece digests so they match its (corrupted) bytes: a forger."""
    import hashlib
    from swift.content_index import ContentIndex
    index = ContentIndex(machine.state)
    for holding in index.holdings():
        with open(path, "rb") as f:
            forged = {}
            for i in holding.hashes:
                f.seek(i * holding.piece_size)
                forged[i] = hashlib.sha256(f.read(holding.piece_size)).hexdigest()
        index.update(holding.label, hashes=forged)


def test_a_member_serving_wrong_bytes_is_caught_by_the_piece_hashes_and_left_out(
        two_machines, origin, origin_root):
    alpha, beta = two_machines
    size = 16 * MiB
    digest = make_file(origin_root / "f.bin", size, seed=17)
    assert alpha.get(origin.url("/f.bin"), "--no-peers")[0] == 0
    corrupt_keeping_the_time(alpha.dir / "f.bin", [i * MiB + 5 for i in range(16)])
    code, out, report = beta.get(origin.url("/f.bin"))
    assert code == 0, out
    assert sha256_file(beta.dir / "f.bin") == digest
    assert "left out: alpha (LAN copy) (served 2 pieces that failed their SHA-256 check)" in out
    assert sum(report["lan_bytes"].values()) == 0  # nothing it sent was written


def test_a_member_forging_its_hashes_is_caught_by_origin_spot_checks(two_machines, origin,
                                                                     origin_root):
    """A forger corrupts 10 % of the pieces and hashes its wrong bytes. Spot checks draw
    their pieces at random; ``--spot-check 1`` compares every LAN piece here, so the
    test cannot miss by chance (the README gives the odds at the default 1 %)."""
    alpha, beta = two_machines
    size = 20 * MiB
    digest = make_file(origin_root / "g.bin", size, seed=18)
    assert alpha.get(origin.url("/g.bin"), "--no-peers")[0] == 0
    corrupt_keeping_the_time(alpha.dir / "g.bin", [3 * MiB + 1, 11 * MiB + 7])
    forge_hashes(alpha, alpha.dir / "g.bin")
    code, out, report = beta.get(origin.url("/g.bin"), "--spot-check", "1")
    assert code == 0, out
    assert sha256_file(beta.dir / "g.bin") == digest
    assert "left out: alpha (LAN copy) (served piece" in out and "forged SHA-256" in out, out


def test_a_forger_is_always_caught_by_a_trusted_digest(two_machines, origin, origin_root):
    alpha, beta = two_machines
    size = 20 * MiB
    digest = make_file(origin_root / "h.bin", size, seed=19)
    assert alpha.get(origin.url("/h.bin"), "--no-peers", "--checksum", f"sha256:{digest}")[0] == 0
    corrupt_keeping_the_time(alpha.dir / "h.bin", [3 * MiB + 1, 11 * MiB + 7])
    forge_hashes(alpha, alpha.dir / "h.bin")
    code, out, _ = beta.get(origin.url("/h.bin"), "--checksum", f"sha256:{digest}",
                            "--spot-check", "0")
    assert code == 0, out
    assert sha256_file(beta.dir / "h.bin") == digest
    assert "checksum mismatch after" in out and "from LAN copies" in out, out


# -- stale and private content -------------------------------------------------------------------------
def test_after_the_origin_changed_the_file_stale_copies_are_not_used(two_machines, origin,
                                                                     origin_root):
    alpha, beta = two_machines
    size = 8 * MiB
    make_file(origin_root / "s.bin", size, seed=20)
    assert alpha.get(origin.url("/s.bin"), "--no-peers")[0] == 0
    origin.change("/s.bin")
    new = sha256_file(origin_root / "s.bin")
    code, out, report = beta.get(origin.url("/s.bin"))
    assert code == 0, out
    assert sha256_file(beta.dir / "s.bin") == new
    assert report["lan_bytes"] == {}


def test_credentialed_and_private_downloads_are_never_offered(two_machines, origin, origin_root):
    alpha, beta = two_machines
    size = 4 * MiB
    make_file(origin_root / "c.bin", size, seed=21)
    make_file(origin_root / "p.bin", size, seed=22)
    origin.configure("/p.bin", cache_control="private, max-age=60")
    with_credentials = origin.url("/c.bin").replace("http://", "http://user:pw@")
    assert alpha.get(with_credentials, "--no-peers")[0] == 0
    assert alpha.get(origin.url("/p.bin"), "--no-peers")[0] == 0
    index = json.loads((alpha.state / "shares.json").read_text())
    assert {h["private"] for h in index["holdings"]} == {True}
    text = json.dumps(index)
    assert origin.url("/")[len("http://"):] not in text and "user:pw" not in text  # no URL kept
    origin.configure("/p.bin")
    for path in ("/c.bin", "/p.bin"):
        code, out, report = beta.get(origin.url(path))
        assert code == 0, out
        assert report["lan_bytes"] == {}, (path, out)


# -- the member's own file -----------------------------------------------------------------------------
def test_a_shared_file_edited_or_deleted_by_its_user_is_not_served(two_machines, origin,
                                                                   origin_root):
    alpha, beta = two_machines
    size = 4 * MiB
    digest = make_file(origin_root / "e.bin", size, seed=23)
    assert alpha.get(origin.url("/e.bin"), "--no-peers")[0] == 0
    with open(alpha.dir / "e.bin", "r+b") as f:  # the user edits it: its mtime moves
        f.write(b"edited")
    code, out, report = beta.get(origin.url("/e.bin"), "-o", str(beta.dir / "first.bin"))
    assert code == 0 and sha256_file(beta.dir / "first.bin") == digest, out
    assert report["lan_bytes"] == {}
    (alpha.dir / "e.bin").unlink()
    (beta.dir / "first.bin").unlink()  # or beta's own node would offer it
    code, out, report = beta.get(origin.url("/e.bin"), "-o", str(beta.dir / "second.bin"))
    assert code == 0 and sha256_file(beta.dir / "second.bin") == digest, out
    assert report["lan_bytes"] == {}, out


def test_a_node_restart_keeps_what_it_offers(cluster, origin, origin_root):
    disc = cluster.discovery()
    alpha, beta = Machine(cluster, disc, "alpha"), Machine(cluster, disc, "beta")
    wait_until(lambda: len(live_keys(disc.port)) == 2, 10, "both nodes registered")
    size = 8 * MiB
    digest = make_file(origin_root / "r.bin", size, seed=24)
    assert alpha.get(origin.url("/r.bin"), "--no-peers")[0] == 0
    alpha.node.kill()
    alpha.node = cluster.node(alpha.discovery, name="alpha", directory=alpha.dir, env=alpha.env,
                              extra=["--allow-private"])
    wait_until(lambda: f"127.0.0.1:{alpha.node.port}" in live_keys(disc.port), 10, "alpha back")
    code, out, report = beta.get(origin.url("/r.bin"))
    assert code == 0 and sha256_file(beta.dir / "r.bin") == digest, out
    assert sum(report["lan_bytes"].values()) >= size - MiB, out


def test_a_partial_copy_and_the_pool_for_the_rest_give_the_right_file(two_machines, origin,
                                                                       origin_root):
    """Alpha's download stops at 60 % (killed); beta takes those 60 % from alpha's
    ``NAME.part`` and the rest from the origin, through the pool."""
    alpha, beta = two_machines
    size = 10 * MiB
    digest = make_file(origin_root / "half.bin", size, seed=25)
    # the probe and six 1 MiB pieces are answered; every later request stalls
    origin.configure("/half.bin", stall_after=0)
    origin.configure("/half.bin", stall_after=1 << 40, count=7)
    first = alpha.cluster.start(
        [*node_program(), "--discovery", alpha.discovery, "--dir", str(alpha.dir), "get",
         origin.url("/half.bin"), "--no-peers", "--piece-size", "1M"], name="alpha-get",
        env=alpha.env)
    wait_until(lambda: offered_bytes(alpha) >= 6 * MiB, 30, "alpha holds 60 %")
    first.kill()
    origin.clear("/half.bin")
    held = offered_bytes(alpha)
    assert held == 6 * MiB and (alpha.dir / "half.bin.part").exists()
    origin.reset_stats()
    code, out, report = beta.get(origin.url("/half.bin"))
    assert code == 0, out
    assert sha256_file(beta.dir / "half.bin") == digest
    lan = sum(report["lan_bytes"].values())
    # the copy served what it held; on a loaded machine a piece of it may go to the origin
    # first (its member's claims expire, a query is refused), never a byte it did not hold
    assert MiB <= lan <= held, (lan, held, out)
    # the origin sent the rest, a spot check and, on loopback, what was in flight when a
    # range was cut short (a split, a race)
    assert origin_bytes(origin, "/half.bin") <= size - lan + 4 * MiB, out




def test_a_get_with_no_share_is_neither_recorded_nor_offered(two_machines, origin, origin_root):
    alpha, beta = two_machines
    make_file(origin_root / "n.bin", 4 * MiB, seed=27)
    assert alpha.get(origin.url("/n.bin"), "--no-peers", "--no-share")[0] == 0
    assert not (alpha.state / "shares.json").exists()
    code, out, report = beta.get(origin.url("/n.bin"))
    assert code == 0 and report["lan_bytes"] == {}, out


def test_the_prompt_lists_what_it_offers_and_unshare_stops_offering_it(cluster, origin,
                                                                      origin_root, tmp_path):
    from tests.helpers import prompt_node
    make_file(origin_root / "p.bin", 4 * MiB, seed=28)
    disc = cluster.discovery()
    state = tmp_path / "prompt-state"
    state.mkdir()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}", name="sharer",
                     env={"SWIFT_STATE_DIR": str(state)}) as (node, type_):
        type_("shares")
        node.wait_for(r"this node offers nothing", timeout=10)
        type_(f"get {origin.url('/p.bin')} --no-peers")
        node.wait_for(r"\[1\] done: ", timeout=60)
        mark = type_("shares")
        line = node.wait_for(r"([0-9a-f]{12})  \S+p\.bin  4\.0 MiB \(complete\)  offered",
                             timeout=10, start=mark)
        mark = type_(f"unshare {line.group(1)}")
        node.wait_for(r"no longer offered: \S+p\.bin", timeout=10, start=mark)
        mark = type_("shares")
        node.wait_for(r"this node offers nothing", timeout=10, start=mark)


def test_with_a_secret_copies_go_over_the_private_channel(tmp_path, origin, origin_root):
    from swiftlab.cluster import Cluster
    secret = tmp_path / "secret"
    secret.write_text("a shared secret of the pool\n")
    secret.chmod(0o600)
    work = tmp_path / "members"
    work.mkdir()
    digest = make_file(origin_root / "t.bin", 8 * MiB, seed=29)
    with Cluster(work, secret_file=secret) as members:
        disc = members.discovery()
        alpha, beta = Machine(members, disc, "alpha"), Machine(members, disc, "beta")
        wait_until(lambda: len(members_listed(disc.port, secret)) == 2, 10, "both registered")
        assert alpha.get(origin.url("/t.bin"), "--no-peers")[0] == 0
        code, out, report = beta.get(origin.url("/t.bin"))
        assert code == 0 and sha256_file(beta.dir / "t.bin") == digest, out
        assert sum(report["lan_bytes"].values()) >= 7 * MiB, out


def members_listed(port: int, secret_path: Path) -> list:
    """The members discovery lists, asked with the pool's secret ([] while it cannot answer)."""
    from swift import auth
    from swift.errors import SwiftError
    from swift.membership import DiscoveryClient
    client = DiscoveryClient("127.0.0.1", port, name="test", secret=auth.load_secret(secret_path),
                             timeout=2.0)
    try:
        return client.list_peers()
    except (OSError, SwiftError):
        return []


def test_a_late_joiner_takes_what_the_first_holds_and_the_internet_pays_about_once(
        two_machines, origin, origin_root):
    """Beta starts while alpha's download of the same file runs: beta takes alpha's pieces
    as they are hashed and leaves alpha what it claims (fetches, or wrote but has not
    hashed yet); the origin pays for the file about once."""
    alpha, beta = two_machines
    size = 48 * MiB
    digest = make_file(origin_root / "both.bin", size, seed=26)
    origin.configure(conn_rate=MiB)  # every connection slow: the two overlap for seconds
    args = ["--discovery", alpha.discovery, "get", origin.url("/both.bin")]
    first = alpha.cluster.start([*node_program(), "--dir", str(alpha.dir), *args],
                                name="alpha-get", env=alpha.env)
    wait_until(lambda: offered_bytes(alpha) >= size // 4, 60, "alpha holds a quarter")
    second = beta.cluster.start([*node_program(), "--dir", str(beta.dir), *args],
                                name="beta-get", env=beta.env)
    assert first.wait(120) == 0, first.output()
    assert second.wait(120) == 0, second.output()
    assert sha256_file(alpha.dir / "both.bin") == sha256_file(beta.dir / "both.bin") == digest
    paid = origin_bytes(origin, "/both.bin")
    assert paid <= 1.15 * size, (paid / size, second.output())
    assert "from LAN copies" in second.output()


def test_two_members_starting_one_url_together_cost_the_origin_about_one_copy(
        two_machines, origin, origin_root):
    """Alpha and beta start the same download at the same moment, each with the other as
    its helper: each walks its own part of the file from the origin and takes the other's
    part as it is hashed; of bytes both began to fetch, the later holder gives way."""
    alpha, beta = two_machines
    size = 96 * MiB
    digest = make_file(origin_root / "together.bin", size, seed=31)
    origin.configure(conn_rate=MiB)  # every connection slow: the two run side by side
    procs = [m.cluster.start([*node_program(), "--dir", str(m.dir), "--discovery", m.discovery,
                              "get", origin.url("/together.bin")], name=f"{m.name}-get", env=m.env)
             for m in (alpha, beta)]
    for proc in procs:
        assert proc.wait(120) == 0, proc.output()
    for m in (alpha, beta):
        assert sha256_file(m.dir / "together.bin") == digest
    paid = origin_bytes(origin, "/together.bin")
    outputs = "\n".join(p.output() for p in procs)
    assert paid <= 1.15 * size, (paid / size, outputs)
    assert outputs.count("from LAN copies") == 2, outputs  # each took the other's part
