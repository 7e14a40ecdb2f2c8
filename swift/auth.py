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

from .errors import AuthError  # noqa: F401 - raised by the handshake, caught as auth.AuthError

NONCE_BYTES = 32
MAX_SECRET_FILE = 64 * 1024


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


# -- tls-server-end-point (RFC 5929 section 4.1) ---------------------------------------------------
#: Signature algorithms that name one hash (RFC 4055, RFC 5758); any other, MD5 and SHA-1
#: included, and signatures without a separate hash (Ed25519) bind with SHA-256
_SIGNATURE_HASHES = {
    "1.2.840.113549.1.1.11": "sha256", "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512", "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.10045.4.3.1": "sha224", "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384", "1.2.840.10045.4.3.4": "sha512",
}


def tls_server_end_point(certificate_der: bytes) -> bytes:
    """The ``tls-server-end-point`` channel binding of a DER certificate (RFC 5929 section 4.1).

    The certificate's hash, with the hash its signature algorithm uses,
    SHA-256 where that is MD5 or SHA-1 or there is none. ValueError for
    bytes that are not a certificate.
    """
    name = _SIGNATURE_HASHES.get(signature_algorithm(certificate_der), "sha256")
    return hashlib.new(name, certificate_der).digest()


def signature_algorithm(certificate_der: bytes) -> str:
    """The dotted OID of a DER certificate's ``signatureAlgorithm`` (RFC 5280 section 4.1.1.2)."""
    _, body, _ = _der_item(certificate_der, 0, 0x30)    # Certificate ::= SEQUENCE {
    _, _, after_tbs = _der_item(certificate_der, body, 0x30)  # tbsCertificate,
    _, algorithm, _ = _der_item(certificate_der, after_tbs, 0x30)  # signatureAlgorithm {
    _, start, end = _der_item(certificate_der, algorithm, 0x06)  # algorithm OID, ...
    return _decode_oid(certificate_der[start:end])


def _der_item(data: bytes, pos: int, tag: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER item at ``pos``, which must have ``tag``."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise ValueError("not a DER certificate")
    length, pos = data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > len(data):
            raise ValueError("not a DER certificate")
        length, pos = int.from_bytes(data[pos:pos + count], "big"), pos + count
    if pos + length > len(data):
        raise ValueError("truncated DER certificate")
    return tag, pos, pos + length


def _decode_oid(raw: bytes) -> str:
    """X.690 section 8.19: base-128 subidentifiers, the first holding two arcs."""
    numbers, value = [], 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(value)
            value = 0
    if not numbers or raw[-1] & 0x80:
        raise ValueError("malformed OID")
    first = min(numbers[0] // 40, 2)
    return ".".join(map(str, [first, numbers[0] - 40 * first, *numbers[1:]]))


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
