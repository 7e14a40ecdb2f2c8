"""The systemd units in contrib/systemd/: systemd accepts them, and what they start runs.

``systemd-analyze verify`` checks a unit's syntax, its options and that the
program of ``ExecStart=`` exists and is executable, so the units are
verified as installed: in a copy, the README's install path
(``/opt/swift/.venv``, where ``pip install .`` puts ``swift-discovery`` and
``swift-node``) is replaced by a directory holding the two console scripts
pip writes there (from setup.cfg's entry points, running this checkout), and
``/etc/swift`` by one holding the example option files and a secret.

Then the units' own command lines run, as systemd would start them: the
``$VAR`` options from the example option files (with ``HOST`` filled in),
``%d`` (where ``LoadCredential=`` puts the secret) and ``%S`` (the state
directory) expanded, on ephemeral loopback ports. The helper must register
with discovery over the private channel, and both must take SIGTERM as
their normal stop (exit 0), or ``Restart=on-failure`` would restart a
``systemctl stop``.

Skips where systemd-analyze is missing (systemd is not needed to run).
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swiftlab.cluster import ROOT, Cluster, program, wait_until

UNITS = ROOT / "contrib" / "systemd"
INSTALL_BIN = "/opt/swift/.venv/bin/"
ETC = "/etc/swift/"
NAMES = ("swift-discovery", "swift-node")


def read_unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value given (systemd allows a key several times)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """An ``EnvironmentFile=``: ``KEY=VALUE`` lines; ``#`` comments."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def console_scripts(bin_dir: Path) -> None:
    """What ``pip install .`` writes into the venv's bin/: one script per entry point."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = (part.strip() for part in line.partition("="))
        module, _, func = target.partition(":")
        script = bin_dir / name
        script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                          f"from {module} import {func}\nsys.exit({func}())\n")
        script.chmod(0o755)


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, Path]:
    """The units as the README installs them, with the install paths moved into ``tmp_path``."""
    bin_dir = tmp_path / "opt" / "bin"
    bin_dir.mkdir(parents=True)
    console_scripts(bin_dir)
    etc = tmp_path / "etc"
    etc.mkdir()
    for env in ("discovery.env", "node.env"):
        shutil.copy(UNITS / env, etc / env)
    (etc / "secret").write_text("0123456789abcdef" * 4 + "\n")
    (etc / "secret").chmod(0o600)
    units = tmp_path / "units"
    units.mkdir()
    out = {}
    for name in NAMES:
        text = (UNITS / f"{name}.service").read_text()
        assert INSTALL_BIN in text and ETC in text, name
        out[name] = units / f"{name}.service"
        out[name].write_text(text.replace(INSTALL_BIN, f"{bin_dir}/").replace(ETC, f"{etc}/"))
    return out


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


@needs_analyze
@pytest.mark.parametrize("name", NAMES)
def test_systemd_analyze_verify_accepts_the_unit_as_installed(installed, name):
    done = subprocess.run(["systemd-analyze", "verify", str(installed[name])],
                          capture_output=True, text=True, timeout=60)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if name in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


@needs_analyze
def test_verify_would_catch_a_wrong_install_path(installed):
    """The check above is not empty: a unit whose program is missing fails it."""
    broken = installed["swift-node"].with_name("broken.service")
    broken.write_text(installed["swift-node"].read_text().replace("/bin/swift-node", "/bin/no-such-program"))
    done = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no-such-program" in done.stderr, done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_each_unit_has_a_dedicated_user_state_restarts_and_hardening(name):
    unit = read_unit(UNITS / f"{name}.service")
    service = {key.removeprefix("Service."): values for key, values in unit.items() if key.startswith("Service.")}
    assert service["User"] == ["swift"] and service["Group"] == ["swift"]
    assert service["StateDirectory"] == ["swift"] and service["StateDirectoryMode"] == ["0700"]
    assert "SWIFT_STATE_DIR=%S/swift" in service["Environment"]
    assert service["Restart"] == ["on-failure"]
    assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["LoadCredential"] == ["secret:/etc/swift/secret"]
    assert "SWIFT_SECRET_FILE=%d/secret" in service["Environment"]
    env_file = service["EnvironmentFile"][0]
    assert env_file.startswith("-/etc/swift/")
    assert (UNITS / Path(env_file).name).is_file(), f"no example for {env_file} in contrib/systemd/"
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def command_line(unit: Path, etc: Path, credentials: Path, state: Path) -> tuple[list[str], dict[str, str], Path]:
    """``ExecStart=`` as systemd runs it: (argv, environment, working directory)."""
    values = read_unit(unit)
    env = read_env_file(Path(values["Service.EnvironmentFile"][0].lstrip("-")))
    for assignment in values["Service.Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%d", str(credentials)).replace("%S", str(state))
    argv = []
    for word in shlex.split(values["Service.ExecStart"][0]):
        if m := re.fullmatch(r"\$(\w+)", word):  # an unquoted $VAR: split at white space
            argv += env.get(m.group(1), "").split()
        else:
            argv.append(word)
    workdir = Path(values["Service.WorkingDirectory"][0].replace("%S", str(state)))
    return argv, env, workdir


def test_the_units_command_lines_run_with_the_credential_and_stop_cleanly_on_sigterm(installed, tmp_path):
    etc = tmp_path / "etc"
    credentials = tmp_path / "credentials"  # what LoadCredential= makes: a private copy of the secret
    credentials.mkdir(mode=0o700)
    shutil.copy(etc / "secret", credentials / "secret")
    state = tmp_path / "state"
    (state / "swift").mkdir(parents=True, mode=0o700)  # StateDirectory=swift

    disc_argv, disc_env, workdir = command_line(installed["swift-discovery"], etc, credentials, state)
    node_argv, node_env, _ = command_line(installed["swift-node"], etc, credentials, state)
    assert node_env["SWIFT_DISCOVERY"] == "HOST:5000" and "--serve-only" in node_argv
    clean = {k: "" for k in ("SWIFT_DISCOVERY", "SWIFT_SECRET_FILE")}
    with Cluster(tmp_path) as cluster:
        disc = cluster.start([*disc_argv, "--host", "127.0.0.1", "--port", "0"], name="discovery",
                             env={**clean, **disc_env}, cwd=workdir)
        port = int(disc.wait_for(r"listening on \S+:(\d+)").group(1))
        node_env["SWIFT_DISCOVERY"] = node_env["SWIFT_DISCOVERY"].replace("HOST:5000", f"127.0.0.1:{port}")
        node = cluster.start([*node_argv, "--host", "127.0.0.1", "--port", "0"], name="node",
                             env={**clean, **node_env}, cwd=workdir)
        node.wait_for(r"listening on")

        def listed() -> bool:
            out = subprocess.run([*program("node"), "--discovery", f"127.0.0.1:{port}",
                                  "--secret-file", str(etc / "secret"), "peers"],
                                 capture_output=True, text=True, timeout=30)
            return out.returncode == 0 and " kitchen " in out.stdout  # the example's --name

        wait_until(listed, 30, "the helper registered", interval=0.2)
        kept = sorted(p.name for p in (state / "swift").iterdir())  # the keys, and the running node's mark
        assert [n for n in kept if not n.startswith("running-node-")] == ["discovery-tls.pem", "node-tls.pem"]
        assert len(kept) == 3, kept
        for proc in (node, disc):
            assert "no shared secret" not in proc.output(), proc.output()
            assert proc.stop() == 0, proc.output()  # SIGTERM, as systemctl stop sends it
