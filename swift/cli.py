"""Command lines of ``discovery.py`` and ``node.py`` (also ``swift-discovery``/``swift-node``).

Rules every command line here keeps:

* Every option value is checked by its argparse type (:mod:`swift.units`,
  :mod:`swift.addresses`): a bad value is a one-line usage error and exit
  status 2, never a traceback.
* Options go before or after the subcommand (``node.py get URL --dir D -q``):
  each subcommand repeats the options that apply to it.
* Exit status: 0 done, 1 failed, 2 usage error, 130 Ctrl-C (128 + SIGINT),
  143 SIGTERM (128 + SIGTERM) for the one-shot commands and the prompt. The
  daemons (``discovery.py``, ``node.py --serve-only``) take SIGTERM as their
  normal stop and exit 0 after it, as service managers expect; Ctrl-C
  stops them with 130.
* A signal ends any program within two seconds: SIGINT and SIGTERM raise
  in the main thread (whose waits are all interruptible), running downloads
  are cancelled (``Download.cancel()``) and given a bounded grace to save
  their record, and the node's stop keeps to a deadline.
* ``-q`` prints nothing on success (errors still go to stderr); ``-v`` logs
  each HTTP request's status line with the name of the machine that made it.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from . import __version__, auth
from .addresses import format_hostport, parse_host, parse_hostport, parse_port
from .errors import ErrorCode, SwiftError
from .getargs import add_get_arguments, checked_url, split_habit, tries_of, unrecognized
from .http.profile import INSECURE_WARNING, profile_from_args
from .names import output_path
from .http.retry import Retry
from .http.url import redact_url
from .http.timeouts import DEFAULT_TIMEOUT
from .units import human_bytes, human_rate, parse_count, parse_rate, parse_seconds, parse_size

if TYPE_CHECKING:  # the engine and the node app load only when a command needs them
    from . import download
    from .membership import Peer
    from .engine.rate_limit import RateLimit

    #: the helpers of a ``get``, or what gives them once its probe is done
    PeerSource = list[Peer] | Callable[[threading.Event], list[Peer]]

log = logging.getLogger("swift")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT     # 130
EXIT_TERMINATED = 128 + signal.SIGTERM     # 143
DEFAULT_DISCOVERY_PORT = 5000
#: aria2's ``--rpc-listen-port`` default (swift.rpc.server.DEFAULT_PORT).
DEFAULT_RPC_PORT = 6800
#: Seconds a cancelled download gets to stop its workers and save its record
#: before the program exits anyway; the engine notices a cancel within ~1 s,
#: and the whole exit must stay under two seconds.
CANCEL_GRACE = 1.5
#: Seconds between the main thread's looks at a running download (signals are
#: handled at once anyway; ``-o -`` streams what has arrived at this pace).
TICK = 0.1
#: --slots bounds: at least one connection; 64 is far beyond what one link
#: needs and keeps a helper's thread count small.
MAX_SLOTS = 64

#: Said once at start, one line: daemons log it, one-shot commands print it.
NO_SECRET_SERVER = "no shared secret (--secret-file): anyone who can reach this {what} can use it"
NO_SECRET_CLIENT = "no shared secret (--secret-file): discovery and peers are not authenticated"


class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread like KeyboardInterrupt for SIGINT."""


def _raise_terminated(signum, frame) -> None:
    # Once: the process is already stopping, and a second SIGTERM (a supervisor's
    # and `timeout`'s, say) must not break into the clean-up that the first started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _install_signals() -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated, in the main thread.

    SIGINT is set explicitly: a shell that starts a background job ignores
    SIGINT for it, and Ctrl-C must still reach us.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)
    # a parent may have started us with both held back (swiftlab.cluster does,
    # for a moment); a held signal would never reach the handlers above
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit 2): the message and where help is.

    An unknown option is reported by the parser it was meant for (``node.py
    get: error: ...`` for one after ``get``), with the nearest known option
    (:func:`swift.getargs.unrecognized`).
    """

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        words = sys.argv[1:] if args is None else list(args)
        habit = split_habit(words) if "-s" in self._option_string_actions else None  # noqa: SLF001
        if habit:  # before argparse, which would take the number for a URL or a subcommand
            self._parser_of(words).error(habit)
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            target = self._subcommand_parser(namespace) or self
            if target is not self:  # the node's own options (--enable-rpc) are no typos of get's
                own = {s for action in target._actions for s in action.option_strings}  # noqa: SLF001
                shown = {s for action in self._actions if action.help != argparse.SUPPRESS  # noqa: SLF001
                         for s in action.option_strings}  # not get's, hidden to come before it
                node = [word.split("=", 1)[0] for word in extras
                        if word.split("=", 1)[0] in shown - own]
                if node:
                    command = target.prog.rsplit(" ", 1)[-1]
                    target.error(f"{node[0]} is an option of the node (without a subcommand); "
                                 f"{command} does not take it")
            target.error(unrecognized(target, extras))
        return namespace

    def _parser_of(self, words: list[str]) -> argparse.ArgumentParser:
        """The parser of the first subcommand named in ``words`` (before any parsing), else this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001 - no public way
                return next((action.choices[w] for w in words if w in action.choices), self)
        return self

    def _subcommand_parser(self, namespace: argparse.Namespace) -> "argparse.ArgumentParser | None":
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001 - no public way
                return action.choices.get(getattr(namespace, action.dest, None) or "")
        return None


# -- argparse types ----------------------------------------------------------------------
def _type(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    """An argparse type from a parser raising ValueError: its message becomes the usage error."""
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = name
    return convert


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None


def _proxy(text: str) -> str:
    """A proxy URL: http:// or https://, with a host (``http://proxy.lan:3128``)."""
    parts = urlsplit(text.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a proxy URL: {text!r} (expected http://HOST:PORT)")
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f"not a proxy URL: {text!r} ({exc})") from None
    return text.strip()


def _use_proxy(url: str | None) -> None:
    """``--proxy``: every HTTP request of this process goes through ``url``.

    requests reads the proxy from the environment (``HTTP_PROXY``,
    ``HTTPS_PROXY``, lower case first, ``NO_PROXY`` still honoured); the
    option sets those for this process, as curl's ``--proxy`` overrides them.
    """
    if url:
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            os.environ[name] = url


def _origin(text: str) -> str:
    """A web origin, ``SCHEME://HOST[:PORT]`` (``http://127.0.0.1:8080``, ``chrome-extension://ID``)."""
    parts = urlsplit(text.strip())
    if not parts.scheme or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"not an origin: {text!r} (expected SCHEME://HOST[:PORT], "
                         f"e.g. http://127.0.0.1:8080)")
    return text.strip().rstrip("/")


def _nonzero_size(text: str) -> int:
    """The demo's file size: :func:`parse_size`, but not 0 (an empty file shows nothing)."""
    size = parse_size(text)
    if size == 0:
        raise ValueError(f"the demo file cannot be empty ({text!r}); give e.g. 16M")
    return size


def _advertised(text: str) -> str:
    """``--advertise``: :func:`parse_host`, but never 0.0.0.0 or ``::``, where no peer can connect."""
    host = parse_host(text)
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False  # a name
    if unspecified:
        raise ValueError(f"{host} is no address a peer can connect to; give this machine's LAN "
                         f"address, or leave --advertise out to use the one facing discovery")
    return host


def _node_name(text: str) -> str:
    """``--name``: what a hello may carry (``protocol.NAME``): at most MAX_NAME characters,
    none a control character (it goes into log lines)."""
    from .protocol import MAX_NAME, NAME, ProtocolError
    try:
        return NAME("name", text)
    except ProtocolError:
        shown = repr(text if len(text) <= 40 else text[:40] + "...")
        raise ValueError(f"not a node name: {shown} (at most {MAX_NAME} characters, none of them "
                         f"a control character)") from None


PORT = _type(parse_port, "port")
ORIGIN = _type(_origin, "origin")
PROXY = _type(_proxy, "proxy URL")
HOST = _type(parse_host, "host")
ADVERTISED = _type(_advertised, "host")
NODE_NAME = _type(_node_name, "name")
IP = _type(_ip, "IP address")
DISCOVERY = _type(lambda t: parse_hostport(t, DEFAULT_DISCOVERY_PORT), "HOST:PORT")
SECONDS = _type(parse_seconds, "seconds")
SIZE = _type(parse_size, "size")
RATE = _type(parse_rate, "rate")
DEMO_SIZE = _type(_nonzero_size, "size")
SLOTS = _type(lambda t: parse_count(t, low=1, high=MAX_SLOTS), "slots")


# -- logging and messages ----------------------------------------------------------------
def _setup_logging(verbose: int, quiet: int, *, daemon: bool, machine: str) -> None:
    """Daemons log at INFO with timestamps; front ends print warnings as short lines.

    ``-v`` adds each HTTP request's status line (urllib3's connection log)
    prefixed with the machine's name; ``-q`` leaves errors only.
    """
    default = logging.INFO if daemon else logging.WARNING
    level = max(logging.DEBUG, min(default - 10 * verbose + 10 * quiet, logging.CRITICAL))
    if quiet and not daemon:
        level = max(level, logging.ERROR)
    who = machine.replace("%", "%%")
    if daemon:
        fmt = f"%(asctime)s %(levelname)s [{who}] %(name)s: %(message)s"
    elif verbose:
        fmt = f"[{who}] %(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(levelname_lower)s: %(message)s"  # "warning: ...", as every front-end line
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_lower_level)
    # urllib3 logs every request's status line at DEBUG: shown with -v only
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _lower_level(record: logging.LogRecord) -> bool:
    """A filter giving records ``levelname_lower`` (``warning``): front ends write
    ``note:``, ``warning:`` and ``error:`` in one form."""
    record.levelname_lower = record.levelname.lower()
    return True


def _load_secret(path: str | None) -> bytes | None:
    path = path or os.environ.get("SWIFT_SECRET_FILE")
    return auth.load_secret(path) if path else None


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _make_directory(path: Path) -> bool:
    """Create a missing download directory (as ``aria2c -d`` does); True if it was created.

    OSError (with the reason) if it cannot be created or is not a directory.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return False
    path.mkdir(parents=True, exist_ok=True)
    return True


def _ensure_directory(path: Path, notice: Callable[[str], None]) -> bool:
    """:func:`_make_directory`, saying so; False (after one error line) if it cannot be made."""
    try:
        if _make_directory(path):
            notice(f"created the download directory {path}")
        return True
    except OSError as exc:
        _error(f"cannot create the download directory {path}: {exc.strerror or exc}")
        return False


# -- discovery ------------------------------------------------------------------------------
def discovery_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from . import discovery_server
    p = Parser(prog=prog, description="swift discovery: tracks which nodes are alive "
                                      "(soft state: leases renewed by heartbeat)")
    p.add_argument("--host", type=HOST, metavar="H", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=PORT, metavar="P", default=DEFAULT_DISCOVERY_PORT,
                   help="port to listen on (default %(default)s; 0 = any free port)")
    p.add_argument("--lease", type=SECONDS, metavar="S", default=discovery_server.DEFAULT_LEASE,
                   help=f"seconds a node stays listed without a heartbeat "
                        f"(default {discovery_server.DEFAULT_LEASE:g})")
    p.add_argument("--secret-file", metavar="FILE", help="shared secret file (or $SWIFT_SECRET_FILE)")
    _zeroconf_options(p, after=False, role="announce this discovery on the LAN")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less logging")
    p.add_argument("--version", action="version", version=f"swift {__version__}")
    return p


def discovery_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``discovery.py`` (``prog``: the name usage lines show; default: how it was started).

    SIGTERM is a daemon's normal stop (exit 0), also before the server is up
    or during its stop."""
    return _run_program(_discovery, argv, prog, terminated=EXIT_OK)


#: What requirements.txt installs (with requests' own dependencies): a missing
#: one is a set-up step skipped, said in one line, not a traceback.
_REQUIREMENTS = {"requests", "urllib3", "idna", "certifi", "charset_normalizer", "tqdm", "cryptography",
                 "wsproto", "h11"}


def _run_program(body: Callable[[list[str] | None, str | None], int], argv: list[str] | None,
                 prog: str | None, *, terminated: int, interrupted_line: bool = False) -> int:
    """Run one program's ``body`` with swift's signal handling: Ctrl-C exits 130
    (after one "interrupted" line if asked), SIGTERM exits ``terminated``."""
    _install_signals()
    try:
        return body(argv, prog)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _REQUIREMENTS:
            raise
        _error(f"swift needs the package {exc.name!r} (requirements.txt), which {sys.executable} "
              f"does not have: set up as the README says (python3 -m venv .venv && .venv/bin/pip "
              f"install -r requirements.txt) and run swift with .venv/bin/python")
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        if interrupted_line and not getattr(exc, "said", False):
            print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Terminated:
        return terminated


def _discovery(argv: list[str] | None, prog: str | None) -> int:
    from . import discovery_server
    args = discovery_parser(prog).parse_args(argv)
    _setup_logging(args.verbose, args.quiet, daemon=True, machine="discovery")
    try:
        secret = _load_secret(args.secret_file)
        srv = discovery_server.make_server(args.host, args.port, secret=secret, lease=args.lease)
    except OSError as exc:
        _error(f"cannot listen on {format_hostport(args.host, args.port)}: {exc.strerror or exc}")
        return EXIT_FAILED
    except (ValueError, auth.SecretError) as exc:
        _error(str(exc))
        return EXIT_FAILED
    if secret is None:
        log.warning(NO_SECRET_SERVER.format(what="discovery"))
    srv.start()
    announcer = None
    try:
        print(f"swift discovery listening on {format_hostport(args.host, srv.port)}", flush=True)
        if _zeroconf_enabled(args):
            from . import mdns
            announcer = mdns.announce(args.host, srv.port, args.pool, secret)
        while True:
            time.sleep(3600)  # until a signal raises
    except Terminated:
        return EXIT_OK  # the normal way to stop a daemon
    finally:
        if announcer is not None:
            announcer.stop()  # first: no node should find a discovery that is going away
        srv.stop(timeout=1.0)
        log.info("discovery stopped")


# -- node: the parser ---------------------------------------------------------------------
def _logging_options(p: argparse.ArgumentParser, after: bool) -> None:
    suffix = "_after" if after else ""
    p.add_argument("-v", "--verbose", action="count", default=0, dest="verbose" + suffix,
                   help="more output: each HTTP request's status line and the machine that made it")
    p.add_argument("-q", "--quiet", "-s", "--silent", action="count", default=0, dest="quiet" + suffix,
                   help="nothing on success; errors only (-s, --silent: as curl)")


def _network_options(p: argparse.ArgumentParser, after: bool) -> None:
    keep = {"default": argparse.SUPPRESS} if after else {}
    p.add_argument("--discovery", type=DISCOVERY, metavar="HOST:PORT",
                   **(keep or {"default": os.environ.get("SWIFT_DISCOVERY") or None}),
                   help="where discovery runs (default $SWIFT_DISCOVERY, else the one of the "
                        "pool found by mDNS, else 127.0.0.1:5000)")
    p.add_argument("--secret-file", metavar="FILE", **keep, help="shared secret file (or $SWIFT_SECRET_FILE)")
    _zeroconf_options(p, after, role="look for discovery on the LAN")


def _zeroconf_options(p: argparse.ArgumentParser, after: bool, role: str) -> None:
    """``--pool`` and ``--no-zeroconf`` (swift.mdns), for both programs."""
    from .dnssd import DEFAULT_POOL, parse_pool
    keep = {"default": argparse.SUPPRESS} if after else {}
    p.add_argument("--pool", type=_type(parse_pool, "pool name"), metavar="NAME",
                   **(keep or {"default": os.environ.get("SWIFT_POOL") or DEFAULT_POOL}),
                   help=f"the pool's name in mDNS announcements (default $SWIFT_POOL, "
                        f"else {DEFAULT_POOL})")
    p.add_argument("--no-zeroconf", action="store_true", **keep,
                   help=f"do not {role} by mDNS (also $SWIFT_NO_ZEROCONF=1)")


def _zeroconf_enabled(args: argparse.Namespace) -> bool:
    return not args.no_zeroconf and os.environ.get("SWIFT_NO_ZEROCONF", "") in ("", "0")


def _resolve_discovery(args: argparse.Namespace, secret: bytes | None) -> str:
    """Set ``args.discovery`` to the discovery this node uses (swift.mdns); the line saying which."""
    from . import mdns
    env = os.environ.get("SWIFT_DISCOVERY") or None
    source = "$SWIFT_DISCOVERY" if env and args.discovery == DISCOVERY(env) else "--discovery"
    browse = args.discovery is None and _zeroconf_enabled(args)
    args.discovery, line = mdns.resolve_discovery(args.discovery, source, pool=args.pool,
                                                  secret=secret, enabled=_zeroconf_enabled(args))
    # a node that browsed looks again when its discovery stops answering
    args.rediscover = mdns.Rediscovery(args.pool, secret) if browse else None
    return line


def _download_options(p: argparse.ArgumentParser, after: bool) -> None:
    keep = {"default": argparse.SUPPRESS} if after else {}
    p.add_argument("-d", "--dir", "-P", "--directory-prefix", type=Path, **(keep or {"default": Path(".")}),
                   help="download directory, created if missing (default: the current directory; "
                        "-P, --directory-prefix: as wget)")
    p.add_argument("--slots", "-x", "--split", type=SLOTS, metavar="N", **(keep or {"default": 4}),
                   help=f"fetch jobs this node serves at once, and connections per download "
                        f"on its own link (1-{MAX_SLOTS}; default 4; -x, --split: as aria2c)")
    p.add_argument("--peer-timeout", type=SECONDS, metavar="S", **(keep or {"default": 15.0}),
                   help="seconds without a frame before a peer's job is reassigned (default 15)")
    p.add_argument("--source-address", type=IP, metavar="IP", **keep,
                   help="local IP address outgoing HTTP connections leave from")
    p.add_argument("--limit-rate", type=RATE, metavar="RATE", **keep,
                   help="at most RATE bytes/s (e.g. 2M): for get, the whole download; for a "
                        "node, what it spends fetching for others, and each download it starts")
    p.add_argument("--timeout", type=SECONDS, metavar="S", **keep,
                   help=f"seconds a request may wait for data before that try fails "
                        f"(default {DEFAULT_TIMEOUT[1]:g})")
    p.add_argument("--connect-timeout", type=SECONDS, metavar="S", **keep,
                   help=f"seconds to connect to a server before that try fails "
                        f"(default {DEFAULT_TIMEOUT[0]:g})")
    p.add_argument("--proxy", type=PROXY, metavar="URL", **keep,
                   help="HTTP proxy for every request (default: $HTTPS_PROXY / $HTTP_PROXY, "
                        "with $NO_PROXY)")


NODE_DESCRIPTION = """\
swift node: download with the help of the machines on your LAN.

Without a subcommand, node.py serves fetch jobs for its peers, registers
with discovery and opens a prompt: type a URL to download it in the
background ('help' at the prompt lists its commands). --serve-only runs a
headless helper instead."""

NODE_EPILOG = """\
exit status: 0 done, 1 failed, 2 bad usage, 130 Ctrl-C, 143 SIGTERM
(--serve-only takes SIGTERM as its normal stop and exits 0).
Every option may come before or after the subcommand (node.py --no-peers get
URL); a subcommand's own options are refused without it."""

#: dest prefix of a subcommand's option written before the subcommand
_BEFORE = "before__"


class _BeforeSubcommand:
    """A stand-in parser: each option added through it is added to the main parser
    too, hidden, so that it may come before the subcommand (``node.py --no-peers
    get URL``). :func:`parse_node_args` moves its value to where the subcommand's
    parser puts it, or refuses it for another subcommand."""

    def __init__(self, main: argparse.ArgumentParser, command: str):
        self.main, self.command = main, command
        self.owners: dict[str, tuple[str, str]] = {}  # dest → (command, option as written)

    def add_argument(self, *names, **kwargs):
        taken = self.main._option_string_actions  # noqa: SLF001 - argparse has no public way
        if not names or not names[0].startswith("-") or any(n in taken for n in names):
            return None  # positionals stay after the subcommand; shared options exist already
        kwargs = {**kwargs, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        action = self.main.add_argument(*names, **kwargs)
        self.owners[action.dest] = (self.command, max(names, key=len))
        action.dest = _BEFORE + action.dest
        return action


def _rpc_options(p: argparse.ArgumentParser) -> None:
    """aria2's RPC options, with its names and defaults (swift.rpc)."""
    g = p.add_argument_group("aria2-compatible JSON-RPC and the live page (with or without --serve-only)")
    g.add_argument("--enable-rpc", action="store_true",
                   help=f"serve aria2's JSON-RPC at /jsonrpc (HTTP POST and WebSocket) and a live "
                        f"page at / (default port {DEFAULT_RPC_PORT}, loopback only)")
    # no defaults here: parse_node_args fills them in, after noting which were given (rpc_unused)
    g.add_argument("--rpc-listen-port", type=PORT, metavar="P",
                   help=f"RPC port (default {DEFAULT_RPC_PORT}; 0 = any free port)")
    g.add_argument("--rpc-secret", metavar="TOKEN",
                   help="clients must send token:TOKEN (default $SWIFT_RPC_SECRET; none)")
    g.add_argument("--rpc-listen-all", action="store_true",
                   help="listen on every interface, not only loopback (set --rpc-secret too)")
    g.add_argument("--rpc-allow-origin", type=ORIGIN, action="append", default=[], metavar="ORIGIN",
                   help="a web origin besides the node's own that may call the RPC from a browser "
                        "(e.g. where AriaNg is served, or an extension's origin); repeatable")


#: The RPC's options besides --enable-rpc, by the dest each has in the parsed arguments.
RPC_OPTIONS = {"rpc_listen_port": "--rpc-listen-port", "rpc_secret": "--rpc-secret",
               "rpc_listen_all": "--rpc-listen-all", "rpc_allow_origin": "--rpc-allow-origin"}
#: The node's options that only a node serving (no subcommand) can honour: given
#: with ``get``/``peers``/``demo``, before or after it, they are refused alike.
SERVING_OPTIONS = {"serve_only": "--serve-only", "enable_rpc": "--enable-rpc", **RPC_OPTIONS}


def _fill_rpc_defaults(args: argparse.Namespace) -> list[str]:
    """Give the RPC options their defaults (aria2's port, ``$SWIFT_RPC_SECRET``); the options
    among them that the command line itself gave, as written (``--rpc-secret``)."""
    given = [option for dest, option in RPC_OPTIONS.items() if getattr(args, dest, None)
             or (dest == "rpc_listen_port" and args.rpc_listen_port is not None)]
    if args.rpc_listen_port is None:
        args.rpc_listen_port = DEFAULT_RPC_PORT
    if args.rpc_secret is None:
        args.rpc_secret = os.environ.get("SWIFT_RPC_SECRET") or None
    return given


def rpc_unused(args: argparse.Namespace) -> str | None:
    """The one line said when RPC options were given without ``--enable-rpc``, else None.

    A warning, not an error: aria2c takes them without ``--enable-rpc`` and
    says nothing, so a command line carried over from aria2c keeps running
    here; swift only refuses to be silent about it. ``$SWIFT_RPC_SECRET``
    alone says nothing (it is set for every run, RPC or not).
    """
    given = getattr(args, "rpc_given", [])
    if args.enable_rpc or not given:
        return None
    one = len(given) == 1
    return (f"{', '.join(given)} {'does' if one else 'do'} nothing without --enable-rpc: the RPC "
            f"is off (add --enable-rpc to serve it)")


#: Said once when the RPC listens beyond loopback without a secret.
RPC_NO_SECRET = ("the RPC listens on every interface without --rpc-secret: anyone who can reach "
                 "port {port} can start downloads on this node")


def rpc_warning(args: argparse.Namespace, port: int) -> str | None:
    """The one line said when the RPC is open beyond loopback without a secret, else None."""
    return RPC_NO_SECRET.format(port=port) if args.rpc_listen_all and not args.rpc_secret else None


def _bind_rpc(args: argparse.Namespace):
    """The RPC server of ``--enable-rpc``, its port bound (None without it); OSError if it
    cannot listen. Bound before the node joins the pool, so a taken port stops nothing."""
    if not args.enable_rpc:
        return None
    from .rpc.server import RpcServer
    host = "0.0.0.0" if args.rpc_listen_all else "127.0.0.1"
    return RpcServer(host=host, port=args.rpc_listen_port, secret=args.rpc_secret,
                     listen_all=args.rpc_listen_all, allowed_origins=set(args.rpc_allow_origin))


def _start_rpc(server, app, args: argparse.Namespace) -> None:
    """Serve ``app`` on the bound RPC ``server``, saying where (and warning if it is open)."""
    warning = rpc_warning(args, server.port)
    if warning:
        log.warning(warning)
    server.start(app)
    print(f"aria2 JSON-RPC at http://127.0.0.1:{server.port}/jsonrpc, the live page at "
          f"http://127.0.0.1:{server.port}/", flush=True)


def node_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from . import demo  # its defaults; the demo itself loads the lab only when it runs
    p = Parser(prog=prog, description=NODE_DESCRIPTION, epilog=NODE_EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    _network_options(p, after=False)
    p.add_argument("--host", type=HOST, metavar="H", default="0.0.0.0",
                   help="address the job server listens on (default 0.0.0.0)")
    p.add_argument("--port", type=PORT, metavar="P", default=6000,
                   help="job server port (default 6000; 0 = any free port)")
    p.add_argument("--advertise", type=ADVERTISED, metavar="HOST",
                   help="address peers use to reach this node (default: the address facing discovery)")
    p.add_argument("--name", type=NODE_NAME, help="a name for this node in peer lists and summaries "
                                  "(default HOSTNAME:PORT)")
    _download_options(p, after=False)
    p.add_argument("--serve-only", action="store_true", help="headless helper: no prompt")
    _rpc_options(p)
    p.add_argument("--allow-private", action="store_true",
                   help="let peers' fetch jobs reach loopback/private addresses (off by default)")
    p.add_argument("--no-share", action="store_true", dest="node_no_share",
                   help="offer nothing this machine holds to other members as a LAN copy")
    _logging_options(p, after=False)
    p.add_argument("--version", action="version", version=f"swift {__version__}")
    sub = p.add_subparsers(dest="command", title="subcommands (none: serve and open the prompt)",
                           metavar="COMMAND")
    g = sub.add_parser("get", help="download URLs and exit: status 0 only if all are complete and checked",
                       description="Download URLs one after another with the help of the live "
                                   "peers, then exit (status 0 only if every file is complete and "
                                   "checked). A file already complete is not fetched again.")
    add_get_arguments(g)
    _network_options(g, after=True)
    before = _BeforeSubcommand(p, "get")
    add_get_arguments(before)  # type: ignore[arg-type]
    _download_options(g, after=True)
    _logging_options(g, after=True)
    pe = sub.add_parser("peers", help="print the live nodes discovery knows, and exit",
                        description="Print the live nodes discovery knows, and exit.")
    _network_options(pe, after=True)
    _logging_options(pe, after=True)
    d = sub.add_parser("demo", help="a self-contained demo on loopback: 1 machine against "
                                    f"{demo.HELPERS + 1}, no internet needed",
                       description=demo.__doc__.split("\n\n")[1].strip() if demo.__doc__ else None)
    d.add_argument("--size", type=DEMO_SIZE, metavar="SIZE", default=demo.DEFAULT_SIZE,
                   help=f"demo file size (default {human_bytes(demo.DEFAULT_SIZE)})")
    d.add_argument("--rate", type=RATE, metavar="RATE", default=demo.DEFAULT_RATE,
                   help=f"each machine's link, bytes/s (default {human_rate(demo.DEFAULT_RATE)})")
    _logging_options(d, after=True)
    demo_before = _BeforeSubcommand(p, "demo")
    demo_before.add_argument("--size", type=DEMO_SIZE, metavar="SIZE")
    demo_before.add_argument("--rate", type=RATE, metavar="RATE")
    p.set_defaults(_before_owners={**before.owners, **demo_before.owners},
                   _subparsers={"get": g, "demo": d})
    return p


def _move_options_before(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A subcommand's options written before it: to their place, or a usage error."""
    owners = args.__dict__.pop("_before_owners")
    subparsers = args.__dict__.pop("_subparsers")
    for key in [k for k in vars(args) if k.startswith(_BEFORE)]:
        value, dest = args.__dict__.pop(key), key[len(_BEFORE):]
        command, option = owners[dest]
        if args.command != command:
            parser.error(f"{option} is an option of {command}: write it with the subcommand "
                         f"({parser.prog} {command} ... {option})")
        given_after = getattr(args, dest, None)
        if isinstance(value, list) and isinstance(given_after, list):
            setattr(args, dest, value + given_after)  # --header, both sides
        elif given_after == subparsers[command].get_default(dest):
            setattr(args, dest, value)  # the one after the subcommand wins when both are given


def _refuse_serving_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``node.py --serve-only get URL``: the node's serving options before a subcommand are
    refused as they are after it (:meth:`Parser.parse_args`), with the same line."""
    if args.command is None:
        return
    for dest, option in SERVING_OPTIONS.items():
        given = option in args.rpc_given if dest in RPC_OPTIONS else getattr(args, dest, False)
        if given:
            target = parser._subcommand_parser(args) or parser  # noqa: SLF001 - our own Parser's
            target.error(f"{option} is an option of the node (without a subcommand); "
                         f"{args.command} does not take it")


def parse_node_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = node_parser(prog)
    args = parser.parse_args(argv)
    args.rpc_given = _fill_rpc_defaults(args)
    _refuse_serving_options(parser, args)
    _move_options_before(parser, args)
    args.prog = f"{parser.prog} {args.command}" if args.command else parser.prog
    args.verbose += getattr(args, "verbose_after", 0)
    args.quiet += getattr(args, "quiet_after", 0)
    return args


# -- node: the programs -------------------------------------------------------------------
def node_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``node.py`` (``prog``: the name usage lines show; default: how it was started)."""
    return _run_program(_node, argv, prog, terminated=EXIT_TERMINATED, interrupted_line=True)


def _node(argv: list[str] | None, prog: str | None) -> int:
    from . import demo
    args = parse_node_args(argv, prog)
    command = args.command
    daemon = command is None and args.serve_only
    _setup_logging(args.verbose, args.quiet, daemon=daemon,
                   machine=args.name or ("local" if command else "node"))
    if command == "demo":
        return demo.main(size=args.size, rate=args.rate)
    if command == "get":
        try:
            args.output_inside = False  # -o's folders inside -d are made as -d is (aria2c's way)
            if args.output is not None and not _to_stdout(args):  # -d DIR -o NAME: DIR/NAME
                args.output_inside = not args.output.expanduser().is_absolute()
                args.output = output_path(args.dir, args.output, confined=args.dir != Path("."))
            args.url_list = _get_urls(args)
            args.items = _get_items(args)
        except (ValueError, SwiftError) as exc:
            print(f"{args.prog}: error: {exc} (see {args.prog} --help)", file=sys.stderr)
            return EXIT_USAGE
    try:
        secret = _load_secret(args.secret_file)
    except (OSError, auth.SecretError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    # a get alone on its own link (--no-peers) talks to no member: nothing to authenticate
    alone = command == "get" and args.no_peers
    if secret is None and not args.quiet and not alone:
        if daemon:
            log.warning(NO_SECRET_SERVER.format(what="node"))
        elif command is None:
            print(f"note: {NO_SECRET_SERVER.format(what='node')}", flush=True)
        else:
            print(f"note: {NO_SECRET_CLIENT}", file=sys.stderr, flush=True)
    _use_proxy(getattr(args, "proxy", None))
    if command == "peers" and args.discovery is None:  # a node: _serve; get: _discovery_client
        line = _resolve_discovery(args, secret)
        if not args.quiet:
            print(f"note: {line}", file=sys.stderr, flush=True)
    if command == "peers":
        return _peers(args.discovery, secret)
    if command == "get":
        return _get(args, secret)
    return _serve(args, secret)


def _peers(discovery: tuple[str, int], secret: bytes | None) -> int:
    from .membership import DiscoveryClient, DiscoveryError
    client = DiscoveryClient(*discovery, name="swift-cli", secret=secret)
    try:
        infos = client.list_peers()
    except DiscoveryError as exc:
        _error(str(exc))
        return EXIT_FAILED
    for info in infos:
        print(f"{format_hostport(info.host, info.port)}  {info.name}  slots={info.slots}")
    if not infos:
        print("no nodes known", file=sys.stderr)
    return EXIT_OK


def read_url_file(path: Path) -> list[str]:
    """URLs from ``-i FILE``: one per line; blank lines and lines starting with ``#`` are skipped.

    ``-`` reads standard input. OSError if the file cannot be read.
    """
    text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    text = text.removeprefix("\ufeff")  # a byte-order mark, as some Windows editors write it
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _get_urls(args: argparse.Namespace) -> list[str]:
    """The URLs of one ``get``, in order; ValueError (a usage error) if none or ``-o`` is ambiguous."""
    urls = list(args.urls)
    if args.input_file is not None:
        try:
            urls += read_url_file(args.input_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read URLs from {args.input_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    if not urls and args.metalink_file is None:
        raise ValueError("no URL given (give URLs, -i FILE with one URL per line, or -M FILE.meta4)")
    if args.mirror and len(urls) != 1:
        raise ValueError("--mirror names other URLs of one file: give exactly one URL with it")
    several = len(urls) > 1 or args.metalink_file is not None
    if args.output is not None and several and not (_to_stdout(args) or args.output.is_dir()):
        raise ValueError("-o names one file: with several URLs, give a directory with -d DIR "
                         "(or -o - for all of them, one after another, on standard output)")
    return [checked_url(url) for url in urls]  # a malformed one is bad usage: exit 2


def _get_items(args: argparse.Namespace) -> list:
    """The files of one ``get``: each URL (the one with its ``--mirror`` URLs), then every
    file of ``-M FILE``; UsageError (one line) for a Metalink file that is refused."""
    from .getitems import GetItem, items_of, read_metalink_file
    mirrors = tuple((url, i + 1) for i, url in enumerate(args.mirror))
    items = [GetItem(url, mirrors) for url in args.url_list]
    if args.metalink_file is not None:
        doc = read_metalink_file(args.metalink_file)
        if not args.quiet:
            for note in doc.notes:
                print(f"note: {note}", file=sys.stderr, flush=True)
        items += items_of(doc)
    return items


class _FollowMetalink(Exception):
    """A URL is a Metalink document: its files are downloaded instead (``--follow-metalink``)."""

    def __init__(self, url: str):
        super().__init__(url)
        self.url = url


def _followed(url: str, args: argparse.Namespace, notice: Callable[[str], None]) -> list:
    """The files of the Metalink document at ``url`` (fetched with the request options, bounded)."""
    from .getitems import fetch_metalink, items_of
    from .http import RemoteFile
    remote = RemoteFile(url, profile=profile_from_args(args))
    session = remote.session(source_address=args.source_address)
    try:
        doc = fetch_metalink(session, url, timeout=request_timeout(args),
                             where=redact_url(url, strict=False))
    finally:
        session.close()
    for note in doc.notes:
        notice(note)
    notice(f"{redact_url(url, strict=False)} is a Metalink document: getting its "
           f"{len(doc.files)} file(s)")
    return items_of(doc)


def _to_stdout(args: argparse.Namespace) -> bool:
    return args.output is not None and str(args.output) == "-"


def _get(args: argparse.Namespace, secret: bytes | None) -> int:
    """``node.py get``: each URL in turn; 0 only if every one is complete (and checked)."""
    quiet = args.quiet > 0

    def notice(text: str) -> None:
        if not quiet:
            print(f"note: {text}", file=sys.stderr, flush=True)

    items = list(getattr(args, "items", None) or [])
    if not items:
        from .getitems import GetItem
        items = [GetItem(url) for url in args.url_list]
    urls = [item.url for item in items]
    if not _ensure_directory(args.dir, notice):
        return EXIT_FAILED
    if getattr(args, "output_inside", False) and not _ensure_directory(args.output.parent, notice):
        return EXIT_FAILED
    # asked now, answered while the first URL's origin is probed (the download waits for it then)
    lookup = None
    if not args.no_peers:  # the peer machinery loads only when asked for (start-up)
        from .membership import PeerLookup
        lookup = PeerLookup(_discovery_client(args, secret, notice), notice)
    helpers = _Helpers(lookup, notice) if lookup else None
    results: list[dict] = []
    try:
        while len(results) < len(items):
            item = items[len(results)]
            try:
                results.append(_get_one(item.url, args, helpers.peers if helpers else [], secret,
                                        notice, item))
            except _FollowMetalink as follow:  # its files take its place, in order
                try:
                    found = _followed(follow.url, args, notice)
                except SwiftError as exc:
                    _error(str(exc))
                    results.append({"url": redact_url(item.url, strict=False), "ok": False,
                                    "error": str(exc)})
                    continue
                if len(found) > 1 and args.output is not None and not _to_stdout(args) \
                        and not args.output.is_dir():
                    line = (f"{redact_url(item.url, strict=False)} lists {len(found)} files, and -o "
                            f"names one: give a directory with -d DIR")
                    _error(line)
                    results.append({"url": redact_url(item.url, strict=False), "ok": False,
                                    "error": line})
                    continue
                items[len(results):len(results) + 1] = found
                urls[len(results):len(results) + 1] = [i.url for i in found]
    except (KeyboardInterrupt, Terminated) as exc:
        results.append({"url": redact_url(urls[len(results)], strict=False), "ok": False,
                        "error": "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"})
        raise
    finally:
        if lookup is not None:
            lookup.close()
        if args.report:
            _write_report(args.report, results if len(urls) > 1 else results[0] if results else {})
    return EXIT_OK if all(r["ok"] for r in results) else EXIT_FAILED


def _discovery_client(args: argparse.Namespace, secret: bytes | None,
                      notice: Callable[[str], None]):
    """The discovery a ``get`` asks: the one named, else the pool's, found by mDNS
    in the lookup's own thread (swift.mdns.BrowsingClient)."""
    from .membership import DiscoveryClient
    if args.discovery is not None:
        return DiscoveryClient(*args.discovery, name="swift-get", secret=secret)
    from .mdns import BrowsingClient
    return BrowsingClient(pool=args.pool, secret=secret, enabled=_zeroconf_enabled(args),
                          name="swift-get", notice=notice)


class _Helpers:
    """The helpers of a ``get``: discovery's live nodes but those of this machine.

    A node running on this machine shares its link (``swift.local_nodes``):
    as a helper it would compete with the get's own connections for the same
    uplink, and the summary would show the machine twice. Said once.
    """

    def __init__(self, lookup, notice: Callable[[str], None]):
        self._lookup = lookup
        self._notice = notice
        self._said = False

    def peers(self, stop: threading.Event | None = None) -> "list[Peer]":
        from . import local_nodes
        peers = self._lookup.peers(stop)
        mine = local_nodes.this_machine(peers)
        if mine and not self._said:
            self._said = True
            names = sorted(p.name or p.key for p in peers if p.key in mine)
            one = len(names) == 1
            self._notice(f"not using {', '.join(names)} as {'a helper' if one else 'helpers'}: "
                         f"{'it runs' if one else 'they run'} on this machine and "
                         f"{'shares' if one else 'share'} its link")
        return [p for p in peers if p.key not in mine]


def _get_one(url: str, args: argparse.Namespace, peers: "PeerSource", secret: bytes | None,
             notice: Callable[[str], None], item=None) -> dict:
    """One URL of a ``get``: the result as it goes into ``--report``; prints its own lines.

    ``item`` (a :class:`swift.getitems.GetItem`) adds the file's mirrors, hashes and
    Metalink name. Raises _FollowMetalink for a URL that is a Metalink document.
    """
    from . import download
    from .engine.rate_limit import RateLimit
    from .getitems import GetItem, place_of
    from .metalink import looks_like_metalink
    from .nodeapp import peer_names, summary
    item = item or GetItem(url)
    follow = not args.no_follow_metalink and item.name is None and not item.mirrors
    if follow and looks_like_metalink(url, None):
        raise _FollowMetalink(url)
    quiet = args.quiet > 0
    retry = Retry(attempts=tries_of(args)) if tries_of(args) else Retry()
    checksum = args.checksum or item.checksum
    result: dict = {"url": redact_url(url, strict=False), "ok": False, "checksum": checksum,
                    "checksum_verified": False}
    try:  # request shaping (swift.http.profile): checked when parsed; a file may change since
        profile = profile_from_args(args)
    except SwiftError as exc:
        _error(str(exc))
        return {**result, "error": str(exc)}
    if profile.insecure and not quiet:
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
    if _to_stdout(args):
        return _get_to_stdout(url, args, peers, secret, notice, retry, result, item)
    try:
        directory = place_of(item, args.dir)
    except SwiftError as exc:
        _error(str(exc))
        return {**result, "error": str(exc)}
    if item.name is not None:  # a Metalink's file: its own hash says whether it is there
        from .getitems import already_complete as metalink_complete
        done = None if (args.force or args.restart or args.output) else metalink_complete(item, directory)
    else:
        done = None if (args.force or args.restart) else already_complete(url, args, retry)
    if isinstance(done, str):
        _error(done)
        return {**result, "error": done}
    if done is not None:
        if not quiet:
            checked = f"; {checksum.split(':')[0].lower()} checksum verified" if checksum else ""
            print(f"already complete: {done} ({human_bytes(done.stat().st_size)}{checked})", flush=True)
        return {**result, "ok": True, "already_complete": True, "path": str(done),
                "checksum_verified": bool(checksum)}
    limit = RateLimit(args.limit_rate) if args.limit_rate else None
    opts = download.Options(directory=directory, output=args.output, force=args.force,
                            restart=args.restart, checksum=checksum, local_slots=args.slots,
                            peer_timeout=args.peer_timeout, piece_size=args.piece_size,
                            source_address=args.source_address, secret=secret, name="swift-get",
                            retry=retry, profile=profile, timeout=request_timeout(args),
                            throttle=limit.take if limit else None,
                            header_mirrors=not args.no_mirrors, per_mirror=args.per_mirror,
                            follow_metalink=follow, share=not args.no_share,
                            share_index=_share_index(args), spot_fraction=args.spot_check,
                            **item.options())
    bar = ProgressBar() if sys.stderr.isatty() and not quiet else None
    dl = download.Download(url, opts, peers, notice=notice, progress=bar.update if bar else None)
    outcome = _run_download(dl, bar, limit=limit)
    if isinstance(outcome, download.MetalinkAnswer):
        raise _FollowMetalink(outcome.url)
    if isinstance(outcome, str):
        _error(outcome)
        return {**result, "error": outcome, "path": str(dl.path) if dl.path else None}
    names = peer_names(dl.peers)
    checksum = dl.opts.checksum  # with the digest an origin's header gave, if any
    if not quiet:
        print(summary(outcome, names, checksum), flush=True)
    return {**outcome.as_dict(), **result, "ok": True, "checksum": checksum,
            "checksum_verified": bool(checksum),
            "machines": {src: names.get(src, src) for src in outcome.bytes_by_source}}


def _share_index(args: argparse.Namespace):
    """Where a ``get`` records what it offers: the state directory it shares with a node
    running on this machine, which then offers the file after ``get`` exits (None:
    ``--no-share``, or ``--no-share`` given to that node)."""
    if args.no_share or getattr(args, "node_no_share", False):
        return None
    from . import identity
    from .content_index import ContentIndex
    return ContentIndex(identity.state_dir())


def _get_to_stdout(url: str, args: argparse.Namespace, peers: "PeerSource", secret: bytes | None,
                   notice: Callable[[str], None], retry: Retry, result: dict, item=None) -> dict:
    """``-o -``: download into a temporary directory while streaming it, in order, to stdout."""
    from . import download
    from .engine.rate_limit import RateLimit
    from .nodeapp import peer_names, summary
    quiet = args.quiet > 0
    workdir = Path(tempfile.mkdtemp(prefix=".swift-stdout-", dir=args.dir))
    try:
        limit = RateLimit(args.limit_rate) if args.limit_rate else None
        extra = item.options() if item is not None else {}
        extra.pop("file_name", None)  # the bytes go to standard output: no name is used
        opts = download.Options(directory=workdir, output=workdir / "download", force=True,
                                checksum=result.get("checksum") or args.checksum,
                                local_slots=args.slots, header_mirrors=not args.no_mirrors,
                                per_mirror=args.per_mirror, **extra,
                                peer_timeout=args.peer_timeout, piece_size=args.piece_size,
                                source_address=args.source_address, secret=secret,
                                name="swift-get", retry=retry, timeout=request_timeout(args),
                                throttle=limit.take if limit else None,
                                profile=profile_from_args(args), share=not args.no_share)
        bar = ProgressBar() if sys.stderr.isatty() and not quiet else None
        dl = download.Download(url, opts, peers, notice=notice, progress=bar.update if bar else None)
        stream = StdoutStream(dl, sys.stdout.buffer)
        try:
            outcome = _run_download(dl, bar, tick=stream.pump, limit=limit, resumable=False)
            if not isinstance(outcome, str):
                stream.finish(outcome)
        except BrokenPipeError:
            dl.cancel()
            _quiet_stdout()
            outcome = "standard output was closed before the end of the file"
        finally:
            stream.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(outcome, str):
        _error(outcome)
        return {**result, "error": outcome, "path": "-"}
    names = peer_names(dl.peers)
    if not quiet:  # the file went to standard output; its temporary path is gone
        print(summary(dataclasses.replace(outcome, path="(standard output)"), names,
                      dl.opts.checksum), file=sys.stderr, flush=True)
    return {**outcome.as_dict(), **result, "ok": True, "path": "-", "checksum": dl.opts.checksum,
            "checksum_verified": bool(dl.opts.checksum),
            "machines": {src: names.get(src, src) for src in outcome.bytes_by_source}}


def _quiet_stdout() -> None:
    """After a broken pipe: send what is left to /dev/null, so exiting prints no second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass


def already_complete(url: str, args: argparse.Namespace, retry: Retry) -> Path | str | None:
    """:func:`swift.engine.target.already_complete` for this ``get``'s options; a
    probe that fails gives its error line (the download would fail the same way)."""
    from . import http
    from .engine import target
    from .http.remote import RemoteFile

    def probe() -> http.ProbeResult:
        remote = RemoteFile(url, profile=profile_from_args(args))
        session = remote.session(source_address=args.source_address)
        try:
            return http.probe(session, remote, retry=retry, timeout=request_timeout(args))
        finally:
            session.close()

    try:
        return target.already_complete(url, output=args.output, directory=args.dir,
                                       checksum=args.checksum, probe=probe)
    except SwiftError as exc:
        return str(exc)


def request_timeout(args: argparse.Namespace) -> tuple[float, float]:
    """(connect, read) seconds from ``--connect-timeout`` / ``--timeout``, else the defaults."""
    connect, read = DEFAULT_TIMEOUT
    return (args.connect_timeout or connect, args.timeout or read)


def _write_report(path: Path, data: object) -> None:
    try:
        path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        _error(f"cannot write the report {path}: {exc.strerror or exc}")


def _run_download(dl: download.Download, bar: "ProgressBar | None", *,
                  tick: Callable[[], None] | None = None,
                  limit: "RateLimit | None" = None,
                  resumable: bool = True) -> "download.Report | download.MetalinkAnswer | str":
    """Run ``dl`` on a worker thread while the main thread waits, interruptibly.

    Returns the report, or the error line. ``tick()`` runs on the main thread
    every :data:`TICK` seconds while it waits (``-o -`` streams there). On
    Ctrl-C or SIGTERM the download is cancelled (its rate limit released)
    and given :data:`CANCEL_GRACE` seconds to save its record; then the
    signal's exception goes on up (to exit 130 or 143). ``resumable=False``
    (``-o -``, whose temporary copy is removed): nothing said about the disk
    claims that something is kept.
    """
    from . import download, storage
    outcome: list[download.Report | str] = []
    codes: list[ErrorCode | None] = []
    # An Event, not Thread.join(): a join interrupted by a signal's exception can
    # mark a running thread as stopped (CPython gh-90882), and the grace below
    # would then not wait at all.
    ended = threading.Event()

    def body() -> None:
        try:
            outcome.append(dl.run())
        except download.MetalinkAnswer as exc:  # the caller gets the document's files instead
            outcome.append(exc)
        except download.DownloadError as exc:
            codes.append(exc.code)
            outcome.append(_error_line(exc, resumable))
        except Exception as exc:  # a bug: one line for the user, the trace in the log
            log.debug("download failed", exc_info=True)
            outcome.append(f"internal error: {exc!r}")
        finally:
            ended.set()

    worker = threading.Thread(target=body, name="download", daemon=True)
    worker.start()
    try:
        while not ended.wait(TICK):
            if tick:
                tick()
    except BaseException as exc:
        if limit:
            limit.close()
        dl.cancel()
        ended.wait(CANCEL_GRACE)
        if bar:
            bar.close()
        if isinstance(exc, BrokenPipeError):
            pass  # the caller says that standard output went away: one line, not two
        elif outcome and isinstance(outcome[0], str) and codes[:1] != [ErrorCode.CANCELLED]:
            # it failed for another reason meanwhile: the engine's own word on what it left
            _error(outcome[0])  # _error_line said what -o - keeps
        else:  # our own stop: one line, not an error (exit 130 or 143 says the rest)
            how = "terminated" if isinstance(exc, Terminated) else "interrupted"
            if resumable and dl.path is not None and storage.record_path(dl.path).exists():
                print(f"{how}; the partial download is kept in {storage.part_path(dl.path)}: "
                      f"run the same command again to resume", file=sys.stderr, flush=True)
            else:
                print(f"{how}; nothing to resume" + ("" if resumable else " (-o - does not resume)"),
                      file=sys.stderr, flush=True)
            exc.said = True  # type: ignore[attr-defined] # _run_program adds no second line
        raise
    if bar:
        bar.close()
    return outcome[0] if outcome else "internal error: the download ended without a result"


def _error_line(error: download.DownloadError, resumable: bool) -> str:
    """The engine's line for a failed download. Not ``resumable`` (``-o -``: the
    temporary copy is removed at the end), its clause on kept data
    (``DownloadError.kept``) becomes "nothing is kept"."""
    if resumable or not error.kept:
        return str(error)
    return f"{error.reason}; nothing is kept (-o - does not resume)"


class StdoutStream:
    """``-o -``: the file to standard output, in order, while it downloads.

    A collaborative download arrives out of order, so only the contiguous
    prefix from byte 0 can go out: the engine says how long it is
    (``Download.contiguous_bytes()``, bytes already written to the part file)
    and this reads them back from the part file, at most :data:`CHUNK` at a
    time, so memory stays bounded whatever the file's size. The part file is
    opened once and read through that descriptor, which stays valid when the
    finished file is renamed. The file itself lives in a temporary directory
    removed at the end: ``-o -`` never resumes (as in curl).
    """

    #: Largest read from the part file at once.
    CHUNK = 1 << 20

    def __init__(self, dl: download.Download, out) -> None:
        self.dl = dl
        self.out = out
        self.sent = 0
        self._fd: int | None = None

    def _open(self, path: Path | None) -> bool:
        if self._fd is None and path is not None:
            try:
                self._fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return False
        return self._fd is not None

    def pump(self, upto: int | None = None) -> None:
        """Write what is contiguous (or, given ``upto``, everything up to it) to the output."""
        from . import storage
        path = self.dl.path
        if not self._open(storage.part_path(path) if path is not None else None):
            return
        end = self.dl.contiguous_bytes() if upto is None else upto
        while self.sent < end:
            block = os.pread(self._fd, min(self.CHUNK, end - self.sent), self.sent)
            if not block:
                break
            self.out.write(block)
            self.sent += len(block)
        self.out.flush()

    def finish(self, report: download.Report) -> None:
        """The rest, from the finished file (already checked by the engine)."""
        self._open(Path(report.path))
        self.pump(upto=report.size)
        if self.sent != report.size:
            raise OSError(f"wrote {self.sent} of {report.size} bytes to standard output")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ProgressBar:
    """A tqdm bar on stderr, fed by the download's progress callback.

    Every number on it is written by :mod:`swift.units` (``12.0 MiB of 96.0 MiB
    at 8.0 MiB/s``, see :func:`_tqdm_class`), so the bar reads as the summary
    and ``jobs`` do; tqdm's own ``12.0MiB`` (no space) never shows. The bar starts at the bytes a resume already had
    (``initial``), which tqdm leaves out of the rate, so the rate and the time
    left are this run's. Never raises into the download.
    """

    #: Seconds between redraws: smooth to the eye, cheap on a slow terminal.
    REDRAW = 0.2
    #: `` 38%|███▋      | 96.0 MiB of 256.0 MiB at 8.0 MiB/s, 00:20 left``; ``smoothing=0``
    #: makes the rate this run's average, not a guess from the last moments.
    FORMAT = "{percentage:3.0f}%|{bar}| {swift_n} of {swift_total} at {swift_rate}, {remaining} left"
    FORMAT_NO_TOTAL = "{swift_n} at {swift_rate}"

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self._bar = None

    def update(self, done: int, total: int | None) -> None:
        try:
            if self._bar is None:
                self._bar = _tqdm_class()(total=total, initial=done, unit="iB", unit_scale=True,
                                 unit_divisor=1024, file=self.stream, mininterval=self.REDRAW,
                                 dynamic_ncols=True, leave=False, smoothing=0,
                                 bar_format=self.FORMAT if total else self.FORMAT_NO_TOTAL)
                return
            if total is not None and self._bar.total != total:
                self._bar.total = total
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
        except (OSError, ValueError):  # the terminal went away: the download goes on
            pass

    def close(self) -> None:
        if self._bar is not None:
            try:
                self._bar.close()
            except (OSError, ValueError):
                pass
            self._bar = None


def _tqdm_class():
    """tqdm with its numbers in swift's units (``{swift_n}``, ``{swift_total}``, ``{swift_rate}``).

    tqdm scales sizes by ``unit_divisor`` but its rate by 1000 whatever the
    divisor, so ``{rate_fmt}`` would print 8 MiB/s as "8.39MiB/s". Imported
    here, not at the top: only a `get` on a terminal draws a bar, and start-up
    stays light for every other command.
    """
    from tqdm import tqdm

    class Bar(tqdm):
        @property
        def format_dict(self):
            d = super().format_dict
            elapsed = d.get("elapsed") or 0
            d["swift_rate"] = human_rate((d["n"] - d.get("initial", 0)) / elapsed if elapsed else 0.0)
            d["swift_n"] = human_bytes(d["n"])
            d["swift_total"] = human_bytes(d["total"]) if d.get("total") else "?"
            return d

    return Bar


def _serve(args: argparse.Namespace, secret: bytes | None) -> int:
    from .nodeapp import NodeApp, NodeConfig
    from .prompt import run_prompt

    def notice(text: str) -> None:
        print(f"note: {text}", flush=True)

    unused = rpc_unused(args)
    if unused:
        log.warning(unused)
    if not _ensure_directory(args.dir, notice):
        return EXIT_FAILED
    try:
        rpc = _bind_rpc(args)
    except OSError as exc:
        _error(f"cannot serve the RPC on port {args.rpc_listen_port}: {exc.strerror or exc} "
               f"(choose another with --rpc-listen-port)")
        return EXIT_FAILED
    try:
        print(_resolve_discovery(args, secret), flush=True)  # a node says which, always
    except Terminated:
        if rpc is not None:
            rpc.stop()
        if args.serve_only:
            return EXIT_OK  # stopped while it looked for discovery: still the normal stop
        raise
    config = NodeConfig(discovery=args.discovery, host=args.host, port=args.port,
                        advertise=args.advertise, name=args.name, slots=args.slots,
                        directory=args.dir, secret=secret, allow_private=args.allow_private,
                        source_address=args.source_address, peer_timeout=args.peer_timeout,
                        limit_rate=args.limit_rate, timeout=request_timeout(args),
                        rediscover=getattr(args, "rediscover", None),
                        share=not args.node_no_share)
    try:
        app = NodeApp(config, notice=notice, say=lambda line: print(line, flush=True))
    except OSError as exc:
        if rpc is not None:
            rpc.stop()
        _error(f"cannot listen on {format_hostport(args.host, args.port)}: {exc.strerror or exc}")
        return EXIT_FAILED
    try:
        app.start()
        print(f"swift node {app.name} listening on {format_hostport(args.host, app.port)} "
              f"(advertised as {app.key})", flush=True)
        if rpc is not None:
            _start_rpc(rpc, app, args)
        if args.serve_only:
            while True:
                time.sleep(3600)  # until a signal raises
        return EXIT_INTERRUPTED if run_prompt(app) else EXIT_OK
    except Terminated:
        if args.serve_only:
            return EXIT_OK  # the normal way to stop a daemon
        raise
    finally:
        if rpc is not None:
            rpc.stop()
        app.stop()
