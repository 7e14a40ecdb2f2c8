"""aria2-compatible JSON-RPC and the node's live web page (``node.py --enable-rpc``).

Three layers, as in the rest of swift (sans-I/O where it pays):

============================  ==============================================================
:mod:`swift.rpc.jsonrpc`      JSON-RPC 2.0: parse, batches, ``system.multicall``, the
                              ``token:`` secret, errors in aria2's shape. Pure.
:mod:`swift.rpc.aria2`        aria2's methods and fields over the node's API (``NodeApp``):
                              GIDs, statuses, decimal strings, options. Pure but for the node
                              it is handed.
:mod:`swift.rpc.policy`       which HTTP requests are refused before any method runs:
                              cross-site origins, foreign ``Host`` names, form content types,
                              sizes. Pure.
:mod:`swift.rpc.server`       the HTTP + WebSocket server (``http.server`` threads, ``wsproto``
                              framing) that owns its sockets and threads; serves the page.
============================  ==============================================================
"""
