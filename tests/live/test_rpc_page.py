"""The node's live page in a real browser: headless Chromium, driven over its DevTools protocol.

Skips where Chromium is missing (``.ci/run`` installs Debian's ``chromium``).
With ``SWIFT_PAGE_SCREENSHOT=PATH`` the test also saves what the page showed
(``docs/rpc-page.png`` is made that way).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
from pathlib import Path

import aria2p
import pytest
import websocket

from swiftlab.cluster import Cluster, wait_until
from swiftlab.origin import OriginServer, make_file

from tests.helpers import MiB, start_helpers

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="needs chromium (apt-get install chromium)")

SECRET = "page-s3cret"
#: The file's name is markup: the page must show it as text.
HOSTILE_NAME = "<img src=x onerror=document.title='owned'>.bin"


class DevTools:
    """A page in the browser, over the DevTools protocol (one WebSocket, commands by id)."""

    def __init__(self, url: str):
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # events in between are skipped; each recv is bounded by the timeout
            reply = json.loads(self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def eval(self, expression: str):
        got = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return got["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def open_page(cluster: Cluster, url: str, profile: Path) -> DevTools:
    browser = cluster.start([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--no-first-run", "--disable-extensions", "--remote-debugging-port=0",
                             "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}",
                             "--window-size=1100,900", url], name="chromium")
    endpoint = browser.wait_for(r"DevTools listening on (ws://127\.0\.0\.1:\d+/\S+)", timeout=60).group(1)
    root = DevTools(endpoint)
    try:
        targets = root.send("Target.getTargets")["targetInfos"]
    finally:
        root.close()
    [page] = [t for t in targets if t["type"] == "page"]
    port = endpoint.split(":")[2].split("/")[0]
    return DevTools(f"ws://127.0.0.1:{port}/devtools/page/{page['targetId']}")


def test_the_page_names_downloads_and_helpers_and_its_buttons_work(tmp_path):
    root = tmp_path / "origin"
    root.mkdir()
    make_file(root / "movie.bin", 24 * MiB, seed=71)
    make_file(root / "hostile.bin", 64 * 1024, seed=72)
    origin = OriginServer(root, host="127.0.0.1", port=0).start()
    # about 1 MiB/s over the node's and the helper's connections: the download is
    # still running when the buttons are clicked, however slow the machine is
    origin.configure(conn_rate=128 * 1024)
    try:
        (tmp_path / "work").mkdir()
        with Cluster(tmp_path / "work") as cluster:
            disc = cluster.discovery()
            start_helpers(cluster, disc, 1)
            directory = tmp_path / "work" / "requester"
            directory.mkdir()
            node = cluster.node(f"127.0.0.1:{disc.port}", name="requester", directory=directory,
                                extra=["--allow-private", "--enable-rpc", "--rpc-listen-port", "0",
                                       "--rpc-secret", SECRET])
            port = int(node.wait_for(r"JSON-RPC at http://127\.0\.0\.1:(\d+)/").group(1))
            api = aria2p.API(aria2p.Client(host="http://127.0.0.1", port=port, secret=SECRET, timeout=10))
            hostile = api.add_uris([origin.url("/hostile.bin")], {"out": HOSTILE_NAME})
            wait_until(lambda: api.client.tell_status(hostile.gid)["status"] == "complete", 30, "small file")
            movie = api.add_uris([origin.url("/movie.bin")])
            wait_until(lambda: int(api.client.tell_status(movie.gid)["completedLength"]) > 0, 30, "bytes")

            page = open_page(cluster, f"http://127.0.0.1:{port}/#secret={SECRET}", tmp_path / "profile")
            text = lambda: page.eval("document.body.innerText") or ""  # noqa: E731
            wait_until(lambda: "movie.bin" in text() and "helper0" in text(), 30, "the page shows the pool")
            assert HOSTILE_NAME in text(), "a file name is shown as text"
            assert page.eval("document.querySelectorAll('img').length") == 0
            assert page.eval("document.title") != "owned"
            assert page.eval("location.hash") == "", "the secret leaves the address bar"
            wait_until(lambda: page.eval("document.getElementById('live').textContent") == "live", 30,
                       "WebSocket notifications connected")
            helper_rate = ("[...document.querySelectorAll('.sources li')].some("
                           "li => li.textContent.startsWith('helper0') && !li.textContent.endsWith(' at 0 B/s'))")
            wait_until(lambda: page.eval(helper_rate), 30, "the helper's rate measured")
            screenshot = base64.b64decode(page.send("Page.captureScreenshot", format="png")["data"])
            assert screenshot.startswith(b"\x89PNG")
            if os.environ.get("SWIFT_PAGE_SCREENSHOT"):
                Path(os.environ["SWIFT_PAGE_SCREENSHOT"]).write_bytes(screenshot)

            click = "document.querySelector('button.{}[data-gid=\"%s\"]').click() ?? true" % movie.gid
            wait_until(lambda: page.eval(f"!!document.querySelector('button.pause[data-gid=\"{movie.gid}\"]')"),
                       30, "a pause button")
            page.eval(click.format("pause"))
            wait_until(lambda: api.client.tell_status(movie.gid)["status"] == "paused", 30, "paused by the page")
            wait_until(lambda: page.eval(f"!!document.querySelector('button.resume[data-gid=\"{movie.gid}\"]')"),
                       30, "a resume button")
            page.eval(click.format("resume"))
            wait_until(lambda: api.client.tell_status(movie.gid)["status"] in ("active", "complete"), 30,
                       "resumed by the page")
            wait_until(lambda: page.eval(f"!!document.querySelector('button.cancel[data-gid=\"{movie.gid}\"]')"),
                       30, "a cancel button")
            page.eval(click.format("cancel"))
            wait_until(lambda: api.client.tell_status(movie.gid)["status"] == "removed", 30, "cancelled by the page")
            page.close()
    finally:
        origin.stop()
