"""tests/netns/: every test here builds network namespaces, needs root and is marked ``root``.

When ``-m`` leaves out ``root`` (``pytest -m "not root"``, the README's way of
running the tests without namespaces), this folder is not even collected:
its modules ask at import whether a lab can be built
(``swiftlab.netlab.available``), and that question builds a trial lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swiftlab import netlab
from swiftlab.cluster import Cluster


def _root_tests_deselected(markexpr: str) -> bool:
    """Whether ``-m markexpr`` leaves out a test whose only mark is ``root``."""
    if not markexpr:
        return False
    try:  # pytest's own evaluator of -m expressions (pytest >= 6)
        from _pytest.mark.expression import Expression
        return not Expression.compile(markexpr).evaluate(lambda name, **kwargs: name == "root")
    except Exception:  # another pytest: collect as usual, the marks still deselect
        return False


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    if _root_tests_deselected(config.getoption("markexpr", "")):
        return True
    return None


@pytest.fixture
def lab():
    """A lab of network namespaces (``swiftlab.netlab``), taken down after the test."""
    with netlab.Lab() as net:
        yield net
    assert net.namespaces() == [], "namespaces left behind"


@pytest.fixture
def cluster(lab, tmp_path: Path):
    """Processes on the lab's hosts; killed by PID before the lab is taken down."""
    work = tmp_path / "work"
    work.mkdir()
    with Cluster(work) as c:
        yield c
