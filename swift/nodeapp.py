"""A running node: its job server, its membership in discovery, its downloads.

``NodeApp`` owns every long-lived piece of a node and stops them in order:
first it stops taking new downloads, then unregisters from discovery (so
peers stop sending jobs), then closes its server and every connection.
The prompt and ``--serve-only`` are thin front ends over it.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import download, node_server
from .membership import DiscoveryClient, Membership, Peer
from .sessions import make_session

log = logging.getLogger(__name__)


@dataclass
class NodeConfig:
    discovery: tuple[str, int]
    host: str = "0.0.0.0"
    port: int = 6000
    advertise: str | None = None
    name: str | None = None
    slots: int = 4
    directory: Path = Path(".")
    secret: bytes | None = None
    allow_private: bool = False
    source_address: str | None = None
    peer_timeout: float = 15.0
    heartbeat: float = 3.0
    download_options: dict = field(default_factory=dict)


def advertised_host(bind_host: str, discovery_host: str) -> str:
    """The address peers should use to reach us: never a wildcard.

    For a wildcard bind, the local address of a route towards discovery is
    the one the LAN can reach (a UDP ``connect`` picks it; nothing is sent).
    """
    if bind_host not in ("", "0.0.0.0", "::"):
        return bind_host
    family = socket.AF_INET6 if ":" in discovery_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((discovery_host, 9))
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


@dataclass
class DownloadJob:
    number: int
    url: str
    download: download.Download
    thread: threading.Thread
    report: download.Report | None = None
    error: str | None = None


class NodeApp:
    def __init__(self, config: NodeConfig, *, notice: Callable[[str], None] | None = None):
        self.config = config
        self.notice = notice or (lambda text: log.warning("%s", text))
        self.server = node_server.make_server(
            config.host, config.port, name=config.name or "node", secret=config.secret,
            slots=config.slots,
            session_factory=lambda: make_session(source_address=config.source_address,
                                                 allow_private=config.allow_private))
        self.port = self.server.port
        host = config.advertise or advertised_host(config.host, config.discovery[0])
        self.name = config.name or f"{socket.gethostname()}:{self.port}"
        self.server.name = self.name
        self.server.service.name = self.name  # type: ignore[attr-defined]
        self.discovery = DiscoveryClient(*config.discovery, name=self.name, secret=config.secret)
        self.membership = Membership(self.discovery, host=host, port=self.port, name=self.name,
                                     slots=config.slots, interval=config.heartbeat)
        self._jobs: list[DownloadJob] = []
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        return self.membership.me.key

    def start(self) -> "NodeApp":
        self.server.start()
        self.membership.start()
        return self

    def stop(self) -> None:
        with self._lock:
            running = [j for j in self._jobs if j.thread.is_alive()]
        for job in running:
            job.download.cancel()
        for job in running:
            job.thread.join(10)
        self.membership.stop(unregister=True)
        self.server.stop()

    # -- downloads --------------------------------------------------------------------
    def peers(self) -> tuple[list[Peer], str | None]:
        peers, warning = self.membership.peers()
        return [p for p in peers if p.key != self.key], warning

    def start_download(self, url: str, output: Path | None = None,
                       on_end: Callable[[DownloadJob], None] | None = None,
                       **overrides) -> DownloadJob:
        peers, warning = self.peers()
        if warning:
            self.notice(warning)
        if not peers:
            self.notice("no peers known: downloading alone with several connections")
        opts = download.Options(directory=self.config.directory, output=output,
                                local_slots=self.config.slots, peer_timeout=self.config.peer_timeout,
                                source_address=self.config.source_address,
                                secret=self.config.secret, name=self.name,
                                **{**self.config.download_options, **overrides})
        dl = download.Download(url, opts, peers, notice=self.notice)
        with self._lock:
            number = len(self._jobs) + 1
        job = DownloadJob(number, url, dl, threading.Thread(name=f"download-{number}", daemon=True,
                                                             target=lambda: None))

        def body() -> None:
            try:
                job.report = dl.run()
            except download.DownloadError as exc:
                job.error = str(exc)
            except Exception as exc:  # a bug must not take the node down
                log.exception("download #%d failed", number)
                job.error = f"internal error: {exc}"
            if on_end:
                on_end(job)

        job.thread = threading.Thread(target=body, name=f"download-{number}", daemon=True)
        with self._lock:
            self._jobs.append(job)
        job.thread.start()
        return job

    def jobs(self) -> list[DownloadJob]:
        with self._lock:
            return list(self._jobs)
