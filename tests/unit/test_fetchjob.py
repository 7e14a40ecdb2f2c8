"""The fetch-job conversation, both sides over an in-memory pair (no sockets, fake time)."""

from __future__ import annotations

import pytest

from swift import protocol
from swift.fetchjob import Changed, Data, Failed, Finished, KeptAlive, NodeJob, RequesterJob
from swift.protocol import FetchCode, LocalProtocolError, RemoteProtocolError

from tests.connection_pair import ConnectionPair

FILE = bytes(range(256)) * 64  # 16 KiB


def fetch(start=1000, end=9000, job_id=3):
    return protocol.Fetch(job_id, "http://127.0.0.1:9/f", start, end, len(FILE), '"v"', None)


def pong():
    return protocol.Pong("node", 2, 1)


def node_for(msg, now=0.0):
    return NodeJob(msg, now, pong=pong, keepalive_interval=2.0)


def serve(pair, job: NodeJob, block=1000, now=0.0, until=None):
    """The node streams the origin's bytes from where it stopped, in blocks, reading control between."""
    pos = job.start + job.sent
    while job.owed and (until is None or pos < until):
        for msg in pair.receive("server"):
            pair.send("server", *job.receive(msg))
        part = job.take(FILE[pos:pos + block], now)
        pos += len(part)
        if part:
            pair.send("server", bytes(part))


def collect(pair, requester: RequesterJob, into: bytearray) -> list:
    events = []
    for frame in pair.receive("client"):
        event = requester.receive(frame)
        if isinstance(event, Data):
            into[event.offset:event.offset + len(event.payload)] = event.payload
        events.append(event)
    return events


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_a_whole_job_delivers_exactly_its_range(chunk):
    pair = ConnectionPair(chunk)
    requester = RequesterJob(fetch())
    pair.send("client", requester.request())
    (msg,) = pair.receive("server")
    node = node_for(msg)
    serve(pair, node)
    pair.send("server", node.finish())
    out = bytearray(len(FILE))
    events = collect(pair, requester, out)
    assert events[-1] == Finished(8000)
    assert out[1000:9000] == FILE[1000:9000] and not any(out[:1000]) and not any(out[9000:])


def test_a_shrink_ends_the_job_early_and_done_counts_the_shrunk_length():
    pair = ConnectionPair()
    requester = RequesterJob(fetch())
    pair.send("client", requester.request())
    node = node_for(pair.receive("server")[0])
    serve(pair, node, until=3000)
    pair.send("client", requester.shrink(5000))
    serve(pair, node)
    pair.send("server", node.finish())
    out = bytearray(len(FILE))
    events = collect(pair, requester, out)
    assert events[-1] == Finished(4000) and out[1000:5000] == FILE[1000:5000]
    assert [m for s, m in pair.log if s == "client"][-1] == protocol.Shrink(3, 5000)


def test_a_shrink_never_goes_below_what_was_received_or_grows_the_job():
    requester = RequesterJob(fetch())
    requester.receive(protocol.DataFrame(b"x" * 2500))
    assert requester.shrink(2000) == protocol.Shrink(3, 3500)
    assert requester.shrink(9000) is None and requester.end == 3500
    node = node_for(fetch())
    node.take(FILE[1000:3500], 0.0)
    assert node.receive(protocol.Shrink(3, 1200)) == [] and node.end == 3500 and node.owed == 0
    assert node.finish() == protocol.Done(3, 2500)


def test_bytes_sent_past_a_shrink_the_node_had_not_read_are_still_data():
    requester = RequesterJob(fetch())
    requester.shrink(2000)
    event = requester.receive(protocol.DataFrame(b"y" * 3000))
    assert event == Data(1000, b"y" * 3000)
    assert requester.receive(protocol.Done(3, 3000)) == Finished(3000)


def test_more_bytes_than_ever_asked_for_discards_everything_from_the_peer():
    requester = RequesterJob(fetch(0, 100))
    assert isinstance(requester.receive(protocol.DataFrame(b"z" * 60)), Data)
    event = requester.receive(protocol.DataFrame(b"z" * 41))
    assert event == Failed("the peer sent more bytes than asked", discard=True,
                           keep_connection=False)


@pytest.mark.parametrize("sent,claimed", [(100, 99), (100, 101), (60, 60)])
def test_a_done_that_miscounts_or_stops_short_is_a_lie(sent, claimed):
    requester = RequesterJob(fetch(0, 100))
    requester.receive(protocol.DataFrame(b"q" * sent))
    event = requester.receive(protocol.Done(3, claimed))
    assert isinstance(event, Failed) and event.discard and event.keep_connection
    assert f"reported {claimed} bytes, sent {sent}, owed 100" in event.reason


def test_a_changed_file_stops_the_whole_download():
    requester = RequesterJob(fetch())
    assert requester.receive(protocol.Error("changed", "ETag moved")) == Changed("ETag moved")


@pytest.mark.parametrize("code,keep", [(FetchCode.ORIGIN, True), (FetchCode.REFUSED, True),
                                       (FetchCode.DENIED, True), (FetchCode.BUSY, False)])
def test_errors_fail_the_job_with_their_code(code, keep):
    event = RequesterJob(fetch()).receive(protocol.Error(code.value, "why"))
    assert event == Failed(f"{code.value}: why", keep_connection=keep, code=code)
    assert event.code is code  # the enum member, for a caller to branch on


def test_an_error_word_this_version_does_not_know_fails_the_job_without_a_code():
    event = RequesterJob(fetch()).receive(protocol.Error("overheated", "why"))
    assert event == Failed("overheated: why", keep_connection=True, code=None)


def test_a_fetch_code_goes_on_the_wire_as_its_word():
    sent = protocol.Error(FetchCode.BUSY, "all slots are busy")
    assert type(sent.code) is str and sent.code == "busy"
    [frame] = protocol.FrameDecoder().feed(protocol.encode_message(sent))
    assert protocol.parse_frame(frame) == protocol.Error("busy", "all slots are busy")


def test_keepalives_and_surprises():
    requester = RequesterJob(fetch())
    assert requester.receive(protocol.Keepalive(3)) == KeptAlive()
    event = requester.receive(protocol.Pong("n", 1, 0))
    assert isinstance(event, Failed) and not event.keep_connection and "Pong" in event.reason
    with pytest.raises(LocalProtocolError):
        requester.receive(protocol.Keepalive(3))  # the job is over


def test_a_silent_peer_times_out():
    event = RequesterJob(fetch()).timed_out(15)
    assert event == Failed("no frame for 15 s; reassigning its remainder", keep_connection=False)


def test_the_node_sends_a_keepalive_only_after_a_quiet_interval():
    node = node_for(fetch(), now=100.0)
    assert node.keepalive(101.9) is None
    assert node.keepalive(102.0) == protocol.Keepalive(3)
    assert node.keepalive(103.0) is None
    node.take(FILE[1000:1100], 103.5)
    assert node.keepalive(105.4) is None and node.keepalive(105.5) == protocol.Keepalive(3)


def test_the_node_answers_pings_and_refuses_surprises_mid_job():
    node = node_for(fetch())
    assert node.receive(protocol.Ping()) == [pong()]
    with pytest.raises(RemoteProtocolError):
        node.receive(protocol.Fetch(4, "http://127.0.0.1:9/g", 0, 1, 1))
    # a late shrink of an earlier job, crossed with its Done, changes nothing
    assert node.receive(protocol.Shrink(2, 1500)) == [] and node.end == 9000


def test_a_node_that_falls_short_says_so_instead_of_done():
    node = node_for(fetch())
    node.take(FILE[1000:4000], 0.0)
    assert node.finish() == protocol.Error("origin", "sent 3000 of 8000 bytes")
