"""Static checks of deploy/systemd/*: systemd-analyze verify on copies whose
ExecStart paths point at the build tree and the source tree's scripts, the
sandbox exposure of turn-relay.service, and the settings that must agree with
the relay's behaviour and the example configuration."""
import os
import pathlib
import shutil
import subprocess
import tomllib

import pytest

from unitfile import (DEPLOY, INSTALLED_DATAPLANE, INSTALLED_RELAY, INSTALLED_SCRIPTS, SYSTEMD, get,
                      get_all, parse_unit, seconds)

UNITS = sorted(p.name for p in SYSTEMD.glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")


def test_every_unit_is_here():
    assert UNITS == ["turn-dataplane.service", "turn-exception-port.service", "turn-hugepages.service",
                     "turn-nic-bind.service", "turn-relay.service"]


@pytest.fixture(scope="module")
def unit_copies(tmp_path_factory):
    """The units with the installed paths replaced by the build tree's binaries and
    the source tree's scripts (verify checks that ExecStart= programs exist)."""
    relay = os.environ.get("TURN_RELAY_BIN")
    if not relay:
        pytest.skip("TURN_RELAY_BIN not set (run through meson test)")
    # Without libdpdk there is no turn-dataplane: its unit is then left out of verify.
    dataplane = os.environ.get("TURN_DATAPLANE_BIN", "")
    d = tmp_path_factory.mktemp("units")
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        if INSTALLED_DATAPLANE in text and not dataplane:
            continue
        text = text.replace(INSTALLED_RELAY, relay).replace(INSTALLED_DATAPLANE, dataplane)
        text = text.replace(INSTALLED_SCRIPTS, str(DEPLOY) + "/")
        (d / name).write_text(text)
    return d


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (package systemd)")
def test_systemd_analyze_verify_is_clean(unit_copies):
    # verify exits 0 even for unknown keys or unparsable values (it only warns),
    # so any output at all is a failure.
    units = sorted(p.name for p in unit_copies.glob("*.service"))
    assert "turn-relay.service" in units
    r = subprocess.run([ANALYZE, "verify", *units], cwd=unit_copies, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (package systemd)")
def test_verify_catches_a_broken_unit(unit_copies, tmp_path):
    # The check above is only worth something if verify reports mistakes here.
    text = (unit_copies / "turn-relay.service").read_text().replace("Restart=on-failure", "Restart=sometimes")
    (tmp_path / "turn-relay.service").write_text(text)
    r = subprocess.run([ANALYZE, "verify", "turn-relay.service"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert "sometimes" in r.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (package systemd)")
def test_turn_relay_sandbox_exposure(unit_copies):
    # Offline security analysis (no running systemd needed). The unit scores 1.7
    # ("OK"); --threshold takes the score x 10 and fails above it.
    r = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=25", "turn-relay.service"],
                       cwd=unit_copies, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr


def test_turn_relay_settings_match_the_relay():
    u = parse_unit(SYSTEMD / "turn-relay.service")
    example = tomllib.loads((DEPLOY / "turnrelay.toml").read_text())
    # SIGTERM drains for up to [drain].deadline_s, then writes the state: systemd
    # must not SIGKILL it before that.
    assert get(u, "Service", "KillSignal") == "SIGTERM"
    assert seconds(get(u, "Service", "TimeoutStopSec")) >= example["drain"]["deadline_s"] + 10
    # The file is checked with the same arguments as ExecStart, then signalled.
    assert get_all(u, "Service", "ExecReload") == [
        get(u, "Service", "ExecStart").replace(" --config ", " --check-config --config "), "/bin/kill -HUP $MAINPID"]
    assert get(u, "Service", "Restart") == "on-failure"
    assert get(u, "Service", "RestartPreventExitStatus") == "2"  # configuration errors
    # The example configuration's state and dataplane socket paths are the unit's directories.
    assert example["state"]["dir"] == "/var/lib/" + get(u, "Service", "StateDirectory")
    default = (SYSTEMD / "turn-dataplane.default").read_text()
    dp_args = [line for line in default.splitlines() if line.startswith("DP_ARGS=")][0]
    ipc = dp_args.split("--ipc ", 1)[1].split()[0]
    assert os.path.dirname(ipc) == "/run/" + get(u, "Service", "RuntimeDirectory")
    # turn-dataplane refuses an exception port whose kernel end has another MTU than --mtu.
    exc_mtu = [line for line in default.splitlines() if line.startswith("EXC_MTU=")][0].split("=", 1)[1]
    assert dp_args.split("--mtu ", 1)[1].split()[0] == exc_mtu
    assert get(u, "Service", "User") != "root"
    assert get(u, "Service", "AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert get(u, "Service", "CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert int(get(u, "Service", "LimitNOFILE")) >= 2 * 10000 + 1024  # 2 x [tcp].max_connections + 1024
    assert get(u, "Service", "ProtectSystem") == "strict"
    sysusers = (SYSTEMD / "turn-relay.sysusers.conf").read_text()
    assert f"u {get(u, 'Service', 'User')} " in sysusers


def test_dataplane_survives_control_plane_restarts():
    u = parse_unit(SYSTEMD / "turn-dataplane.service")
    requires = " ".join(get_all(u, "Unit", "Requires")).split()
    # Requires=turn-relay would restart the dataplane with every turn-relay restart.
    assert "turn-relay.service" not in requires
    assert "turn-relay.service" in " ".join(get_all(u, "Unit", "Wants")).split()
    assert "turn-relay.service" in " ".join(get_all(u, "Unit", "After")).split()
    assert "turn-hugepages.service" in requires
    assert "turn-hugepages.service" in " ".join(get_all(u, "Unit", "After")).split()
    assert get(u, "Service", "Restart") == "on-failure"
    assert get(u, "Service", "EnvironmentFile") == "/etc/default/turn-dataplane"
    # DPDK opens /dev/vfio/* (and /dev/uio*, /dev/infiniband/* for some PMDs):
    # none of the settings that close devices (ProtectClock= implies DeviceAllow=).
    for key in ["PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock"]:
        assert get_all(u, "Service", key) in ([], ["no"]), f"{key}= would close /dev/vfio to DPDK"
    exec_start = get(u, "Service", "ExecStart")
    assert exec_start == INSTALLED_DATAPLANE + " $DP_EAL_ARGS -- $DP_ARGS"
    # Every variable the units read from /etc/default/turn-dataplane is in the example file.
    default = {line.split("=", 1)[0] for line in (SYSTEMD / "turn-dataplane.default").read_text().splitlines()
               if line and not line.startswith("#")}
    for name in ["turn-dataplane.service", "turn-nic-bind.service", "turn-exception-port.service"]:
        text = " ".join(get_all(parse_unit(SYSTEMD / name), "Service", "ExecStart"))
        used = {w.strip("${}") for w in text.split() if w.startswith("$")}
        assert used <= default, f"{name} uses {used - default}, not in turn-dataplane.default"
        assert used


def test_scripts_the_units_run_exist_and_are_executable():
    for name in UNITS:
        u = parse_unit(SYSTEMD / name)
        for key in ["ExecStart", "ExecStop"]:
            for cmd in get_all(u, "Service", key):
                prog = cmd.split()[0].lstrip("-")
                if prog.startswith(INSTALLED_SCRIPTS):
                    script = DEPLOY / prog[len(INSTALLED_SCRIPTS):]
                    assert script.is_file() and os.access(script, os.X_OK), f"{name}: {script}"
