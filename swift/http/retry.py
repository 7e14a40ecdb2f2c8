"""Retrying as one immutable value, and the one loop that uses it.

:class:`Retry` is urllib3's idea (``urllib3/util/retry.py``): a frozen value
that knows how many failures in a row it allows, which errors are worth
another try, how long to wait before the next one (exponential backoff, or
the server's ``Retry-After`` when that is longer, both capped), and whose
:meth:`Retry.increment` returns a *new* value, or raises the error once the
budget is spent or the error is not worth retrying. Classification goes by
the error's type and :class:`~swift.errors.ErrorCode`
(:data:`swift.errors.TRANSIENT`), never by its message.

:func:`call_with_retry` is the only retry loop in swift's HTTP layer: the
probe, every range fetch and the plain stream go through it.

No reference cycles. A frame that holds an exception in a local while the
exception passes through it is in the exception's traceback, which holds
the frame: a cycle, and with it every frame up the stack and their locals
(a response, the connection pool it names, the pool's idle keep-alive
sockets) until the cycle collector happens to run, which in an idle helper
may be never (urllib3 closes a pool's idle sockets only when the pool is
freed; ``Session.close`` does not). So a function here that raises an
exception it holds drops the name on the way out (``try``/``finally``), and
a :class:`Passthrough` is unlinked from what it carries (:func:`_unwrap`).
The tests "...frees its response(s)..." in ``tests/unit/test_http_units.py``
hold every path to that.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Callable, TypeVar

from ..errors import Cancelled, ErrorCode, SwiftError
from .url import redact_url

__all__ = ["Retry", "call_with_retry", "Passthrough"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors retried without waiting (see :meth:`Retry.delay`).
NO_BACKOFF = frozenset({ErrorCode.RANGE_IGNORED})


@dataclass(frozen=True)
class Retry:
    """How many failures in a row are allowed, and how long to wait after each.

    ``attempts``: tries in all (the first one included) before giving up.
    ``first_delay``, ``max_delay``: wait ``first_delay * 2**(n-1)`` seconds after
    the n-th failure in a row (0.5, 1, 2, 4 s by default), at most
    ``max_delay``; a longer ``Retry-After`` from the server is honoured, also
    only up to ``max_delay`` (a server that asks for an hour is asked again
    after 30 s, and the budget of tries ends the wait for good).
    ``failures``: failures in a row so far (state; 0 in a fresh policy).
    """

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 30.0
    failures: int = 0

    def is_retryable(self, error: SwiftError) -> bool:
        return error.transient

    def increment(self, error: SwiftError) -> "Retry":
        """The policy after one more failure; raises ``error`` when it is not worth
        another try or the budget is spent."""
        if not self.is_retryable(error) or self.failures + 1 >= self.attempts:
            try:
                raise error
            finally:
                del error  # this frame is in its traceback (see the module docstring)
        return replace(self, failures=self.failures + 1)

    def reset(self) -> "Retry":
        """After progress: the budget is for failures *in a row*."""
        return replace(self, failures=0)

    def backoff(self) -> float:
        """Seconds to wait before the next try, ignoring any Retry-After."""
        if self.failures <= 0:
            return 0.0
        return min(self.first_delay * (2 ** (self.failures - 1)), self.max_delay)

    def delay(self, error: SwiftError | None = None) -> float:
        """Seconds to wait before the next try after ``error`` (none after a range the
        server ignored: it answered at once, so it is not overloaded, and the next
        connection may reach another backend, or go without ``If-Range``)."""
        if error is not None and error.code in NO_BACKOFF:
            return 0.0
        advice = getattr(error, "retry_after", None)
        wait = self.backoff()
        if advice is not None:
            wait = max(wait, advice)
        return min(wait, self.max_delay)


class Passthrough(Exception):
    """Carries an exception that is not the transfer's (the receiving side's, say)
    out of :func:`call_with_retry` untouched; raise it ``from`` the original."""


def call_with_retry(action: Callable[[], T], retry: Retry, *, url: str,
                    stop: threading.Event | None = None,
                    wait: Callable[[float], bool] | None = None,
                    on_error: Callable[[SwiftError], SwiftError | None] | None = None,
                    progressed: Callable[[], bool] | None = None) -> T:
    """Run ``action()`` until it returns; retry what :class:`Retry` allows.

    ``progressed()`` says whether the failed try made headway (delivered
    bytes); if so the budget starts again (failures *in a row* count). An
    exception is translated to a
    :class:`SwiftError` (:func:`~swift.http.failures.translate`); one that is
    not about the transfer (a bug) propagates unchanged, as does a
    :class:`Passthrough`'s cause.
    ``on_error(error)`` may replace the error (for example with a
    "file changed" found by a re-check), or return None to keep it.
    ``wait(seconds)`` waits and returns True if the wait was cut short by a
    stop (default: ``stop.wait``); a stop raises :class:`Cancelled`.
    """
    if wait is None:
        event = stop or threading.Event()
        wait = event.wait
    while True:
        if stop is not None and stop.is_set():
            raise Cancelled("cancelled")
        try:
            return action()
        except Passthrough as carried:
            raise _unwrap(carried) from None
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - translated below; bugs re-raised
            if stop is not None and stop.is_set():
                raise Cancelled("cancelled") from None
            retry, delay = _after_failure(exc, retry, url, on_error, progressed)
        if wait(delay):
            raise Cancelled("cancelled") from None


def _after_failure(exc: Exception, retry: Retry, url: str,
                   on_error: Callable[[SwiftError], SwiftError | None] | None,
                   progressed: Callable[[], bool] | None) -> tuple[Retry, float]:
    """The policy and the wait after ``exc``; raises the error to give up with (``exc``
    itself for a bug)."""
    from .failures import translate  # requests loads only when a request failed
    error = None
    try:
        error = translate(exc, url)
        if error is None:
            raise exc
        if on_error is not None:
            error = on_error(error) or error
        if progressed is not None and progressed():
            retry = retry.reset()
        try:
            retry = retry.increment(error)
        except SwiftError:
            if error is exc:
                raise
            raise error from exc
        delay = retry.delay(error)
        log.info("%s: %s; retrying in %.1f s", redact_url(url, strict=False), error, delay)
        return retry, delay
    finally:
        del exc, error  # this frame is in their tracebacks (see the module docstring)


def _unwrap(carried: Passthrough) -> BaseException:
    """The exception a :class:`Passthrough` carries, unlinked from it: raised in the
    handler of ``carried``, it takes ``carried`` as its context, and ``carried`` names
    it as its cause: a cycle of two exceptions (and every frame of their tracebacks)."""
    cause = carried.__cause__
    assert cause is not None, "a Passthrough is raised from the exception it carries"
    carried.__cause__ = carried.__context__ = None
    return cause

