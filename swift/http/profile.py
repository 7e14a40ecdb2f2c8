"""Request shaping as one frozen value: the headers, cookies and TLS trust of a download.

A :class:`RequestProfile` is what curl's ``-H``/``-A``/``-e``/``-b``/``--cacert``/``-k``
(and aria2c's ``--header``/``-U``/``--referer``/``--load-cookies``/
``--ca-certificate``/``--check-certificate=false``) say: it applies to the
probe, every local range, the plain stream and every helper's fetch of one
download.

Secrets
-------
``Authorization``, ``Cookie`` and ``Proxy-Authorization`` headers, every header
whose name says it carries a credential (``X-Api-Key``, ``PRIVATE-TOKEN``,
``X-Auth-Token``, ...: :func:`is_secret_header`), the cookies of a cookie file,
and ``user:password@`` in a URL are secrets. They never
appear in logs, progress lines, error messages or reports
(:meth:`RequestProfile.redacted`, :func:`swift.http.url.redact_url`), and they
go to a helper only over a private connection (:meth:`RequestProfile.peer_headers`
with ``private=True``; contract 3: ``wire.Connection.private``).

Headers a download needs to control itself (``Range``, ``If-Range``,
``Accept-Encoding``, ``Host``, framing headers) cannot be set by the user:
they would break the byte-range contract, so they are refused with a message.

Pure except :meth:`RequestProfile.build`, which reads the cookie file and
checks that the CA file can be read.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import ErrorCode, UsageError
from .url import secret_query_parameters, split_credentials

if TYPE_CHECKING:  # loaded by load_cookies only: it costs about 20 ms at start-up
    import http.cookiejar

__all__ = ["RequestProfile", "SECRET_HEADERS", "DEFAULT_USER_AGENT", "is_secret_header",
           "parse_header"]

#: Sent unless the user gives another User-Agent.
DEFAULT_USER_AGENT = "swift-downloader"
#: Header names (lower case) whose values are credentials.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
#: Parts of a header name (lower case) that mark a credential outside the standard
#: ones: API keys and tokens of file hosts and registries (``X-Api-Key``,
#: ``Ocp-Apim-Subscription-Key``, GitLab's ``PRIVATE-TOKEN``/``JOB-TOKEN``,
#: ``X-Auth-Token``, ``X-JFrog-Art-Api``, ``X-Amz-Security-Token``, session ids).
#: A header taken for a secret by mistake costs only speed (no helper sees it
#: without a private connection, the file is not offered), one missed leaks it.
SECRET_NAME_PARTS = ("auth", "token", "key", "secret", "session", "passw", "credential",
                     "cookie", "signature", "api")


def is_secret_header(name: str) -> bool:
    """True if a request header called ``name`` (any case) may carry a credential:
    :data:`SECRET_HEADERS`, or a name holding one of :data:`SECRET_NAME_PARTS`."""
    lower = name.strip().lower()
    return lower in SECRET_HEADERS or any(part in lower for part in SECRET_NAME_PARTS)
#: Header names (lower case) swift sets itself on every request, or that
#: describe the message framing: a user value would break the range contract.
RESERVED_HEADERS = frozenset({"range", "if-range", "accept-encoding", "host", "content-length",
                              "transfer-encoding", "connection", "te", "trailer", "upgrade",
                              "keep-alive", "expect"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# visible ASCII, space, tab and obs-text (RFC 9110 section 5.5)
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
#: Largest total size of the extra headers; the peer protocol carries at least 16 KiB.
MAX_HEADERS_SIZE = 16 * 1024


def parse_header(line: str) -> tuple[str, str]:
    """``'Name: value'`` → (name, value); :class:`UsageError` saying what is wrong."""
    name, colon, value = line.partition(":")
    name, value = name.strip(), value.strip(" \t")
    if not colon or not name:
        raise UsageError(f"--header {line!r}: expected 'Name: value'", ErrorCode.BAD_OPTION)
    check_header(name, value)
    return name, value


def check_header(name: str, value: str) -> None:
    """Raise :class:`UsageError` unless ``name: value`` may be sent as an extra header."""
    if not _TOKEN.match(name):
        raise UsageError(f"header name {name!r} is not a valid HTTP field name",
                         ErrorCode.BAD_OPTION)
    if not _FIELD_VALUE.match(value):
        raise UsageError(f"the value of header {name} contains a control character",
                         ErrorCode.BAD_OPTION)
    if name.lower() in RESERVED_HEADERS:
        raise UsageError(f"header {name} is set by swift itself and cannot be given",
                         ErrorCode.BAD_OPTION)


@dataclass(frozen=True)
class RequestProfile:
    """The request shaping of one download (see the module docstring).

    ``headers``: extra (name, value) pairs, in the order given.
    ``user_agent``, ``referer``: override any such header in ``headers``.
    ``cookies``: cookies from a Netscape cookies.txt (``cookie_file``).
    ``ca_file``: a PEM file of certificates to trust instead of the system's.
    ``insecure``: do not check certificates at all.
    """

    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str | None = None
    referer: str | None = None
    cookies: tuple[http.cookiejar.Cookie, ...] = field(default=(), compare=False)
    cookie_file: str | None = None
    ca_file: str | None = None
    insecure: bool = False

    @classmethod
    def build(cls, *, headers: Iterable[str] = (), user_agent: str | None = None,
              referer: str | None = None, cookie_file: str | None = None,
              ca_file: str | None = None, insecure: bool = False) -> "RequestProfile":
        """The profile for command-line style options; :class:`UsageError` for bad ones."""
        pairs = tuple(parse_header(h) for h in headers)
        for name, value in (("User-Agent", user_agent), ("Referer", referer)):
            if value is not None:
                check_header(name, value)
        size = sum(len(n) + len(v) + 4 for n, v in pairs)
        if size > MAX_HEADERS_SIZE:
            raise UsageError(f"the extra headers take {size} bytes; at most {MAX_HEADERS_SIZE} "
                             f"are allowed", ErrorCode.BAD_OPTION)
        cookies = load_cookies(cookie_file) if cookie_file else ()
        if ca_file is not None:
            if not os.path.isfile(ca_file) or not os.access(ca_file, os.R_OK):
                raise UsageError(f"--ca-certificate {ca_file}: no such readable file",
                                 ErrorCode.BAD_OPTION)
            ca_file = os.path.abspath(ca_file)
        return cls(headers=pairs, user_agent=user_agent, referer=referer, cookies=cookies,
                   cookie_file=cookie_file, ca_file=ca_file, insecure=insecure)

    # -- what goes on the wire ------------------------------------------------------------
    def request_headers(self) -> dict[str, str]:
        """Headers for every request of the download (names in the user's spelling)."""
        out: dict[str, str] = {"User-Agent": DEFAULT_USER_AGENT}
        for name, value in self.headers:
            for existing in [k for k in out if k.lower() == name.lower()]:
                del out[existing]  # the user's value replaces ours (and an earlier one)
            out[name] = value
        for name, value in (("User-Agent", self.user_agent), ("Referer", self.referer)):
            if value is not None:
                for existing in [k for k in out if k.lower() == name.lower()]:
                    del out[existing]
                out[name] = value
        return out

    @property
    def verify(self) -> bool | str:
        """``requests``' ``verify``: False with --insecure, the CA file, else True."""
        if self.insecure:
            return False
        return self.ca_file or True

    def load_into(self, jar: http.cookiejar.CookieJar) -> None:
        """Put the cookie file's cookies into the download's jar."""
        for cookie in self.cookies:
            jar.set_cookie(cookie)

    # -- secrets --------------------------------------------------------------------------
    def secrets(self, url: str = "") -> list[str]:
        """What in this profile (and ``url``) is a secret, in words; empty if nothing."""
        found = [f"the {name} header" for name, _ in self.headers if is_secret_header(name)]
        if self.cookies:
            found.append("cookies from a cookie file")
        if url and split_credentials(url)[1] is not None:
            found.append("credentials in the URL")
        if url and (names := secret_query_parameters(url)):
            found.append(f"a credential in the URL's query ({', '.join(names)})")
        return found

    def peer_headers(self, *, private: bool, cookie_header: str | None = None,
                     authorization: str | None = None) -> list[list[str]]:
        """The headers a helper must send for this download (``protocol.Fetch.headers``).

        Without a private connection the secret ones are left out. ``cookie_header``
        is the ``Cookie`` value the download's jar holds for the URL (cookies from
        the cookie file and cookies the server set); ``authorization`` the one that
        stands for ``user:password@`` in the URL.
        """
        out = [[name, value] for name, value in self.request_headers().items()
               if private or not is_secret_header(name)]
        if private:
            names = {name.lower() for name, _ in out}
            if cookie_header and "cookie" not in names:
                out.append(["Cookie", cookie_header])
            if authorization and "authorization" not in names:
                out.append(["Authorization", authorization])
        return out

    def redacted(self) -> dict:
        """This profile for logs and reports: secret values replaced by ``<secret>``."""
        return {
            "headers": [[n, "<secret>" if is_secret_header(n) else v] for n, v in self.headers],
            "user_agent": self.user_agent, "referer": self.referer,
            "cookie_file": self.cookie_file,
            "cookies": f"<{len(self.cookies)} secret cookies>" if self.cookies else None,
            "ca_file": self.ca_file, "insecure": self.insecure,
        }

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return f"RequestProfile({self.redacted()!r})"


def load_cookies(path: str) -> tuple[http.cookiejar.Cookie, ...]:
    """The cookies of a Netscape cookies.txt (as curl, wget and browsers' extensions
    write it); :class:`UsageError` if it cannot be read."""
    import http.cookiejar
    jar = http.cookiejar.MozillaCookieJar()
    try:
        jar.load(path, ignore_discard=True, ignore_expires=True)
    except FileNotFoundError:
        raise UsageError(f"--load-cookies {path}: no such file", ErrorCode.BAD_OPTION) from None
    except (http.cookiejar.LoadError, OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a Netscape cookies.txt file"
        raise UsageError(f"--load-cookies {path}: {why}", ErrorCode.BAD_OPTION) from None
    cookies = tuple(jar)
    for cookie in cookies:
        if cookie.expires == 0:  # curl and browsers' exports write 0 for a session cookie
            cookie.expires, cookie.discard = None, True
    return cookies


# -- command-line options ---------------------------------------------------------------------------
#: Printed once per download that runs with --insecure.
INSECURE_WARNING = ("warning: --insecure: certificates are not checked; anyone on the way to "
                    "the server can read and change what is downloaded")


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """The request-shaping options of ``get`` (``node.py get`` and the prompt), each
    checked as it is parsed: a bad one is a usage error naming what is wrong."""
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        type=_argument(lambda line: parse_header(line) and line),
                        help="send this request header with every request of the download "
                             "(repeatable), to the origin and, if secret, only over a private "
                             "connection to helpers")
    parser.add_argument("-U", "--user-agent", metavar="UA",
                        type=_argument(lambda v: check_header("User-Agent", v) or v),
                        help=f"the User-Agent to send (default {DEFAULT_USER_AGENT})")
    parser.add_argument("--referer", metavar="URL",
                        type=_argument(lambda v: check_header("Referer", v) or v),
                        help="the Referer to send")
    parser.add_argument("--load-cookies", metavar="FILE", type=_argument(_cookie_file),
                        help="send the cookies of a Netscape cookies.txt (as curl, wget and "
                             "browser extensions write it)")
    parser.add_argument("--ca-certificate", metavar="FILE", type=_argument(_ca_file),
                        help="trust the certificates in this PEM file (a self-signed server's)")
    parser.add_argument("--insecure", action="store_true",
                        help="do not check the server's certificate at all (with a warning)")


def profile_from_args(args: argparse.Namespace) -> RequestProfile:
    """The profile the options of :func:`add_request_options` describe; UsageError if
    a file changed since it was checked."""
    return RequestProfile.build(headers=getattr(args, "header", None) or (),
                                user_agent=getattr(args, "user_agent", None),
                                referer=getattr(args, "referer", None),
                                cookie_file=getattr(args, "load_cookies", None),
                                ca_file=getattr(args, "ca_certificate", None),
                                insecure=bool(getattr(args, "insecure", False)))


def _argument(check: Callable[[str], object]) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return check(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = getattr(check, "__name__", "value")
    return convert


def _cookie_file(path: str) -> str:
    load_cookies(path)
    return path


def _ca_file(path: str) -> str:
    RequestProfile.build(ca_file=path)
    return path
