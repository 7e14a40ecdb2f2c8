"""Shared fixtures: a local origin, clusters of real processes, tmpfs mounts (helpers: helpers.py)."""

from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path

import pytest

from swiftlab.cluster import Cluster

from .helpers import is_root


@pytest.fixture(autouse=True, scope="session")
def state_dir(tmp_path_factory):
    """With a secret every node and discovery keeps a TLS key in its state directory: during the
    tests (and in every process they start) that is a temporary one, never the user's."""
    before = os.environ.get("SWIFT_STATE_DIR")
    os.environ["SWIFT_STATE_DIR"] = str(tmp_path_factory.mktemp("swift-state"))
    yield Path(os.environ["SWIFT_STATE_DIR"])
    if before is None:
        os.environ.pop("SWIFT_STATE_DIR", None)
    else:
        os.environ["SWIFT_STATE_DIR"] = before


@pytest.fixture(autouse=True, scope="session")
def no_multicast_on_this_machine():
    """No test multicasts on the machine's real interfaces: mDNS (swift.mdns) is off in
    every process the tests start, unless a test in its own network namespaces turns
    it on for its children there (``SWIFT_NO_ZEROCONF=""``, the namespace tier's
    test_zeroconf.py)."""
    before = os.environ.get("SWIFT_NO_ZEROCONF")
    os.environ["SWIFT_NO_ZEROCONF"] = "1"
    yield
    if before is None:
        os.environ.pop("SWIFT_NO_ZEROCONF", None)
    else:
        os.environ["SWIFT_NO_ZEROCONF"] = before


@pytest.fixture
def tmpfs(tmp_path):
    """Mount small tmpfs file systems (root only); each is unmounted at the end."""
    if not is_root():
        pytest.skip("needs root to mount a tmpfs")
    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]).returncode:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)])


@pytest.fixture
def origin_root(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    root.mkdir()
    return root


@pytest.fixture
def origin(origin_root: Path):
    from swiftlab.origin import OriginServer
    server = OriginServer(origin_root, host="127.0.0.1", port=0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    with Cluster(work) as c:
        yield c


@pytest.fixture
def two_machines(cluster):
    """Two sharing members, ``alpha`` and ``beta`` (``helpers.Machine``: a node with its own
    state and download directories), registered with one discovery."""
    from swiftlab.cluster import wait_until
    from .helpers import Machine, live_keys
    disc = cluster.discovery()
    machines = [Machine(cluster, disc, "alpha"), Machine(cluster, disc, "beta")]
    wait_until(lambda: len(live_keys(disc.port)) == 2, 10, "both nodes registered")
    return machines


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """Tests talk to loopback directly, whatever proxy the machine has set."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")


@pytest.fixture
def no_collector():
    """The cycle collector off for the test: what is freed meanwhile is freed by reference
    counting alone (so a reference cycle shows as an object that stays alive)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
