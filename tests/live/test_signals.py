"""Signals that arrive twice: a supervisor's SIGTERM and `timeout`'s, or a second Ctrl-C."""

from __future__ import annotations

import signal
import socket
import threading

from swiftlab.cluster import wait_until


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stopping_twice(proc) -> int:
    """SIGTERMs every few milliseconds until the process is gone: the later ones
    land while the first one's clean-up runs (pacing, not synchronising)."""
    pace = threading.Event()
    while proc.popen.poll() is None and not pace.wait(0.003):
        proc.send(signal.SIGTERM)
    return proc.wait(5)


def test_a_second_sigterm_during_a_daemons_stop_is_quiet(cluster):
    disc = cluster.discovery()
    assert _stopping_twice(disc) == 0
    assert "Traceback" not in disc.output(), disc.output()
    helper = cluster.node(f"127.0.0.1:{closed_port()}", name="alone")
    wait_until(lambda: "listening" in helper.output(), 10, "node listening")
    assert _stopping_twice(helper) == 0
    assert "Traceback" not in helper.output(), helper.output()
