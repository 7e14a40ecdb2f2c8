"""swift's HTTP layer: probing a URL, fetching byte ranges, one plain stream.

Everything here works on a ``requests.Session`` handed in by the caller (see
:mod:`swift.sessions`: it decides the source address and which addresses may
be reached), so the same code serves the requester's own fetches and the
fetch jobs a node runs for its peers.

Modules, one job each:

==================  =============================================================
``url``             URLs as typed → URLs as sent; URLs safe to print (pure)
``headers``         header parsing and the range contract (pure)
``failures``        library exceptions and statuses → swift errors, by type (pure)
``retry``           the :class:`Retry` value and the one retry loop
``profile``         :class:`RequestProfile`: headers, cookies, TLS trust; secrets
``remote``          :class:`RemoteFile`: one download's URL, cookie jar, range rules
``body``            reading raw, undecoded bodies
``probe``           :func:`probe`: size, ranges, validators, final URL
``rangefetch``      :class:`RangeFetch`: one checked, resumable range
``stream``          :func:`open_stream`: the whole file, for servers without ranges
==================  =============================================================

Content codings are never decoded: the file on disk is the representation
exactly as the server sends it.
"""

from .body import CHUNK_SIZE, DEFAULT_TIMEOUT, iter_body
from .failures import status_error, translate
from .headers import (Validator, check_range_answer, content_coding, parse_content_range,
                      parse_retry_after)
from .probe import ProbeResult, probe
from .profile import RequestProfile
from .rangefetch import RangeFetch
from .retry import Retry, call_with_retry
from .stream import PlainStream, open_stream
from .remote import RemoteFile
from .url import normalize_url, redact_url

__all__ = ["CHUNK_SIZE", "DEFAULT_TIMEOUT", "PlainStream", "ProbeResult", "RangeFetch",
           "RequestProfile", "Retry", "RemoteFile", "Validator", "call_with_retry",
           "check_range_answer", "content_coding", "iter_body", "normalize_url", "open_stream",
           "parse_content_range", "parse_retry_after", "probe", "redact_url", "status_error",
           "translate"]
