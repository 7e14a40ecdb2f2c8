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
``samefile``        :class:`SameFile`: "the file changed" or "another edge's ETag"
``multipart``       reading ``multipart/byteranges`` bodies as they stream (pure)
``stream``          :func:`open_stream`: the whole file, for servers without ranges
==================  =============================================================

Content codings are never decoded: the file on disk is the representation
exactly as the server sends it. docs/http.md lists the rules the range client
follows, with their RFC sections.
"""

# Names are loaded on first use (PEP 562): `import swift.http.profile` or
# `swift.http.Retry` must not pull in requests (about 0.1 s), so that a
# command that makes no request (`--help`, a usage error) starts at once.
_WHERE = {
    "CHUNK_SIZE": "body", "DEFAULT_TIMEOUT": "body", "iter_body": "body",
    "status_error": "failures", "translate": "failures",
    "Validator": "headers", "check_range_answer": "headers", "content_coding": "headers",
    "parse_content_range": "headers", "parse_retry_after": "headers",
    "ProbeResult": "probe", "probe": "probe", "KeptAnswer": "probe",
    "RequestProfile": "profile",
    "RangeFetch": "rangefetch", "SameFile": "samefile",
    "Retry": "retry", "call_with_retry": "retry",
    "PlainStream": "stream", "open_stream": "stream",
    "RemoteFile": "remote",
    "normalize_url": "url", "redact_url": "url",
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # next time, a plain attribute
    return value


__all__ = ["CHUNK_SIZE", "DEFAULT_TIMEOUT", "KeptAnswer", "PlainStream", "ProbeResult", "RangeFetch",
           "RequestProfile", "Retry", "RemoteFile", "SameFile", "Validator", "call_with_retry",
           "check_range_answer", "content_coding", "iter_body", "normalize_url", "open_stream",
           "parse_content_range", "parse_retry_after", "probe", "redact_url", "status_error",
           "translate"]
