"""The local origin: ranges, validators, counters, misbehaviour and bandwidth caps."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from swift.origin import OriginServer, make_file
from swift.sessions import make_session

from .conftest import MiB


@pytest.fixture
def served(origin, origin_root):
    digest = make_file(origin_root / "f.bin", 4 * MiB, seed=1)
    return origin, (origin_root / "f.bin").read_bytes(), digest


def get(url, **headers):
    return requests.get(url, headers=headers, timeout=10)


def test_ranges_and_validators(served):
    origin, data, _ = served
    url = origin.url("/f.bin")
    full = get(url)
    assert full.status_code == 200 and full.content == data and full.headers["Accept-Ranges"] == "bytes"
    etag, lm = full.headers["ETag"], full.headers["Last-Modified"]
    r = get(url, Range="bytes=10-19")
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert get(url, Range="bytes=-5").content == data[-5:]
    assert get(url, Range=f"bytes={len(data) - 3}-").content == data[-3:]
    bad = get(url, Range=f"bytes={len(data)}-")
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"
    assert get(url, Range="bytes=0-9", **{"If-Range": etag}).status_code == 206
    assert get(url, Range="bytes=0-9", **{"If-Range": lm}).status_code == 206
    assert get(url, Range="bytes=0-9", **{"If-Range": '"stale"'}).status_code == 200


def test_change_gives_a_new_etag_and_new_bytes(served):
    origin, data, _ = served
    url = origin.url("/f.bin")
    etag = get(url, Range="bytes=0-0").headers["ETag"]
    origin.configure(path="/f.bin", change=True, count=1)
    r = get(url)
    assert r.headers["ETag"] != etag and r.content != data and len(r.content) == len(data)
    assert get(url, Range="bytes=0-9", **{"If-Range": etag}).status_code == 200


def test_misbehaviour_on_cue(served):
    origin, data, _ = served
    url = origin.url("/f.bin")
    origin.configure(path="/f.bin", fail=503, retry_after="2", count=2)
    assert [get(url).status_code for _ in range(3)] == [503, 503, 200]
    origin.configure(path="/f.bin", ignore_ranges=True, count=1)
    assert get(url, Range="bytes=0-9").status_code == 200
    assert get(url, Range="bytes=0-9").status_code == 206
    origin.configure(path="/f.bin", wrong_content_range=True, count=1)
    assert get(url, Range="bytes=0-9").headers["Content-Range"] == f"bytes 1-10/{len(data)}"
    origin.configure(path="/f.bin", gzip=True, count=1)
    with requests.get(url, stream=True, timeout=10) as r:
        assert r.headers["Content-Encoding"] == "gzip"
    origin.configure(path="/f.bin", omit_length=True, count=1)
    r = get(url)
    assert "Content-Length" not in r.headers and r.content == data
    origin.configure(path="/f.bin", reset_after=1000, count=1)
    with pytest.raises(requests.exceptions.RequestException):
        get(url).content
    origin.configure(path="/f.bin", short_body=100, count=1)
    with pytest.raises(requests.exceptions.RequestException):
        get(url).content
    origin.configure(path="/x", redirect=origin.url("/f.bin"), count=1)
    assert get(origin.url("/x")).content == data


def test_stats_config_endpoint_and_traversal(served, origin_root):
    origin, data, _ = served
    (origin_root.parent / "secret.txt").write_text("no")
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/nope"):
        assert get(origin.url(path)).status_code == 404
    origin.reset_stats()
    get(origin.url("/f.bin"), Range="bytes=0-99")
    stats = get(origin.url("/_origin/stats")).json()
    assert stats["bytes_by_path"] == {"/f.bin": 100}
    assert stats["bytes_by_client"] == {"127.0.0.1": 100}
    r = requests.post(origin.url("/_origin/config"), data=json.dumps({"path": "/f.bin", "fail": 404}),
                      timeout=10)
    assert r.status_code == 200 and get(origin.url("/f.bin")).status_code == 404
    r = requests.post(origin.url("/_origin/config"), data=json.dumps({"bogus": 1}), timeout=10)
    assert r.status_code == 400


def timed_fetch(url, source=None, nbytes=None, results=None, key=None):
    session = make_session(source_address=source)
    start = time.monotonic()
    headers = {"Range": f"bytes=0-{nbytes - 1}"} if nbytes else {}
    n = len(session.get(url, headers=headers, timeout=30).content)
    elapsed = time.monotonic() - start
    session.close()
    if results is not None:
        results[key] = n / elapsed
    return n / elapsed


def test_per_host_cap_holds_within_ten_percent(origin, origin_root):
    make_file(origin_root / "c.bin", 8 * MiB, seed=2)
    rate = 2 * MiB
    origin.configure(host_rate=rate)
    got = timed_fetch(origin.url("/c.bin"), nbytes=5 * MiB)
    assert abs(got - rate) / rate < 0.10, got


def test_one_bucket_per_ip_shared_by_its_connections(origin, origin_root):
    make_file(origin_root / "c.bin", 8 * MiB, seed=2)
    rate = 2 * MiB
    origin.configure(host_rate=rate)
    results: dict = {}
    same = [threading.Thread(target=timed_fetch, args=(origin.url("/c.bin"), "127.0.0.2", 3 * MiB,
                                                        results, i)) for i in range(2)]
    other = threading.Thread(target=timed_fetch, args=(origin.url("/c.bin"), "127.0.0.3", 3 * MiB,
                                                        results, "other"))
    for t in (*same, other):
        t.start()
    for t in (*same, other):
        t.join(30)
    shared = results[0] + results[1]
    assert abs(shared - rate) / rate < 0.10, results          # two connections, one cap
    assert abs(results["other"] - rate) / rate < 0.10, results  # another machine, its own cap
    stats = origin.stats()["bytes_by_client"]
    assert stats["127.0.0.2"] == 6 * MiB and stats["127.0.0.3"] == 3 * MiB


def test_per_connection_cap(origin, origin_root):
    make_file(origin_root / "c.bin", 8 * MiB, seed=2)
    origin.configure(conn_rate=MiB)
    results: dict = {}
    threads = [threading.Thread(target=timed_fetch, args=(origin.url("/c.bin"), None, 2 * MiB,
                                                           results, i)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for rate in results.values():
        assert abs(rate - MiB) / MiB < 0.10, results


def test_make_file_is_deterministic(tmp_path):
    a = make_file(tmp_path / "a", 3 * MiB + 5, seed=4)
    b = make_file(tmp_path / "b", 3 * MiB + 5, seed=4)
    c = make_file(tmp_path / "c", 3 * MiB + 5, seed=5)
    assert a == b != c
    data = (tmp_path / "a").read_bytes()
    assert data[:MiB] != data[MiB:2 * MiB]  # blocks differ: a misplaced block is caught


def test_stop_is_prompt_with_a_stalled_response(origin_root):
    make_file(origin_root / "s.bin", MiB, seed=3)
    server = OriginServer(origin_root).start()
    server.configure(path="/s.bin", stall_after=1000)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(b"GET /s.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.recv(100)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 3
    sock.close()
