"""Old names of the HTTP layer, kept until every caller uses :mod:`swift.http`.

Each name here is a thin alias of the new API (or a few lines on top of it);
nothing new goes here. To be removed once the engine and the node's job
server import :mod:`swift.http` and :mod:`swift.errors` directly.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

import requests

from .errors import FileChanged, OriginError, SwiftError
from .http import (CHUNK_SIZE, DEFAULT_TIMEOUT, ProbeResult, RangeFetch, Validator,
                   content_coding, iter_body, parse_content_range, parse_retry_after, probe)
from .http.failures import status_error, translate
from .http.retry import Retry, call_with_retry
from .http.url import normalize_url

__all__ = ["CHUNK_SIZE", "DEFAULT_TIMEOUT", "FileChanged", "HttpError", "ProbeResult",
           "RangeFetch", "RetryPolicy", "Validator", "check_url", "content_coding",
           "describe_exception", "iter_body", "parse_content_range", "parse_retry_after",
           "probe", "with_retries"]

HttpError = SwiftError
RetryPolicy = Retry

T = TypeVar("T")


def check_url(url: str) -> str:
    return normalize_url(url)


def describe_exception(exc: BaseException, url: str) -> str:
    error = translate(exc, url)
    return str(error) if error is not None else f"internal error: {type(exc).__name__}"


def _status_error(resp: requests.Response, url: str) -> OriginError:
    return status_error(resp.status_code, resp.reason or "", url, resp.headers.get("Retry-After"))


def with_retries(action: Callable[[], T], *, policy: Retry, what: str,
                 stop: threading.Event | None = None,
                 sleep: Callable[[float], object] | None = None) -> T:
    wait = None
    if sleep is not None:
        def wait(seconds: float) -> bool:
            sleep(seconds)
            return stop is not None and stop.is_set()
    return call_with_retry(action, policy, url=what, stop=stop, wait=wait)


__all__ += ["SwiftError"]
