"""The soak, short enough for CI: many downloads in a row through the same daemons.

``swiftlab.soak`` runs the downloads (every one meets a fault: a reset, a
503, a stall, slow reads, a reset of the requester's own range; half-way one
helper is killed with SIGKILL and replaced) and reads each daemon's threads,
fds and RSS after a warm-up and at the end. The full 300-download run, with
its figures, is ``python3 bench/soak.py`` (bench/results/soak.md).
"""

from __future__ import annotations

import pytest

from swiftlab.soak import FAULTS, run_soak

#: About a minute on loopback: each fault ten times, the restart in the middle.
DOWNLOADS = 10 * len(FAULTS)


@pytest.mark.soak
def test_downloads_in_a_row_are_all_right_and_the_daemons_give_back_what_they_took(tmp_path):
    result = run_soak(tmp_path / "soak", DOWNLOADS, warmup=6, say=print)
    print(result.summary())
    print(result.table())
    assert result.failures == [] and result.ok == DOWNLOADS, result.failures
    assert result.helper_bytes > 0, "the helpers never served: the soak did not soak them"
    for name, _ in FAULTS:
        if name != "none":
            assert result.hits.get(name, 0) > 0, f"fault {name!r} never met a request: {result.hits}"
    assert len(result.daemons) == 4  # discovery and three helpers, the replaced one included
    assert result.settled, "a daemon did not come back to its warm figures:\n" + result.table()
