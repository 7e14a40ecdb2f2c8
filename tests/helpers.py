"""What several test modules share: sizes, digests, privilege checks, and the
few steps every live test takes (start helper nodes, run one ``get``).

Test modules import from here, never from one another (and conftest.py holds
only fixtures), so moving a test file between tiers breaks no other file.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import os
import pty
import signal
import socket
import subprocess
import threading
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from swift.checksums import file_digest
from swift.membership import DiscoveryClient
from swift.storage import ResumeRecord, part_path, record_path
from swiftlab.cluster import program, wait_until

MiB = 1 << 20

#: Hypothesis example counts in the unit tier are written for a thorough run;
#: by default the tier runs this fraction of each (it must stay under 30 s,
#: tests/README.md). ``SWIFT_FUZZ_SCALE=1`` runs every count in full.
FUZZ_SCALE = float(os.environ.get("SWIFT_FUZZ_SCALE") or 0.25)


def examples(thorough: int) -> int:
    """How many hypothesis examples to run for a test written for ``thorough`` of them."""
    return max(20, round(thorough * FUZZ_SCALE))


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def live_keys(port: int) -> set[str]:
    """``host:port`` of every node the discovery on loopback ``port`` lists."""
    client = DiscoveryClient("127.0.0.1", port, name="test", secret=None, timeout=2.0)
    return {f"{p.host}:{p.port}" for p in client.list_peers()}


def start_helpers(cluster, disc, count: int, *, first_ip: int = 2, extra=()):
    """``count`` serve-only helpers, helper i fetching from 127.0.0.(first_ip + i),
    each with its own directory; returns once discovery lists all of them."""
    nodes = []
    for i in range(count):
        d = cluster.workdir / f"helper{i}"
        d.mkdir()
        nodes.append(cluster.node(f"127.0.0.1:{disc.port}", name=f"helper{i}", directory=d,
                                  extra=["--allow-private", "--source-address",
                                         f"127.0.0.{first_ip + i}", *extra]))
    wait_until(lambda: len(live_keys(disc.port)) == count, 10, "helpers registered")
    return nodes


@contextmanager
def prompt_node(cluster, discovery: str, *, extra=(), directory=None,
                name: str = "p", env: dict | None = None) -> Iterator[tuple[object, Callable[..., int]]]:
    """A node with its prompt on a pseudo-terminal, up and showing its intro.

    Yields ``(node, type_)``: ``type_(text, end="\\n")`` types a line (or, with
    ``end=""``, raw keys such as Ctrl-D) and returns how many output lines
    there were before it, for ``node.wait_for(..., start=mark)``.
    """
    master, slave = pty.openpty()
    try:
        node = cluster.node(discovery, serve_only=False, stdin=slave, extra=["--allow-private", *extra],
                            directory=directory, name=name, env=env)
        node.wait_for(r"type a URL to download it", timeout=20)

        def type_(text: str, end: str = "\n") -> int:
            mark = len(node.lines)
            os.write(master, (text + end).encode())
            return mark

        yield node, type_
    finally:
        os.close(master)
        os.close(slave)


def run_get(cluster, disc_port, url, *args, extra=(), timeout=120):
    """One ``node.py get url *args``; returns (exit status, combined output)."""
    proc = cluster.get(f"127.0.0.1:{disc_port}", url, extra=extra, get_extra=args)
    code = proc.wait(timeout)
    return code, proc.output()


def fake_resolver(monkeypatch, answers: dict[str, Callable[[], str | None]]) -> list[str]:
    """Patch socket.getaddrinfo: names in ``answers`` resolve to what the callable
    returns (None: the name does not resolve); IP literals and "localhost" resolve
    for real; any other name fails, so no test ever asks a real DNS server.
    Returns the log of looked-up hosts."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        host = host.decode() if isinstance(host, bytes) else host
        asked.append(host)
        if host in answers:
            ip = answers[host]()
            if ip is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real(ip, port, *args, **kwargs)
        try:
            ipaddress.ip_address(str(host).split("%")[0])
        except ValueError:
            if host != "localhost":
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


# -- safe names (tests of swift.names on every path) ---------------------------------------------
def assert_safe_name(name: str) -> None:
    assert name and name not in (".", "..")
    assert not any(c in name for c in "/\\\x00")
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name), repr(name)
    assert "\u202e" not in name
    assert len(name.encode("utf-8")) <= 255
    assert not name.startswith((".", "-", " ")) and not name.endswith((".", " "))
    assert not name.lower().endswith(".part.swift")


# -- resume records (tests of swift.storage) --------------------------------------------------------
def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".swift-")]


def make_record(**changes) -> ResumeRecord:
    fields = dict(version=1, url="http://127.0.0.1/f", final_url="http://127.0.0.1/g",
                  size=100, etag='"e"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT",
                  done=[(0, 10), (20, 30)])
    fields.update(changes)
    return ResumeRecord(**fields)


def prepare(directory: Path, name: str = "f.iso", data: str = "new") -> tuple[Path, Path]:
    """A partial download of ``directory/name`` with its record; returns (part, final)."""
    final = directory / name
    part = part_path(final)
    part.write_text(data)
    make_record().save(record_path(final))
    return part, final


def have_ipv6() -> bool:
    """Whether this machine's loopback has ::1 (some containers do not)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def self_signed_certificate(directory: Path) -> tuple[str, str]:
    """(certificate, key) PEM files for 127.0.0.1 in ``directory``, made with openssl;
    the test is skipped where openssl is missing."""
    import shutil
    import subprocess

    import pytest
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    return str(directory / "cert.pem"), str(directory / "key.pem")


@contextmanager
def terminal_node(cluster, discovery: str, *, extra=()):
    """A prompt node whose input *and* output are a terminal, read from the master side."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*program("node"), "--discovery", discovery, "--host", "127.0.0.1",
                             "--port", "0", "--dir", str(cluster.workdir), "--allow-private", *extra],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    lock = threading.Lock()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            with lock:
                seen.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def screen() -> str:
        with lock:
            return seen.decode(errors="replace")

    try:
        wait_until(lambda: "type a URL" in screen(), 20, "the prompt")
        yield proc, (lambda text: os.write(master, text.encode())), screen
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        os.close(master)
        reader.join(5)


# -- LAN sharing: machines that share -------------------------------------------------------------
class Machine:
    """A node and the directories that make it one machine (LAN sharing's tests): a ``get``
    run with the machine's state directory hands its file to the machine's node."""

    def __init__(self, cluster, disc, name: str, *, extra=()):
        self.cluster = cluster
        self.name = name
        root = cluster.workdir / name
        self.state, self.dir = root / "state", root / "files"
        self.state.mkdir(parents=True)
        self.dir.mkdir()
        self.env = {"SWIFT_STATE_DIR": str(self.state)}
        self.discovery = f"127.0.0.1:{disc.port}"
        self.node = cluster.node(self.discovery, name=name, directory=self.dir, env=self.env,
                                 extra=["--allow-private", *extra])

    def get(self, url: str, *args: str, timeout: float = 120) -> tuple[int, str, dict]:
        """Run ``get URL ARGS`` on this machine to its end: (exit code, output, report)."""
        report = self.dir / f"report-{len(list(self.dir.glob('report-*')))}.json"
        secret = ["--secret-file", str(self.cluster.secret_file)] if self.cluster.secret_file else []
        proc = self.cluster.start(
            [*node_program(), "--discovery", self.discovery, "--dir", str(self.dir), *secret,
             "get", url, "--report", str(report), *args], name=f"get-{self.name}", env=self.env)
        code = proc.wait(timeout)
        data = json.loads(report.read_text()) if report.exists() else {}
        return code, proc.output(), data

    def start_get(self, url: str, *args: str):
        """Start ``get URL ARGS`` on this machine without peers' help and without waiting."""
        return self.cluster.start(
            [*node_program(), "--discovery", self.discovery, "--dir", str(self.dir), "get", url,
             *args], name=f"{self.name}-get", env=self.env)

    def holdings(self) -> list[dict]:
        """The machine's content index as its files say now, each holding as its JSON record
        with its piece digests (``hashes``: index -> hex) ([] while there is none)."""
        from swift.content_index import ContentIndex
        return [dict(h.to_json(), hashes={str(i): d for i, d in sorted(h.hashes.items())})
                for h in ContentIndex(self.state).holdings()]


def node_program() -> list[str]:
    return program("node")


def origin_bytes(origin, path: str) -> int:
    """Bytes the test origin (``swiftlab.origin``) sent of ``path`` since its last reset."""
    return origin.stats()["bytes_by_path"].get(path, 0)


def offered_bytes(machine: Machine) -> int:
    """What the machine's index says its holdings have written and hashed (0: none yet)."""
    return max((len(h["hashes"]) * h["piece_size"] for h in machine.holdings()), default=0)


def http_objects_in_cycles() -> list[str]:
    """The requests and urllib3 objects the cycle collector finds unreachable now (it frees
    them): with the collector off since a failure (the ``no_collector`` fixture), what
    the failure left in a reference cycle."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                       if type(o).__module__.split(".")[0] in ("requests", "urllib3")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
