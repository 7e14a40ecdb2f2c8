"""The unit tier's rule, enforced: no sockets, no processes.

Every test here runs with socket creation, ``subprocess`` and ``os.fork``
replaced by a function that fails the test, so a test that would need the
network or a child process cannot land in this tier by accident (it belongs
in tests/live/). Threads are allowed: the core's own locks are tested here.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"unit tests may not use {what}: move this test to tests/live/")
    return refuse


@pytest.fixture(autouse=True)
def pure(monkeypatch):
    monkeypatch.setattr(socket.socket, "__init__", _refuse("sockets"))
    monkeypatch.setattr(socket, "socketpair", _refuse("sockets"))
    monkeypatch.setattr(socket, "create_connection", _refuse("sockets"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("child processes"))
    monkeypatch.setattr(os, "fork", _refuse("child processes"))
