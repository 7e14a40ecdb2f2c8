"""What ``get`` takes, at the command line and at the prompt: one parser builder.

Light on purpose (argparse and the pure checks only): ``node.py --help`` and a
usage error build this parser without loading the HTTP stack or the engine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from .checksums import parse_checksum
from .http.profile import add_request_options
from .http.retry import Retry
from .units import parse_count, parse_size

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


def add_get_arguments(parser: argparse.ArgumentParser, *, at_prompt: bool = False) -> None:
    """The arguments of ``get``: the same parser builder for ``node.py get`` and the prompt.

    At the prompt, ``get`` takes one URL and the per-download options only;
    the script-facing ones (several URLs, ``-i``, ``--report``, retries and
    timeouts) belong to ``node.py get`` (the prompt's node has its own
    command line for the rest).
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
                        help="output path, used as given (at the prompt, a relative path is "
                             "taken inside the download directory)"
                             + ("" if at_prompt else "; '-' writes the file to standard output"))
    parser.add_argument("--checksum", type=_checked(_checksum), metavar="ALGO:HEX",
                        help="verify the file: sha256:HEX (also md5, sha1, sha512)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--restart", action="store_true",
                        help="discard a partial download and start over")
    parser.add_argument("--no-peers", action="store_true", help="do not ask discovery for peers")
    add_mirror_arguments(parser)
    add_request_options(parser)  # --header, -U, --referer, --load-cookies, --ca-certificate, --insecure
    if not at_prompt:
        parser.add_argument("--report", type=Path, metavar="FILE",
                            help="write a JSON report to FILE, on failure too (with the error)")
        parser.add_argument("--tries", type=_checked(lambda t: parse_count(t, low=1, high=MAX_TRIES)),
                            metavar="N", help=f"tries per request before giving up (1-{MAX_TRIES}; "
                                              f"default {Retry.attempts})")
        parser.add_argument("--piece-size", type=_checked(parse_size), help=argparse.SUPPRESS)


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
