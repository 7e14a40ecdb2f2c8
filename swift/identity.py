"""A member's TLS identity: its own key and self-signed certificate, made at first start.

With a shared secret every member connection runs over TLS (``swift.wire``).
Nobody signs these certificates and nobody needs to: a client accepts any
certificate, and the membership proof of ``swift.handshake`` covers the hash
of the certificate the client actually saw (the ``tls-server-end-point``
channel binding, RFC 5929 section 4.1). A relay that terminates TLS on both
sides shows the client its own certificate, so the proofs computed on the
two sides differ and the handshake fails; the certificate itself proves
nothing and is never checked against a name.

Rules:

* One file, ``<role>-tls.pem``, holds the private key and the certificate
  together, written to a temporary name and linked into place: a reader
  (another process starting at the same moment) sees either no file or a
  whole, matching pair, never a key from one run and a certificate from
  another. Members of one role on one machine share it.
* The state directory is created readable by its owner only (0700) and the
  file 0600. A file others may read is refused: its key would let them
  impersonate this member's channel end (not its membership, which needs
  the secret, but the binding a relay would need).
* The directory is ``$SWIFT_STATE_DIR`` if set, else
  ``$XDG_STATE_HOME/swift``, else ``~/.local/state/swift`` (XDG Base
  Directory: state that should persist across restarts).
* Keys are ECDSA P-256 with a SHA-256 signature: fast handshakes, and the
  binding hash is SHA-256 (RFC 5929: the certificate's signature hash, and
  SHA-256 where that is MD5 or SHA-1).

``cryptography`` is imported only here and only when a secret is in use.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: A self-signed certificate's lifetime. Nobody validates it (see above), but
#: some TLS stacks refuse an expired one, so it is long, and renewed on start
#: once fewer than 30 days remain.
VALIDITY = datetime.timedelta(days=3650)
RENEW_BEFORE = datetime.timedelta(days=30)


class IdentityError(OSError):
    """The key and certificate cannot be made or read; the message says what to do."""


@dataclass(frozen=True)
class Identity:
    """A loaded identity: ``path`` (key + certificate PEM) and the certificate's binding."""

    path: Path
    certificate_der: bytes

    @property
    def binding(self) -> bytes:
        """This member's ``tls-server-end-point`` value, as its clients compute it."""
        return end_point_binding(self.certificate_der)


def state_dir() -> Path:
    """Where a member keeps its identity (see the module docstring)."""
    if os.environ.get("SWIFT_STATE_DIR"):
        return Path(os.environ["SWIFT_STATE_DIR"])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / "swift"
    return Path.home() / ".local" / "state" / "swift"


def end_point_binding(certificate_der: bytes) -> bytes:
    """RFC 5929 section 4.1 ``tls-server-end-point``: the certificate's hash.

    The hash is the certificate's signature hash; MD5 and SHA-1 (and
    signatures without a separate hash, such as Ed25519) use SHA-256.
    """
    from cryptography import x509

    try:
        algorithm = x509.load_der_x509_certificate(certificate_der).signature_hash_algorithm
    except (ValueError, TypeError):
        algorithm = None
    name = getattr(algorithm, "name", "sha256")
    if name in ("md5", "sha1") or name not in hashlib.algorithms_available:
        name = "sha256"
    return hashlib.new(name, certificate_der).digest()


def load_or_create(role: str, directory: Path | None = None) -> Identity:
    """This member's identity for ``role`` ("node", "discovery"), made on first use."""
    directory = directory or state_dir()
    path = directory / f"{role}-tls.pem"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        renew = False
        if path.exists():
            identity = _load(path)
            if identity is not None:
                return identity
            renew = True
        _create(path, role, replace=renew)
        identity = _load(path)
    except OSError as exc:
        raise IdentityError(f"cannot keep the TLS key in {directory}: {exc.strerror or exc}; "
                            f"set SWIFT_STATE_DIR to a directory only you can write") from None
    if identity is None:  # pragma: no cover - a file we just wrote
        raise IdentityError(f"{path} holds no usable key and certificate; remove it")
    return identity


def _load(path: Path) -> Identity | None:
    """The identity in ``path``; None if it must be made anew (unreadable or near expiry)."""
    from cryptography import x509

    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(f"{path} (this member's TLS key) is readable by other users; "
                            f"chmod 600 it, or remove it to make a new one")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        log.warning("%s holds no certificate; making a new key", path)
        return None
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        log.info("the TLS certificate in %s expires soon; making a new one", path)
        return None
    from cryptography.hazmat.primitives.serialization import Encoding
    return Identity(path, cert.public_bytes(Encoding.DER))


def _create(path: Path, role: str, *, replace: bool) -> None:
    """Write a new key and certificate to ``path``.

    A first identity is linked into place only if none is there yet, so of
    two members starting at once on one state directory both end up with the
    same file (the one that came first), and a file, once loaded, never
    changes under a running member; ``replace`` renews an unusable one.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"swift {role}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem += cert.public_bytes(serialization.Encoding.PEM)
    fd, tmp = tempfile.mkstemp(prefix=f".{role}-tls.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return  # another member on this directory was first: use its file
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    log.info("made a TLS key and self-signed certificate for this %s in %s", role, path)
