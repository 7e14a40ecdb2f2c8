"""What ``get`` takes, at the command line and at the prompt: one parser builder.

Light on purpose (argparse and the pure checks only): ``node.py --help`` and a
usage error build this parser without loading the HTTP stack or the engine.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Callable

from .checksums import parse_checksum
from .errors import SwiftError
from .http.profile import add_request_options
from .http.retry import Retry
from .http.url import normalize_url
from .units import parse_count, parse_rate, parse_size

#: --tries bound: each try of a failing range waits longer (backoff up to
#: 30 s), so more than this is hours of waiting on a dead server.
MAX_TRIES = 100
#: --max-connection-per-server bound and default, as aria2's (1-16; swift's
#: default 4 is swift.mirrors.PER_MIRROR, repeated here to keep this module light).
MAX_PER_MIRROR = 16
PER_MIRROR_DEFAULT = 4


# -- what `get` takes, at the command line and at the prompt ------------------------------
def _checked(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type from a parser that raises ValueError with a message for the user."""
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__
    return convert


def _checksum(text: str) -> str:
    parse_checksum(text)
    return text


def _output_at_prompt(text: str) -> Path:
    """``-o`` at the prompt: a path; ``-`` (standard output) would be the prompt's own screen."""
    if text == "-":
        raise argparse.ArgumentTypeError("'-' (standard output) is for 'node.py get'; at the prompt, "
                                         "give a file name")
    return Path(text)


def _continue_at(text: str) -> bool:
    """curl's ``-C -`` (resume where the partial file ends): the only offset swift takes."""
    if text.strip() != "-":
        raise argparse.ArgumentTypeError(
            f"only '-C -' is taken ({text!r} is not): swift resumes from the record beside "
            f"NAME.part by itself, at the bytes it holds, never at an offset given by hand")
    return True


class Instead(argparse.Action):
    """A habit of curl, wget or aria2c that swift serves another way: using it is a
    usage error (exit 2) whose one line says what swift does instead."""

    def __init__(self, option_strings, dest, instead: str = "", **kwargs):
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: {self.instead}")


def _add_habits(parser: argparse.ArgumentParser) -> None:
    """The options of curl, wget and aria2c that users reach for (README, "Habits of other tools").

    Those with a meaning here are accepted as what they mean; the others are
    :class:`Instead`: one line saying what swift does, exit status 2.
    """
    parser.add_argument("-L", "--location", action="store_true",
                        help="follow redirects (curl): always done, up to 10")
    parser.add_argument("-O", "--remote-name", action="store_true",
                        help="save under the server's file name (curl): the default without -o")
    parser.add_argument("-f", "--fail", action="store_true",
                        help="fail on an HTTP error (curl): always done; an error page is never saved")
    parser.add_argument("-C", "--continue-at", dest="continue_", type=_continue_at, metavar="-",
                        help="'-C -' resumes (curl): always done, as -c")
    parser.add_argument("--retry", type=_checked(lambda t: parse_count(t, low=0, high=MAX_TRIES - 1)),
                        metavar="N", help="retries after the first try (curl): --tries N+1")
    parser.add_argument("--max-time", action=Instead, metavar="S",
                        help="(curl) not taken: says what swift does instead",
                        instead="swift sets no limit on a whole download; --timeout S limits each "
                                "wait for data (or run it under 'timeout S node.py get ...')")
    parser.add_argument("-u", "--user", action=Instead, metavar="USER:PASSWORD",
                        help="(curl) not taken: says what swift does instead",
                        instead="swift takes credentials in the URL (https://USER:PASSWORD@HOST/PATH, "
                                "kept secret as -u's would be) or as --header 'Authorization: ...'")


def split_habit(words: list[str], *, silent: bool = True) -> str | None:
    """The usage error for aria2c's ``-s N`` (``-s 4``, ``-s4``, ``-s=4``), else None.

    aria2c's ``-s N`` is ``--split=N``: N connections for one file. Here
    ``-s`` is curl's ``--silent`` and takes no value, so ``-s 4`` would be
    read as "quiet" and a URL ``4``: said in one line instead, with what swift
    does. ``silent``: whether ``-s`` alone is taken where ``words`` come from
    (``node.py``; not the prompt's ``get``).
    """
    for i, word in enumerate(words):
        if word == "--":
            break
        if word == "-s" and i + 1 < len(words) and words[i + 1].isdigit():
            count = words[i + 1]
        elif word.startswith("-s") and word[2:].lstrip("=").isdigit():
            count = word[2:].lstrip("=")
        else:
            continue
        slots = "--slots N" if silent else "the node's --slots N"
        alone = "; for curl's --silent, give -s alone" if silent else ""
        return (f"-s {count} is aria2c's --split (connections for one file): swift splits the file "
                f"among the machines by itself ({slots} sets the connections on this machine's "
                f"own link){alone}")
    return None


def tries_of(args: argparse.Namespace) -> int | None:
    """Tries per request from ``--tries N``, else curl's ``--retry N`` (N + 1); None: the default."""
    if getattr(args, "tries", None):
        return args.tries
    retries = getattr(args, "retry", None)
    return retries + 1 if retries is not None else None


def unrecognized(parser: argparse.ArgumentParser, words: list[str]) -> str:
    """The usage error for ``words`` that ``parser`` does not know, with the nearest of its
    options for each mistyped one (``did you mean --checksum?``, :func:`difflib.get_close_matches`).

    Where an unknown option is among them, only the options are named: the words
    around one are its value or a URL that its value pushed out of place (at the
    prompt, ``get --chekcsum HEX URL`` leaves the URL over), never the mistake.
    So the line is the same at the prompt and on the command line.
    """
    options = [word for word in words if word.startswith("-") and len(word) > 1]
    words = options or words
    known = [s for action in parser._actions for s in action.option_strings  # noqa: SLF001
             if action.help != argparse.SUPPRESS]
    hints = []
    for word in words:
        option = word.split("=", 1)[0]
        if option.startswith("-") and len(option) > 1:
            close = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
            if close:
                hints.append((option, close[0]))
    if len(hints) == 1:
        return f"unrecognized arguments: {' '.join(words)}; did you mean {hints[0][1]}?"
    said = "; ".join(f"{wrong}: did you mean {right}?" for wrong, right in hints)
    return f"unrecognized arguments: {' '.join(words)}" + (f"; {said}" if said else "")


def add_get_arguments(parser: argparse.ArgumentParser, *, at_prompt: bool = False) -> None:
    """The arguments of ``get``: the same parser builder for ``node.py get`` and the prompt.

    At the prompt, ``get`` takes one URL and the per-download options only;
    the script-facing ones (several URLs, ``-i``, ``--report``) belong to
    ``node.py get``; ``--limit-rate`` and ``--tries`` apply to that one
    download (the prompt's node has its own command line for the rest).
    """
    if at_prompt:
        parser.add_argument("url", nargs="?",
                            help="the URL to download (without a scheme, http:// is meant; "
                                 "none with -M)")
    else:
        parser.add_argument("urls", nargs="*", metavar="URL",
                            help="the URLs to download, one after another (without a scheme, "
                                 "http:// is meant)")
        parser.add_argument("-i", "--input-file", type=Path, metavar="FILE",
                            help="read URLs from FILE, one per line ('#' starts a comment line; "
                                 "'-' is standard input)")
    parser.add_argument("-c", "--continue", dest="continue_", action="store_true",
                        help="resume a partial download: always done (a partial file with its "
                             "resume record is taken up by itself); accepted as wget and aria2c take it")
    parser.add_argument("-o", "--output", type=_output_at_prompt if at_prompt else Path, metavar="PATH",
                        help="output file: a relative path goes inside the download directory "
                             "(-d DIR -o NAME writes DIR/NAME, as aria2c; no '..' out of it), an "
                             "absolute one is used as given; an existing directory gets the "
                             "server's name in it"
                             + ("" if at_prompt else "; '-' writes the file to standard output"))
    parser.add_argument("--checksum", type=_checked(_checksum), metavar="ALGO:HEX",
                        help="verify the file: sha256:HEX (also md5, sha1, sha512)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--restart", action="store_true",
                        help="discard a partial download and start over")
    parser.add_argument("--no-peers", action="store_true", help="do not ask discovery for peers")
    add_mirror_arguments(parser)
    parser.add_argument("--no-share", action="store_true",
                        help="neither take LAN copies other members hold nor offer this file to them")
    add_request_options(parser)  # --header, -U, --referer, --load-cookies, --ca-certificate, --insecure
    parser.add_argument("--tries", type=_checked(lambda t: parse_count(t, low=1, high=MAX_TRIES)),
                        metavar="N", help=f"tries per request before giving up (1-{MAX_TRIES}; "
                                          f"default {Retry.attempts})")
    if at_prompt:  # node.py get has it among the node's options (cli._download_options)
        parser.add_argument("--limit-rate", type=_checked(parse_rate), metavar="RATE",
                            help="at most RATE bytes/s for this download (e.g. 2M)")
    _add_habits(parser)
    if not at_prompt:
        parser.add_argument("--report", type=Path, metavar="FILE",
                            help="write a JSON report to FILE, on failure too (with the error)")
        parser.add_argument("--piece-size", type=_checked(parse_size), help=argparse.SUPPRESS)
        parser.add_argument("--spot-check", type=_checked(_fraction), help=argparse.SUPPRESS)


def _fraction(text: str) -> float:
    """A share between 0 and 1 (``--spot-check``: the LAN pieces compared with the origin)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r} is not a share between 0 and 1")
    return value


def _mirror_url(text: str) -> str:
    """``--mirror URL``: an http or https URL (without a scheme, http:// is meant)."""
    url = with_scheme(text)
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"a mirror is an http or https URL, not {text[:60]!r}")
    return url


def add_mirror_arguments(parser: argparse.ArgumentParser) -> None:
    """``-M``, ``--mirror``, ``--no-mirrors``, ``--no-follow-metalink``,
    ``--max-connection-per-server``: the same at the command line and at the prompt."""
    parser.add_argument("-M", "--metalink-file", type=Path, metavar="FILE",
                        help="download every file of a Metalink 4 document (.meta4), each from "
                             "its listed URLs, checked against its hashes")
    parser.add_argument("--mirror", action="append", default=[], metavar="URL",
                        type=_checked(_mirror_url),
                        help="another URL of the same file (repeat for more); the first URL "
                             "names the file, and request options go to it alone")
    parser.add_argument("--no-mirrors", action="store_true",
                        help="ignore the mirrors and the digest an origin's headers name "
                             "(RFC 6249 Link: rel=duplicate, Digest, Repr-Digest)")
    parser.add_argument("--no-follow-metalink", action="store_true",
                        help="save a Metalink document a URL answers with, instead of "
                             "downloading the files it lists")
    parser.add_argument("--max-connection-per-server", dest="per_mirror", metavar="N",
                        type=_checked(lambda t: parse_count(t, low=1, high=MAX_PER_MIRROR)),
                        default=PER_MIRROR_DEFAULT,
                        help=f"connections per mirror on this machine (1-{MAX_PER_MIRROR}; "
                             f"default {PER_MIRROR_DEFAULT})")


def with_scheme(url: str) -> str:
    """A URL as curl takes it: without a scheme, ``http://`` is meant (``example.com/f.iso``)."""
    url = url.strip()
    return url if "://" in url else f"http://{url}"


def checked_url(text: str) -> str:
    """:func:`with_scheme`, and refused at once (ValueError, a usage error) when it cannot be a
    URL (no host, a bad port, an unclosed ``[``: :func:`swift.http.url.normalize_url`'s rules)."""
    url = with_scheme(text)
    try:
        normalize_url(url)
    except SwiftError as exc:
        raise ValueError(str(exc)) from None
    return url
