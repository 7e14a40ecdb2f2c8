"""The local origin: ranges, validators, counters, misbehaviour switches, caps, life cycle, CLI."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from swiftlab.cluster import ROOT, wait_until
from swiftlab.origin import BLOCK, OriginServer, make_file
from tests.helpers import MiB, have_ipv6

SIZE = 4 * MiB + 7
ROOT_DIR = ROOT  # the checkout: python3 -m swiftlab.origin runs from there


# -- helpers --------------------------------------------------------------------------------------------
class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status, self.headers, self.body = status, headers, body


def fetch(origin: OriginServer, path: str, method: str = "GET", source: str | None = None,
          conn: http.client.HTTPConnection | None = None, **headers: str) -> Reply:
    """One request with http.client: sends the path exactly as given, binds ``source``."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(origin.host, origin.port, timeout=10,
                                          source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        if own:
            conn.close()


def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes, BaseException | None]:
    """Send a raw request; read until EOF or error. Returns (head, body, error)."""
    data = bytearray()
    error = None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError as exc:
            error = exc
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body, error


@pytest.fixture
def served(origin, origin_root):
    digest = make_file(origin_root / "f.bin", SIZE, seed=1)
    return origin, (origin_root / "f.bin").read_bytes(), digest


# -- ranges and validators -----------------------------------------------------------------------------
def test_whole_file_head_and_keep_alive(served):
    origin, data, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        full = fetch(origin, "/f.bin", conn=conn)
        first_port = conn.sock.getsockname()[1]
        head = fetch(origin, "/f.bin", method="HEAD", conn=conn)
        part = fetch(origin, "/f.bin", conn=conn, Range="bytes=0-9")
        assert conn.sock is not None and conn.sock.getsockname()[1] == first_port  # one connection
    finally:
        conn.close()
    assert full.status == 200 and full.body == data
    assert full.headers["Accept-Ranges"] == "bytes" and full.headers["Content-Length"] == str(SIZE)
    assert full.headers["ETag"].startswith('"') and full.headers["Last-Modified"].endswith("GMT")
    assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == str(SIZE)
    assert head.headers["ETag"] == full.headers["ETag"]
    assert part.status == 206 and part.body == data[:10]
    assert origin.stats()["requests_by_client"] == {"127.0.0.1": 3}


def test_all_range_forms(served):
    origin, data, _ = served
    cases = {
        "bytes=10-19": (10, 20), "bytes=-5": (SIZE - 5, SIZE), f"bytes={SIZE - 3}-": (SIZE - 3, SIZE),
        f"bytes=1000-{SIZE + 50}": (1000, SIZE), "bytes=-999999999": (0, SIZE),
        f"bytes={BLOCK - 1}-{BLOCK}": (BLOCK - 1, BLOCK + 1),
    }
    for header, (start, end) in cases.items():
        r = fetch(origin, "/f.bin", Range=header)
        assert r.status == 206, header
        assert r.body == data[start:end], header
        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}", header
        assert r.headers["Content-Length"] == str(end - start), header
    for header in (f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"):
        r = fetch(origin, "/f.bin", Range=header)
        assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{SIZE}" and r.body == b""
    for header in ("bytes=0-1,4-5", "bytes=9-3", "lines=1-2"):
        r = fetch(origin, "/f.bin", Range=header)
        assert r.status == 200 and r.body == data and "Content-Range" not in r.headers


def test_if_range(served):
    origin, data, _ = served
    full = fetch(origin, "/f.bin", method="HEAD")
    etag, last_modified = full.headers["ETag"], full.headers["Last-Modified"]
    assert fetch(origin, "/f.bin", Range="bytes=0-9", If_Range=etag).status == 206
    assert fetch(origin, "/f.bin", Range="bytes=0-9", If_Range=last_modified).status == 206
    for stale in ('"stale"', "W/" + etag, "Thu, 01 Jan 1970 00:00:00 GMT"):
        r = fetch(origin, "/f.bin", Range="bytes=0-9", If_Range=stale)
        assert r.status == 200 and r.body == data, stale
    # a failed If-Range wins over an unsatisfiable range, as RFC 9110 orders them
    assert fetch(origin, "/f.bin", Range=f"bytes={SIZE}-", If_Range='"stale"').status == 200


def test_change_gives_new_validators_and_new_bytes(served):
    origin, data, _ = served
    before = fetch(origin, "/f.bin", method="HEAD").headers
    origin.configure(path="/f.bin", change=True, count=1)
    r = fetch(origin, "/f.bin")
    assert r.headers["ETag"] != before["ETag"] and r.headers["Last-Modified"] != before["Last-Modified"]
    assert len(r.body) == SIZE and r.body != data
    old = fetch(origin, "/f.bin", Range="bytes=0-9", If_Range=before["ETag"])
    assert old.status == 200 and old.body == r.body      # how a client sees the change
    assert fetch(origin, "/f.bin", Range="bytes=0-9", If_Range=r.headers["ETag"]).status == 206
    origin.change("/f.bin")                                # in-process, right now
    again = fetch(origin, "/f.bin")
    assert again.headers["ETag"] != r.headers["ETag"] and again.body not in (data, r.body)


def test_change_mid_response(served):
    """The response under way ends with the old bytes; the next one is the new version."""
    origin, data, _ = served
    origin.configure(path="/f.bin", change=MiB, count=1)
    first = fetch(origin, "/f.bin")
    second = fetch(origin, "/f.bin", Range="bytes=0-9", If_Range=first.headers["ETag"])
    assert first.body == data
    assert second.status == 200 and second.headers["ETag"] != first.headers["ETag"]
    assert len(second.body) == SIZE and second.body != data


# -- misbehaviour ------------------------------------------------------------------------------------------
def test_fail_on_cue_queued_in_order(served):
    origin, data, _ = served
    origin.configure(path="/f.bin", fail=503, retry_after="2", count=2)
    origin.configure(path="/f.bin", fail=429, count=1)
    replies = [fetch(origin, "/f.bin") for _ in range(4)]
    assert [r.status for r in replies] == [503, 503, 429, 200]
    assert replies[0].headers["Retry-After"] == "2" and "Retry-After" not in replies[2].headers
    assert replies[3].body == data
    origin.configure(path="*", fail=500, count=1)             # every path
    assert fetch(origin, "/f.bin", method="HEAD").status == 500
    assert fetch(origin, "/f.bin", method="HEAD").status == 200
    origin.configure(path="/f.bin", fail=403)                # permanent until cleared
    assert [fetch(origin, "/f.bin").status for _ in range(2)] == [403, 403]
    origin.configure(path="/f.bin")
    assert fetch(origin, "/f.bin").status == 200


def test_ignore_ranges_and_wrong_content_range(served):
    origin, data, _ = served
    origin.configure(path="/f.bin", ignore_ranges=True, count=1)
    r = fetch(origin, "/f.bin", Range="bytes=0-9")
    assert r.status == 200 and r.body == data
    assert fetch(origin, "/f.bin", Range="bytes=0-9").status == 206
    origin.configure(path="/f.bin", wrong_content_range=True, count=1)
    r = fetch(origin, "/f.bin", Range="bytes=0-9")
    assert r.headers["Content-Range"] == f"bytes 1-10/{SIZE}" and r.body == data[:10]
    assert fetch(origin, "/f.bin", Range="bytes=0-9").headers["Content-Range"] == f"bytes 0-9/{SIZE}"


def test_gzip_and_content_disposition(served):
    origin, data, _ = served
    origin.configure(path="/f.bin", content_disposition='attachment; filename="r.pdf"')
    origin.configure(path="/f.bin", gzip=True, count=1)
    r = fetch(origin, "/f.bin")
    assert r.headers["Content-Encoding"] == "gzip" and r.body == data  # a lie: the bytes are plain
    assert r.headers["Content-Disposition"] == 'attachment; filename="r.pdf"'
    r = fetch(origin, "/f.bin")
    assert "Content-Encoding" not in r.headers
    assert r.headers["Content-Disposition"] == 'attachment; filename="r.pdf"'  # permanent
    origin.configure(path="/f.bin", content_disposition=None)
    assert "Content-Disposition" not in fetch(origin, "/f.bin", method="HEAD").headers
    with pytest.raises(ValueError):
        origin.configure(path="/f.bin", content_disposition="a\r\nX-Injected: 1")


def test_omit_length(served):
    origin, data, _ = served
    origin.configure(path="/f.bin", omit_length=True, count=1)
    head, body, error = raw_exchange(origin.port, b"GET /f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0].startswith("http/1.1 200") and error is None
    assert "connection: close" in lines
    assert not any(h.startswith(("content-length", "accept-ranges")) for h in lines)
    assert body == data   # close-delimited


def test_reset_after(served):
    origin, data, _ = served
    origin.configure(path="/f.bin", reset_after=1000, count=1)
    head, body, error = raw_exchange(origin.port, b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {SIZE}".encode() in head
    assert body == data[:1000] and isinstance(error, ConnectionResetError)
    assert fetch(origin, "/f.bin").body == data
    origin.configure(path="/f.bin", reset_after=10, count=1)   # past the end of this body: no reset
    assert fetch(origin, "/f.bin", Range="bytes=0-9").body == data[:10]
    origin.configure(path="/f.bin", reset_after=0, count=1)
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(origin.url("/f.bin"), timeout=10)


def test_short_body(served):
    origin, data, _ = served
    origin.configure(path="/f.bin", short_body=100, count=1)
    head, body, error = raw_exchange(origin.port, b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert f"Content-Length: {SIZE}".encode() in head and error is None
    assert body == data[:-100]   # then the connection closed
    origin.configure(path="/f.bin", short_body=5, count=1)
    with pytest.raises(http.client.IncompleteRead):
        fetch(origin, "/f.bin", Range="bytes=0-9")


def test_stall_then_carry_on(served):
    origin, data, _ = served
    origin.configure(path="/f.bin", stall_after=1000, stall_seconds=0.6, count=1)
    with socket.create_connection(("127.0.0.1", origin.port), timeout=10) as s:
        s.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        got = bytearray()
        while len(got) < 1000 or b"\r\n\r\n" not in got:
            got += s.recv(65536)
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        assert body == data[:1000]
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(1)   # nothing comes during the stall
        s.settimeout(10)
        rest = bytearray(body)
        while len(rest) < SIZE:
            rest += s.recv(1 << 20)
    assert bytes(rest) == data


def test_stalled_response_ends_when_the_client_leaves(served):
    origin, _, _ = served
    origin.configure(path="/f.bin", stall_after=10, count=1)  # an hour by default
    with socket.create_connection(("127.0.0.1", origin.port), timeout=10) as s:
        s.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(100)
        assert origin.connections() == 1
    wait_until(lambda: origin.connections() == 0, 5, "the stalled handler to notice")


def test_rules_for_one_client_only(served):
    origin, data, _ = served
    origin.configure(path="/f.bin", fail=500, only_client="127.0.0.2", count=1)
    assert fetch(origin, "/f.bin", method="HEAD", source="127.0.0.3").status == 200
    assert fetch(origin, "/f.bin", method="HEAD", source="127.0.0.2").status == 500
    assert fetch(origin, "/f.bin", method="HEAD", source="127.0.0.2").status == 200


def test_redirect(served):
    origin, data, _ = served
    origin.configure(path="/old", redirect=origin.url("/f.bin"), count=1)
    r = fetch(origin, "/old")
    assert r.status == 302 and r.headers["Location"] == origin.url("/f.bin")
    assert fetch(origin, "/old").status == 404   # the count is spent: /old does not exist
    origin.configure(path="/moved", redirect=origin.url("/f.bin"), redirect_status=307)
    assert fetch(origin, "/moved").status == 307
    followed = requests.get(origin.url("/moved"), timeout=10)
    assert followed.url == origin.url("/f.bin") and followed.content == data


def test_bad_settings_are_refused(origin):
    for bad in (dict(bogus=1), dict(fail="x"), dict(fail=99), dict(reset_after=-1), dict(gzip="yes"),
                dict(redirect_status=200), dict(count=0, fail=500), dict(host_rate="fast")):
        with pytest.raises(ValueError):
            origin.configure(path="/x", **bad)


# -- counters and control over HTTP ---------------------------------------------------------------------
def test_stats_count_body_bytes_and_requests(served):
    origin, data, _ = served
    fetch(origin, "/f.bin", Range="bytes=0-99")
    fetch(origin, "/f.bin", source="127.0.0.2")
    fetch(origin, "/f.bin", method="HEAD")
    fetch(origin, "/missing")
    stats = origin.stats()
    assert stats["bytes_by_path"] == {"/f.bin": 100 + SIZE}
    assert stats["bytes_by_client"] == {"127.0.0.1": 100, "127.0.0.2": SIZE}
    assert stats["requests_by_client"] == {"127.0.0.1": 3, "127.0.0.2": 1}
    assert stats["requests_by_path"] == {"/f.bin": 3, "/missing": 1}
    assert requests.get(origin.url("/_origin/stats"), timeout=10).json() == stats  # not counted itself
    assert requests.post(origin.url("/_origin/reset-stats"), timeout=10).status_code == 200
    assert origin.stats()["bytes_by_client"] == {}
    fetch(origin, "/f.bin", Range="bytes=0-9")
    origin.reset_stats()
    assert origin.stats() == {"bytes_by_client": {}, "bytes_by_path": {}, "requests_by_client": {},
                              "requests_by_path": {}}


def test_an_abandoned_download_counts_only_what_left(origin, origin_root):
    size = 64 * MiB
    make_file(origin_root / "a.bin", size)
    received = 0
    with socket.create_connection(("127.0.0.1", origin.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(b"GET /a.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        while received < MiB:
            received += len(s.recv(1 << 16))
    wait_until(lambda: origin.connections() == 0, 20, "the handler to end")
    assert MiB - 1000 < origin.stats()["bytes_by_path"]["/a.bin"] < size


def test_config_over_http(served):
    origin, data, _ = served
    post = lambda what, obj: requests.post(origin.url(f"/_origin/{what}"), data=json.dumps(obj), timeout=10)  # noqa
    assert post("config", {"path": "/f.bin", "fail": 404, "count": 1}).status_code == 200
    assert fetch(origin, "/f.bin").status == 404 and fetch(origin, "/f.bin").status == 200
    assert post("config", {"host_rate": 5000000, "host_rates": {"127.0.0.9": 1000}}).status_code == 200
    assert origin.host_rate == 5000000 and origin.host_rates == {"127.0.0.9": 1000.0}
    config = requests.get(origin.url("/_origin/config"), timeout=10).json()
    assert config["host_rate"] == 5000000 and config["host_rates"] == {"127.0.0.9": 1000.0}
    assert post("config", {"host_rate": None}).status_code == 200 and origin.host_rate is None
    assert post("config", {"path": "/f.bin", "fail": 500}).status_code == 200
    assert post("clear", {"path": "/f.bin"}).status_code == 200
    assert fetch(origin, "/f.bin", method="HEAD").status == 200
    for bad in ({"bogus": 1}, {"fail": "x"}, [1, 2]):
        r = post("config", bad)
        assert r.status_code == 400 and "error" in r.json()
    assert requests.post(origin.url("/_origin/config"), data=b"{nope", timeout=10).status_code == 400
    assert post("nothing-here", {}).status_code == 404
    assert origin.stats()["requests_by_client"] == {"127.0.0.1": 3}  # control requests not counted


def test_paths_outside_the_root_are_refused(served, origin_root):
    origin, data, _ = served
    (origin_root.parent / "secret.txt").write_text("no")
    (origin_root / "sub").mkdir()
    (origin_root / "sub" / "in.txt").write_text("yes")
    (origin_root / "a b.txt").write_text("spaced")
    os.symlink(origin_root.parent / "secret.txt", origin_root / "link.txt")
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/sub/../../secret.txt",
                 "/link.txt", "/sub", "/", "/%ff", "/f.bin%00", "//secret.txt", "/nope",
                 str(origin_root.parent / "secret.txt")):
        r = fetch(origin, path)
        assert r.status == 404 and b"no" != r.body, path
    assert fetch(origin, "/sub/in.txt").body == b"yes"
    assert fetch(origin, "/sub%2fin.txt").body == b"yes"
    assert fetch(origin, "/a%20b.txt").body == b"spaced"
    assert fetch(origin, "/f.bin?x=1").body == data
    assert origin.stats()["bytes_by_path"]["/a b.txt"] == 6   # decoded paths


# -- bandwidth caps ---------------------------------------------------------------------------------------
def timed_download(origin: OriginServer, path: str, nbytes: int, source: str | None = None,
                   results: dict | None = None, key: object = None) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=30,
                                      source_address=(source, 0) if source else None)
    try:
        started = time.monotonic()
        conn.request("GET", path, headers={"Range": f"bytes=0-{nbytes - 1}"})
        r = conn.getresponse()
        got = 0
        while chunk := r.read(1 << 16):
            got += len(chunk)
        rate = got / (time.monotonic() - started)
    finally:
        conn.close()
    assert got == nbytes
    if results is not None:
        results[key] = rate
    return rate


def run_together(*calls) -> None:
    threads = [threading.Thread(target=fn, args=args) for fn, *args in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)


def close_to(value: float, target: float, tolerance: float = 0.10) -> bool:
    return abs(value - target) / target < tolerance


def test_per_host_cap_holds_within_ten_percent(origin, origin_root):
    make_file(origin_root / "c.bin", 8 * MiB, seed=2)
    rate = 2 * MiB
    origin.configure(host_rate=rate)
    got = timed_download(origin, "/c.bin", 4 * MiB)
    assert close_to(got, rate), got


def test_one_bucket_per_ip_shared_fairly_by_its_connections(origin, origin_root):
    make_file(origin_root / "c.bin", 8 * MiB, seed=2)
    rate = 2 * MiB
    origin.configure(host_rate=rate, host_rates={"127.0.0.4": rate / 4})
    results: dict = {}
    run_together(
        (timed_download, origin, "/c.bin", 2 * MiB, "127.0.0.2", results, "a1"),
        (timed_download, origin, "/c.bin", 2 * MiB, "127.0.0.2", results, "a2"),
        (timed_download, origin, "/c.bin", 4 * MiB, "127.0.0.3", results, "b"),
        (timed_download, origin, "/c.bin", MiB, "127.0.0.4", results, "slow"),
    )
    assert close_to(results["a1"] + results["a2"], rate), results      # two connections, one cap
    assert close_to(results["a1"], rate / 2) and close_to(results["a2"], rate / 2), results  # fairly
    assert close_to(results["b"], rate), results                         # another machine, its own cap
    assert close_to(results["slow"], rate / 4), results                  # a per-IP override
    stats = origin.stats()["bytes_by_client"]
    assert stats == {"127.0.0.2": 4 * MiB, "127.0.0.3": 4 * MiB, "127.0.0.4": MiB}


def test_per_connection_cap(origin, origin_root):
    make_file(origin_root / "c.bin", 8 * MiB, seed=2)
    origin.configure(conn_rate=MiB)
    results: dict = {}
    run_together(*[(timed_download, origin, "/c.bin", 2 * MiB, None, results, i) for i in range(2)])
    for rate in results.values():
        assert close_to(rate, MiB), results


def test_uncapped_is_fast_and_correct_for_several_clients(origin, origin_root):
    size = 64 * MiB
    digest = make_file(origin_root / "big.bin", size, seed=9)
    digests: dict = {}

    def download(key):
        h = hashlib.sha256()
        with requests.get(origin.url("/big.bin"), stream=True, timeout=30) as r:
            for chunk in r.iter_content(1 << 20):
                h.update(chunk)
        digests[key] = h.hexdigest()

    started = time.monotonic()
    run_together(*[(download, i) for i in range(3)])
    elapsed = time.monotonic() - started
    assert digests == {0: digest, 1: digest, 2: digest}
    assert 3 * size / elapsed > 50e6  # GB/s on an idle machine; this only catches gross slowness


# -- life cycle -------------------------------------------------------------------------------------------
def test_stop_is_prompt_with_stalled_capped_blocked_and_idle_connections(origin_root):
    make_file(origin_root / "s.bin", 64 * MiB, seed=3)
    server = OriginServer(origin_root, host_rates={"127.0.0.2": 64 << 10}).start()
    server.configure(path="/s.bin", stall_after=1000, count=1)
    sources = ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.1"]
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=(ip, 0))
               for ip in sources]
    try:
        sockets[0].sendall(b"GET /s.bin HTTP/1.1\r\nHost: x\r\n\r\n")      # stalls for an hour
        sockets[0].recv(100)
        sockets[1].sendall(b"GET /s.bin HTTP/1.1\r\nHost: x\r\n\r\n")      # crawls at 64 KiB/s
        sockets[1].recv(100)
        sockets[2].sendall(b"HEAD /s.bin HTTP/1.1\r\nHost: x\r\n\r\n")     # then idles, kept alive
        sockets[2].recv(1000)
        sockets[3].sendall(b"GET /s.bin HTTP/1.1\r\nHost: x\r\n\r\n")      # never read: send blocks
        sockets[3].recv(100)
        wait_until(lambda: server.connections() == 4, 5, "four connections")
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        assert server.connections() == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    finally:
        for s in sockets:
            s.close()
        server.stop()


def test_context_manager_and_connection_bound(origin_root):
    make_file(origin_root / "k.bin", 1000)
    with OriginServer(origin_root, max_connections=2) as server:
        conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=5) for _ in range(3)]
        try:
            assert fetch(server, "/k.bin", conn=conns[0]).status == 200
            assert fetch(server, "/k.bin", conn=conns[1]).status == 200
            assert fetch(server, "/k.bin", conn=conns[2]).status == 503   # two are kept alive
        finally:
            for c in conns:
                c.close()
        wait_until(lambda: server.connections() == 0, 5, "connections to close")
        assert fetch(server, "/k.bin").status == 200




@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback")
def test_ipv6(origin_root):
    make_file(origin_root / "v6.bin", 5000, seed=6)
    with OriginServer(origin_root, host="::1") as server:
        assert server.url("/v6.bin") == f"http://[::1]:{server.port}/v6.bin"
        r = requests.get(server.url("/v6.bin"), headers={"Range": "bytes=0-9"}, timeout=10)
        assert r.status_code == 206 and r.content == (origin_root / "v6.bin").read_bytes()[:10]
        assert server.stats()["bytes_by_client"] == {"::1": 10}


def test_command_line(tmp_path):
    root = tmp_path / "www"
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "swiftlab.origin", "--root", str(root), "--make", "m.bin:1M", "--make", "n.bin:10K",
         "--host-rate", "64M", "--rate-for", "127.0.0.5=1M", "--port-file", str(port_file)],
        cwd=ROOT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        made = [proc.stdout.readline().split() for _ in range(2)]
        assert proc.stdout.readline().startswith("origin listening on http://127.0.0.1:")
        port = int(wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 10, "port file"))
        assert made[0][:3] == ["made", "m.bin", "sha256"] and made[1][1] == "n.bin"
        body = requests.get(f"http://127.0.0.1:{port}/m.bin", timeout=10).content
        assert len(body) == MiB and hashlib.sha256(body).hexdigest() == made[0][3]
        stats = requests.get(f"http://127.0.0.1:{port}/_origin/stats", timeout=10).json()
        assert stats["bytes_by_path"] == {"/m.bin": MiB}
        config = requests.get(f"http://127.0.0.1:{port}/_origin/config", timeout=10).json()
        assert config["host_rate"] == 64 * MiB and config["host_rates"] == {"127.0.0.5": MiB}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
