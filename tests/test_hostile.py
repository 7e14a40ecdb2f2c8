"""Security and bad input, on real processes: members only, nothing hostile gets through."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from swift import discovery_server, node_server, protocol, sessions, wire
from swift.cluster import Cluster, wait_until
from swift.membership import DiscoveryClient
from swift.origin import OriginServer, make_file

from .conftest import MiB, sha256_file
from .test_e2e import run_get, start_helpers

SECRET = b"s3cret-for-the-lab-only-0123456789"


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


# -- membership by shared secret -------------------------------------------------------------
def test_members_download_together_and_outsiders_are_refused(tmp_path, secret_file, origin,
                                                             origin_root):
    digest = make_file(origin_root / "m.bin", 8 * MiB, seed=51)
    work = tmp_path / "w"
    work.mkdir()
    with Cluster(work, secret_file=secret_file) as members:
        disc = members.discovery()
        helper = members.node(f"127.0.0.1:{disc.port}", extra=["--allow-private"])
        keyed = DiscoveryClient("127.0.0.1", disc.port, name="t", secret=SECRET)
        wait_until(lambda: keyed.list_peers(), 10, "member registered")
        proc = members.get(f"127.0.0.1:{disc.port}", origin.url("/m.bin"), get_extra=["--report", str(work / "r.json")])
        assert proc.wait(60) == 0, proc.output()
        assert sha256_file(work / "m.bin") == digest
        assert f"127.0.0.1:{helper.port}" in (work / "r.json").read_text()

        # no secret: discovery and the node both refuse, with a clear message
        for port in (disc.port, helper.port):
            with pytest.raises(wire.AuthError, match="requires the shared secret"):
                wire.client_connect("127.0.0.1", port, name="outsider", secret=None, timeout=5)
            with pytest.raises(wire.AuthError, match="failed to prove"):
                wire.client_connect("127.0.0.1", port, name="outsider", secret=b"wrong", timeout=5)
        outsiders = Cluster(work)  # same programs, no secret file
        try:
            o = outsiders.node(f"127.0.0.1:{disc.port}", serve_only=True)
            o.wait_for("refused us.*requires the shared secret", timeout=10)
            g = outsiders.get(f"127.0.0.1:{disc.port}", origin.url("/m.bin"),
                              get_extra=["-o", str(work / "o.bin")])
            assert g.wait(60) == 0  # it downloads alone, after saying discovery refused it
            assert "refused us" in g.output()
        finally:
            outsiders.close()
        assert {p.port for p in keyed.list_peers()} == {helper.port}  # no outsider got in
        # the servers' side says so too
        wait_until(lambda: "handshake with 127.0.0.1 failed" in disc.output(), 10, "discovery log")
        assert "handshake with 127.0.0.1 failed" in helper.output()
        # the secret is in no output
        for proc in members.processes:
            assert SECRET.decode() not in proc.output()


def test_client_with_a_secret_refuses_a_server_without_one(cluster, secret_file):
    disc = cluster.discovery()  # no secret
    with pytest.raises(wire.AuthError, match="does not know the shared secret"):
        wire.client_connect("127.0.0.1", disc.port, name="keyed", secret=SECRET, timeout=5)
    wait_until(lambda: "client requires a shared secret" in disc.output(), 10, "server log")


def test_warning_without_a_secret(cluster):
    disc = cluster.discovery()
    node = cluster.node(f"127.0.0.1:{disc.port}")
    for proc in (disc, node):
        proc.wait_for("no shared secret", timeout=5)
        assert proc.output().count("no shared secret") == 1


def test_the_secret_never_crosses_the_wire(secret_file, tmp_path):
    """A relay between a keyed client and a keyed discovery sees every byte: no secret in them."""
    srv = discovery_server.make_server("127.0.0.1", 0, secret=SECRET,
                                       state_dir=tmp_path / "state").start()
    captured = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))

    def relay():
        a, _ = listener.accept()
        b = socket.create_connection(("127.0.0.1", srv.port))

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    captured.extend(data)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                dst.close()

        t = threading.Thread(target=pump, args=(b, a), daemon=True)
        t.start()
        pump(a, b)
        t.join(5)

    t = threading.Thread(target=relay, daemon=True)
    t.start()
    try:
        client = DiscoveryClient("127.0.0.1", listener.getsockname()[1], name="c", secret=SECRET)
        assert client.list_peers() == []
        t.join(5)
        assert captured[:1] == b"\x16"  # the handshake happened, inside TLS: unreadable here
        assert b"welcome" not in captured and b"proof" not in captured
        assert SECRET not in captured and SECRET.hex().encode() not in captured
    finally:
        listener.close()
        srv.stop()


# -- no fetching into the node's own network ---------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/x.bin", "http://[::1]:{port}/x.bin", "http://localhost:{port}/x.bin",
    "http://10.0.0.1/x.bin", "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]:{port}/x.bin", "http://0.0.0.0:{port}/x.bin", "file:///etc/passwd",
    "ftp://127.0.0.1/x",
])
def test_node_refuses_jobs_into_its_own_network(cluster, origin, origin_root, url):
    make_file(origin_root / "x.bin", 1000, seed=52)
    disc = cluster.discovery()
    node = cluster.node(f"127.0.0.1:{disc.port}")  # no --allow-private
    target = url.format(port=origin.port)
    with wire.client_connect("127.0.0.1", node.port, name="t", secret=None, timeout=5) as conn:
        started = time.monotonic()
        conn.send(protocol.Fetch(1, target, 0, 1000, 1000, None, None))
        reply = conn.recv(timeout=20)
        assert isinstance(reply, protocol.Error) and reply.code == "refused", reply
        assert time.monotonic() - started < 2  # refused before any connect attempt
        conn.send(protocol.Ping())
        assert isinstance(conn.recv(), protocol.Pong)  # still serving
    assert origin.stats()["requests_by_client"] == {}


def test_allow_private_serves_loopback_jobs(cluster, origin, origin_root):
    data = (origin_root / "y.bin")
    make_file(data, 5000, seed=53)
    disc = cluster.discovery()
    node = cluster.node(f"127.0.0.1:{disc.port}", extra=["--allow-private"])
    with wire.client_connect("127.0.0.1", node.port, name="t", secret=None, timeout=5) as conn:
        conn.send(protocol.Fetch(1, origin.url("/y.bin"), 100, 5000, 5000, None, None))
        got = bytearray()
        while True:
            frame = conn.recv(timeout=20)
            if isinstance(frame, protocol.DataFrame):
                got += frame.payload
            else:
                assert isinstance(frame, protocol.Done), frame
                break
    assert bytes(got) == data.read_bytes()[100:]


def test_redirect_into_a_private_address_is_refused(monkeypatch, origin_root):
    """First hop allowed (127.0.0.2 counts as public here), the redirect to 127.0.0.1 is not."""
    make_file(origin_root / "r.bin", 1000, seed=54)
    target = OriginServer(origin_root, host="127.0.0.1").start()
    hop = OriginServer(origin_root, host="127.0.0.2").start()
    monkeypatch.setattr(sessions, "is_public_address", lambda ip: ip == "127.0.0.2")
    try:
        hop.configure(path="/r.bin", redirect=target.url("/r.bin"))
        s = sessions.make_session(allow_private=False)
        with pytest.raises(Exception, match="refusing to fetch from 127.0.0.1"):
            s.get(hop.url("/r.bin"), timeout=5)
        assert hop.stats()["requests_by_client"] and not target.stats()["requests_by_client"]
    finally:
        hop.stop()
        target.stop()


def test_dns_rebinding_is_checked_on_the_connected_address(monkeypatch, origin):
    """The name resolves to an allowed address at the check and to a refused one at connect."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.2", "127.0.0.1"])
    monkeypatch.setattr(sessions, "is_public_address", lambda ip: ip == "127.0.0.2")

    def rebinding(host, *args, **kwargs):
        # every look-up, whoever makes it, gets the next answer
        return real(next(answers, "127.0.0.1"), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    s = sessions.make_session(allow_private=False)
    with pytest.raises(Exception, match="refusing to fetch"):
        s.get(f"http://rebind.test:{origin.port}/x", timeout=5)


@pytest.mark.parametrize("ip,public", [
    ("127.0.0.1", False), ("::1", False), ("10.0.0.1", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("::", False), ("224.0.0.1", False), ("255.255.255.255", False), ("fe80::1", False),
    ("fc00::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("64:ff9b::a00:1", False), ("2002:7f00:1::", False), ("192.0.2.1", False), ("::127.0.0.1", False),
    ("8.8.8.8", True), ("1.1.1.1", True), ("2606:4700:4700::1111", True), ("::ffff:8.8.8.8", True),
])
def test_address_policy(ip, public):
    assert sessions.is_public_address(ip) is public


# -- bounded everything ---------------------------------------------------------------------------
def hello() -> bytes:
    return protocol.encode_message(protocol.Hello(protocol.PROTOCOL_VERSION, "fuzz", None))


def frame(kind: int, payload: bytes, version: int = protocol.PROTOCOL_VERSION) -> bytes:
    return struct.pack(">BBI", version, kind, len(payload)) + payload


BAD_AFTER_HELLO = {
    "oversize control": struct.pack(">BBI", 1, 1, protocol.MAX_CONTROL + 1) + b"{" * 100,
    "oversize data": struct.pack(">BBI", 1, 2, (1 << 20) + 1),
    "inverted range": protocol.encode_message(protocol.Fetch(1, "http://h/x", 0, 1, 1, None, None))
    .replace(b'"start":0,"end":1', b'"start":5,"end":1'),
    "range beyond size": frame(1, b'{"type":"fetch","job_id":1,"url":"http://h/x","start":0,"end":99,"size":10}'),
    "negative": frame(1, b'{"type":"fetch","job_id":-1,"url":"http://h/x","start":0,"end":9,"size":10}'),
    "unknown type": frame(1, b'{"type":"format_disk"}'),
    "wrong version": frame(1, b'{"type":"ping"}', version=9),
    "invalid utf-8": frame(1, b'{"type":"\xff\xfe"}'),
    "invalid json": frame(1, b'{"type":'),
    "not an object": frame(1, b'[1,2,3]'),
    "boolean as int": frame(1, b'{"type":"shrink","job_id":true,"end":1}'),
    "unknown kind": frame(7, b"x"),
}


@pytest.fixture
def live_pair(cluster):
    disc = cluster.discovery()
    node = cluster.node(f"127.0.0.1:{disc.port}")
    return disc, node


@pytest.mark.parametrize("name", sorted(BAD_AFTER_HELLO))
def test_bad_frames_get_an_error_and_the_server_keeps_serving(live_pair, name):
    for proc in live_pair:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
            s.sendall(hello())
            conn = wire.Connection(s, timeout=5)
            assert isinstance(conn.recv(), protocol.Welcome)
            s.sendall(BAD_AFTER_HELLO[name])
            reply = conn.recv()
            assert isinstance(reply, protocol.Error), reply
            with pytest.raises((wire.ConnectionClosed, TimeoutError, protocol.ProtocolError)):
                conn.recv(timeout=5)  # then the connection closes
        with wire.client_connect("127.0.0.1", proc.port, name="t", secret=None, timeout=5) as conn:
            conn.send(protocol.Ping())
            assert isinstance(conn.recv(), protocol.Pong)


def test_truncated_and_pre_handshake_frames(live_pair):
    for proc in live_pair:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
            s.sendall(protocol.encode_message(protocol.ListPeers()))  # before hello
            conn = wire.Connection(s, timeout=5)
            assert isinstance(conn.recv(), protocol.Error)
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
            s.sendall(hello()[:-3])  # half a frame, then hang up
        with wire.client_connect("127.0.0.1", proc.port, name="t", secret=None, timeout=5) as conn:
            conn.send(protocol.Ping())
            assert isinstance(conn.recv(), protocol.Pong)


def test_idle_connections_are_closed_and_excess_ones_refused():
    srv = node_server.make_server("127.0.0.1", 0, name="n", secret=None, slots=1,
                                  session_factory=lambda: sessions.make_session(), idle_timeout=1.0,
                                  max_connections=3)
    srv.start()
    try:
        idle = wire.client_connect("127.0.0.1", srv.port, name="idle", secret=None, timeout=5)
        with pytest.raises(wire.ConnectionClosed):
            idle.recv(timeout=5)  # closed by the server after its idle timeout
        idle.close()
        wait_until(lambda: srv.open_connections() == 0, 5, "server to forget the idle one")
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(3)]
        wait_until(lambda: srv.open_connections() == 3, 5, "three connections")
        with pytest.raises(protocol.ProtocolError, match="too many"):
            wire.client_connect("127.0.0.1", srv.port, name="late", secret=None, timeout=5)
        for s in held:
            s.close()
    finally:
        srv.stop()


# -- safe file names and overwriting ------------------------------------------------------------------
@pytest.mark.parametrize("disposition,expected", [
    ('attachment; filename="../../etc/passwd"', "passwd"),
    ('attachment; filename="/etc/shadow"', "shadow"),
    ('attachment; filename="..\\\\..\\\\win.ini"', "win.ini"),
    ("attachment; filename*=UTF-8''..%2F..%2Fevil.sh", "evil.sh"),
    ('attachment; filename="a\\u0007b\\u001b[31m.txt"', None),
    ('attachment; filename="' + "n" * 1000 + '.bin"', None),
    ('attachment; filename="...."', "h.bin"),
    ('attachment; filename=""', "h.bin"),
])
def test_hostile_names_land_inside_the_directory(cluster, origin, origin_root, disposition, expected):
    make_file(origin_root / "h.bin", 3000, seed=55)
    origin.configure(path="/h.bin", content_disposition=disposition)
    disc = cluster.discovery()
    code, out = run_get(cluster, disc.port, origin.url("/h.bin"), "--report", str(cluster.workdir.parent / "r.json"))
    assert code == 0, out
    files = [p for p in cluster.workdir.iterdir()]
    assert len(files) == 1 and files[0].parent == cluster.workdir
    name = files[0].name
    assert "/" not in name and "\\" not in name and len(name.encode()) <= 255
    assert all(ord(c) >= 32 for c in name)
    if expected:
        assert name == expected


def test_existing_files_are_never_overwritten_without_force(cluster, origin, origin_root):
    digest = make_file(origin_root / "e.bin", 3000, seed=56)
    (cluster.workdir / "e.bin").write_text("precious")
    disc = cluster.discovery()
    assert run_get(cluster, disc.port, origin.url("/e.bin"))[0] == 0
    assert (cluster.workdir / "e.bin").read_text() == "precious"
    assert sha256_file(cluster.workdir / "e (1).bin") == digest
    out = cluster.workdir.parent / "given.bin"
    out.write_text("also precious")
    code, text = run_get(cluster, disc.port, origin.url("/e.bin"), "-o", str(out))
    assert code != 0 and "--force" in text and out.read_text() == "also precious"
    assert run_get(cluster, disc.port, origin.url("/e.bin"), "-o", str(out), "--force")[0] == 0
    assert sha256_file(out) == digest
    assert run_get(cluster, disc.port, origin.url("/e.bin"), "--force")[0] == 0
    assert sha256_file(cluster.workdir / "e.bin") == digest


# -- no trust in what comes back ------------------------------------------------------------------------
@pytest.mark.parametrize("lie", [
    dict(wrong_content_range=True), dict(ignore_ranges=True), dict(gzip=True),
    dict(short_body=1000), dict(change=1 << 20),
])
def test_lying_origin_answers_are_not_written(cluster, origin, origin_root, lie):
    """The lie hits a couple of range requests after the probe; the file still comes out right."""
    size = 12 * MiB
    digest = make_file(origin_root / "t.bin", size, seed=57)
    origin.configure(host_rate=16 * MiB)
    disc = cluster.discovery()
    start_helpers(cluster, disc, 1)
    # the helper's first two range requests get the lie; the probe and the rest do not
    origin.configure(path="/t.bin", only_client="127.0.0.2", count=2, **lie)
    code, out = run_get(cluster, disc.port, origin.url("/t.bin"))
    if "change" in lie:
        assert code != 0 and "changed on the server" in out
        assert not (cluster.workdir / "t.bin").exists()
        return
    assert code == 0, out
    assert sha256_file(cluster.workdir / "t.bin") == digest


def test_checksum(cluster, origin, origin_root):
    make_file(origin_root / "c.bin", 2 * MiB, seed=58)
    data = (origin_root / "c.bin").read_bytes()
    disc = cluster.discovery()
    for algo in ("md5", "sha1", "sha256", "sha512"):
        good = f"{algo}:{hashlib.new(algo, data).hexdigest()}"
        code, out = run_get(cluster, disc.port, origin.url("/c.bin"), "--checksum", good, "--force")
        assert code == 0, out
    bad = "sha256:" + "0" * 64
    code, out = run_get(cluster, disc.port, origin.url("/c.bin"), "-o", str(cluster.workdir / "bad.bin"),
                        "--checksum", bad)
    assert code != 0 and "checksum mismatch" in out.strip().splitlines()[-1]
    assert not (cluster.workdir / "bad.bin").exists()
    assert (cluster.workdir / "bad.bin.part").read_bytes() == data
    code, out = run_get(cluster, disc.port, origin.url("/c.bin"), "--checksum", "crc32:abc")
    assert code != 0 and "checksum must be" in out


# -- fuzzing ------------------------------------------------------------------------------------------
@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_codec_random_bytes(data):
    dec = protocol.FrameDecoder()
    try:
        for f in dec.feed(data):
            protocol.parse_frame(f)
    except protocol.ProtocolError:
        pass


@st.composite
def valid_frames(draw):
    msg = draw(st.sampled_from([
        protocol.Ping(), protocol.ListPeers(), protocol.Keepalive(3),
        protocol.Fetch(1, "http://h/x", 0, 10, 10, '"e"', None), protocol.Done(2, 5),
        protocol.Peers([protocol.PeerInfo("h", 1, "n", 2, 0.5)]), protocol.Error("c", "m"),
    ]))
    return protocol.encode_message(msg)


@settings(max_examples=3000, deadline=None)
@given(valid_frames(), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       st.integers(1, 50))
def test_codec_mutated_frames_and_splits(raw, flips, step):
    data = bytearray(raw)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    dec = protocol.FrameDecoder()
    try:
        frames = []
        for i in range(0, len(data), step):
            frames += dec.feed(bytes(data[i:i + step]))
        for f in frames:
            protocol.parse_frame(f)
        if not flips:
            assert len(frames) == 1 and protocol.encode_message(protocol.parse_frame(frames[0])) == raw
    except protocol.ProtocolError:
        assert flips


def _resources(pid: int) -> tuple[int, int]:
    threads = int([line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("Threads:")][0].split()[1])
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def test_fuzz_live_servers(live_pair):
    import random
    rng = random.Random(2026)
    samples = [hello() + v for v in BAD_AFTER_HELLO.values()] + [hello()]
    for proc in live_pair:
        wait_until(lambda: _resources(proc.pid), 5)
        base = _resources(proc.pid)
        for i in range(1500):
            kind = rng.random()
            if kind < 0.3:
                payload = rng.randbytes(rng.randint(0, 200))
            elif kind < 0.8:
                payload = bytearray(rng.choice(samples))
                for _ in range(rng.randint(1, 4)):
                    payload[rng.randrange(len(payload))] = rng.randrange(256)
                payload = bytes(payload)
            else:
                payload = hello() + rng.randbytes(rng.randint(0, 64))
            with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
                try:
                    s.sendall(payload)
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(2)
                    while s.recv(65536):
                        pass
                except OSError:
                    pass
        assert proc.popen.poll() is None
        with wire.client_connect("127.0.0.1", proc.port, name="t", secret=None, timeout=5) as conn:
            conn.send(protocol.Ping())
            assert isinstance(conn.recv(), protocol.Pong)
        wait_until(lambda: _resources(proc.pid)[0] <= base[0] + 1 and _resources(proc.pid)[1] <= base[1] + 1,
                   10, f"threads and fds back to {base}")


def test_flood_of_idle_connections_does_not_stop_a_download(cluster, origin, origin_root):
    digest = make_file(origin_root / "f.bin", 16 * MiB, seed=59)
    origin.configure(host_rate=8 * MiB)
    disc = cluster.discovery()
    (helper,) = start_helpers(cluster, disc, 1)
    base = _resources(helper.pid)
    flood = []
    try:
        for i in range(300):
            try:
                s = socket.create_connection(("127.0.0.1", helper.port), timeout=5)
            except OSError:
                continue
            if i % 2:
                s.sendall(hello()[:3])  # half a header, then nothing
            flood.append(s)
        code, out = run_get(cluster, disc.port, origin.url("/f.bin"), "--report", str(cluster.workdir.parent / "r.json"))
        assert code == 0, out
        assert sha256_file(cluster.workdir / "f.bin") == digest
        assert helper.popen.poll() is None
    finally:
        for s in flood:
            s.close()
    wait_until(lambda: _resources(helper.pid)[0] <= base[0] + 2, 20, "threads back")
    wait_until(lambda: _resources(helper.pid)[1] <= base[1] + 2, 20, "fds back")
