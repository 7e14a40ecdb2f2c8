"""swift.rpc.aria2: aria2's methods and fields over a node, driven with a fake node."""

from __future__ import annotations

from pathlib import Path

import pytest

from swift.errors import ErrorCode
from swift.membership import Peer
from swift.nodeapp import AlreadyDownloading, DownloadDetail, DownloadStatus
from swift.rpc.aria2 import (Aria2, aria2_checksum, aria2_status, bitfield, gid_of, notification_for,
                             number_of, piece_length)
from swift.rpc.jsonrpc import Dispatcher, RpcError

MiB = 1 << 20


class FakeReport:
    def __init__(self, size: int):
        self.size, self.path, self.bytes_by_source = size, "/d/file.bin", {"local": size}


class FakeEntry:
    """A download entry as ``NodeApp`` hands it out: status, detail and the controls."""

    def __init__(self, number: int, url: str, state: str = "running", done: int = 0, size: int = 4 * MiB):
        self.number, self.url, self.output, self.directory = number, url, None, Path("/d")
        self.state, self.done, self.size = state, done, size
        self.resumed = 0  # bytes this run found on disk (DownloadStatus.fetched leaves them out)
        self.report = FakeReport(size) if state == "done" else None
        self.error = "origin said 404" if state == "failed" else None
        self.error_code = ErrorCode.ACCESS_DENIED if state == "failed" else None
        self.limit_rate, self.profile = None, None
        self.ranges = [(0, done)] if done else []
        self.by_source = {"local": done // 2, "10.0.0.2:6000": done - done // 2} if done else {}

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running")

    @property
    def paused(self) -> bool:
        return self.state == "paused"

    def status(self) -> DownloadStatus:
        return DownloadStatus(self.state, self.done, self.size, 0.0, None, self.error,
                              max(0, self.done - self.resumed))

    def detail(self) -> DownloadDetail:
        return DownloadDetail(self.ranges, self.by_source, {"10.0.0.2:6000": "helper-b"},
                         Path("/d/file.bin"), self.directory)

    def pause(self) -> bool:
        if not self.running:
            return False
        self.state = "paused"
        return True

    def resume(self) -> bool:
        if self.state not in ("paused", "cancelled"):
            return False
        self.state = "running"
        return True

    def cancel(self) -> bool:
        if not self.running:
            return False
        self.state = "cancelled"
        return True


class FakeNode:
    name, key, directory, limit_rate = "node-a", "10.0.0.1:6000", Path("/d"), None

    def __init__(self):
        self.entries: list[FakeJob] = []
        self.started: list[tuple] = []
        self.listeners = []
        self.peer_asks = 0

    def start_download(self, url, output=None, **overrides):
        for entry in self.entries:
            if entry.url == url and entry.running:
                raise AlreadyDownloading(entry)  # type: ignore[arg-type]
        self.started.append((url, output, overrides))
        entry = FakeEntry(len(self.entries) + 1, url)
        self.entries.append(entry)
        return entry

    def downloads(self):
        return list(self.entries)

    def download(self, number):
        return self.entries[number - 1] if 0 < number <= len(self.entries) else None

    def peers(self):
        self.peer_asks += 1
        return [Peer("10.0.0.2", 6000, "helper-b", 4)], None

    def add_listener(self, fn):
        self.listeners.append(fn)

    def remove_listener(self, fn):
        self.listeners.remove(fn)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def node():
    return FakeNode()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def rpc(node, clock):
    return Aria2(node, clock=clock)


def run(rpc: Aria2, method: str, *params):
    return rpc.methods()[f"aria2.{method}"](list(params))


# -- pure helpers ---------------------------------------------------------------------
def test_a_gid_is_the_download_number_as_16_hex_digits_and_back():
    assert gid_of(3) == "0000000000000003"
    assert number_of("00000000000000ff") == 255
    for bad in ("3", "zz00000000000000", 3, None, "0" * 17):
        with pytest.raises(RpcError, match="Invalid GID"):
            number_of(bad)


def test_swift_states_map_to_aria2_statuses():
    assert [aria2_status(s) for s in ("starting", "running", "paused", "done", "failed", "cancelled")] == \
        ["active", "active", "paused", "complete", "error", "removed"]
    assert aria2_status("paused", removed=True) == "removed"


def test_events_map_to_aria2_notifications():
    assert notification_for("started", False) == "aria2.onDownloadStart"
    assert notification_for("resumed", False) == "aria2.onDownloadStart"
    assert notification_for("ended", True) == "aria2.onDownloadComplete"
    assert notification_for("ended", False) == "aria2.onDownloadError"
    assert notification_for("paused", False) == "aria2.onDownloadPause"
    assert notification_for("cancelled", False) == "aria2.onDownloadStop"
    assert notification_for("notice", False) is None


def test_a_piece_bit_is_set_only_when_the_whole_piece_is_written():
    L = 4
    # pieces: [0,4) [4,8) [8,12) [12,14): the last one is short
    assert bitfield([(0, 4)], 14, L) == "80"
    assert bitfield([(0, 7)], 14, L) == "80"
    assert bitfield([(1, 14)], 14, L) == "70"
    assert bitfield([(0, 14)], 14, L) == "f0"
    assert bitfield([(0, 4), (8, 12)], 14, L) == "a0"
    assert bitfield([], 40, L) == "0000"
    assert bitfield([], 0, L) == ""


def test_the_piece_length_doubles_to_keep_the_map_small():
    assert piece_length(10 * MiB) == 256 * 1024
    assert piece_length(1024 * MiB) == 256 * 1024
    assert piece_length(1024 * MiB + 1) == 512 * 1024


def test_aria2_checksums_become_swifts():
    assert aria2_checksum("sha-256=" + "a" * 64) == "sha256:" + "a" * 64
    assert aria2_checksum("md5=" + "0" * 32) == "md5:" + "0" * 32
    for bad in ("sha-256:" + "a" * 64, "sha-256=abc", "crc32=00000000"):
        with pytest.raises(RpcError, match="bad checksum"):
            aria2_checksum(bad)


# -- methods ----------------------------------------------------------------------------
def test_add_uri_starts_a_download_and_returns_its_gid(rpc, node):
    gid = run(rpc, "addUri", ["http://example.org/a b.iso"])
    assert gid == "0000000000000001"
    assert node.started == [("http://example.org/a%20b.iso", None, {})]


def test_add_uri_takes_aria2s_options(rpc, node, tmp_path):
    run(rpc, "addUri", ["http://example.org/x"], {
        "dir": str(tmp_path / "sub"), "out": "y.bin", "header": ["X-A: 1", "Authorization: Bearer t"],
        "checksum": "sha-256=" + "b" * 64, "max-download-limit": "1M", "split": "16",
        "allow-overwrite": "true"})
    url, output, over = node.started[0]
    assert output == tmp_path / "sub" / "y.bin" and (tmp_path / "sub").is_dir()
    assert over["directory"] == tmp_path / "sub"
    assert over["checksum"] == "sha256:" + "b" * 64 and over["limit_rate"] == MiB and over["force"]
    assert over["profile"].headers == (("X-A", "1"), ("Authorization", "Bearer t"))


def test_add_uri_refuses_what_it_cannot_do_with_a_clear_message(rpc, node):
    cases = [
        ((["http://a/x", "http://b/x"],), "one URI per download"),
        ((["ftp://a/x"],), "unsupported URL scheme"),
        ((["http://a/x"], {"bt-tracker": "x"}), "does not support the option 'bt-tracker'"),
        ((["http://a/x"], {"out": "../../etc/passwd"}), "out must be a file name"),
        ((["http://a/x"], {"header": "NoColon"}), "header"),
        ((["http://a/x"], {"max-download-limit": "fast"}), "bad max-download-limit"),
    ]
    for params, words in cases:
        with pytest.raises(RpcError, match=words):
            run(rpc, "addUri", *params)
    with pytest.raises(RpcError):
        run(rpc, "addUri", "http://a/x")  # not an array
    assert node.started == []


def test_the_same_url_again_names_the_download_that_has_it(rpc):
    run(rpc, "addUri", ["http://example.org/x"])
    with pytest.raises(RpcError, match="GID 0000000000000001"):
        run(rpc, "addUri", ["http://example.org/x"])


def test_tell_status_gives_aria2s_fields_as_decimal_strings(rpc, node, clock):
    node.entries.append(FakeEntry(1, "http://user:pw@example.org/f", done=2 * MiB))
    st = run(rpc, "tellStatus", "0000000000000001")
    assert st["gid"] == "0000000000000001" and st["status"] == "active"
    assert st["totalLength"] == str(4 * MiB) and st["completedLength"] == str(2 * MiB)
    assert st["numPieces"] == "16" and st["pieceLength"] == str(MiB // 4) and st["bitfield"] == "ff00"
    assert st["connections"] == "2" and st["dir"] == "/d"
    assert st["files"][0]["uris"][0]["uri"] == "http://user:***@example.org/f"
    assert all(isinstance(v, str) for k, v in st.items() if k != "files")
    assert run(rpc, "tellStatus", "0000000000000001", ["gid", "status"]) == \
        {"gid": "0000000000000001", "status": "active"}


def test_the_speed_is_measured_between_looks(rpc, node, clock):
    entry = FakeEntry(1, "http://example.org/f", done=MiB)
    node.entries.append(entry)
    assert run(rpc, "tellStatus", gid_of(1))["downloadSpeed"] == "0"
    clock.now += 1.0
    entry.done += MiB
    assert run(rpc, "tellStatus", gid_of(1))["downloadSpeed"] == str(MiB)


def test_a_resumed_downloads_speed_counts_only_what_this_run_fetched(rpc, node, clock):
    entry = FakeEntry(1, "http://example.org/f", done=MiB, size=16 * MiB)
    node.entries.append(entry)
    run(rpc, "tellStatus", gid_of(1))
    clock.now += 1.0
    entry.done = 2 * MiB
    assert run(rpc, "tellStatus", gid_of(1))["downloadSpeed"] == str(MiB)
    entry.state = "paused"
    clock.now += 5.0
    assert run(rpc, "tellStatus", gid_of(1))["downloadSpeed"] == "0"
    entry.state, entry.done, entry.resumed = "starting", 0, 2 * MiB  # a new run, before its progress
    clock.now += 1.0
    assert run(rpc, "tellStatus", gid_of(1))["downloadSpeed"] == "0"
    entry.state, entry.done = "running", 2 * MiB + MiB // 2  # half a MiB fetched in a second
    clock.now += 1.0
    assert run(rpc, "tellStatus", gid_of(1))["downloadSpeed"] == str(MiB // 2)
    assert run(rpc, "getGlobalStat")["downloadSpeed"] == str(MiB // 2)


def test_the_rate_meter_starts_over_when_a_counter_goes_back():
    from swift.rpc.aria2 import RateMeter
    meter = RateMeter()
    assert meter.rate("k", 4 * MiB, 0.0) == 0.0
    assert meter.rate("k", 5 * MiB, 1.0) == MiB
    assert meter.rate("k", 0, 1.5) == 0.0  # a new run: the old samples are gone
    assert meter.rate("k", MiB, 2.5) == MiB


def test_an_unknown_gid_is_not_found(rpc):
    with pytest.raises(RpcError, match="GID 0000000000000007 is not found"):
        run(rpc, "tellStatus", "0000000000000007")


def test_lists_split_downloads_by_status_as_aria2_does(rpc, node):
    node.entries += [FakeEntry(1, "http://e/1"), FakeEntry(2, "http://e/2", "paused"),
                   FakeEntry(3, "http://e/3", "done", 4 * MiB), FakeEntry(4, "http://e/4", "failed"),
                   FakeEntry(5, "http://e/5", "cancelled")]
    gids = lambda got: [d["gid"][-1] for d in got]  # noqa: E731
    assert gids(run(rpc, "tellActive")) == ["1"]
    assert gids(run(rpc, "tellWaiting", 0, 10)) == ["2"]
    assert gids(run(rpc, "tellStopped", 0, 10)) == ["3", "4", "5"]
    assert gids(run(rpc, "tellStopped", -1, 2)) == ["5", "4"]
    failed = run(rpc, "tellStatus", gid_of(4))
    assert failed["errorCode"] == "3" and failed["errorMessage"] == "origin said 404"
    with pytest.raises(RpcError, match="offset and a count"):
        run(rpc, "tellStopped", "0", 1)
    stat = run(rpc, "getGlobalStat")
    assert (stat["numActive"], stat["numWaiting"], stat["numStopped"]) == ("1", "1", "3")


def test_pause_unpause_and_remove_drive_the_download(rpc, node):
    node.entries.append(FakeEntry(1, "http://e/1"))
    assert run(rpc, "pause", gid_of(1)) == gid_of(1)
    assert run(rpc, "tellStatus", gid_of(1))["status"] == "paused"
    with pytest.raises(RpcError, match="cannot be paused now"):
        run(rpc, "forcePause", gid_of(1))
    assert run(rpc, "unpause", gid_of(1)) == gid_of(1)
    with pytest.raises(RpcError, match="cannot be unpaused now"):
        run(rpc, "unpause", gid_of(1))
    assert run(rpc, "remove", gid_of(1)) == gid_of(1)
    assert run(rpc, "tellStatus", gid_of(1))["status"] == "removed"
    with pytest.raises(RpcError, match="cannot be removed now"):
        run(rpc, "forceRemove", gid_of(1))


def test_removing_a_paused_download_shows_it_removed_and_it_cannot_be_unpaused(rpc, node):
    node.entries.append(FakeEntry(1, "http://e/1", "paused"))
    run(rpc, "remove", gid_of(1))
    assert run(rpc, "tellStatus", gid_of(1))["status"] == "removed"
    with pytest.raises(RpcError):
        run(rpc, "unpause", gid_of(1))


def test_a_download_result_is_removed_only_once_stopped(rpc, node):
    node.entries += [FakeEntry(1, "http://e/1"), FakeEntry(2, "http://e/2", "done", MiB)]
    with pytest.raises(RpcError, match="Could not remove download result"):
        run(rpc, "removeDownloadResult", gid_of(1))
    assert run(rpc, "removeDownloadResult", gid_of(2)) == "OK"
    assert [d["gid"] for d in run(rpc, "tellStopped", 0, 10)] == []
    with pytest.raises(RpcError, match="not found"):
        run(rpc, "tellStatus", gid_of(2))


def test_get_peers_names_each_source_with_its_bytes(rpc, node):
    node.entries.append(FakeEntry(1, "http://e/1", done=2 * MiB))
    peers = run(rpc, "getPeers", gid_of(1))
    assert [(p["name"], p["ip"], p["port"], p["completedLength"]) for p in peers] == \
        [("helper-b", "10.0.0.2", "6000", str(MiB)), ("node-a", "", "", str(MiB))]


def test_options_show_headers_without_their_secret_values(rpc, node):
    run(rpc, "addUri", ["http://e/1"], {"header": ["Authorization: Bearer t0k", "X-A: 1"]})
    node.entries[0].profile = node.started[0][2]["profile"]
    assert run(rpc, "getOption", gid_of(1))["header"] == ["Authorization: <secret>", "X-A: 1"]


def test_change_option_says_what_to_do_instead(rpc, node):
    node.entries.append(FakeEntry(1, "http://e/1"))
    assert run(rpc, "changeOption", gid_of(1), {}) == "OK"
    with pytest.raises(RpcError, match="remove it and add it again"):
        run(rpc, "changeOption", gid_of(1), {"max-download-limit": "1M"})


def test_the_pool_is_asked_of_discovery_at_most_every_few_seconds(rpc, node, clock):
    pool = rpc.methods()["swift.getPool"]([])
    assert pool["peers"] == [{"name": "helper-b", "key": "10.0.0.2:6000", "slots": "4"}]
    rpc.methods()["swift.getPool"]([])
    assert node.peer_asks == 1
    clock.now += 5
    rpc.methods()["swift.getPool"]([])
    assert node.peer_asks == 2


def test_node_events_become_notifications(node, clock):
    sent = []
    rpc = Aria2(node, clock=clock, notify=lambda method, params: sent.append((method, params)))
    rpc.attach()
    entry = FakeEntry(2, "http://e/2", "done", MiB)
    for listener in node.listeners:
        listener(entry, "started", "http://e/2")
        listener(entry, "notice", "x")
        listener(entry, "ended", "done: ...")
    rpc.detach()
    assert sent == [("aria2.onDownloadStart", [{"gid": gid_of(2)}]),
                    ("aria2.onDownloadComplete", [{"gid": gid_of(2)}])]
    assert node.listeners == []


def test_every_method_through_the_dispatcher_answers_json(rpc, node):
    node.entries.append(FakeEntry(1, "http://e/1", done=MiB))
    d = Dispatcher(rpc.methods())
    for method in d.names:
        if method == "system.multicall":
            continue
        for params in ([], [gid_of(1)], [gid_of(1), 0, 1], [None]):
            try:
                d.call(method, params)
            except RpcError as exc:
                assert exc.message and "\n" not in exc.message


def test_paths_are_absolute_as_aria2_gives_them_when_the_nodes_directory_is_relative(rpc, node):
    import os
    entry = FakeEntry(1, "http://example.org/f", done=MiB)
    entry.directory = Path(".")  # -d left at its default
    entry.detail = lambda: DownloadDetail([(0, MiB)], {}, {}, Path("f.bin"), Path("."))
    node.entries.append(entry)
    node.directory = Path(".")
    st = run(rpc, "tellStatus", "0000000000000001")
    here = os.getcwd()
    assert st["dir"] == here and st["files"][0]["path"] == os.path.join(here, "f.bin"), st
    assert run(rpc, "getFiles", "0000000000000001")[0]["path"] == os.path.join(here, "f.bin")
    assert run(rpc, "getOption", "0000000000000001")["dir"] == here
    assert run(rpc, "getGlobalOption")["dir"] == here
