"""Shared fixtures: a local origin, clusters of real processes, file helpers."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from swift.cluster import Cluster

MiB = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def have_netns() -> bool:
    if not is_root() or shutil.which("ip") is None or shutil.which("tc") is None:
        return False
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture
def origin_root(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    root.mkdir()
    return root


@pytest.fixture
def origin(origin_root: Path):
    from swift.origin import OriginServer
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


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """Tests talk to loopback directly, whatever proxy the machine has set."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
