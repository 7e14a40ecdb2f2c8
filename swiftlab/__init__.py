"""swift's lab: what its tests, demo and benchmark stand on, kept out of the product.

Like urllib3's ``dummyserver/``, this package sits beside ``swift/`` in the
source tree and the sdist, and ``pip install .`` does not install it
(setup.cfg's ``packages.find`` takes ``swift*`` only). The product never
imports it; ``node.py demo`` imports it when it runs, and says it needs the
source checkout when it is missing.

- ``origin``: a local origin HTTP server with link caps and faults on cue
  (``python3 -m swiftlab.origin``).
- ``cluster``: real ``discovery.py`` / ``node.py`` processes owned by a
  ``Cluster`` that kills them by PID; waits on conditions with deadlines.
- ``netlab``: machines as network namespaces with capped links (root only).
- ``faulty_peer``: a fake peer that speaks the protocol and then lies.
"""
