"""The interactive prompt of a node (``python3 node.py`` without a subcommand).

Downloads started here run in the background, each on its own thread, so
the user can start a second one while the first runs; a line is printed
when each one ends. Ctrl-C at the prompt only clears the line: it cancels
nothing and does not stop the node. ``quit`` or end of input unregisters
and exits.
"""

from __future__ import annotations

import cmd
import shlex
import sys
import threading
import time
from pathlib import Path

from .download import human_bytes
from .nodeapp import DownloadJob, NodeApp

HELP = """\
commands:
  URL                      download URL (same as get URL)
  get URL [-o PATH]        download URL into the download directory, or to PATH
                           (a relative PATH is taken inside the download directory)
  request URL              old spelling of get
  peers                    list the nodes discovery knows
  jobs                     show running and finished downloads
  help                     this text
  quit                     unregister and exit (also end of input, Ctrl-D)"""


class Prompt(cmd.Cmd):
    prompt = "swift> "

    def __init__(self, app: NodeApp, stdin=None, stdout=None):
        super().__init__(stdin=stdin, stdout=stdout)
        self.app = app
        self._print_lock = threading.Lock()
        self.intro = (f"swift node {app.name} serving on port {app.port}; "
                      f"type a URL to download it, 'help' for commands")

    def say(self, text: str) -> None:
        with self._print_lock:
            self.stdout.write(text + "\n")
            self.stdout.flush()

    # -- downloads -----------------------------------------------------------------
    def _start(self, arg: str) -> None:
        try:
            words = shlex.split(arg)
        except ValueError as exc:
            self.say(f"error: {exc}")
            return
        output = None
        if "-o" in words:
            i = words.index("-o")
            if i + 1 >= len(words):
                self.say("error: -o needs a path")
                return
            # relative to the node's download directory, not to wherever it was started
            output = self.app.config.directory / Path(words[i + 1]).expanduser()
            del words[i:i + 2]
        if len(words) != 1:
            self.say("usage: get URL [-o PATH]")
            return
        job = self.app.start_download(words[0], output, on_end=self._ended)
        self.say(f"[{job.number}] started {words[0]}")

    def _ended(self, job: DownloadJob) -> None:
        if job.report is not None:
            self.say(f"[{job.number}] {job.report.summary()}")
        else:
            self.say(f"[{job.number}] error: {job.error}")

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
        peers, warning = self.app.membership.peers()
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
            dl = job.download
            if job.report is not None:
                status = job.report.summary()
            elif job.error is not None:
                status = f"failed: {job.error}"
            else:
                done, size = dl.done_bytes, dl.size
                pct = f" {100 * done / size:.0f}%" if size else ""
                rate = done / max(1e-3, time.monotonic() - dl.started)
                status = f"{dl.state}{pct} {human_bytes(done)} at {human_bytes(rate)}/s"
            self.say(f"[{job.number}] {job.url}  {status}")

    def do_help(self, arg: str) -> None:
        self.say(HELP)

    def do_quit(self, arg: str) -> bool:
        """quit: unregister and exit"""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self.say("")
        return True


def run_prompt(app: NodeApp, stop: threading.Event) -> None:
    """Run the prompt until quit, end of input or ``stop``; Ctrl-C only clears the line."""
    prompt = Prompt(app)
    intro = prompt.intro
    while not stop.is_set():
        try:
            prompt.cmdloop(intro)
            return
        except OSError:
            return  # the terminal went away (hang-up): same as end of input
        except KeyboardInterrupt:
            intro = None
            sys.stdout.write("^C (downloads keep running; type quit to exit)\n")
            sys.stdout.flush()
