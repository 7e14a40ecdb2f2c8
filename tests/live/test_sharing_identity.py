"""What names shared content, between real processes on loopback: a trusted digest (a
Metalink's hash, an origin's ``Repr-Digest``) names the bytes whatever URL served them, and
a download resumed from an earlier run offers what it resumed.

Machines are nodes with their own state and download directories (``tests.helpers.Machine``,
as in test_sharing.py); origins are the scripted ``tests.http_origin`` (headers of our
choosing) and the lab's origin (byte counters, stalls).
"""

from __future__ import annotations

import base64
import hashlib
import random

from swift.storage import ResumeRecord
from swiftlab.cluster import wait_until
from swiftlab.origin import make_file

from tests import http_origin as o
from tests.helpers import MiB, offered_bytes, record_path, sha256_file


def _repr_digest(value: bytes) -> o.Rule:
    """Every answer carries ``Repr-Digest: sha-256=:...:`` of ``value`` (RFC 9530)."""
    header = "sha-256=:" + base64.b64encode(hashlib.sha256(value).digest()).decode() + ":"

    def rule(req: o.Request) -> bool:
        req.extra["Repr-Digest"] = header
        return False
    return rule


def test_two_urls_with_one_repr_digest_share_one_copy_even_under_a_weak_etag(two_machines):
    """Alpha fetched the file from one server; beta asks another one, whose answer has
    only a weak ETag (never shared on its own) but the same ``Repr-Digest``: the digest
    is the identity, so both hold it under one label and beta takes alpha's copy."""
    alpha, beta = two_machines
    data = random.Random(31).randbytes(12 * MiB)
    with o.Origin({"/pub/disk.iso": o.File(data, etag='"first"')},
                  {"/pub/disk.iso": [_repr_digest(data)]}) as first, \
            o.Origin({"/mirror/disk-1.0.iso": data},
                     {"/mirror/disk-1.0.iso": [o.weak_etag_only, _repr_digest(data)]}) as other:
        code, out, _ = alpha.get(first.url("/pub/disk.iso"), "--no-peers")
        assert code == 0 and "the server gives the file's sha256 digest" in out, out
        code, out, report = beta.get(other.url("/mirror/disk-1.0.iso"))
        ranges_asked = sum(1 for s in other.statuses("/mirror/disk-1.0.iso") if s == 206)
    assert code == 0, out
    assert hashlib.sha256((beta.dir / "disk-1.0.iso").read_bytes()).hexdigest() == \
        hashlib.sha256(data).hexdigest()
    assert sum(report["lan_bytes"].values()) >= 10 * MiB, out
    assert ranges_asked <= 4, out  # the probe and a spot check or two
    labels = {h["label"] for m in (alpha, beta) for h in m.holdings()}
    assert len(labels) == 1, labels  # one label on both members


def test_a_server_that_contradicts_its_digest_fails_in_one_line_and_nothing_is_offered(
        two_machines):
    alpha, _ = two_machines
    data = random.Random(32).randbytes(4 * MiB)
    with o.Origin({"/f.bin": data}, {"/f.bin": [_repr_digest(b"other bytes")]}) as origin:
        code, out, report = alpha.get(origin.url("/f.bin"), "--no-peers")
    assert code != 0 and "Traceback" not in out
    assert "sha256 checksum mismatch: the server's Repr-Digest/Digest header says" in out, out
    assert "--no-mirrors" in out, out
    assert alpha.holdings() == [], alpha.holdings()


def _meta4(name: str, url: str, data: bytes) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="{name}">'
            f'<size>{len(data)}</size>'
            f'<hash type="sha-512">{hashlib.sha512(data).hexdigest()}</hash>'
            f'<hash type="md5">{hashlib.md5(data).hexdigest()}</hash>'
            f'<url priority="1">{url}</url></file></metalink>').encode()


def test_two_metalinks_naming_other_urls_share_the_file_by_its_sha512(two_machines, origin,
                                                                    origin_root, tmp_path):
    alpha, beta = two_machines
    size = 12 * MiB
    (origin_root / "a").mkdir()
    (origin_root / "b").mkdir()
    digest = make_file(origin_root / "a" / "m.bin", size, seed=33)
    (origin_root / "b" / "m.bin").write_bytes((origin_root / "a" / "m.bin").read_bytes())
    data = (origin_root / "a" / "m.bin").read_bytes()
    for who, path in (("alpha", "/a/m.bin"), ("beta", "/b/m.bin")):
        (tmp_path / f"{who}.meta4").write_bytes(_meta4("m.bin", origin.url(path), data))
    code, out, _ = alpha.get(f"--metalink-file={tmp_path / 'alpha.meta4'}", "--no-peers")
    assert code == 0, out
    origin.reset_stats()
    code, out, report = beta.get(f"--metalink-file={tmp_path / 'beta.meta4'}")
    assert code == 0, out
    assert sha256_file(beta.dir / "m.bin") == digest
    assert "sha512 checksum verified" in out, out
    entry = report[0] if isinstance(report, list) else report
    assert sum(entry["lan_bytes"].values()) >= size - 2 * MiB, out
    assert origin.stats()["bytes_by_path"].get("/b/m.bin", 0) <= 2 * MiB + 1, out


def test_a_resumed_download_offers_the_pieces_it_resumed_and_so_does_its_part_when_stopped(
        two_machines, origin, origin_root):
    """Alpha's first run stops at 60 % (killed); its second run resumes and, while every
    range it asks stalls, offers the resumed pieces read back from ``NAME.part`` (the
    index was emptied, so nothing else could name them). It is killed too: beta then takes
    those pieces from the stopped part file, and the rest from the origin."""
    alpha, beta = two_machines
    size = 10 * MiB
    digest = make_file(origin_root / "res.bin", size, seed=34)
    origin.configure("/res.bin", stall_after=0)  # every request stalls at once ...
    origin.configure("/res.bin", stall_after=1 << 40, count=7)  # ... but the probe and 6 pieces
    first = alpha.start_get(origin.url("/res.bin"), "--no-peers", "--piece-size", "1M")
    record = record_path(alpha.dir / "res.bin")

    def recorded() -> int:
        loaded = ResumeRecord.load(record) if record.exists() else None
        return loaded.done.total if loaded is not None else 0

    wait_until(lambda: recorded() >= 6 * MiB, 30, "alpha's record holds 60 %")
    first.kill()
    (alpha.state / "shares.json").unlink()
    origin.configure("/res.bin", stall_after=1 << 40, count=1)  # the second run's probe
    second = alpha.start_get(origin.url("/res.bin"), "--no-peers", "--piece-size", "1M")
    wait_until(lambda: offered_bytes(alpha) >= 6 * MiB, 30, "the resumed pieces offered")
    second.kill()
    assert "resuming: 6.0 MiB" in second.output(), second.output()
    origin.clear("/res.bin")
    origin.reset_stats()
    code, out, report = beta.get(origin.url("/res.bin"))
    assert code == 0, out
    assert sha256_file(beta.dir / "res.bin") == digest
    lan = sum(report["lan_bytes"].values())
    assert MiB <= lan <= 6 * MiB, (lan, out)
    # a third run finishes the file: every piece is offered, the resumed ones included
    code, out, _ = alpha.get(origin.url("/res.bin"), "--no-peers")
    assert code == 0 and "resuming: 6.0 MiB" in out, out
    finished = [h for h in alpha.holdings() if h["path"] == str(alpha.dir / "res.bin")]
    assert len(finished) == 1 and len(finished[0]["hashes"]) == 10, alpha.holdings()
