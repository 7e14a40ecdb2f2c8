"""Security and bad input, on real processes: only members get in, nothing hostile gets through.

Each section answers one promise of the README's "Security" part:

1. a shared secret keeps outsiders out, on both ends, and never leaks
   (not in any output, not on the wire: a relay in the test records every byte);
2. a node never fetches into its own network for a peer, not even one packet
   (the cases that name real private addresses run in a network namespace
   the test creates, with only ``lo`` up, so a regression cannot send anything:
   tests/netns/test_security.py; the address table is in tests/unit/);
3. every input is bounded: a bad frame costs the sender its connection, never
   the daemon; idle and surplus connections are dropped;
4. a hostile file name lands inside the download directory with a safe name,
   and nothing is overwritten without ``--force``;
5. nothing the origin (or a member) sends back is trusted: lies are caught,
   refetched, and ``--checksum`` catches what byte counts cannot.

Every address contacted is loopback or inside a namespace made here; addresses
that must be *refused* appear as values only.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import secrets
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import requests

from swift import discovery_server, node_server, protocol, server, sessions, wire
from swift.membership import DiscoveryClient
from swiftlab.cluster import Cluster, program, wait_until
from swiftlab.origin import OriginServer, make_file
from tests.helpers import MiB, assert_safe_name, sha256_file

#: For processes started by module-scoped fixtures, which run before the
#: function-scoped ``no_proxy_env`` fixture: loopback is never proxied.
CLEAN_ENV = {"NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1",
             "HTTP_PROXY": "", "HTTPS_PROXY": "", "ALL_PROXY": "", "http_proxy": "",
             "https_proxy": "", "all_proxy": ""}


# -- helpers -------------------------------------------------------------------------------------
def run(proc, timeout: float = 90) -> tuple[int, str]:
    code = proc.wait(timeout)
    return code, proc.output()


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def keys(port: int, secret: bytes | None) -> set[str]:
    client = DiscoveryClient("127.0.0.1", port, name="test", secret=secret, timeout=3)
    return {f"{p.host}:{p.port}" for p in client.list_peers()}


def ping(port: int, secret: bytes | None = None) -> protocol.Message:
    with wire.client_connect("127.0.0.1", port, name="test", secret=secret, timeout=5) as conn:
        conn.send(protocol.Ping())
        return conn.recv(timeout=5)


def hello() -> bytes:
    return protocol.encode_message(protocol.Hello(protocol.PROTOCOL_VERSION, "hostile", None))


def raw_frame(kind: int, payload: bytes, version: int = protocol.PROTOCOL_VERSION) -> bytes:
    return struct.pack(">BBI", version, kind, len(payload)) + payload


def control(obj: dict) -> bytes:
    return raw_frame(protocol.KIND_CONTROL, json.dumps(obj).encode())


class Relay:
    """A loopback TCP relay that records every byte, in both directions, of every connection."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so that close() is noticed at once
        self.port = self.listener.getsockname()[1]
        self._closing = threading.Event()
        self.up = bytearray()    # client -> server
        self.down = bytearray()  # server -> client
        self.connections = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._socks += [client, upstream]
            for src, dst, buf in ((client, upstream, self.up), (upstream, client, self.down)):
                t = threading.Thread(target=self._pump, args=(src, dst, buf), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    buf.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._closing.set()
        self._accepter.join(5)
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)


def leak_patterns(secret: bytes) -> list[bytes]:
    """The secret in every form a careless program might print or send it."""
    return [secret, secret.hex().encode(), base64.b64encode(secret), secret[: len(secret) // 2 + 4]]


def assert_no_leak(secret: bytes, where: str, data: bytes) -> None:
    for pattern in leak_patterns(secret):
        assert pattern not in data, f"the secret (as {pattern[:6]!r}...) appears in {where}"


# -- 1. membership by shared secret ------------------------------------------------------------------
@pytest.fixture
def secret(tmp_path) -> tuple[bytes, Path]:
    """A fresh random secret per test (so a match in any output cannot be a coincidence)."""
    value = f"lab-secret-{secrets.token_hex(20)}".encode()
    path = tmp_path / "secret"
    path.write_bytes(value + b"\n")
    path.chmod(0o600)
    return value, path


@pytest.fixture
def other_secret(tmp_path) -> tuple[bytes, Path]:
    value = f"other-secret-{secrets.token_hex(20)}".encode()
    path = tmp_path / "other-secret"
    path.write_bytes(value)
    path.chmod(0o600)
    return value, path


def test_members_download_together_with_a_shared_secret(tmp_path, secret, origin, origin_root):
    """--secret-file and SWIFT_SECRET_FILE both make a member; members serve each other."""
    value, path = secret
    size = 12 * MiB
    digest = make_file(origin_root / "m.bin", size, seed=101)
    origin.configure(host_rate=8 * MiB)  # per machine: every member's share is visible
    work = tmp_path / "w"
    work.mkdir()
    with Cluster(work, secret_file=path) as members, Cluster(work) as by_env:
        disc = members.discovery()
        flag = members.node(f"127.0.0.1:{disc.port}", name="by-flag",
                            extra=["--allow-private", "--source-address", "127.0.0.2"])
        env = by_env.node(f"127.0.0.1:{disc.port}", name="by-env", env={"SWIFT_SECRET_FILE": str(path)},
                          extra=["--allow-private", "--source-address", "127.0.0.3"])
        want = {f"127.0.0.1:{flag.port}", f"127.0.0.1:{env.port}"}
        wait_until(lambda: keys(disc.port, value) == want, 10, "both members registered")
        report = work / "report.json"
        code, out = run(members.get(f"127.0.0.1:{disc.port}", origin.url("/m.bin"),
                                    get_extra=["--report", str(report)]))
        assert code == 0, out
        assert sha256_file(work / "m.bin") == digest
        by = json.loads(report.read_text())["bytes_by_source"]
        for key in want:
            assert by.get(key, 0) > 0, f"member {key} did not serve: {by}"
        for proc in [*members.processes, *by_env.processes]:
            assert "no shared secret" not in proc.output(), proc.name
            assert_no_leak(value, proc.name, proc.output().encode())


def test_outsiders_are_refused_with_a_clear_message_on_both_ends(tmp_path, secret, other_secret,
                                                                origin, origin_root):
    value, path = secret
    wrong, wrong_path = other_secret
    digest = make_file(origin_root / "o.bin", 3 * MiB, seed=102)
    work = tmp_path / "w"
    work.mkdir()
    with Cluster(work, secret_file=path) as members, Cluster(work) as outsiders, \
            Cluster(work, secret_file=wrong_path) as strangers:
        disc = members.discovery()
        helper = members.node(f"127.0.0.1:{disc.port}", name="member", extra=["--allow-private"])
        wait_until(lambda: keys(disc.port, value) == {f"127.0.0.1:{helper.port}"}, 10, "member")

        # raw protocol: no secret, and a wrong one, at discovery and at the node
        for port, proc in ((disc.port, disc), (helper.port, helper)):
            with pytest.raises(wire.AuthError) as none:
                wire.client_connect("127.0.0.1", port, name="outsider", secret=None, timeout=5)
            assert "refused" in str(none.value) and "secret" in str(none.value), none.value
            with pytest.raises(wire.AuthError) as bad:
                wire.client_connect("127.0.0.1", port, name="stranger", secret=wrong, timeout=5)
            assert re.search(r"refused|failed to prove", str(bad.value)) and "secret" in str(bad.value)
            # the server's side says so too: one line per refused handshake
            wait_until(lambda: len(re.findall(r"handshake.*fail.*secret", proc.output())) >= 2, 10,
                       f"{proc.name} to log both refusals")

        # real programs without the secret, and with a wrong one
        for cluster in (outsiders, strangers):
            node = cluster.node(f"127.0.0.1:{disc.port}", name="intruder")
            node.wait_for(r"refused.*secret|secret.*refused", timeout=10)
            code, out = run(cluster.start([*program("node"), "--discovery", f"127.0.0.1:{disc.port}",
                                           *(["--secret-file", str(wrong_path)] if cluster is strangers else []),
                                           "peers"], name="peers"))
            assert code != 0 and "refused" in out and "secret" in out, out
            target = work / f"{'outsider' if cluster is outsiders else 'stranger'}.bin"
            code, out = run(cluster.get(f"127.0.0.1:{disc.port}", origin.url("/o.bin"),
                                        get_extra=["-o", str(target)]))
            # it says discovery refused it, then downloads alone: it never got the peer list
            assert code == 0 and re.search(r"discovery.*refused", out), out
            assert sha256_file(target) == digest
        assert keys(disc.port, value) == {f"127.0.0.1:{helper.port}"}, "an intruder got listed"
        for proc in [*members.processes, *outsiders.processes, *strangers.processes]:
            assert_no_leak(value, proc.name, proc.output().encode())
            assert_no_leak(wrong, proc.name, proc.output().encode())


def test_a_keyed_client_refuses_a_server_without_the_secret(tmp_path, secret, origin, origin_root):
    value, path = secret
    digest = make_file(origin_root / "k.bin", 2 * MiB, seed=103)
    work = tmp_path / "w"
    work.mkdir()
    with Cluster(work) as open_lab, Cluster(work, secret_file=path) as members:
        disc = open_lab.discovery()
        node = open_lab.node(f"127.0.0.1:{disc.port}", name="open-node")
        wait_until(lambda: keys(disc.port, None) == {f"127.0.0.1:{node.port}"}, 10, "open node")
        for proc in (disc, node):
            with pytest.raises(wire.AuthError) as exc:
                wire.client_connect("127.0.0.1", proc.port, name="keyed", secret=value, timeout=5)
            assert "does not know the shared secret" in str(exc.value)
            wait_until(lambda: re.search(r"handshake.*fail.*requires a shared secret", proc.output()),
                       10, f"{proc.name} to log the refusal")
        keyed = members.node(f"127.0.0.1:{disc.port}", name="keyed-node")
        keyed.wait_for("does not know the shared secret", timeout=10)
        code, out = run(members.start([*program("node"), "--discovery", f"127.0.0.1:{disc.port}",
                                       "--secret-file", str(path), "peers"], name="peers"))
        assert code != 0 and "does not know the shared secret" in out, out
        code, out = run(members.get(f"127.0.0.1:{disc.port}", origin.url("/k.bin")))
        assert code == 0 and "does not know the shared secret" in out, out
        assert sha256_file(work / "k.bin") == digest
        assert keys(disc.port, None) == {f"127.0.0.1:{node.port}"}  # the keyed node never joined
        for proc in [*open_lab.processes, *members.processes]:
            assert_no_leak(value, proc.name, proc.output().encode())


def test_the_secret_never_crosses_the_wire(tmp_path, secret, origin, origin_root):
    """Relays in front of discovery and of a member see a whole keyed download, byte for byte."""
    value, path = secret
    size = 6 * MiB
    digest = make_file(origin_root / "r.bin", size, seed=104)
    origin.configure(host_rate=8 * MiB)
    work = tmp_path / "w"
    work.mkdir()
    with Cluster(work, secret_file=path) as members:
        disc = members.discovery()
        # the member does not register itself (its discovery address leads nowhere): the
        # relay in front of it is registered instead, so every byte to it goes through the relay
        helper = members.node("127.0.0.1:1", name="member",
                              extra=["--allow-private", "--source-address", "127.0.0.2"])
        to_disc, to_helper = Relay(disc.port), Relay(helper.port)
        try:
            keyed = DiscoveryClient("127.0.0.1", disc.port, name="test", secret=value)
            keyed.request(protocol.Register("127.0.0.1", to_helper.port, "relayed", 4))
            assert keys(disc.port, value) == {f"127.0.0.1:{to_helper.port}"}
            report = work / "report.json"
            code, out = run(members.get(f"127.0.0.1:{to_disc.port}", origin.url("/r.bin"),
                                        extra=["--slots", "1"], get_extra=["--report", str(report)]))
            assert code == 0, out
            assert sha256_file(work / "r.bin") == digest
            by = json.loads(report.read_text())["bytes_by_source"]
            assert by.get(f"127.0.0.1:{to_helper.port}", 0) > 0, by  # real traffic went through
        finally:
            to_disc.close()
            to_helper.close()
        for relay in (to_disc, to_helper):
            # the keyed handshake did happen through the relay, inside TLS ...
            assert relay.up[:1] == b"\x16" and relay.down[:1] == b"\x16"  # TLS handshake records
            assert b'"type":"hello"' not in relay.up and b'"proof"' not in relay.down
            # ... and the secret crossed it in no form, in neither direction
            assert_no_leak(value, "client-to-server bytes", bytes(relay.up))
            assert_no_leak(value, "server-to-client bytes", bytes(relay.down))
        assert b'"type":"fetch"' not in to_helper.up and len(to_helper.down) > size // 8
        for proc in members.processes:
            assert_no_leak(value, proc.name, proc.output().encode())


def test_each_program_warns_once_without_a_secret(tmp_path, secret, origin, origin_root):
    value, path = secret
    make_file(origin_root / "w.bin", 4096, seed=105)
    work = tmp_path / "w"
    work.mkdir()
    with Cluster(work) as lab:
        disc = lab.discovery()
        node = lab.node(f"127.0.0.1:{disc.port}")
        get = lab.get(f"127.0.0.1:{disc.port}", origin.url("/w.bin"))
        peers = lab.start([*program("node"), "--discovery", f"127.0.0.1:{disc.port}", "peers"],
                          name="peers")
        assert get.wait(60) == 0 and peers.wait(60) == 0
        for proc in (disc, node, get, peers):
            lines = proc.output().splitlines()
            warnings = [i for i, line in enumerate(lines) if "no shared secret" in line]
            assert len(warnings) == 1, (proc.name, lines)
            assert warnings[0] <= 1, f"{proc.name} warns late: {lines}"  # at start
        # the same programs with a secret (flag or environment) stay quiet about it
        quiet = [lab.discovery(extra=["--secret-file", str(path)])]
        quiet.append(lab.start([*program("discovery"), "--host", "127.0.0.1", "--port", "0"],
                               name="env-discovery", env={"SWIFT_SECRET_FILE": str(path)}))
        quiet[-1].wait_for("listening on", timeout=10)
        for proc in quiet:
            assert "no shared secret" not in proc.output()
        # an unusable secret file is a clear error at start, not a silent open door
        empty = tmp_path / "empty"
        empty.write_bytes(b"\n")
        for bad, words in ((tmp_path / "missing", "cannot read secret file"), (empty, "is empty")):
            proc = lab.start([*program("discovery"), "--port", "0", "--secret-file", str(bad)],
                             name="bad-secret")
            assert proc.wait(20) != 0 and words in proc.output(), proc.output()


# -- 2. no fetching into the node's own network ----------------------------------------------------------
def fetch_once(conn: wire.Connection, url: str, job: int) -> tuple[protocol.Message, float]:
    started = time.monotonic()
    conn.send(protocol.Fetch(job, url, 0, 1000, 1000, None, None))
    reply = conn.recv(timeout=30)
    return reply, time.monotonic() - started


def test_node_refuses_fetch_jobs_into_its_own_network(cluster, origin, origin_root):
    """Loopback in every spelling, a redirect from loopback, file: and friends: all refused at once."""
    make_file(origin_root / "x.bin", 1000, seed=106)
    origin.configure(path="/hop", redirect=origin.url("/x.bin"))
    disc = cluster.discovery()
    node = cluster.node(f"127.0.0.1:{disc.port}")  # no --allow-private
    p = origin.port
    urls = [f"http://127.0.0.1:{p}/x.bin", f"http://[::1]:{p}/x.bin", f"http://localhost:{p}/x.bin",
            f"http://127.1:{p}/x.bin", f"http://2130706433:{p}/x.bin", f"http://0x7f000001:{p}/x.bin",
            f"http://0177.0.0.1:{p}/x.bin", f"http://127.0.0.2:{p}/x.bin", f"http://0.0.0.0:{p}/x.bin",
            f"http://[::ffff:127.0.0.1]:{p}/x.bin", f"http://[::]:{p}/x.bin",
            f"http://[::ffff:7f00:1]:{p}/x.bin", f"http://[64:ff9b::7f00:1]:{p}/x.bin",
            f"http://127.0.0.1:{p}/hop",  # would redirect; its first hop is refused already
            "file:///etc/passwd", "ftp://127.0.0.1/x", f"gopher://127.0.0.1:{p}/_x",
            "dict://127.0.0.1:11211/stat", "data:text/plain,hello", "/etc/passwd"]
    results = {}
    with wire.client_connect("127.0.0.1", node.port, name="t", secret=None, timeout=5) as conn:
        for job, url in enumerate(urls, 1):
            reply, seconds = fetch_once(conn, url, job)
            results[url] = (type(reply).__name__, getattr(reply, "code", None),
                            getattr(reply, "message", ""), round(seconds, 3))
            conn.send(protocol.Ping())
            assert isinstance(conn.recv(timeout=5), protocol.Pong), url  # still serving, same line
    print(json.dumps(results, indent=1))
    for url, (kind, code, message, seconds) in results.items():
        assert kind == "Error" and code == "refused", (url, results[url])
        assert seconds < 2.0, (url, results[url])
        if url.startswith("http"):
            assert "refusing to fetch" in message and "--allow-private" in message, (url, message)
        else:
            assert re.search(r"scheme|not supported|only http", message), (url, message)
    assert origin.stats()["requests_by_client"] == {}, "the origin was contacted"
    assert ping(node.port).__class__ is protocol.Pong  # and a fresh connection is served


def connect_recorder(calls: list) -> object:
    """Stands in for ``socket.socket.connect``: records the address and fails like an
    empty network, so nothing is ever sent."""

    def connect(sock, address):
        calls.append(address)
        raise OSError(101, "Network is unreachable (test: no packets)")

    return connect


@pytest.mark.parametrize("url,resolves_to", [
    ("http://10.0.0.1/x", None), ("http://169.254.169.254/latest/meta-data", None),
    ("http://[fd00::1]/x", None), ("http://[::ffff:10.0.0.1]/x", None),
    ("http://[64:ff9b::a9fe:a9fe]/x", None), ("http://0xa9fea9fe/x", None),
    ("http://intranet.test/x", ["10.0.0.1"]),
    ("http://mixed.test/x", ["127.0.0.3", "10.1.2.3"]),  # one bad answer spoils the name
    ("http://v6.test/x", ["fe80::1"]),
])
def test_the_policy_refuses_without_a_connect_attempt(monkeypatch, url, resolves_to):
    """In-process proof of "before any packet": connect() is never called for a refused target.

    127.0.0.3 stands in for a public address (and shows the recorder works: it
    is the one target that does get a connect attempt).
    """
    real_gai, real_public = socket.getaddrinfo, sessions.is_public_address

    def fake_gai(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".test"):  # never a real look-up
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, 80, 0, 0)) if ":" in ip else
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 80)) for ip in resolves_to]
        return real_gai(host, *args, **kwargs)

    calls: list = []
    monkeypatch.setattr(socket, "getaddrinfo", fake_gai)
    monkeypatch.setattr(socket.socket, "connect", connect_recorder(calls))
    monkeypatch.setattr(sessions, "is_public_address", lambda ip: ip == "127.0.0.3" or real_public(ip))
    session = sessions.make_session(allow_private=False)
    with pytest.raises(sessions.BlockedAddress) as exc:
        session.get(url, timeout=3)
    assert "refusing to fetch" in str(exc.value) and "--allow-private" in str(exc.value)
    assert calls == [], f"connect() was called for {url}: {calls}"
    # control: a public target does reach connect() (and the recorder stops it there)
    with pytest.raises(requests.exceptions.ConnectionError) as control_exc:
        session.get("http://127.0.0.3:9/x", timeout=3)
    assert not isinstance(control_exc.value, sessions.BlockedAddress)
    assert calls and calls[0][0] == "127.0.0.3"


def test_a_node_with_allow_private_serves_a_loopback_job(cluster, origin, origin_root):
    data_path = origin_root / "y.bin"
    make_file(data_path, 300_000, seed=107)
    disc = cluster.discovery()
    node = cluster.node(f"127.0.0.1:{disc.port}", extra=["--allow-private"])
    got = bytearray()
    with wire.client_connect("127.0.0.1", node.port, name="t", secret=None, timeout=5) as conn:
        conn.send(protocol.Fetch(7, origin.url("/y.bin"), 1234, 300_000, 300_000, None, None))
        while True:
            frame = conn.recv(timeout=20)
            if isinstance(frame, protocol.DataFrame):
                got += frame.payload
                continue
            if isinstance(frame, protocol.Keepalive):
                continue
            assert isinstance(frame, protocol.Done) and frame.job_id == 7, frame
            assert frame.length == len(got)
            break
    assert bytes(got) == data_path.read_bytes()[1234:]


def test_a_redirect_into_a_private_address_is_refused_at_the_second_hop(monkeypatch, origin_root):
    """127.0.0.2 plays a public origin; its redirect to 127.0.0.1 (or ::1, or file:) must fail."""
    make_file(origin_root / "r.bin", 5000, seed=108)
    target = OriginServer(origin_root, host="127.0.0.1").start()
    hop = OriginServer(origin_root, host="127.0.0.2").start()
    real = sessions.is_public_address
    monkeypatch.setattr(sessions, "is_public_address", lambda ip: ip == "127.0.0.2" or real(ip))
    try:
        session = sessions.make_session(allow_private=False)
        # control: a redirect that stays on the "public" host is followed
        hop.configure(path="/same", redirect=hop.url("/r.bin"), redirect_status=301)
        assert session.get(hop.url("/same"), timeout=5).content == (origin_root / "r.bin").read_bytes()
        for status in (302, 303, 307, 308):
            hop.configure(path=f"/to-loopback-{status}", redirect=target.url("/r.bin"),
                          redirect_status=status)
            with pytest.raises(sessions.BlockedAddress, match="refusing to fetch from 127.0.0.1"):
                session.get(hop.url(f"/to-loopback-{status}"), timeout=5)
        hop.configure(path="/to-v6", redirect=f"http://[::1]:{target.port}/r.bin")
        with pytest.raises(sessions.BlockedAddress, match="refusing to fetch"):
            session.get(hop.url("/to-v6"), timeout=5)
        hop.configure(path="/to-file", redirect="file:///etc/passwd")
        with pytest.raises(requests.exceptions.InvalidSchema):
            session.get(hop.url("/to-file"), timeout=5)
        assert hop.stats()["requests_by_client"], "the first hop was not even made"
        assert target.stats()["requests_by_client"] == {}, "the private target was contacted"
    finally:
        hop.stop()
        target.stop()


class ForwardProxy:
    """A tiny HTTP forward proxy on loopback: it records what it is asked and answers itself.

    It never connects anywhere, so names handed to it are never looked up.
    """

    def __init__(self):
        self.requests: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                proxy.requests.append(self.path)
                if "redirector.test" in self.path:
                    self.send_response(302)
                    self.send_header("Location", "http://intranet.test/secret")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"via proxy"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def forward_proxy(monkeypatch):
    proxy = ForwardProxy()
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    answers = {"intranet.test": ["10.0.0.1"], "metadata.test": ["169.254.169.254"],
               "mixed.test": ["8.8.8.8", "192.168.0.1"], "public.test": ["8.8.8.8"],
               "redirector.test": ["8.8.4.4"]}
    real = socket.getaddrinfo

    def fake_gai(host, port, *args, **kwargs):
        if isinstance(host, str) and host.endswith((".test", ".invalid")):
            if host not in answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port or 80)) for ip in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_gai)
    try:
        yield proxy
    finally:
        proxy.close()


def test_behind_a_proxy_the_target_name_is_what_is_checked(forward_proxy):
    """The proxy's own loopback address is fine; a target that resolves here to a private
    address is refused before the proxy hears of it; a name that does not resolve here
    is the proxy's business."""
    session = sessions.make_session(allow_private=False)
    for url in ("http://unresolvable.invalid/file.iso", "http://public.test/file.iso"):
        resp = session.get(url, timeout=5)
        assert resp.status_code == 200 and resp.content == b"via proxy", url
        assert forward_proxy.requests[-1] == url
    asked = len(forward_proxy.requests)
    for url in ("http://intranet.test/", "http://metadata.test/latest/meta-data",
                "http://mixed.test/", "http://127.0.0.1:1/", "http://[::1]/", "http://10.0.0.1/",
                "http://169.254.169.254/latest/meta-data", "http://localhost/"):
        with pytest.raises(sessions.BlockedAddress, match="refusing to fetch"):
            session.get(url, timeout=5)
    assert len(forward_proxy.requests) == asked, "a refused target reached the proxy"
    # a redirect (answered by the proxy) towards a private name is refused at that hop
    with pytest.raises(sessions.BlockedAddress, match="intranet.test"):
        session.get("http://redirector.test/", timeout=5)
    assert forward_proxy.requests[-1] == "http://redirector.test/"
    # the requester's own session has no policy: the owner may fetch what they like
    own = sessions.make_session(allow_private=True)
    assert own.get("http://intranet.test/", timeout=5).content == b"via proxy"


# -- 3. bounded everything, on the live processes ------------------------------------------------------------
FETCH = {"type": "fetch", "job_id": 1, "url": "http://127.0.0.1:9/x", "start": 0, "end": 10,
         "size": 10, "etag": None, "last_modified": None}

#: name -> (bytes sent right after a successful hello, the error code expected back)
AFTER_HELLO = {
    "control frame over MAX_CONTROL": (struct.pack(">BBI", 1, 1, protocol.MAX_CONTROL + 1), "too-large"),
    "control frame of 4 GiB": (struct.pack(">BBI", 1, 1, 2**32 - 1), "too-large"),
    "data frame over 1 MiB": (struct.pack(">BBI", 1, 2, protocol.MAX_DATA + 1), "too-large"),
    "unknown frame kind": (raw_frame(7, b"x"), "unknown-kind"),
    "wrong protocol version": (raw_frame(1, b'{"type":"ping"}', version=9), "bad-version"),
    "range beyond the file": (control({**FETCH, "end": 99}), "bad-field"),
    "inverted range": (control({**FETCH, "start": 9, "end": 2}), "bad-field"),
    "empty range": (control({**FETCH, "start": 5, "end": 5}), "bad-field"),
    "negative start": (control({**FETCH, "start": -1}), "bad-field"),
    "negative job id": (control({**FETCH, "job_id": -1}), "bad-field"),
    "offset over 2**62": (control({**FETCH, "size": 2**64, "end": 2**64}), "bad-field"),
    "negative port": (control({"type": "register", "host": "127.0.0.1", "port": -1, "name": "n",
                               "slots": 1}), "bad-field"),
    "boolean as integer": (control({"type": "shrink", "job_id": True, "end": 1}), "bad-field"),
    "control character in a name": (control({"type": "register", "host": "127.0.0.1", "port": 9,
                                             "name": "a\nfake log line", "slots": 1}), "bad-field"),
    "lone surrogate in a name": (raw_frame(1, b'{"type":"register","host":"127.0.0.1","port":9,'
                                              b'"name":"\\ud800","slots":1}'), "bad-field"),
    "unknown message type": (control({"type": "format_disk"}), "unknown-type"),
    "invalid utf-8": (raw_frame(1, b'{"type":"\xff\xfe"}'), "bad-utf8"),
    "invalid json": (raw_frame(1, b'{"type":'), "bad-json"),
    "json that is not an object": (raw_frame(1, b"[1,2,3]"), "bad-json"),
    "json string": (raw_frame(1, b'"ping"'), "bad-json"),
    "empty control frame": (raw_frame(1, b""), "bad-json"),
    "json nested 30000 deep": (raw_frame(1, b"[" * 30000 + b"]" * 30000), "bad-json"),
    "NaN": (raw_frame(1, b'{"type":"ok","lease":NaN}'), "bad-json"),
    "a second hello": (hello(), "unexpected"),
    "server-side message from a client": (control({"type": "welcome", "version": 1, "name": "x",
                                                   "nonce": None, "proof": None}), "unexpected"),
}


@pytest.fixture
def live_pair(cluster):
    disc = cluster.discovery()
    node = cluster.node(f"127.0.0.1:{disc.port}", name="target")
    wait_until(lambda: keys(disc.port, None), 10, "node registered")
    return disc, node


def still_serving(disc, node) -> None:
    assert disc.popen.poll() is None and node.popen.poll() is None, "a daemon died"
    assert isinstance(ping(disc.port), protocol.Pong)
    assert isinstance(ping(node.port), protocol.Pong)
    client = DiscoveryClient("127.0.0.1", disc.port, name="t", secret=None, timeout=5)
    assert f"127.0.0.1:{node.port}" in {f"{p.host}:{p.port}" for p in client.list_peers()}


def expect_error_then_close(sock: socket.socket) -> protocol.Message | None:
    """The frame the server answered with (None if it closed without one); asserts the close."""
    conn = wire.Connection(sock, timeout=10)
    try:
        reply = conn.recv(timeout=10)
    except (wire.ConnectionClosed, protocol.ProtocolError):
        return None
    with pytest.raises((wire.ConnectionClosed, protocol.ProtocolError)):
        conn.recv(timeout=10)  # and then the server hangs up (a timeout here means it did not)
    return reply


def test_bad_frames_cost_the_sender_its_connection_never_the_daemon(live_pair):
    disc, node = live_pair
    table = {}
    for name, (data, code) in AFTER_HELLO.items():
        for proc in (disc, node):
            with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as s:
                s.sendall(hello())
                welcome = wire.Connection(s, timeout=10).recv()
                assert isinstance(welcome, protocol.Welcome)
                s.sendall(data)
                reply = expect_error_then_close(s)
            table[f"{name} -> {proc.name}"] = reply
            assert isinstance(reply, protocol.Error), (name, proc.name, reply)
            assert reply.code == code, (name, proc.name, reply)
    print("\n".join(f"{k}: {v}" for k, v in table.items()))
    still_serving(disc, node)


PRE_HANDSHAKE = {
    # name -> (bytes, expect an Error frame)
    "list_peers before hello": (protocol.encode_message(protocol.ListPeers()), True),
    "ping before hello": (protocol.encode_message(protocol.Ping()), True),
    "fetch before hello": (control(FETCH), True),
    "data frame before hello": (protocol.encode_data(b"abc"), True),
    "hello with protocol version 2": (control({"type": "hello", "version": 2, "name": "x", "nonce": None}), True),
    "hello with a malformed nonce": (control({"type": "hello", "version": 1, "name": "x", "nonce": "zz"}), True),
    # not swift at all: a browser, a TLS client, garbage; each still gets a reason
    "an HTTP request": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    "a TLS client hello": (bytes.fromhex("160301020001000200") + os.urandom(16), True),
    "invalid json first": (raw_frame(1, b"{oops"), True),
}


def test_frames_before_the_handshake_and_truncated_frames(live_pair):
    disc, node = live_pair
    table = {}
    for name, (data, want_error) in PRE_HANDSHAKE.items():
        for proc in (disc, node):
            with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as s:
                s.sendall(data)
                reply = expect_error_then_close(s)
            table[f"{name} -> {proc.name}"] = reply
            if want_error:
                assert isinstance(reply, protocol.Error), (name, proc.name, reply)
    # a truncated frame: half of it, then the sender stops writing
    for proc in (disc, node):
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as s:
            s.sendall(hello()[:9])
            s.shutdown(socket.SHUT_WR)
            table[f"half a hello, then EOF -> {proc.name}"] = expect_error_then_close(s)
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as s:
            s.sendall(hello())
            assert isinstance(wire.Connection(s, timeout=10).recv(), protocol.Welcome)
            s.sendall(protocol.encode_message(protocol.Ping())[:-4])
            s.shutdown(socket.SHUT_WR)
            reply = expect_error_then_close(s)
            table[f"half a ping after hello, then EOF -> {proc.name}"] = reply
            assert isinstance(reply, protocol.Error) and reply.code == "truncated", reply
    print("\n".join(f"{k}: {v}" for k, v in table.items()))
    still_serving(disc, node)


def test_a_bad_frame_during_a_job_gets_an_error_frame(live_pair):
    """A malformed frame that arrives while the node handles a fetch job (here: right behind
    it, in the same write) must take the same "error frame, close" path as any other."""
    disc, node = live_pair
    fetch = protocol.encode_message(protocol.Fetch(1, "http://127.0.0.1:1/x", 0, 10, 10, None, None))
    for bad in (raw_frame(1, b"{oops"), struct.pack(">BBI", 1, 1, protocol.MAX_CONTROL + 1),
                raw_frame(9, b"{}")):
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
            s.sendall(hello())
            assert isinstance(wire.Connection(s, timeout=10).recv(), protocol.Welcome)
            s.sendall(fetch + bad)
            conn = wire.Connection(s, timeout=10)
            replies = []
            try:
                while True:
                    replies.append(conn.recv(timeout=10))
            except (wire.ConnectionClosed, protocol.ProtocolError):
                pass
        assert any(isinstance(r, protocol.Error) for r in replies), (bad[:12], replies)
    assert "Traceback" not in node.output() and "error serving" not in node.output(), node.output()
    still_serving(disc, node)


def test_a_crowd_of_registrations_does_not_break_the_peer_list(live_pair):
    """Anyone who may register (everyone, without a secret) must not be able to make
    discovery unable to answer list_peers: 250 long-named entries are enough today
    (and about 850 short ordinary ones, below discovery's own bound of 1024)."""
    disc, node = live_pair
    with wire.client_connect("127.0.0.1", disc.port, name="crowd", secret=None, timeout=10) as conn:
        for port in range(20000, 20250):  # 250 x ~320 bytes: a list of about 80 KB
            conn.send(protocol.Heartbeat("127.0.0.1", port, "n" * protocol.MAX_NAME, 64))
            reply = conn.recv(timeout=10)
            if isinstance(reply, protocol.Error):
                break  # refusing more registrations is a fine answer too
    client = DiscoveryClient("127.0.0.1", disc.port, name="t", secret=None, timeout=5)
    peers = client.list_peers()  # must not fail
    assert peers and len(protocol.encode_message(protocol.Peers(peers))) <= protocol.MAX_CONTROL
    assert "Traceback" not in disc.output(), disc.output()[-3000:]


@pytest.fixture
def quick_servers(monkeypatch):
    """In-process discovery and node servers with short timeouts (no CLI flag sets them)."""
    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT", 1.0)
    made = []

    def make(kind: str, **kw):
        if kind == "node":
            srv = node_server.make_server("127.0.0.1", 0, name="n", secret=None, slots=2,
                                          session_factory=lambda: sessions.make_session(allow_private=False),
                                          **kw)
        else:
            srv = discovery_server.make_server("127.0.0.1", 0, secret=None, **kw)
        made.append(srv.start())
        return srv

    try:
        yield make
    finally:
        for srv in made:
            srv.stop()


def closed_within(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends), or None."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - started
    return None


@pytest.mark.parametrize("kind", ["discovery", "node"])
def test_idle_connections_are_closed(quick_servers, kind):
    srv = quick_servers(kind, idle_timeout=1.0)
    # after the handshake, nothing more
    conn = wire.client_connect("127.0.0.1", srv.port, name="idle", secret=None, timeout=5)
    took = closed_within(conn.sock, 6)
    conn.close()
    assert took is not None and 0.7 <= took <= 3.0, took
    # before the handshake: nothing at all, or half a header
    for opening in (b"", hello()[:3]):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(opening)
            took = closed_within(s, 6)
        assert took is not None and took <= 3.0, (opening, took)
    wait_until(lambda: srv.open_connections() == 0, 5, "the server to forget them")


@pytest.mark.parametrize("kind", ["discovery", "node"])
def test_a_trickled_frame_does_not_outlive_the_timeouts(quick_servers, kind):
    """One byte every 0.2 s is not "activity": a frame must arrive whole within the timeout,
    or a few hundred such connections would hold every slot of a node for ever."""
    srv = quick_servers(kind, idle_timeout=1.0)
    for after_hello in (False, True):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            if after_hello:
                s.sendall(hello())
                assert isinstance(wire.Connection(s, timeout=5).recv(), protocol.Welcome)
            s.sendall(struct.pack(">BBI", 1, 1, 1000))  # a frame of 1000 bytes, sent one by one
            started = time.monotonic()
            s.settimeout(0.2)
            closed = False
            for _ in range(30):  # at most 6 s
                try:
                    s.sendall(b" ")
                    if s.recv(65536) == b"":
                        closed = True
                        break
                except socket.timeout:
                    continue
                except OSError:
                    closed = True
                    break
            took = time.monotonic() - started
        assert closed and took <= 3.0, f"a trickle kept the connection open for {took:.1f} s " \
                                       f"({'after' if after_hello else 'before'} the handshake)"


def test_connections_beyond_the_bound_are_refused_at_once(quick_servers, monkeypatch):
    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT", 30.0)  # the held ones stay for the test
    srv = quick_servers("node", idle_timeout=30.0, max_connections=4)
    base_threads = threading.active_count()
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
    held += [wire.client_connect("127.0.0.1", srv.port, name=f"h{i}", secret=None, timeout=5).sock
             for i in range(2)]
    wait_until(lambda: srv.open_connections() == 4, 5, "four connections held")
    timings = []
    for _ in range(40):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            # the refusal comes unasked: sending first could turn the server's close into a
            # reset that discards it
            conn = wire.Connection(s, timeout=5)
            reply = conn.recv(timeout=5)
            assert isinstance(reply, protocol.Error) and reply.code == "busy", reply
            assert closed_within(s, 3) is not None
        timings.append(time.monotonic() - started)
    assert max(timings) < 1.0, timings
    assert srv.open_connections() == 4
    assert threading.active_count() <= base_threads + 4 + 2, "a refused connection got a thread"
    for s in held:
        s.close()
    wait_until(lambda: srv.open_connections() == 0, 15, "the held ones to be released")
    assert isinstance(ping(srv.port), protocol.Pong)
    print(f"refusals beyond the bound: max {max(timings) * 1000:.1f} ms over {len(timings)}")


# -- 4. safe file names ------------------------------------------------------------------------------------------
HOSTILE_DISPOSITIONS = [
    # (header value, the exact name expected, or None to check only that it is safe)
    ('attachment; filename="../../etc/passwd"', "passwd"),
    ('attachment; filename="/etc/passwd"', "passwd"),
    ('attachment; filename="{outside}/planted.txt"', "planted.txt"),
    ('attachment; filename="..\\\\..\\\\win.ini"', "win.ini"),
    ("attachment; filename=..\\..\\boot.ini", "boot.ini"),
    ("attachment; filename*=UTF-8''..%2F..%2Fx", "x"),
    ("attachment; filename*=UTF-8''%2Fetc%2Fcron.d%2Fevil", "evil"),
    ('attachment; filename="a\x01b\x07c\x1b[31md\x7f.txt"', None),
    ("attachment; filename*=UTF-8''new%0Aline%0D.txt", None),
    ("attachment; filename*=UTF-8''nul%00byte.txt", None),
    ("attachment; filename*=UTF-8''evil%E2%80%AEgpj.exe", None),
    ('attachment; filename="' + "n" * 1000 + '.bin"', None),
    ("attachment; filename*=UTF-8''" + "%C3%A9" * 400 + ".txt", None),
    ('attachment; filename="...."', "{url_name}"),
    ('attachment; filename=".."', "{url_name}"),
    ('attachment; filename=""', "{url_name}"),
    ('attachment; filename="   "', "{url_name}"),
    ('attachment; filename=".bashrc"', "bashrc"),
    ('attachment; filename="-rf"', None),
    ('attachment; filename="x.part.swift"', None),
]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_names_land_inside_the_download_directory(tmp_path, origin, origin_root):
    outside = tmp_path / "outside"
    outside.mkdir()
    etc_passwd = Path("/etc/passwd")
    passwd_before = etc_passwd.read_bytes() if etc_passwd.exists() else None
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    for i in range(len(HOSTILE_DISPOSITIONS)):
        make_file(origin_root / f"h{i}.bin", 2000 + i, seed=200 + i)
    before = tree(tmp_path)
    procs = []
    with Cluster(work) as lab:
        for i, (value, expected) in enumerate(HOSTILE_DISPOSITIONS):
            origin.configure(path=f"/h{i}.bin", content_disposition=value.format(outside=outside))
            directory = work / f"d{i}"
            directory.mkdir()
            proc = lab.get("127.0.0.1:1", origin.url(f"/h{i}.bin"), extra=["--dir", str(directory)],
                           get_extra=["--no-peers"])
            procs.append((i, value, expected, directory, proc))
        for i, value, expected, directory, proc in procs:
            code, out = run(proc, 60)
            assert code == 0, (value, out)
            files = list(directory.iterdir())
            assert len(files) == 1, (value, files)
            name = files[0].name
            print(f"{value!r:.80} -> {name!r:.80}")
            assert files[0].is_file() and files[0].parent == directory
            assert_safe_name(name)
            if expected is not None:
                assert name == expected.format(url_name=f"h{i}.bin"), (value, name)
    after = tree(tmp_path)
    created = {p for p in after - before if not re.match(r"deep/er/d\d+(/|$)", p)}
    assert created == set(), f"files appeared outside the download directories: {created}"
    assert list(outside.iterdir()) == []
    if passwd_before is not None:
        assert etc_passwd.read_bytes() == passwd_before


def test_existing_files_are_never_overwritten_without_force(tmp_path, origin, origin_root):
    digest = make_file(origin_root / "e.tar.gz", 5000, seed=301)
    work = tmp_path / "dl"
    work.mkdir()
    (work / "e.tar.gz").write_text("precious")

    def get(*args, cwd=None, disposition=None):
        if disposition:
            origin.configure(path="/e.tar.gz", content_disposition=disposition)
        else:
            origin.configure(path="/e.tar.gz")
        with Cluster(work) as lab:
            proc = lab.start([*program("node"), "--dir", str(work), "get", origin.url("/e.tar.gz"),
                              "--no-peers", *args], name="get", cwd=cwd)
            return run(proc, 60)

    assert get()[0] == 0
    assert (work / "e.tar.gz").read_text() == "precious"
    assert sha256_file(work / "e (1).tar.gz") == digest
    assert get()[0] == 0
    assert sha256_file(work / "e (2).tar.gz") == digest
    # --force overwrites the name itself, and makes no new one
    code, out = get("--force")
    assert code == 0, out
    assert sha256_file(work / "e.tar.gz") == digest
    assert sorted(p.name for p in work.iterdir()) == ["e (1).tar.gz", "e (2).tar.gz", "e.tar.gz"]

    # -o is honoured as given: outside the download directory, whatever the server proposes
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    given_path = elsewhere / "chosen.bin"
    code, out = get("-o", str(given_path), disposition='attachment; filename="../../evil.sh"')
    assert code == 0, out
    assert sha256_file(given_path) == digest and sorted(os.listdir(elsewhere)) == ["chosen.bin"]
    given_path.write_text("also precious")
    code, out = get("-o", str(given_path))
    assert code != 0 and "--force" in last_line(out), out
    assert given_path.read_text() == "also precious"
    code, out = get("-o", str(given_path), "--force")
    assert code == 0 and sha256_file(given_path) == digest, out
    # a relative -o goes inside --dir, as aria2c's -d DIR -o NAME, wherever the command runs;
    # its missing folders are made (as -d is); it may not climb out of it
    code, out = get("-o", "rel/out.bin", cwd=tmp_path)
    assert code == 0, out
    assert sha256_file(work / "rel" / "out.bin") == digest
    assert not (tmp_path / "rel").exists()
    code, out = get("-o", "../out.bin", cwd=tmp_path)
    assert code == 2 and "climbs out of the download directory" in last_line(out), out
    assert not (tmp_path / "out.bin").exists()
    # -o naming a directory: the safe name goes inside it
    code, out = get("-o", str(elsewhere), disposition='attachment; filename="/etc/passwd"')
    assert code == 0, out
    assert sha256_file(elsewhere / "passwd") == digest


def test_a_dangling_symlink_at_the_name_is_not_followed(tmp_path, origin, origin_root):
    """A planted link where the file will land must not make swift write through it."""
    digest = make_file(origin_root / "s.bin", 5000, seed=302)
    work = tmp_path / "dl"
    work.mkdir()
    victim = tmp_path / "victim" / "target"
    victim.parent.mkdir()
    (work / "s.bin").symlink_to(victim)
    with Cluster(work) as lab:
        code, out = run(lab.get("127.0.0.1:1", origin.url("/s.bin"), get_extra=["--no-peers"]), 60)
    assert code == 0, out
    assert not victim.exists(), "swift wrote through a planted symbolic link"
    landed = [p for p in work.iterdir() if p.is_file() and not p.is_symlink()]
    assert len(landed) == 1 and sha256_file(landed[0]) == digest, list(work.iterdir())


# -- 5. no trust in what comes back -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One origin, discovery and helper (at 127.0.0.2) shared by the origin-lie tests."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "origin"
    root.mkdir()
    work = base / "work"
    work.mkdir()
    origin = OriginServer(root, host="127.0.0.1", port=0).start()
    cluster = Cluster(work)
    try:
        disc = cluster.discovery()
        helper = cluster.node(f"127.0.0.1:{disc.port}", name="helper", directory=base,
                              extra=["--allow-private", "--source-address", "127.0.0.2"], env=CLEAN_ENV)
        wait_until(lambda: keys(disc.port, None), 10, "helper registered")
        yield dict(origin=origin, root=root, work=work, cluster=cluster, disc=disc, helper=helper)
    finally:
        cluster.close()
        origin.stop()


LIES = {
    "wrong_content_range": (dict(wrong_content_range=True), r"Content-Range"),
    "ignore_ranges": (dict(ignore_ranges=True), r"ignored the range request|\(200\)"),
    "gzip": (dict(gzip=True), r"Content-Encoding|gzip"),
    "short_body": (dict(short_body=5000), r"closed the connection after|short|retrying"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_what_the_origin_lies_about_is_not_written(lab, lie):
    """The lie hits the helper's first two range requests and, after the probe, one of the
    requester's own; nothing of it is written, the ranges are fetched again, the sha is right."""
    behaviour, reason = LIES[lie]
    origin, work, cluster, disc, helper = (lab[k] for k in ("origin", "work", "cluster", "disc", "helper"))
    size = 12 * MiB
    path = f"/lie-{lie}.bin"
    digest = make_file(lab["root"] / path[1:], size, seed=400 + len(lie))
    origin.clear()
    origin.configure(host_rate=8 * MiB)
    origin.reset_stats()
    origin.configure(path="*", only_client="127.0.0.2", count=2, **behaviour)
    helper_lines = len(helper.lines)
    report = work / f"{lie}.json"
    proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url(path), extra=["-v"],
                       get_extra=["--report", str(report), "--piece-size", "512K"], env=CLEAN_ENV)
    # the probe is the requester's first request; lie to its own connections once the probe
    # has had its answer (its one body byte is counted after its rules were taken)
    wait_until(lambda: origin.stats()["bytes_by_client"].get("127.0.0.1", 0) >= 1, 20, "the probe")
    origin.configure(path=path, only_client="127.0.0.1", count=1, **behaviour)
    code, out = run(proc, 90)
    assert code == 0, out
    assert sha256_file(work / path[1:]) == digest
    data = json.loads(report.read_text())
    assert sum(data["bytes_by_source"].values()) == size, data
    # the lie really happened, at the helper and at the requester, and was caught
    helper_says = "\n".join(helper.lines[helper_lines:])
    assert re.search(reason, helper_says), helper_says
    assert re.search(reason, out), out
    fetched = origin.stats()["bytes_by_path"].get(path, 0)
    print(f"{lie}: origin sent {fetched} bytes for {size} ({fetched - size} twice); "
          f"report: {data['bytes_by_source']}, dropped {data.get('dropped_bytes')}")
    origin.clear()


def test_checksums_verify_and_a_mismatch_keeps_the_part(lab):
    origin, work, cluster, disc = (lab[k] for k in ("origin", "work", "cluster", "disc"))
    origin.clear()
    size = 3 * MiB
    make_file(lab["root"] / "c.bin", size, seed=500)
    data = (lab["root"] / "c.bin").read_bytes()
    out_dir = work / "checksums"
    out_dir.mkdir()
    procs = []
    for algo in ("md5", "sha1", "sha256", "sha512"):
        digest = hashlib.new(algo, data).hexdigest()
        for spelling in (f"{algo}:{digest}", f"{algo.upper()}:{digest.upper()}"):
            target = out_dir / f"{algo}-{len(procs)}.bin"
            procs.append((spelling, target, cluster.get(f"127.0.0.1:{disc.port}", origin.url("/c.bin"),
                                                        get_extra=["-o", str(target), "--checksum", spelling],
                                                        env=CLEAN_ENV)))
    for spelling, target, proc in procs:
        code, out = run(proc, 60)
        assert code == 0, (spelling, out)
        assert target.read_bytes() == data
    for bad in ("sha256:" + "0" * 64, "md5:" + hashlib.md5(b"other").hexdigest()):
        target = out_dir / "bad.bin"
        code, out = run(cluster.get(f"127.0.0.1:{disc.port}", origin.url("/c.bin"),
                                    get_extra=["-o", str(target), "--checksum", bad], env=CLEAN_ENV), 60)
        assert code != 0 and "checksum mismatch" in last_line(out), out
        assert not target.exists()
        part = out_dir / "bad.bin.part"
        assert part.read_bytes() == data, "the data must stay at NAME.part"
        assert str(part) in last_line(out) or "bad.bin.part" in out
        part.unlink()
        for leftover in out_dir.glob("bad.bin.part*"):
            leftover.unlink()
    for malformed in ("crc32:abcd", "sha256:xyz", "sha256:" + "0" * 63, "sha256", ":"):
        code, out = run(cluster.get(f"127.0.0.1:{disc.port}", origin.url("/c.bin"),
                                    get_extra=["-o", str(out_dir / "m.bin"), "--checksum", malformed],
                                    env=CLEAN_ENV), 60)
        assert code != 0 and re.search(r"checksum", last_line(out)), (malformed, out)
        assert not (out_dir / "m.bin").exists()


class ZeroFiller:
    """A member that answers every job with the right number of wrong bytes: counts match,
    content does not. Only --checksum can catch it (README, "What the secret does not cover")."""

    def __init__(self, disc_port: int):
        self.jobs = 0
        self.srv = server.FramedServer(("127.0.0.1", 0), name="filler", secret=None, idle_timeout=30,
                                       max_connections=32, serve_connection=self.serve).start()
        self.disc = DiscoveryClient("127.0.0.1", disc_port, name="filler", secret=None)
        self.disc.request(protocol.Register("127.0.0.1", self.srv.port, "filler", 4))

    def serve(self, srv, conn: wire.Connection) -> None:
        while True:
            msg = conn.recv()
            if isinstance(msg, protocol.Ping):
                conn.send(protocol.Pong("filler", 4, 0))
                continue
            if not isinstance(msg, protocol.Fetch):
                continue  # shrinks are ignored: a liar sends what it likes
            self.jobs += 1
            n = msg.end - msg.start
            for offset in range(0, n, 1 << 20):
                conn.send_data(bytes(min(1 << 20, n - offset)))
            conn.send(protocol.Done(msg.job_id, n))

    def close(self) -> None:
        try:
            self.disc.request(protocol.Unregister("127.0.0.1", self.srv.port))
        finally:
            self.srv.stop()


def test_a_member_sending_wrong_bytes_with_right_counts_is_caught_by_the_checksum(lab):
    origin, work, cluster, disc = (lab[k] for k in ("origin", "work", "cluster", "disc"))
    origin.clear()
    origin.configure(host_rate=8 * MiB)  # the honest machines are slower than the liar
    size = 8 * MiB
    digest = make_file(lab["root"] / "z.bin", size, seed=501)
    liar = ZeroFiller(disc.port)
    try:
        target = work / "z.bin"
        code, out = run(cluster.get(f"127.0.0.1:{disc.port}", origin.url("/z.bin"),
                                    get_extra=["-o", str(target), "--checksum", f"sha256:{digest}"],
                                    env=CLEAN_ENV), 60)
    finally:
        liar.close()
    assert liar.jobs > 0, "the liar was never asked: the test proves nothing"
    assert code != 0 and "checksum mismatch" in last_line(out), out
    assert not target.exists()
    assert (work / "z.bin.part").exists()
