"""``python3 node.py demo``: see swift's speed-up on one machine, with no internet.

It stands up a small LAN on loopback: an origin whose uplink to every
"machine" is capped (each machine is its own 127.0.0.x address, and the
origin gives every address its own token bucket, as a per-machine ISP link
or proxy quota would), a discovery and three helper nodes. It downloads the
same generated file alone and then with all four machines, checks both
sha256 sums, prints the two times and the speed-up, and removes every
process and file it made, also when interrupted with Ctrl-C or SIGTERM.

The test origin and the process cluster are lab code, imported only when
the demo runs: the command line reads this module's defaults for its help
without loading them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .addresses import format_hostport
from .checksums import file_digest
from .units import human_bytes, human_rate

if TYPE_CHECKING:
    from swiftlab.cluster import Cluster

#: Big enough that the speed-up shows over start-up costs (about 20 s alone
#: at the default rate), small enough for half a minute in all.
DEFAULT_SIZE = 160 << 20
#: Each machine's link: a slow per-machine uplink, well below loopback.
DEFAULT_RATE = 8 << 20
HELPERS = 3


def _live(port: int) -> int:
    from .membership import DiscoveryClient, DiscoveryError
    try:
        return len(DiscoveryClient("127.0.0.1", port, name="demo", secret=None, timeout=2).list_peers())
    except DiscoveryError:
        return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _download(cluster, disc_port: int, url: str, out: Path, report: Path,
              alone: bool, timeout: float) -> dict:
    args = ["-o", str(out), "--report", str(report)] + (["--no-peers"] if alone else [])
    proc = cluster.get(f"127.0.0.1:{disc_port}", url, extra=["--source-address", "127.0.0.1", "-q"],
                       get_extra=args)
    code = proc.wait(timeout)
    if code != 0:
        raise RuntimeError(f"download failed ({code}):\n{proc.output()[-2000:]}")
    return json.loads(report.read_text())


def run(size: int, rate: int, workdir: Path) -> float:
    # the lab (swiftlab/) is in the source checkout only: never imported by the product
    from swiftlab.cluster import Cluster, wait_until

    from .membership import DiscoveryClient
    from swiftlab.origin import make_file

    root = workdir / "origin"
    root.mkdir()
    with Cluster(workdir) as cluster:
        _say(f"swift demo: 1 requester + {HELPERS} helpers on loopback, each machine's link "
             f"capped at {human_rate(rate)} by the origin (working in {workdir})")
        _say(f"generating a {human_bytes(size)} test file ...")
        digest = make_file(root / "demo.bin", size, seed=2026)
        port_file = workdir / "origin.port"
        cluster.start([sys.executable, "-m", "swiftlab.origin", "--root", str(root), "--host", "127.0.0.1",
                       "--port", "0", "--host-rate", str(rate), "--port-file", str(port_file)],
                      name="origin")
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 20, "origin to start")
        url = f"http://127.0.0.1:{int(port_file.read_text().strip())}/demo.bin"
        disc = cluster.discovery(extra=["-q"])
        for i in range(HELPERS):
            d = workdir / f"helper{i + 1}"
            d.mkdir()
            cluster.node(f"127.0.0.1:{disc.port}", name=f"helper{i + 1}", directory=d,
                         extra=["-q", "--allow-private", "--source-address", f"127.0.0.{i + 2}"])
        wait_until(lambda: _live(disc.port) == HELPERS, 20, "helpers to register")
        names = {format_hostport(p.host, p.port): p.name for p in
                 DiscoveryClient("127.0.0.1", disc.port, name="demo", secret=None).list_peers()}
        names["local"] = "requester"
        _say(f"origin, discovery and {HELPERS} helpers are up")

        limit = size / rate * 3 + 60
        _say("1 machine: downloading alone ...")
        alone = _download(cluster, disc.port, url, workdir / "alone.bin", workdir / "alone.json",
                          True, limit)
        ok1 = file_digest(workdir / "alone.bin") == digest
        _say(f"  {alone['seconds']:.1f} s, {human_rate(alone['rate'])}, "
             f"sha256 {'ok' if ok1 else 'MISMATCH'}")
        (workdir / "alone.bin").unlink()
        _say(f"{HELPERS + 1} machines: downloading together ...")
        together = _download(cluster, disc.port, url, workdir / "together.bin",
                             workdir / "together.json", False, limit)
        ok2 = file_digest(workdir / "together.bin") == digest
        _say(f"  {together['seconds']:.1f} s, {human_rate(together['rate'])}, "
             f"sha256 {'ok' if ok2 else 'MISMATCH'}")
        for source, n in sorted(together["bytes_by_source"].items(),
                                key=lambda kv: names.get(kv[0], kv[0])):
            _say(f"    {names.get(source, source):>10}: {human_bytes(n)}")
        if not (ok1 and ok2):
            raise RuntimeError("a downloaded file does not match the original")
        speedup = alone["seconds"] / together["seconds"]
        _say(f"speed-up with {HELPERS + 1} machines: {speedup:.2f}x "
             f"(ideal {HELPERS + 1}x; {alone['seconds']:.1f} s -> {together['seconds']:.1f} s)")
        return speedup


def main(size: int | None = None, rate: int | None = None) -> int:
    """Run the demo; 0 if both files are right, 1 if not, 130 on Ctrl-C.

    The caller installs the signal handlers (``swift.cli``): SIGINT raises
    KeyboardInterrupt, SIGTERM its own exception, and both reach the
    ``finally`` below, which removes every process and file.
    """
    if importlib.util.find_spec("swiftlab") is None:
        print("error: the demo needs swift's source checkout (its swiftlab/ lab is not installed "
              "by pip); run `python3 node.py demo` there", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="swift-demo-"))
    started = time.monotonic()
    try:
        run(size or DEFAULT_SIZE, rate or DEFAULT_RATE, workdir)
        _say(f"demo finished in {time.monotonic() - started:.0f} s; everything it started "
             f"and wrote is removed")
        return 0
    except KeyboardInterrupt:
        _say("\ninterrupted: every process the demo started is stopped and its files removed")
        return 130
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"error: the demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
