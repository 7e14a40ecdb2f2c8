"""Membership by shared secret: mutual HMAC-SHA256 challenge-response, pure.

With a secret, every member connection runs over TLS (``swift.wire``), and
the proofs are bound to that TLS channel. Both sides contribute a fresh
32-byte nonce; each proves knowledge of the secret by an HMAC over both
nonces and the channel binding, tagged by role so a proof can never be
replayed in the other direction::

    client -> Hello(nonce_c)
    server -> Welcome(nonce_s, proof_s = HMAC(secret, "swift-server" 0 nonce_c 0 nonce_s 0 cb))
    client    checks proof_s (constant time)
    client -> Auth(proof_c = HMAC(secret, "swift-client" 0 nonce_s 0 nonce_c 0 cb))
    server    checks proof_c, answers Ready or Error("auth-failed")

``cb`` is the ``tls-server-end-point`` channel binding (RFC 5929 section
4.1): the hash of the TLS server's certificate, as raw bytes. The server
takes its own certificate, the client the one it was shown; a relay that
terminates TLS towards both sides shows the client another certificate, so
the two sides compute different proofs and neither side's proof can be
passed along (``swift.identity`` computes it). The nonces enter the HMAC as
their ASCII hex text.

Without a secret on either side the exchange is just ``Hello(nonce=None)``
then ``Welcome(nonce=None, proof=None)`` over plain frames, and the
connection is ready: no Auth / Ready round trip. One side with a secret and
the other without is a refusal on both ends (``auth-required``), as is a
wrong secret (``auth-failed``). The state machines are in
``swift.handshake``, the socket side in ``swift.wire``; this module is pure.

The secret itself never crosses the wire, and no exception, repr or log line
contains it (the functions here only ever put file paths and lengths in
their messages).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

NONCE_BYTES = 32
MAX_SECRET_FILE = 64 * 1024


class AuthError(Exception):
    """The other side is not a member (or not who it claims to be)."""


class SecretError(Exception):
    """The secret file cannot be used."""


def new_nonce() -> str:
    """32 fresh random bytes, as 64 lowercase hex characters."""
    return secrets.token_hex(NONCE_BYTES)


def _mac(secret: bytes, role: bytes, first: str, second: str, binding: bytes) -> str:
    msg = role + b"\0" + first.encode("ascii") + b"\0" + second.encode("ascii") + b"\0" + binding
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def server_proof(secret: bytes, nonce_c: str, nonce_s: str, binding: bytes) -> str:
    """The server's proof: HMAC(secret, "swift-server" 0 nonce_c 0 nonce_s 0 binding), hex."""
    return _mac(secret, b"swift-server", nonce_c, nonce_s, binding)


def client_proof(secret: bytes, nonce_c: str, nonce_s: str, binding: bytes) -> str:
    """The client's proof: HMAC(secret, "swift-client" 0 nonce_s 0 nonce_c 0 binding), hex."""
    return _mac(secret, b"swift-client", nonce_s, nonce_c, binding)


def check(expected: str, given: object) -> bool:
    """Constant-time comparison of a computed proof with a received one."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))


def load_secret(path: str | os.PathLike) -> bytes:
    """Read a shared secret file; trailing white space (the newline) is ignored.

    Refuses (SecretError) a missing, unreadable, oversized or empty file;
    only warns about a short secret or one other users may read.
    """
    import logging  # here, not at the top: logging loads threading, and the handshake core must not

    log = logging.getLogger(__name__)
    p = Path(path)
    try:
        info = p.stat()
        if info.st_size > MAX_SECRET_FILE:
            raise SecretError(f"secret file {p} is too large (over {MAX_SECRET_FILE} bytes)")
        data = p.read_bytes().rstrip()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {p}: {exc.strerror or exc}") from None
    if not data:
        raise SecretError(f"secret file {p} is empty")
    if len(data) < 16:
        log.warning("secret file %s is short (%d bytes); use 16 random bytes or more", p, len(data))
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("secret file %s is readable by other users; chmod 600 it", p)
    return data
