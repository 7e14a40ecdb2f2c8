"""The shared secret (swift.auth): role-tagged proofs and loading the secret file."""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from swift import auth


SECRET = b"correct horse battery staple"


OTHER = b"incorrect horse battery staple"


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for s in (SECRET, OTHER):
            assert s.decode() not in text and s.hex() not in text


def test_proofs():
    nc, ns = auth.new_nonce(), auth.new_nonce()
    assert nc != ns and re.fullmatch("[0-9a-f]{64}", nc)
    cb = bytes(32)
    ps, pc = auth.server_proof(SECRET, nc, ns, cb), auth.client_proof(SECRET, nc, ns, cb)
    assert ps != pc  # role-tagged: a proof cannot be replayed the other way
    assert auth.check(ps, auth.server_proof(SECRET, nc, ns, cb))
    assert not auth.check(ps, auth.server_proof(OTHER, nc, ns, cb))
    assert not auth.check(ps, auth.server_proof(SECRET, ns, nc, cb))
    assert not auth.check(ps, auth.server_proof(SECRET, nc, ns, b"\1" * 32))  # another channel
    assert not auth.check(ps, None) and not auth.check(ps, "é" * 64)
    assert SECRET.hex() not in ps + pc


def test_load_secret(tmp_path, caplog):
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert auth.load_secret(path) == SECRET
        assert not caplog.records
        path.chmod(0o644)
        assert auth.load_secret(str(path)) == SECRET
    assert "readable by other users" in caplog.text
    empty = tmp_path / "empty"
    empty.write_bytes(b" \n")
    with pytest.raises(auth.SecretError, match="empty"):
        auth.load_secret(empty)
    with pytest.raises(auth.SecretError, match="cannot read"):
        auth.load_secret(tmp_path / "missing")
    with pytest.raises(auth.SecretError, match="cannot read"):
        auth.load_secret(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(auth.MAX_SECRET_FILE + 1))
    with pytest.raises(auth.SecretError, match="too large") as exc:
        auth.load_secret(big)
    assert_no_secret(caplog.text, str(exc.value))


# -- the channel binding: tls-server-end-point (RFC 5929 section 4.1) ----------------------------------
KEYS = {"ec": ec.generate_private_key(ec.SECP256R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "ed25519": ed25519.Ed25519PrivateKey.generate()}


def certificate(key, digest) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, digest))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("key,digest,expected", [
    ("ec", hashes.SHA256(), "sha256"), ("ec", hashes.SHA384(), "sha384"),
    ("ec", hashes.SHA512(), "sha512"), ("rsa", hashes.SHA256(), "sha256"),
    ("rsa", hashes.SHA384(), "sha384"),
    ("ed25519", None, "sha256"),  # a signature without a hash of its own binds with SHA-256
])
def test_the_binding_hashes_the_certificate_with_its_signature_hash(key, digest, expected):
    der = certificate(KEYS[key], digest)
    assert auth.signature_algorithm(der) == x509.load_der_x509_certificate(der) \
        .signature_algorithm_oid.dotted_string
    assert auth.tls_server_end_point(der) == hashlib.new(expected, der).digest()


#: DER of the OIDs sha256WithRSAEncryption (1.2.840.113549.1.1.11) and the same arc's .5 and .4
SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")


@pytest.mark.parametrize("last_arc,name", [(5, "sha1WithRSAEncryption"), (4, "md5WithRSAEncryption")])
def test_md5_and_sha1_signatures_bind_with_sha256(last_arc, name):
    """RFC 5929 section 4.1. OpenSSL no longer signs with them, so the OID is swapped in."""
    der = certificate(KEYS["rsa"], hashes.SHA256())
    at = der.rindex(SHA256_RSA)  # the outer signatureAlgorithm, after tbsCertificate
    weak = der[:at] + SHA256_RSA[:-1] + bytes([last_arc]) + der[at + len(SHA256_RSA):]
    assert auth.signature_algorithm(weak) == f"1.2.840.113549.1.1.{last_arc}", name
    assert auth.tls_server_end_point(weak) == hashlib.sha256(weak).digest()


@pytest.mark.parametrize("junk", [b"", b"\x30", b"\x30\x05abc", b"\x31\x00", b"\x30\x84\xff\xff\xff\xff",
                                  b"hello world"])
def test_bytes_that_are_not_a_certificate_are_refused(junk):
    with pytest.raises(ValueError):
        auth.tls_server_end_point(junk)


def test_a_truncated_certificate_is_refused():
    der = certificate(KEYS["ec"], hashes.SHA256())
    for cut in (1, 10, len(der) // 2, len(der) - 1):
        with pytest.raises(ValueError):
            auth.signature_algorithm(der[:cut])
