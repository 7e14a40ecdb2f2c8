"""Where connections leave from and go through: --source-address and HTTP proxies."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from swiftlab.origin import make_file

from tests.helpers import MiB, live_keys, run_get, sha256_file
from swiftlab.cluster import wait_until


def test_source_address_for_probes_and_range_fetches(cluster, origin, origin_root):
    digest = make_file(origin_root / "s.bin", 16 * MiB, seed=21)
    origin.configure(host_rate=8 * MiB)
    disc = cluster.discovery()
    helper = cluster.node(f"127.0.0.1:{disc.port}", extra=["--allow-private", "--source-address", "127.0.0.5"])
    wait_until(lambda: live_keys(disc.port), 10, "helper registered")
    code, out = run_get(cluster, disc.port, origin.url("/s.bin"), extra=["--source-address", "127.0.0.6"])
    assert code == 0, out
    assert sha256_file(cluster.workdir / "s.bin") == digest
    stats = origin.stats()
    assert set(stats["bytes_by_client"]) == {"127.0.0.5", "127.0.0.6"}, stats
    assert stats["requests_by_client"]["127.0.0.6"] >= 2  # the probe and its own ranges
    assert helper.popen.poll() is None


class _Proxy(BaseHTTPRequestHandler):
    """A minimal forward proxy for absolute-URI GETs (no CONNECT): enough for http:// origins."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.server.clients.append(self.client_address[0])
        target = urlsplit(self.path)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        conn.request("GET", target.path or "/", headers=headers)
        resp = conn.getresponse()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        while block := resp.read(64 * 1024):
            self.wfile.write(block)
        conn.close()
        self.close_connection = True


@pytest.fixture
def proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    server.daemon_threads = True
    server.clients = []
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_http_proxy_from_the_environment(cluster, origin, origin_root, proxy):
    digest = make_file(origin_root / "p.bin", 12 * MiB, seed=22)
    origin.configure(host_rate=8 * MiB)
    env = {"HTTP_PROXY": f"http://127.0.0.1:{proxy.server_address[1]}", "NO_PROXY": "", "no_proxy": ""}
    disc = cluster.discovery()
    cluster.node(f"127.0.0.1:{disc.port}", extra=["--allow-private", "--source-address", "127.0.0.7"],
                 env=env)
    wait_until(lambda: live_keys(disc.port), 10, "helper registered")
    proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/p.bin"),
                       extra=["--source-address", "127.0.0.8"], env=env)
    assert proc.wait(120) == 0, proc.output()
    assert sha256_file(cluster.workdir / "p.bin") == digest
    # both machines went through the proxy (the origin saw only the proxy)
    assert {"127.0.0.7", "127.0.0.8"} <= set(proxy.clients), proxy.clients
    assert set(origin.stats()["bytes_by_client"]) == {"127.0.0.1"}
