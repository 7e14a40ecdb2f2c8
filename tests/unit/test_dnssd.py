"""swift.dnssd (the announcement, pool matching, the choice) and swift.mdns's rule for
which discovery a node uses, with the browse replaced: no sockets, no multicast."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from swift import dnssd, mdns
from swift.dnssd import Announcement

from tests.helpers import examples

SECRET = b"0123456789abcdef0123456789abcdef"
OTHER_SECRET = b"fedcba9876543210fedcba9876543210"


def announced(pool="swift", fp=None, started=1000, host="10.0.0.2", port=5000, name=None):
    return Announcement(name or f"{pool}@{host}:{port}", pool, fp, started, host, port)


def wire(record: dict[str, str]) -> dict[bytes, bytes]:
    """A TXT record as zeroconf hands it over: bytes keys and values."""
    return {k.encode(): v.encode() for k, v in record.items()}


# -- the TXT record ------------------------------------------------------------------------------
def test_a_record_without_a_secret_carries_no_fingerprint_and_reads_back():
    record = dnssd.txt_record("lab-2", None, 1700000000.9)
    assert record == {"txtvers": "1", "pool": "lab-2", "started": "1700000000"}
    a = dnssd.parse_announcement("x", wire(record), ["10.0.0.7"], 5000)
    assert a == Announcement("x", "lab-2", None, 1700000000, "10.0.0.7", 5000)


def test_a_record_with_a_secret_carries_its_fingerprint_never_the_secret():
    fp = dnssd.fingerprint(SECRET)
    record = dnssd.txt_record("swift", fp, 5)
    assert record["fp"] == fp and len(fp) == 16 and int(fp, 16) >= 0
    text = repr(record).encode()
    assert SECRET not in text and SECRET.hex().encode() not in text
    assert dnssd.parse_announcement("x", wire(record), ["10.0.0.7"], 5000).fingerprint == fp


def test_the_fingerprint_is_stable_and_tells_secrets_apart():
    assert dnssd.fingerprint(SECRET) == dnssd.fingerprint(bytes(SECRET))
    assert dnssd.fingerprint(SECRET) != dnssd.fingerprint(OTHER_SECRET)
    assert dnssd.fingerprint(None) is None


def test_keys_are_read_without_case_and_str_values_are_accepted():
    a = dnssd.parse_announcement("x", {"TxtVers": "1", "POOL": "p", "Started": "7"}, ["10.0.0.7"], 1)
    assert (a.pool, a.started, a.port) == ("p", 7, 1)


@pytest.mark.parametrize("props, addresses, port, why", [
    ({"txtvers": "2", "pool": "swift", "started": "1"}, ["10.0.0.2"], 5000, "txtvers"),
    ({"pool": "swift", "started": "1"}, ["10.0.0.2"], 5000, "txtvers"),
    ({"txtvers": "1", "started": "1"}, ["10.0.0.2"], 5000, "pool"),
    ({"txtvers": "1", "pool": "a b", "started": "1"}, ["10.0.0.2"], 5000, "pool"),
    ({"txtvers": "1", "pool": "swift", "started": "soon"}, ["10.0.0.2"], 5000, "started"),
    ({"txtvers": "1", "pool": "swift", "started": "1", "fp": "XYZ"}, ["10.0.0.2"], 5000, "fingerprint"),
    ({"txtvers": "1", "pool": "swift", "started": "1"}, ["127.0.0.1", "224.0.0.251"], 5000, "address"),
    ({"txtvers": "1", "pool": "swift", "started": "1"}, ["fe80::1"], 5000, "address"),
    ({"txtvers": "1", "pool": "swift", "started": "1"}, ["10.0.0.2"], 0, "port"),
    ({"txtvers": "1", "pool": "swift", "started": "1"}, ["10.0.0.2"], None, "port"),
    ({b"txtvers": b"1", b"pool": b"\xff\xfe", b"started": b"1"}, ["10.0.0.2"], 5000, "pool"),
], ids=["other version", "no version", "no pool", "bad pool", "bad start", "bad fingerprint",
        "loopback and multicast only", "link-local only", "port 0", "no port", "not utf-8"])
def test_a_malformed_announcement_is_refused_saying_what_is_wrong(props, addresses, port, why):
    with pytest.raises(ValueError, match=why):
        dnssd.parse_announcement("x", props, addresses, port)


@settings(max_examples=examples(200), deadline=None)
@given(st.dictionaries(st.one_of(st.binary(max_size=12), st.text(max_size=12)),
                       st.one_of(st.none(), st.binary(max_size=20), st.text(max_size=20)), max_size=6),
       st.lists(st.text(max_size=40), max_size=4), st.one_of(st.none(), st.integers(-5, 70000)))
def test_anything_announced_is_an_announcement_or_a_value_error(props, addresses, port):
    try:
        dnssd.parse_announcement("x", props, addresses, port)
    except ValueError:
        pass


@pytest.mark.parametrize("text", ["", " ", "a b", "-x", "x" * 33, "pool=1", "é"])
def test_a_bad_pool_name_is_a_value_error_with_the_rule(text):
    with pytest.raises(ValueError, match="letters, digits"):
        dnssd.parse_pool(text)


# -- which address, which pool, which discovery -----------------------------------------------
def test_an_address_in_one_of_our_networks_wins_then_ipv4_then_the_lowest():
    addrs = ["192.168.7.9", "2001:db8::5", "10.0.0.9", "10.0.0.3"]
    assert dnssd.pick_address(addrs) == "10.0.0.3"
    assert dnssd.pick_address(addrs, ["192.168.7.1/24"]) == "192.168.7.9"
    assert dnssd.pick_address(addrs, ["2001:db8::1/64"]) == "2001:db8::5"
    assert dnssd.pick_address(["2001:db8::5"]) == "2001:db8::5"
    assert dnssd.pick_address(["127.0.0.1", "0.0.0.0", "::1"]) is None


def test_only_the_same_pool_name_and_the_same_fingerprint_fit():
    fp = dnssd.fingerprint(SECRET)
    assert dnssd.fits(announced("swift"), "swift", None)
    assert not dnssd.fits(announced("other"), "swift", None)
    assert dnssd.fits(announced("swift", fp), "swift", fp)
    assert not dnssd.fits(announced("swift", fp), "swift", None)       # a secret pool, we have none
    assert not dnssd.fits(announced("swift"), "swift", fp)             # we have a secret, it has none
    assert not dnssd.fits(announced("swift", dnssd.fingerprint(OTHER_SECRET)), "swift", fp)


def test_the_earliest_started_discovery_of_our_pool_is_chosen_whatever_the_order():
    fp = dnssd.fingerprint(SECRET)
    ours_late = announced(fp=fp, started=2000, host="10.0.0.1")
    ours_early = announced(fp=fp, started=1000, host="10.0.0.9")
    strangers = [announced("other", fp, started=10, host="10.0.0.5"),          # another pool name
                 announced(fp=dnssd.fingerprint(OTHER_SECRET), started=10),      # another secret
                 announced(started=10, host="10.0.0.6")]                         # no secret
    everything = [ours_late, *strangers, ours_early]
    assert dnssd.choose(everything, "swift", fp) == ours_early
    assert dnssd.choose(reversed(everything), "swift", fp) == ours_early
    assert dnssd.choose(strangers, "swift", fp) is None
    assert dnssd.choose([], "swift", None) is None


def test_a_tie_in_start_time_goes_to_the_lowest_address_then_port():
    a = announced(host="10.0.0.10", port=5000)
    b = announced(host="10.0.0.9", port=5001)
    c = announced(host="10.0.0.9", port=5000)
    assert dnssd.choose([a, b, c], "swift", None) == c
    assert dnssd.choose([b, a], "swift", None) == b


def test_an_instance_name_fits_one_dns_label_and_has_no_dots():
    name = dnssd.instance_name("lab.2", "host.example.org", 5000)
    assert name == "swift lab-2 on host-example-org:5000"
    long = dnssd.instance_name("p", "ü" * 80, 65535)
    assert len(long.encode()) <= 63 and long.endswith(":65535")


def test_a_miss_says_which_difference_kept_the_discovery_out_and_what_to_do():
    fp, other = dnssd.fingerprint(SECRET), dnssd.fingerprint(OTHER_SECRET)
    assert dnssd.explain_miss([], "swift", None) == ""
    assert dnssd.explain_miss([announced("lab"), announced("attic"), announced("lab")], "swift", None) \
        == "only pool attic, lab answered; --pool NAME picks one"
    assert dnssd.explain_miss([announced(fp=fp)], "swift", None) \
        == "pool swift's discovery has a shared secret; give --secret-file"
    assert dnssd.explain_miss([announced()], "swift", fp) \
        == "pool swift's discovery has no shared secret, and this node has one"
    assert dnssd.explain_miss([announced(fp=other)], "swift", fp) \
        == "pool swift's discovery has another shared secret"


# -- which discovery a node uses, and the line that says so -------------------------------------
class Calls(list):
    """The browses made (pool, fingerprint, wait), and in ``asked`` the hosts checked."""

    def __init__(self):
        super().__init__()
        self.asked: list[str] = []


def fake_browse(monkeypatch, result, answers=None):
    """mdns.browse gives ``result``; a candidate answers as a discovery unless ``answers``
    maps its host to the reason it does not."""
    calls = Calls()
    asked = calls.asked

    def check(host, port, secret):
        asked.append(host)
        return (answers or {}).get(host)

    monkeypatch.setattr(mdns, "check_discovery", check)

    def browse(pool, fp, *, wait):
        calls.append((pool, fp, wait))
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(mdns, "browse", browse)
    return calls


def test_a_copied_fingerprint_does_not_win_the_first_that_answers_as_a_member_does(monkeypatch):
    fp = dnssd.fingerprint(SECRET)
    impostor = announced(fp=fp, started=1, host="10.0.0.66")   # earlier: first in rank
    real = announced(fp=fp, started=1000, host="10.0.0.4")
    calls = fake_browse(monkeypatch, mdns.Browse([real, impostor], impostor, 0.2),
                        answers={"10.0.0.66": "discovery at 10.0.0.66:5000 refused us: wrong secret"})
    where, line = mdns.resolve_discovery(None, "", pool="swift", secret=SECRET, enabled=True)
    assert where == ("10.0.0.4", 5000) and calls.asked == ["10.0.0.66", "10.0.0.4"]
    assert line.endswith("1 other announcement seen; passed over 1 that did not answer as a "
                         "discovery of the pool)")


def test_when_no_candidate_answers_the_first_is_used_and_the_line_says_so(monkeypatch):
    hosts = [f"10.0.0.{i}" for i in range(1, 6)]
    seen = [announced(host=h) for h in hosts]
    calls = fake_browse(monkeypatch, mdns.Browse(seen, seen[0], 0.2),
                        answers={h: f"discovery at {h}:5000 is unreachable: refused" for h in hosts})
    where, line = mdns.resolve_discovery(None, "", pool="swift", secret=None, enabled=True)
    assert where == ("10.0.0.1", 5000)
    assert calls.asked == hosts[:mdns.MAX_CHECKS]  # bounded
    assert "it does not answer yet: discovery at 10.0.0.1:5000 is unreachable: refused" in line


def test_a_given_discovery_is_used_as_it_is_and_nothing_is_browsed(monkeypatch):
    calls = fake_browse(monkeypatch, AssertionError("no browse"))
    where, line = mdns.resolve_discovery(("10.1.1.1", 5000), "--discovery", pool="swift",
                                         secret=None, enabled=True)
    assert where == ("10.1.1.1", 5000) and calls == []
    assert line == "using discovery at 10.1.1.1:5000 (from --discovery)"


def test_the_chosen_announcement_is_used_and_named_in_one_line(monkeypatch):
    ours = announced(fp=dnssd.fingerprint(SECRET), host="10.0.0.4", port=5001)
    calls = fake_browse(monkeypatch, mdns.Browse([ours, announced("other")], ours, 0.2))
    where, line = mdns.resolve_discovery(None, "", pool="swift", secret=SECRET, enabled=True)
    assert where == ("10.0.0.4", 5001)
    assert calls == [("swift", dnssd.fingerprint(SECRET), mdns.BROWSE_WAIT)]
    assert line == "using discovery at 10.0.0.4:5001 (found by mDNS: pool swift; 1 other announcement seen)"


def test_nothing_of_our_pool_falls_back_to_the_default_and_says_what_to_do(monkeypatch):
    fake_browse(monkeypatch, mdns.Browse([announced("other")], None, 2.5))
    where, line = mdns.resolve_discovery(None, "", pool="swift", secret=None, enabled=True)
    assert where == mdns.FALLBACK
    assert "\n" not in line
    assert line.startswith("no discovery of pool swift answered mDNS within 2.5 s "
                           "(only pool other answered; --pool NAME picks one): using discovery at "
                           "127.0.0.1:5000")
    assert line.endswith("give --discovery HOST:PORT")


def test_no_multicast_here_is_one_line_and_the_default(monkeypatch):
    fake_browse(monkeypatch, mdns.MdnsUnavailable("no network interface besides loopback"))
    where, line = mdns.resolve_discovery(None, "", pool="swift", secret=None, enabled=True)
    assert where == mdns.FALLBACK
    assert line.startswith("mDNS is unavailable here (no network interface besides loopback): "
                           "using discovery at 127.0.0.1:5000")


def test_mdns_turned_off_browses_nothing(monkeypatch):
    calls = fake_browse(monkeypatch, AssertionError("no browse"))
    where, line = mdns.resolve_discovery(None, "", pool="swift", secret=None, enabled=False)
    assert where == mdns.FALLBACK and calls == []
    assert "mDNS is off" in line


@pytest.mark.parametrize("host", ["127.0.0.1", "127.4.5.6", "localhost", "::1", "fd00::2", "myhost"])
def test_a_discovery_on_loopback_or_ipv6_is_not_announced_and_opens_no_socket(host):
    with pytest.raises(mdns.MdnsUnavailable):
        mdns.Announcer(host, 5000, "swift", None, machine="m", started=0).start()
    assert mdns.announce(host, 5000, "swift", None, machine="m") is None


def test_a_missing_zeroconf_package_is_one_line_for_both_programs(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # import zeroconf raises ImportError
    monkeypatch.setitem(sys.modules, "ifaddr", None)
    where, line = mdns.resolve_discovery(None, "", pool="swift", secret=None, enabled=True)
    assert where == mdns.FALLBACK
    assert line.startswith(f"mDNS is unavailable here ({mdns.NOT_INSTALLED}): using discovery at")
    assert mdns.announce("0.0.0.0", 5000, "swift", None, machine="m") is None


def test_a_get_without_discovery_browses_in_its_lookup_thread_once_and_says_so(monkeypatch):
    from swift import membership, protocol

    ours = announced(host="10.0.0.4", port=5001)
    calls = fake_browse(monkeypatch, mdns.Browse([ours], ours, 0.2))
    asked: list[str] = []

    class Client:
        def __init__(self, host, port, *, name, secret, timeout):
            self.address = f"{host}:{port}"

        def list_peers(self):
            asked.append(self.address)
            return [protocol.PeerInfo("10.0.0.7", 6000, "attic", 4, 1.0)]

    monkeypatch.setattr(membership, "DiscoveryClient", Client)
    notes: list[str] = []
    lookup = membership.PeerLookup(mdns.BrowsingClient(pool="swift", secret=None, enabled=True,
                                                       name="swift-get", notice=notes.append),
                                   notes.append)
    assert lookup.peers() == [membership.Peer("10.0.0.7", 6000, "attic", 4)]
    assert len(calls) == 1 and asked == ["10.0.0.4:5001"] and calls.asked == ["10.0.0.4"]
    assert notes == ["using discovery at 10.0.0.4:5001 (found by mDNS: pool swift)"]
