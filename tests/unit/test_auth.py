"""The shared secret (swift.auth): role-tagged proofs and loading the secret file."""

from __future__ import annotations

import logging
import os
import re

import pytest

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
