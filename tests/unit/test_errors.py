"""swift.errors: one hierarchy, branched on by type and code."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from swift import auth, errors, membership, storage, wire
from swift.errors import ErrorCode


@pytest.mark.parametrize("cls,code", [
    (wire.ConnectionClosed, ErrorCode.CONNECTION_CLOSED),
    (auth.AuthError, ErrorCode.AUTH_FAILED),
    (membership.DiscoveryError, ErrorCode.DISCOVERY_FAILED),
])
def test_every_link_error_is_a_link_error_with_its_own_code(cls, code):
    error = cls("the other side went away")
    assert isinstance(error, errors.LinkError) and isinstance(error, errors.SwiftError)
    assert error.code is code and str(error) == "the other side went away"


def test_the_modules_that_raise_link_errors_raise_the_hierarchys_classes():
    assert wire.ConnectionClosed is errors.ConnectionClosed
    assert wire.AuthError is auth.AuthError is errors.AuthError
    assert membership.DiscoveryError is errors.DiscoveryError


def test_a_link_error_is_never_taken_for_the_origins_or_the_disks():
    error = errors.ConnectionClosed("closed")
    assert not isinstance(error, (errors.OriginError, errors.StorageError, errors.NetworkError))
    assert not error.transient  # a closed link is not retried like an origin's hiccup


def test_there_is_one_storage_error_and_it_keeps_its_path_and_errno_through_pickling():
    assert storage.StorageError is errors.StorageError
    error = errors.StorageError("no space left on the device while writing x", path=Path("x"),
                                errno=28)
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.code, again.path, again.errno, str(again)) \
        == (errors.StorageError, ErrorCode.STORAGE, Path("x"), 28, str(error))


def test_link_errors_survive_pickling_with_their_code():
    again = pickle.loads(pickle.dumps(errors.AuthError("not a member")))
    assert type(again) is errors.AuthError and again.code is ErrorCode.AUTH_FAILED
