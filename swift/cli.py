"""Command lines of ``discovery.py`` and ``node.py`` (also ``swift-discovery``/``swift-node``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__, auth, discovery_server, download
from .checksums import parse_checksum
from .membership import DiscoveryClient, DiscoveryError, Peer, parse_hostport

log = logging.getLogger("swift")

NO_SECRET_WARNING = ("no shared secret (--secret-file): anyone who can reach this {what} "
                     "can use it")


def _setup_logging(verbose: int, quiet: int, default: int) -> None:
    level = default - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(logging.DEBUG, min(level, logging.CRITICAL)),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # urllib3 logs every retry and connection at INFO/DEBUG: far too chatty
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, level))


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("ib").rstrip("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _load_secret(path: str | None, what: str) -> bytes | None:
    path = path or os.environ.get("SWIFT_SECRET_FILE")
    if not path:
        log.warning(NO_SECRET_WARNING.format(what=what))
        return None
    return auth.load_secret(path)


def _install_stop_signals(stop: threading.Event, raise_in_main: bool = False) -> None:
    def handler(signum, frame):
        stop.set()
        if raise_in_main:
            raise SystemExit(0)
    signal.signal(signal.SIGTERM, handler)
    if raise_in_main:
        # the prompt turns Ctrl-C into "clear the line"; make sure it arrives
        # even if our parent shell ignored SIGINT for background jobs
        signal.signal(signal.SIGINT, signal.default_int_handler)
    else:
        signal.signal(signal.SIGINT, handler)


# -- discovery ----------------------------------------------------------------------------
def discovery_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
                                     description="swift discovery: tracks which nodes are alive")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000; 0 = any free port)")
    parser.add_argument("--lease", type=float, default=discovery_server.DEFAULT_LEASE,
                        help="seconds a node stays listed without a heartbeat (default %(default)s)")
    parser.add_argument("--secret-file", help="shared secret file (or SWIFT_SECRET_FILE)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="count", default=0)
    parser.add_argument("--version", action="version", version=f"swift {__version__}")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet, logging.INFO)
    try:
        secret = _load_secret(args.secret_file, "discovery")
        srv = discovery_server.make_server(args.host, args.port, secret=secret, lease=args.lease)
    except (OSError, ValueError, auth.SecretError) as exc:
        print(f"discovery: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    _install_stop_signals(stop)
    srv.start()
    print(f"swift discovery listening on {args.host}:{srv.port}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        srv.stop()
    log.info("discovery stopped")
    return 0


# -- node -------------------------------------------------------------------------------------
def _node_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="swift node: download with the help of peers")
    p.add_argument("--discovery", default=os.environ.get("SWIFT_DISCOVERY", "127.0.0.1:5000"),
                   help="discovery HOST:PORT (default $SWIFT_DISCOVERY, else 127.0.0.1:5000)")
    p.add_argument("--host", default="0.0.0.0", help="address the job server listens on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=6000, help="job server port (default 6000; 0 = any free port)")
    p.add_argument("--advertise", help="address peers use to reach this node (default: the address "
                                       "facing discovery)")
    p.add_argument("--name", help="a name for this node in peer lists (default HOST:PORT)")
    p.add_argument("--dir", default=".", help="download directory (default: current directory)")
    p.add_argument("--slots", type=int, default=4,
                   help="concurrent fetch jobs this node serves, and local connections per download (default 4)")
    p.add_argument("--serve-only", action="store_true", help="headless helper: no prompt")
    p.add_argument("--peer-timeout", type=float, default=15.0,
                   help="seconds without a frame before a peer's job is reassigned (default 15)")
    p.add_argument("--source-address", help="local IP address outgoing HTTP connections leave from")
    p.add_argument("--allow-private", action="store_true",
                   help="let peers' fetch jobs reach loopback/private addresses (off by default)")
    p.add_argument("--secret-file", help="shared secret file (or SWIFT_SECRET_FILE)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="count", default=0)
    p.add_argument("--version", action="version", version=f"swift {__version__}")
    sub = p.add_subparsers(dest="command")
    g = sub.add_parser("get", help="download one URL and exit (status 0 only if complete and checked)")
    g.add_argument("url")
    g.add_argument("-o", "--output", help="output path (honoured as given)")
    g.add_argument("--checksum", help="verify the file: sha256:HEX (also md5, sha1, sha512)")
    g.add_argument("--force", action="store_true", help="overwrite an existing file")
    g.add_argument("--restart", action="store_true", help="discard a partial download and start over")
    g.add_argument("--report", help="write a JSON report of the download to this file")
    g.add_argument("--no-peers", action="store_true", help="do not ask discovery for peers")
    g.add_argument("--piece-size", type=_size, help=argparse.SUPPRESS)
    sub.add_parser("peers", help="print the live peers and exit")
    d = sub.add_parser("demo", help="self-contained demo on loopback: 1 machine vs 4")
    d.add_argument("--size", type=_size, default=None, help="demo file size (default 192M)")
    d.add_argument("--rate", type=_size, default=None, help="per-machine cap in bytes/s (default 8M)")
    return p


def node_main(argv: list[str] | None = None) -> int:
    args = _node_parser().parse_args(argv)
    one_shot = args.command in ("get", "peers", "demo")
    _setup_logging(args.verbose, args.quiet,
                   logging.WARNING if one_shot or not args.serve_only else logging.INFO)
    if args.command == "demo":
        from . import demo
        return demo.main(size=args.size, rate=args.rate)
    try:
        discovery = parse_hostport(args.discovery, 5000)
    except ValueError as exc:
        print(f"node: bad --discovery: {exc}", file=sys.stderr)
        return 2
    if args.slots < 1 or args.slots > 64:
        print("node: --slots must be between 1 and 64", file=sys.stderr)
        return 2
    try:
        secret = _load_secret(args.secret_file, "node" if not one_shot else "network")
    except (OSError, auth.SecretError) as exc:
        print(f"node: {exc}", file=sys.stderr)
        return 2
    if args.command == "peers":
        return _peers(discovery, secret)
    if args.command == "get":
        return _get(args, discovery, secret)
    return _serve(args, discovery, secret)


def _peers(discovery: tuple[str, int], secret: bytes | None) -> int:
    client = DiscoveryClient(*discovery, name="swift-cli", secret=secret)
    try:
        infos = client.list_peers()
    except DiscoveryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for info in infos:
        print(f"{Peer(info.host, info.port).key}  {info.name}  slots={info.slots}")
    if not infos:
        print("no nodes known", file=sys.stderr)
    return 0


def _get(args, discovery: tuple[str, int], secret: bytes | None) -> int:
    def notice(text: str) -> None:
        print(f"note: {text}", file=sys.stderr, flush=True)

    peers: list[Peer] = []
    if not args.no_peers:
        client = DiscoveryClient(*discovery, name="swift-get", secret=secret)
        try:
            peers = [Peer(i.host, i.port, i.name, i.slots) for i in client.list_peers()]
        except DiscoveryError as exc:
            notice(f"{exc}: downloading alone with several connections")
        else:
            if not peers:
                notice("no peers known: downloading alone with several connections")
    if args.checksum:
        try:
            parse_checksum(args.checksum)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    opts = download.Options(directory=Path(args.dir), output=Path(args.output) if args.output else None,
                            force=args.force, restart=args.restart, checksum=args.checksum,
                            local_slots=args.slots, peer_timeout=args.peer_timeout,
                            piece_size=args.piece_size, source_address=args.source_address,
                            secret=secret, name="swift-get")
    bar = _ProgressBar() if sys.stderr.isatty() else None
    dl = download.Download(args.url, opts, peers, notice=notice,
                           progress=bar.update if bar else None)
    stop = threading.Event()

    def on_signal(signum, frame):
        dl.cancel()
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        report = dl.run()
    except download.DownloadError as exc:
        if bar:
            bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if bar:
        bar.close()
    print(report.summary(), flush=True)
    if args.report:
        Path(args.report).write_text(json.dumps(report.as_dict(), indent=2))
    return 0


class _ProgressBar:
    """A tqdm bar (bytes, rate, ETA) fed from the download's progress callback."""

    def __init__(self):
        from tqdm import tqdm
        self._tqdm = tqdm
        self.bar = None
        self.last = 0

    def update(self, done: int, total: int | None) -> None:
        if self.bar is None:
            self.bar = self._tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                  file=sys.stderr, dynamic_ncols=True, leave=False)
        self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _serve(args, discovery: tuple[str, int], secret: bytes | None) -> int:
    from .nodeapp import NodeApp, NodeConfig
    from .prompt import run_prompt

    def notice(text: str) -> None:
        print(f"note: {text}", flush=True)

    config = NodeConfig(discovery=discovery, host=args.host, port=args.port, advertise=args.advertise,
                        name=args.name, slots=args.slots, directory=Path(args.dir), secret=secret,
                        allow_private=args.allow_private, source_address=args.source_address,
                        peer_timeout=args.peer_timeout)
    try:
        app = NodeApp(config, notice=notice)
    except OSError as exc:
        print(f"node: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    if not args.serve_only:
        # the prompt takes Ctrl-C over once it runs; until then, ignore it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    app.start()
    print(f"swift node {app.name} listening on {args.host}:{app.port} "
          f"(advertised as {app.key})", flush=True)
    try:
        if args.serve_only:
            _install_stop_signals(stop)
            while not stop.wait(1.0):
                pass
        else:
            _install_stop_signals(stop, raise_in_main=True)
            run_prompt(app, stop)
    finally:
        app.stop()
    return 0
