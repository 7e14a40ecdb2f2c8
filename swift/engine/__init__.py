"""The requester's download engine, in parts that each own one fact.

``swift.download.Download`` composes them (aria2's ``RequestGroup``):

- :mod:`.options`       what the user asked for (``Options``) and the engine's tunables;
- :mod:`.report`        how a download ends: ``Report``, ``DownloadError``, ``ChecksumMismatch``;
- :mod:`.target`        where the file goes (``NAME``, ``NAME.part``) and what to resume;
- :mod:`.board`         the only guard of the scheduler: claim/commit, next piece, failures;
- :mod:`.rate_limit`    ``--limit-rate``'s token bucket (``RateLimit``);
- :mod:`.record_keeper` flushes the data, then records it (``NAME.part.swift``);
- :mod:`.sources`       where bytes come from: one ``Source`` base (what it holds, a
                        piece run against the board, one mapping of results to board
                        calls) and its kinds: ``LocalSource`` (range requests over this
                        machine's own link), ``PeerSource`` (one connection to a peer,
                        fetch job after fetch job);
- :mod:`.single_stream` the plain GET for servers without ranges or length.

Threads: each worker is one thread; the board's condition variable is the
only lock that guards shared download state, and no I/O happens under it.
"""
