"""A worker's connection to a member, made and dropped one way for every kind that has one.

A helper's fetch jobs (:class:`~swift.engine.sources.peer.PeerSource`) and a
LAN copy's copy jobs (:class:`~swift.engine.lan_copy.LanCopyWorker`) each run
on one connection per worker. Both connect the same way: within
``min(5 s, peer_timeout)``, the handshake included; failures *in a row* are
counted, each followed by a longer pause that a stopped download cuts short;
after :data:`~swift.engine.options.MAX_CONNECT_FAILURES` of them the member
is given up on. A connection made is registered with the board, so a
stopped download closes it at once; :func:`hang_up` takes it back.

What "given up on" means is the kind's own: a helper is left out of the
download (``Board.exclude``), a LAN copy is banned through its pool (which
also takes back what it wrote). A refused handshake gives a helper up at
once; for a LAN copy it counts as one more failure. A member that refuses a
LAN copy's connection as busy is alive: the worker waits and asks again
(``busy``), and that is no failure.
"""

from __future__ import annotations

import threading
from typing import Callable

from ... import fetchjob, protocol, wire
from ...protocol import FetchCode
from ...membership import Peer
from ..board import Board
from ..options import MAX_CONNECT_FAILURES, Options

#: Seconds to wait after the n-th failed attempt in a row, times n: a member that
#: is restarting (its port refused for a moment) is back within a second or two,
#: and one that is gone costs the worker ``MAX_CONNECT_FAILURES`` short pauses.
PAUSE_STEP = 0.5
#: Most seconds one attempt may take, handshake included (less with a shorter
#: ``peer_timeout``): a member on the LAN answers within milliseconds.
CONNECT_TIMEOUT = 5.0

#: Errors of an attempt that count as a failure to reach the member.
_FAILURES = (OSError, TimeoutError, wire.ConnectionClosed, protocol.ProtocolError)


def connect(board: Board, opts: Options, connect_to: Callable[..., wire.Connection], peer: Peer,
            failures: int, *, unreachable: Callable[[str], None],
            refused: Callable[[str], None] | None = None,
            busy: Callable[[str], bool] | None = None) -> tuple[wire.Connection | None, int]:
    """One attempt to connect to ``peer`` with ``connect_to`` (``wire.client_connect``'s
    signature), after ``failures`` failed ones in a row.

    Returns ``(conn, 0)`` when connected (``conn.timeout`` is ``opts.peer_timeout``;
    its closer is registered with ``board``). After a failure, ``(None, failures + 1)``
    once the pause is over, or ``(None, -1)`` when the worker must end: the failures
    reached ``MAX_CONNECT_FAILURES`` (``unreachable(why)`` was called), the handshake
    was refused and ``refused`` is given (``refused(why)`` was called; without it a
    refusal is one more failure), or the download stopped during the pause. A member
    that refused the connection as busy, with ``busy`` given, is no failure:
    ``busy(why)`` waits as it sees fit and says whether the worker must end
    (``(None, -1)``) or ask again (``(None, failures)``).
    """
    try:
        conn = connect_to(peer.host, peer.port, name=opts.name, secret=opts.secret,
                          timeout=min(CONNECT_TIMEOUT, opts.peer_timeout), source_address=None)
    except wire.AuthError as exc:
        if refused is None:
            return None, _failed(board, failures, f"unreachable: {exc}", unreachable)
        refused(f"refused the handshake: {exc}")
        return None, -1
    except _FAILURES as exc:
        if busy is not None and getattr(exc, "code", None) == FetchCode.BUSY:
            return None, -1 if busy(str(exc)) else failures
        return None, _failed(board, failures, f"unreachable: {exc}", unreachable)
    conn.timeout = opts.peer_timeout
    board.add_closer(conn.close)
    return conn, 0


def _failed(board: Board, failures: int, why: str, unreachable: Callable[[str], None]) -> int:
    failures += 1
    if failures >= MAX_CONNECT_FAILURES:
        unreachable(why)
        return -1
    return -1 if board.stop.wait(PAUSE_STEP * failures) else failures


def hang_up(board: Board, conn: wire.Connection | None) -> None:
    """Close a connection :func:`connect` made (None: nothing to do) and take its closer
    back from the board."""
    if conn is not None:
        board.discard_closer(conn.close)
        conn.close()


def next_event(conn: wire.Connection, job: fetchjob.RequesterJob, lock: threading.Lock,
               timeout: float) -> fetchjob.Event:
    """The job's next event: a frame from ``conn`` fed to ``job``, or, after ``timeout``
    seconds of silence, what ``job`` makes of that silence. ``lock`` is the worker's,
    held while ``job`` changes (a shrink may be sent from another thread). What else
    ``conn.recv`` raises (``OSError``, ``wire.ConnectionClosed``,
    ``protocol.ProtocolError``) is the caller's."""
    try:
        frame = conn.recv(timeout=timeout)
    except TimeoutError:
        with lock:
            return job.timed_out(timeout)
    with lock:
        return job.receive(frame)
