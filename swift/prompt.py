"""The interactive prompt of a node (``python3 node.py`` without a subcommand).

Downloads started here run in the background, each on its own thread, so
the user can start a second one while the first runs; typing a URL returns
at once (even with discovery down: peers are asked for on the download's
own thread). Every line about a download carries its number, ``[N]``, and
comes in order: ``started``, any notes, then the summary or the error.
Ctrl-C at the prompt only clears the line: it cancels nothing and does not
stop the node. ``quit`` or end of input unregisters and exits.

The prompt talks to the node only through ``NodeApp``'s public API; ``get``
lines are read by the same parser builder as ``node.py get``
(``nodeapp.add_get_arguments``).
"""

from __future__ import annotations

import argparse
import cmd
import shlex
import sys
import threading

from .nodeapp import ENDED, NOTICE, STARTED, AlreadyDownloading, DownloadJob, NodeApp, add_get_arguments
from .units import human_bytes, human_rate

HELP = """\
commands:
  URL                      download URL (same as get URL)
  get URL [-o PATH] [--checksum ALGO:HEX] [--force] [--restart] [--no-peers]
                           download URL into the download directory, or to PATH
                           (a relative PATH is taken inside the download directory)
  request URL              old spelling of get
  peers                    list the nodes discovery knows
  jobs                     show running and finished downloads
  help                     this text
  quit                     unregister and exit (also end of input, Ctrl-D)"""


class _LineParser(argparse.ArgumentParser):
    """argparse for one prompt line: an error is a ValueError, never an exit."""

    def error(self, message: str):
        raise ValueError(message)


def get_parser() -> argparse.ArgumentParser:
    parser = _LineParser(prog="get", add_help=False)
    add_get_arguments(parser, at_prompt=True)
    return parser


class Prompt(cmd.Cmd):
    prompt = "swift> "

    def __init__(self, app: NodeApp, stdin=None, stdout=None):
        super().__init__(stdin=stdin, stdout=stdout)
        self.app = app
        self._print_lock = threading.Lock()
        self._parser = get_parser()
        self.intro = (f"swift node {app.name} serving on port {app.port}; "
                      f"type a URL to download it, 'help' for commands")

    def say(self, text: str) -> None:
        with self._print_lock:
            self.stdout.write(text + "\n")
            self.stdout.flush()

    # -- downloads -----------------------------------------------------------------
    def _start(self, arg: str) -> None:
        try:
            args = self._parser.parse_args(shlex.split(arg))
        except ValueError as exc:
            self.say(f"error: {exc}; usage: get URL [-o PATH] [--checksum ALGO:HEX] "
                     f"[--force] [--restart] [--no-peers]")
            return
        # relative to the node's download directory, not to wherever it was started
        output = self.app.directory / args.output.expanduser() if args.output else None
        try:
            self.app.start_download(args.url, output, no_peers=args.no_peers, on_event=self._event,
                                    checksum=args.checksum, force=args.force, restart=args.restart)
        except AlreadyDownloading as exc:
            self.say(f"{args.url}: {exc}")

    def _event(self, job: DownloadJob, kind: str, text: str) -> None:
        if kind == STARTED:
            self.say(f"[{job.number}] started {text}")
        elif kind == NOTICE:
            self.say(f"[{job.number}] note: {text}")
        elif kind == ENDED:
            self.say(f"[{job.number}] {text}")

    def do_get(self, arg: str) -> None:
        """get URL [-o PATH]: download URL"""
        self._start(arg)

    def do_request(self, arg: str) -> None:
        """request URL: old spelling of get"""
        self._start(arg)

    def default(self, line: str) -> None:
        word = line.strip().split()[0] if line.strip() else ""
        if "://" in word:
            self._start(line)
        else:
            self.say(f"unknown command {word!r}; type a URL, or 'help'")

    def emptyline(self) -> bool:
        return False

    # -- information ---------------------------------------------------------------
    def do_peers(self, arg: str) -> None:
        """peers: list the nodes discovery knows"""
        peers, warning = self.app.peers(include_self=True)
        if warning:
            self.say(f"note: {warning}")
        if not peers:
            self.say("no nodes known")
        for p in peers:
            me = "  (this node)" if p.key == self.app.key else ""
            self.say(f"{p.key}  {p.name}  slots={p.slots}{me}")

    def do_jobs(self, arg: str) -> None:
        """jobs: show running and finished downloads"""
        jobs = self.app.jobs()
        if not jobs:
            self.say("no downloads yet")
        for job in jobs:
            self.say(f"[{job.number}] {job.url}  {describe(job)}")

    def do_help(self, arg: str) -> None:
        self.say(HELP)

    def do_quit(self, arg: str) -> bool:
        """quit: unregister and exit"""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self.say("")
        return True


def describe(job: DownloadJob) -> str:
    """One line on a job for ``jobs``: state, share done, bytes, and this run's rate."""
    s = job.status()
    if s.summary is not None:
        return s.summary
    if s.error is not None:
        return f"{s.state}: {s.error}"
    pct = f" {100 * s.done / s.size:.0f}%" if s.size else ""
    return f"{s.state}{pct} {human_bytes(s.done)} at {human_rate(s.rate)}"


def run_prompt(app: NodeApp) -> None:
    """Run the prompt until quit or end of input; Ctrl-C only clears the line."""
    prompt = Prompt(app)
    while True:
        try:
            prompt.cmdloop()
            return
        except OSError:
            return  # the terminal went away (hang-up): same as end of input
        except KeyboardInterrupt:
            prompt.intro = None  # cmdloop() shows self.intro each time: once is enough
            sys.stdout.write("^C (downloads keep running; type quit to exit)\n")
            sys.stdout.flush()
