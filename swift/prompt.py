"""The interactive prompt of a node (``python3 node.py`` without a subcommand).

Downloads started here run in the background, each on its own thread, so
the user can start a second one while the first runs; typing a URL returns
at once (even with discovery down: peers are asked for on the download's
own thread). Every line about a download carries its number, ``[N]``, and
comes in order: ``started``, any notes, then the summary or the error.

On a terminal, messages appear *above* the line being typed, which is then
redrawn (readline's ``rl_forced_update_display`` is not exposed in Python:
clear the line, print the message, print the prompt and
``readline.get_line_buffer()`` again), and one progress line for the running
downloads is kept up to date in place above the input line.

Ctrl-C at the prompt only clears the line: it cancels nothing and does not
stop the node. ``quit`` or end of input with downloads running asks, on a
terminal, whether to wait for them, cancel them (their partial files are
kept for resume) or stay; with input from a pipe or file it waits for them
and says so. Then the node unregisters and exits.

The prompt talks to the node only through ``NodeApp``'s public API; ``get``
lines are read by the same parser builder as ``node.py get``
(``getargs.add_get_arguments``).
"""

from __future__ import annotations

import argparse
import cmd
import logging
import shlex
import shutil
import threading
import time
from pathlib import Path

from .getargs import add_get_arguments, split_habit, tries_of, unrecognized, with_scheme
from .getitems import GetItem, fetch_metalink, items_of, place_of, read_metalink_file
from .metalink import looks_like_metalink
from .names import output_path
from .nodeapp import STOP_DEADLINE, AlreadyDownloading, DownloadEntry, NodeApp, event_line
from .errors import SwiftError
from .http.profile import INSECURE_WARNING, profile_from_args
from .http.retry import Retry
from .http.url import redact_url
from .units import human_bytes, human_rate

HELP = """\
commands:
  URL                      download URL (same as get URL; without a scheme, http:// is meant)
  get URL [OPTIONS]        download URL into the download directory, or to -o PATH
                           (a relative PATH is taken inside the download directory);
                           'get --help' lists every option (--checksum, --limit-rate, ...)
  request URL              old spelling of get
  jobs                     show the downloads: state, bytes, this run's rate
  pause N / resume N       stop download N for now / go on from where it stopped
  cancel N                 stop download N (its partial file is kept; resume N goes on)
  peers                    list the nodes discovery knows
  shares                   list what this node offers other members as LAN copies
  unshare LABEL|PATH       stop offering one of them (the file itself stays)
  help                     this text
  quit                     unregister and exit (also end of input, Ctrl-D); asks first
                           while downloads run"""


#: Seconds between refreshes of the live progress line: often enough to see
#: motion, rarely enough not to disturb typing.
PROGRESS_INTERVAL = 1.0
#: Seconds between checks while ``quit`` waits for downloads (Ctrl-C stops waiting).
WAIT_STEP = 0.5


class _LineParser(argparse.ArgumentParser):
    """argparse for one prompt line: an error is a ValueError, never an exit; a
    mistyped option gets the nearest known one (:func:`swift.getargs.unrecognized`)."""

    def error(self, message: str):
        raise ValueError(message)

    def parse_args(self, args=None, namespace=None):
        habit = split_habit(list(args or []), silent=False)
        if habit:
            self.error(habit)
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unrecognized(self, extras))
        return namespace


def get_parser() -> argparse.ArgumentParser:
    parser = _LineParser(prog="get", add_help=False)
    add_get_arguments(parser, at_prompt=True)
    return parser


def usage() -> str:
    """The prompt's ``get`` usage, from its parser (``get --help`` shows it): every option
    it takes, none it does not."""
    return get_parser().format_usage().strip()


class _PromptLog(logging.Handler):
    """While the prompt runs, log records are its lines: above the input line, as
    ``note: ...`` (or ``error: ...``), never written over what is being typed."""

    def __init__(self, prompt: "Prompt"):
        super().__init__()
        self.prompt = prompt

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            self.prompt.say(f"{'error' if record.levelno >= logging.ERROR else 'note'}: {text}")
        except Exception:  # noqa: BLE001 - logging must never break the prompt
            self.handleError(record)


def _items(args: argparse.Namespace) -> list[GetItem]:
    """The files of one prompt ``get``: ``URL [--mirror URL2 ...]``, or ``-M FILE`` (every file)."""
    if args.metalink_file is not None:
        if args.url or args.mirror or args.output:
            raise ValueError("-M takes its URLs and names from the file: give no URL, --mirror or -o")
        return items_of(read_metalink_file(args.metalink_file.expanduser()))
    if not args.url:
        raise ValueError("give a URL (or -M FILE)")
    return [GetItem(with_scheme(args.url), tuple((m, i + 1) for i, m in enumerate(args.mirror)))]


def _looks_like_url(word: str) -> bool:
    """``example.com/f.iso``, ``10.0.0.5:8000/x``, ``host.lan``: a URL without a scheme."""
    return "://" in word or (("." in word or "/" in word) and word[:1].isalnum())


class Prompt(cmd.Cmd):
    prompt = "swift> "

    def __init__(self, app: NodeApp, stdin=None, stdout=None):
        super().__init__(stdin=stdin, stdout=stdout)
        self.app = app
        self._print_lock = threading.Lock()
        self._parser = get_parser()
        self.intro = (f"swift node {app.name} serving on port {app.port}; "
                      f"type a URL to download it, 'help' for commands")
        self._terminal = _isatty(self.stdout)
        # readline draws the prompt itself; its pre-input hook says when that is done
        self._hooked = self._terminal and _isatty(self.stdin) and _has_readline()
        self._reading = False        # the input line is on screen (redraw it after a message)
        self._drawing = False        # readline is drawing the prompt: hold messages until done
        self._held: list[tuple[str, bool]] = []
        self._asking: str | None = None  # the prompt of a question being asked, if any
        self._progress_shown = False  # the line above the input line is the progress line
        self._ticker_stop = threading.Event()
        self._ticker: threading.Thread | None = None
        #: Ctrl-C ended the wait at `quit` with input from a pipe: downloads were cancelled
        self.interrupted = False

    # -- output ----------------------------------------------------------------------
    def say(self, text: str, *, progress: bool = False) -> None:
        """Print a message; on a terminal, above the input line, which is redrawn."""
        with self._print_lock:
            if not self._terminal:
                if not progress:
                    self.stdout.write(text + "\n")
                    self.stdout.flush()
                return
            if self._drawing:
                self._held.append((text, progress))
                return
            self._write_above(text, progress)

    def _write_above(self, text: str, progress: bool) -> None:
        """Write one message line above the input line (call with the print lock held)."""
        out = "\r\x1b[K"
        if self._progress_shown:
            out += "\x1b[1A\r\x1b[K"  # replace the progress line: it is out of date
        self.stdout.write(out + text + "\n")
        self._progress_shown = progress
        if self._reading:
            self.stdout.write((self._asking or self.prompt) + _line_buffer())
        self.stdout.flush()

    def preloop(self) -> None:
        if self._hooked:
            self._drawing = True
            _set_pre_input_hook(self._input_ready)
        if self._terminal and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="prompt-progress", daemon=True)
            self._ticker.start()

    def precmd(self, line: str) -> str:
        with self._print_lock:
            self._reading = False
            self._progress_shown = False  # the user's Enter moved the screen on
        return line

    def postcmd(self, stop: bool, line: str) -> bool:
        with self._print_lock:
            self._drawing = self._hooked and not stop
        return stop

    def _input_ready(self) -> None:
        """readline's pre-input hook: the prompt is on screen and input begins."""
        with self._print_lock:
            self._drawing, self._reading = False, True
            held, self._held = self._held, []
            for text, progress in held:
                self._write_above(text, progress)

    def postloop(self) -> None:
        with self._print_lock:
            self._reading = self._drawing = False
            held, self._held = self._held, []
            for text, progress in held:
                self._write_above(text, progress)
        _set_pre_input_hook(None)

    def close(self) -> None:
        """Stop the progress line's thread."""
        self._ticker_stop.set()
        if self._ticker is not None:
            self._ticker.join(2 * PROGRESS_INTERVAL)

    def _tick(self) -> None:
        while not self._ticker_stop.wait(PROGRESS_INTERVAL):
            parts = [f"[{entry.number}] {progress(entry)}" for entry in self.app.downloads()
                     if entry.running and entry.status().state == "running"]
            if parts and self._reading:
                width = shutil.get_terminal_size().columns - 1
                self.say("  ".join(parts)[:width], progress=True)

    # -- downloads -----------------------------------------------------------------
    def _start(self, arg: str) -> None:
        try:
            words = shlex.split(arg)
            if "-h" in words or "--help" in words:
                self.say(self._parser.format_help().rstrip())
                return
            args = self._parser.parse_args(words)
        except ValueError as exc:
            self.say(f"error: {exc}; usage: get URL [OPTIONS] ('get --help' lists every option)")
            return
        try:  # one URL (a malformed one is that download's error, [N] error: ...) with its
            items = _items(args)  # --mirror URLs, or every file of -M FILE
        except (ValueError, SwiftError) as exc:
            self.say(f"error: {exc}; usage: get URL [OPTIONS] ('get --help' lists every option)")
            return
        try:  # inside the node's download directory, not wherever it was started (names.output_path)
            output = output_path(self.app.directory, args.output,
                                 confined=self.app.directory != Path(".")) if args.output else None
        except ValueError as exc:
            self.say(f"error: {exc}")
            return
        try:
            profile = profile_from_args(args)  # --header, -U, ... (swift.http.profile)
        except SwiftError as exc:
            self.say(f"error: {exc}")
            return
        if profile.insecure:
            self.say(INSECURE_WARNING)
        if len(items) == 1 and items[0].name is None and not items[0].mirrors \
                and not args.no_follow_metalink and looks_like_metalink(items[0].url, None):
            # a Metalink document: fetched on its own thread, so the prompt stays free
            threading.Thread(target=self._follow, args=(items[0].url, args, profile),
                             name="metalink", daemon=True).start()
            return
        self._start_items(items, args, output, profile)

    def _follow(self, url: str, args: argparse.Namespace, profile) -> None:
        """Get every file of the Metalink document at ``url`` (``--follow-metalink``)."""
        from .http.remote import RemoteFile
        shown = redact_url(url, strict=False)
        opts = self.app.download_options(None, {})
        session = RemoteFile(url, profile=profile).session(source_address=opts.source_address)
        try:
            doc = fetch_metalink(session, url, timeout=opts.timeout, where=shown)
        except SwiftError as exc:
            self.say(f"error: {exc}")
            return
        finally:
            session.close()
        for note in doc.notes:
            self.say(f"note: {note}")
        self.say(f"{shown} is a Metalink document: getting its {len(doc.files)} file(s)")
        self._start_items(items_of(doc), args, None, profile)

    def _start_items(self, items: list[GetItem], args: argparse.Namespace, output, profile) -> None:
        for item in items:
            try:
                place = {} if item.name is None else {"directory": place_of(item, self.app.directory)}
                tries = tries_of(args)
                retry = {"retry": Retry(attempts=tries)} if tries else {}
                self.app.start_download(item.url, output, no_peers=args.no_peers, on_event=self._event,
                                        checksum=args.checksum or item.checksum, force=args.force,
                                        restart=args.restart, before_start=self._same_url_note,
                                        profile=profile, limit_rate=args.limit_rate,
                                        header_mirrors=not args.no_mirrors,
                                        per_mirror=args.per_mirror, **item.options(), **place, **retry,
                                        **({"share": False, "share_index": None} if args.no_share else {}))
            except AlreadyDownloading as exc:
                self.say(f"{redact_url(item.url, strict=False)}: {exc}")
            except SwiftError as exc:
                self.say(f"error: {exc}")

    def _same_url_note(self, entry: DownloadEntry) -> None:
        earlier = [other.number for other in self.app.downloads()
                   if other.url == entry.url and other is not entry]
        if earlier:
            self.say(f"note: [{entry.number}] has the same URL as [{earlier[-1]}]")

    def _event(self, entry: DownloadEntry, kind: str, text: str) -> None:
        line = event_line(entry.number, kind, text)
        if line is not None:
            self.say(line)

    def do_get(self, arg: str) -> None:
        """get URL [-o PATH]: download URL"""
        self._start(arg)

    def do_request(self, arg: str) -> None:
        """request URL: old spelling of get"""
        self._start(arg)

    def default(self, line: str) -> None:
        word = line.strip().split()[0] if line.strip() else ""
        if _looks_like_url(word):
            self._start(line)
        else:
            self.say(f"unknown command {word!r}; type a URL, or 'help'")

    def emptyline(self) -> bool:
        return False

    def _entry(self, arg: str, command: str) -> DownloadEntry | None:
        word = arg.strip().lstrip("[").rstrip("]")
        if not word.isdigit():
            self.say(f"usage: {command} N, with N a download's number (see jobs)")
            return None
        entry = self.app.download(int(word))
        if entry is None:
            self.say(f"there is no download [{int(word)}] (see jobs)")
        return entry

    def do_cancel(self, arg: str) -> None:
        """cancel N: stop download N, keeping its partial file"""
        entry = self._entry(arg, "cancel")
        if entry is not None and not entry.cancel():
            self.say(f"[{entry.number}] is not running")

    def do_pause(self, arg: str) -> None:
        """pause N: stop download N until resume N"""
        entry = self._entry(arg, "pause")
        if entry is not None and not entry.pause():
            self.say(f"[{entry.number}] is not running")

    def do_resume(self, arg: str) -> None:
        """resume N: go on with a paused or cancelled download"""
        entry = self._entry(arg, "resume")
        if entry is not None and not entry.resume():
            state = entry.status().state
            self.say(f"[{entry.number}] {'has failed' if state == 'failed' else 'is ' + state}: "
                     f"only a paused or cancelled download can be resumed")

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

    def do_shares(self, arg: str) -> None:
        """shares: list what this node offers other members as LAN copies"""
        holdings = self.app.index.holdings()
        if not holdings:
            self.say("this node offers nothing" + ("" if self.app.index.enabled else " (--no-share)"))
        for h in holdings:
            offered = self.app.index.offered(h.label) is not None
            state = ("offered" if offered else
                     f"not offered: private ({h.why_private})" if h.private else
                     "not offered: sharing is off (--no-share)" if not self.app.index.enabled else
                     "not offered: the file changed, moved or is gone since it was recorded")
            held = "complete" if h.complete else f"{human_bytes(h.done.total)} so far"
            self.say(f"{h.label[:12]}  {h.path}  {human_bytes(h.size)} ({held})  {state}")

    def do_unshare(self, arg: str) -> None:
        """unshare LABEL|PATH: stop offering one LAN copy (the file itself stays)"""
        word = arg.strip()
        if not word:
            self.say("usage: unshare LABEL|PATH, with LABEL the first characters shown by shares")
            return
        removed = self.app.index.remove(word)
        if not removed:
            self.say(f"this node offers nothing by {word!r} (see shares)")
        for h in removed:
            self.say(f"no longer offered: {h.path}")

    def do_jobs(self, arg: str) -> None:
        """jobs: show running and finished downloads"""
        entries = self.app.downloads()
        if not entries:
            self.say("no downloads yet")
        for entry in entries:
            self.say(f"[{entry.number}] {redact_url(entry.url, strict=False)}  {describe(entry)}")

    def do_help(self, arg: str) -> None:
        self.say(HELP)

    # -- leaving -------------------------------------------------------------------
    def do_quit(self, arg: str) -> bool:
        """quit: unregister and exit"""
        running = [entry for entry in self.app.downloads() if entry.running]
        if not running:
            return True
        numbers = ", ".join(f"[{entry.number}]" for entry in running)
        them, their, files = ("them", "their", "files") if len(running) > 1 else ("it", "its", "file")
        if not _isatty(self.stdin):
            self.say(f"waiting for {numbers} to finish before leaving (input is not a terminal; "
                     f"Ctrl-C cancels {them}, keeping {their} partial {files})")
            if not wait_for(running):  # no prompt to go back to: Ctrl-C means leave
                self.say(f"cancelling; the partial {files} "
                         f"{'are' if len(running) > 1 else 'is'} kept: the same get resumes {them}")
                cancel_and_wait(running)
                self.interrupted = True  # the node exits 130, as for any Ctrl-C
            return True
        if all(entry.keeps_partial for entry in running):
            cancel = f"cancel {them} and keep {their} partial {files} for resume"
        else:  # a plain stream's data is removed: no promise of a resume
            cancel = f"cancel {them} (a server without byte ranges cannot resume: its data is removed)"
        self.say(f"{numbers} still running: wait for {them} (w), {cancel} (c), "
                 f"or stay at the prompt (s)?")
        answer = self._ask("[w/c/s] ")
        if answer.startswith("w"):
            self.say(f"waiting for {numbers} (Ctrl-C to stop waiting)")
            if wait_for(running):
                return True
            self.say("stopped waiting; the downloads go on")
            return False
        if answer.startswith("c"):
            cancel_and_wait(running)
            return True
        self.say("staying; the downloads go on")
        return False

    def _ask(self, question: str) -> str:
        """One answer from the user, lower case; end of input is "w", Ctrl-C is "s"."""
        with self._print_lock:
            self._asking, self._reading = question, False
        try:
            return input(question).strip().lower()
        except EOFError:
            return "w"
        except KeyboardInterrupt:
            self.say("")
            return "s"
        finally:
            with self._print_lock:
                self._asking, self._reading = None, False

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self.say("")
        return self.do_quit(arg)


def cancel_and_wait(entries: list[DownloadEntry]) -> None:
    """Cancel ``entries`` as the node leaves, and give them the node's stop deadline to say
    what they kept (and how to resume it after a restart: no ``resume N`` then)."""
    for entry in entries:
        entry.cancel(leaving=True)
    end = time.monotonic() + STOP_DEADLINE
    for entry in entries:
        entry.wait(max(0.0, end - time.monotonic()))


def wait_for(entries: list[DownloadEntry]) -> bool:
    """Wait for ``entries``; True once all ended, False if Ctrl-C stopped the wait."""
    try:
        for entry in entries:
            while not entry.wait(WAIT_STEP):
                pass
        return True
    except KeyboardInterrupt:
        return False


def progress(entry: DownloadEntry) -> str:
    """``45% 12.0 MiB at 8.0 MiB/s``: share done, bytes, and this run's rate."""
    s = entry.status()
    pct = f"{100 * s.done / s.size:.0f}% " if s.size else ""
    rate = f" at {human_rate(s.rate)}" if s.rate > 0 else ""  # none measured yet
    return f"{pct}{human_bytes(s.done)}{rate}"


def describe(entry: DownloadEntry) -> str:
    """One line on a download for the ``jobs`` command: its state, then progress, summary or error."""
    s = entry.status()
    if s.summary is not None:
        return s.summary
    if s.error is not None:
        return f"{s.state}: {s.error}"
    return f"{s.state} {progress(entry)}"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _has_readline() -> bool:
    try:
        import readline
        return hasattr(readline, "set_pre_input_hook")
    except ImportError:  # pragma: no cover - a Python without readline
        return False


def _set_pre_input_hook(hook) -> None:
    try:
        import readline
        readline.set_pre_input_hook(hook)
    except (ImportError, AttributeError):  # pragma: no cover - no GNU readline
        pass


def _line_buffer() -> str:
    try:
        import readline
        return readline.get_line_buffer()
    except ImportError:  # pragma: no cover - a Python without readline
        return ""


def run_prompt(app: NodeApp) -> bool:
    """Run the prompt until quit or end of input; Ctrl-C only clears the line.

    True when the user's Ctrl-C ended it (cancelling downloads at `quit` with
    input from a pipe): the node then exits 130."""
    prompt = Prompt(app)
    root = logging.getLogger()
    handlers = root.handlers[:]
    for handler in handlers:  # they would write over the input line
        root.removeHandler(handler)
    root.addHandler(_PromptLog(prompt))
    notice, say = app.notice, app.say  # the node's own notes and lines about downloads
    app.notice = lambda text: prompt.say(f"note: {text}")  # started elsewhere: above too
    app.say = prompt.say
    try:
        while True:
            try:
                prompt.cmdloop()
                return prompt.interrupted
            except OSError:
                return False  # the terminal went away (hang-up): same as end of input
            except KeyboardInterrupt:
                prompt.intro = None  # cmdloop() shows self.intro each time: once is enough
                prompt.postloop()
                prompt.say("^C (downloads keep running; type quit to exit)")
    finally:
        prompt.close()
        app.notice, app.say = notice, say
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
