"""aria2's JSON-RPC on a real node, driven by real clients: aria2p, a WebSocket client, requests.

One pool for the module (discovery, a helper, a node with ``--enable-rpc``)
keeps the tier quick; each test downloads its own file. The origin caps each
connection, so a download lasts long enough to be paused, and the helper
takes part in each one.
"""

from __future__ import annotations

import json
import re
import socket

import aria2p
import pytest
import requests
import websocket

from swiftlab.cluster import Cluster, program, wait_until
from swiftlab.origin import OriginServer, make_file

from tests.helpers import MiB, prompt_node, sha256_file, start_helpers

#: Bytes/s per origin connection: a 24 MiB file over the node's and the
#: helper's 8 connections takes 3 s at least, so a pause lands mid-way.
CONN_RATE = 1 * MiB


def rpc_port(node) -> int:
    return int(node.wait_for(r"aria2 JSON-RPC at http://127\.0\.0\.1:(\d+)/jsonrpc").group(1))


def start_rpc_node(cluster: Cluster, disc, name: str, extra=()):
    directory = cluster.workdir / name
    directory.mkdir()
    node = cluster.node(f"127.0.0.1:{disc.port}", name=name, directory=directory,
                        extra=["--allow-private", "--enable-rpc", "--rpc-listen-port", "0", *extra])
    node.rpc_port = rpc_port(node)
    node.directory = directory
    return node


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """(origin, origin root, the RPC node) with one helper in the pool."""
    work = tmp_path_factory.mktemp("rpc")
    root = work / "origin"
    root.mkdir()
    origin = OriginServer(root, host="127.0.0.1", port=0).start()
    origin.configure(conn_rate=CONN_RATE)
    try:
        with Cluster(work) as cluster:
            disc = cluster.discovery()
            start_helpers(cluster, disc, 1)
            node = start_rpc_node(cluster, disc, "requester")
            node.cluster, node.disc = cluster, disc
            yield origin, root, node
    finally:
        origin.stop()


def client(port: int, secret: str = "") -> aria2p.API:
    """aria2p's API for the RPC on loopback ``port``."""
    return aria2p.API(aria2p.Client(host="http://127.0.0.1", port=port, secret=secret, timeout=10))


def status(api: aria2p.API, gid: str) -> dict:
    return api.client.tell_status(gid)


def test_aria2p_drives_a_download_to_complete_lists_it_and_removes_its_result(pool):
    origin, root, node = pool
    digest = make_file(root / "whole.bin", 4 * MiB, seed=61)
    api = client(node.rpc_port)
    download = api.add_uris([origin.url("/whole.bin")])
    wait_until(lambda: status(api, download.gid)["status"] == "complete", 60, "download complete")
    assert sha256_file(node.directory / "whole.bin") == digest
    n = int(download.gid, 16)  # --serve-only says each download's lines with its number
    node.wait_for(rf"^\[{n}\] started http://127\.0\.0\.1:\d+/whole\.bin$", timeout=10)
    node.wait_for(rf"^\[{n}\] done: \S*whole\.bin ", timeout=10)
    listed = {d.gid: d for d in api.get_downloads()}
    assert listed[download.gid].name == "whole.bin"
    assert listed[download.gid].total_length == 4 * MiB
    sources = api.client.get_peers(download.gid)
    assert {s["name"] for s in sources} >= {"helper0"}, sources
    assert sum(int(s["completedLength"]) for s in sources) == 4 * MiB
    stats = api.get_stats()
    assert stats.num_stopped_total >= 1 and stats.num_active == 0
    assert all(api.remove([listed[download.gid]]))
    assert download.gid not in {d.gid for d in api.get_downloads()}


def test_aria2p_pauses_and_resumes_a_download_that_then_completes(pool):
    origin, root, node = pool
    digest = make_file(root / "paused.bin", 24 * MiB, seed=62)
    api = client(node.rpc_port)
    download = api.add_uris([origin.url("/paused.bin")], {"out": "kept.bin"})
    wait_until(lambda: int(status(api, download.gid)["completedLength"]) > 0, 30, "bytes arriving")
    assert all(api.pause([download]))
    wait_until(lambda: status(api, download.gid)["status"] == "paused", 10, "paused")
    assert [d["gid"] for d in api.client.tell_waiting(0, 10)] == [download.gid]
    assert all(api.resume([download]))
    wait_until(lambda: status(api, download.gid)["status"] == "complete", 60, "complete after resume")
    assert sha256_file(node.directory / "kept.bin") == digest
    n = int(download.gid, 16)
    for line in (rf"\[{n}\] paused; ", rf"\[{n}\] resumed http://", rf"\[{n}\] done: "):
        node.wait_for("^" + line, timeout=10)


def test_a_websocket_client_receives_on_download_complete(pool):
    origin, root, node = pool
    make_file(root / "ws.bin", 2 * MiB, seed=63)
    ws = websocket.create_connection(f"ws://127.0.0.1:{node.rpc_port}/jsonrpc", timeout=30)
    try:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": "a", "method": "aria2.addUri",
                            "params": [[origin.url("/ws.bin")]]}))
        seen: list[dict] = []
        gid = None
        while not any(m.get("method") == "aria2.onDownloadComplete" and m["params"][0]["gid"] == gid
                      for m in seen):
            message = json.loads(ws.recv())  # each wait bounded by the socket's timeout
            if message.get("id") == "a":
                gid = message["result"]
            seen.append(message)
    finally:
        ws.close()
    methods = [m.get("method") for m in seen if m.get("params", [{}])[0].get("gid") == gid]
    assert methods.index("aria2.onDownloadStart") < methods.index("aria2.onDownloadComplete")


def test_a_wrong_secret_and_a_cross_origin_request_are_refused(pool, tmp_path):
    origin, root, node = pool
    front_end = "http://127.0.0.1:8080"  # where an AriaNg would be served
    guarded = start_rpc_node(node.cluster, node.disc, "guarded",
                             extra=["--rpc-secret", "s3cret", "--rpc-allow-origin", front_end])
    with pytest.raises(aria2p.ClientException, match="Unauthorized"):
        client(guarded.rpc_port, "wrong").get_stats()
    with pytest.raises(aria2p.ClientException, match="Unauthorized"):
        client(guarded.rpc_port).get_stats()
    assert client(guarded.rpc_port, "s3cret").get_stats().num_active == 0
    url = f"http://127.0.0.1:{guarded.rpc_port}/jsonrpc"
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "aria2.getGlobalStat", "params": ["token:s3cret"]})
    evil = requests.post(url, data=body, timeout=10, headers={"Origin": "http://evil.example",
                                                              "Content-Type": "application/json"})
    assert evil.status_code == 403 and "cross-site" in evil.json()["error"]["message"]
    preflight = requests.options(url, timeout=10, headers={
        "Origin": front_end, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == front_end
    allowed = requests.post(url, data=body, timeout=10, headers={"Origin": front_end,
                                                                 "Content-Type": "application/json"})
    assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == front_end
    form = requests.post(url, data=body, timeout=10, headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    rebound = requests.post(url, data=body, timeout=10, headers={"Host": f"rebind.example:{guarded.rpc_port}"})
    assert rebound.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"ws://127.0.0.1:{guarded.rpc_port}/jsonrpc", timeout=10,
                                    origin="http://evil.example")


def test_malformed_json_rpc_gets_json_rpc_errors_never_a_traceback(pool):
    origin, root, node = pool
    url = f"http://127.0.0.1:{node.rpc_port}/jsonrpc"
    bodies = [b"{", b"[]", b"null", b"[1, 2]", b'{"method": 5}', b'{"id": 1, "method": "aria2.nope"}',
              b'{"id": 1, "method": "aria2.tellStatus", "params": ["zz"]}',
              b'{"id": 1, "method": "aria2.tellStatus", "params": {"gid": 1}}',
              b'{"id": 1, "method": "aria2.addUri", "params": [["http://"]]}',
              b'{"id": 1, "method": "aria2.addTorrent", "params": ["AAAA"]}',
              b'{"id": 1, "method": "system.multicall", "params": [[{"methodName": 1}]]}',
              "\udcff".encode("utf-8", "surrogatepass"), b"\xff\xfe"]
    for body in bodies:
        answer = requests.post(url, data=body, timeout=10, headers={"Content-Type": "application/json"})
        got = answer.json()
        responses = got if isinstance(got, list) else [got]
        errors = [r["error"] for r in responses if "error" in r] + \
            [e for r in responses if isinstance(r.get("result"), list) for e in r["result"]
             if isinstance(e, dict)]  # system.multicall's failed calls
        assert errors, body
        for err in errors:
            assert isinstance(err["code"], int) and err["message"] and "Traceback" not in err["message"], body
    too_big = requests.post(url, data=b" " * (3 << 20), timeout=30, headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert not re.search(r"Traceback", node.output())


def test_the_rpc_runs_beside_the_prompt_which_lists_what_it_started(cluster, origin, origin_root):
    digest = make_file(origin_root / "beside.bin", 1 * MiB, seed=64)
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}",
                     extra=["--enable-rpc", "--rpc-listen-port", "0"]) as (node, type_):
        api = client(rpc_port(node))
        download = api.add_uris([origin.url("/beside.bin")])
        wait_until(lambda: status(api, download.gid)["status"] == "complete", 60, "complete")
        node.wait_for(r"\[1\] started http://127\.0\.0\.1:\d+/beside\.bin", timeout=10)
        node.wait_for(r"\[1\] done: \S*beside\.bin ", timeout=10)  # as for the prompt's own
        mark = type_("jobs")
        node.wait_for(r"\[1\] .*beside\.bin.*done", timeout=10, start=mark)
        type_("quit")
        assert node.wait(15) == 0
    assert sha256_file(cluster.workdir / "beside.bin") == digest


def test_a_taken_rpc_port_is_one_error_line_and_the_node_never_joins(cluster):
    disc = cluster.discovery()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cluster.start([*program("node"), "--discovery", f"127.0.0.1:{disc.port}", "--host", "127.0.0.1",
                              "--port", "0", "--dir", str(cluster.workdir), "--serve-only", "--enable-rpc",
                              "--rpc-listen-port", str(port)], name="node")
        assert proc.wait(30) == 1
    errors = [line for line in proc.output().splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot serve the RPC on port {port}: Address already in use "
                      f"(choose another with --rpc-listen-port)"]
    assert "registered" not in proc.output() and "Traceback" not in proc.output()


def test_rpc_options_without_enable_rpc_are_warned_of_and_the_node_serves_without_rpc(pool):
    origin, root, node = pool
    plain = node.cluster.node(f"127.0.0.1:{node.disc.port}", name="norpc",
                              extra=["--rpc-secret", "t", "--rpc-listen-port", "0"])
    out = plain.output()
    assert "--rpc-listen-port, --rpc-secret do nothing without --enable-rpc" in out, out
    assert "aria2 JSON-RPC at" not in out and "Traceback" not in out
