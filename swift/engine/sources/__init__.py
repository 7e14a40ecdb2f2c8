"""Sources: where a download's bytes come from, each kind behind one interface.

A *source* of a range is anything that can deliver bytes of this content::

                 Source  (base.py: what it holds; run a piece against the board;
                   |      one mapping of outcomes to board calls)
         +---------+----------+
         |                    |
    LocalSource           PeerSource
    (local.py: the        (peer.py: the origin over a helper's link,
    origin over this      a fetch job per piece on one connection)
    machine's link)
         |
    MirrorSource (mirror.py: this machine's link to several mirrors,
                  the mirror book's choice per piece)

Both hold the whole file, less what LAN copies leave them; a LAN copy
(``engine.lan_copy.LanCopyWorker``, docs/sharing.md) holds what its member has
written and hashed (``Source.holding``), and the scheduler assigns it only
that (:meth:`swift.planning.Scheduler.hold`). One worker thread runs one
source slot: ``Source.run`` takes pieces from the board until none is left
for it. A source that talks to a member (a helper, a LAN copy) connects and
hangs up through ``link.py``. docs/sources.md has the design and the step
that follows.
"""

from .base import Changed, Done, Failed, Fatal, Lost, Outcome, Refused, Source, Stopped
from .local import LocalSource, run_local
from .mirror import MirrorSource, MirrorSources

__all__ = ["Changed", "Done", "Failed", "Fatal", "LocalSource", "Lost", "MirrorSource",
           "MirrorSources", "Outcome", "PeerSource", "Refused", "Source", "Stopped", "run_local"]


def __getattr__(name: str):
    """``PeerSource`` loads on first use: the peer machinery (wire, TLS, the fetch job)
    stays unloaded for a download with no helpers (start-up time)."""
    if name == "PeerSource":
        from .peer import PeerSource
        return PeerSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
