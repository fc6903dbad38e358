"""deploy/bind-nic.sh. These machines have no NIC for DPDK (their one NIC is a
virtio device carrying the default route, and the kernel has no vfio-pci), so
binding cannot be tried on real hardware. What is tested:
- on this host's real sysfs, read only, with dpdk-devbind.py replaced by a stub
  that records calls: argument errors, a PCI device that does not exist, the
  refusal to bind the NIC of the default route, vfio-pci missing, dry-run
  output; nothing is ever bound;
- on a fake sysfs tree (PCI devices, drivers, IOMMU groups, class/net links)
  inside a network namespace the test makes (veth interfaces, one carrying
  the default route): the whole bind / restore flow through the stub, which
  moves the fake driver link as dpdk-devbind.py would."""
import os
import pathlib
import shutil
import subprocess
import uuid

import pytest

from unitfile import DEPLOY, require_root

SCRIPT = DEPLOY / "bind-nic.sh"

STUB = """#!/bin/sh
# dpdk-devbind.py stand-in: records its arguments; with FAKE_MOVE=1 moves the
# fake sysfs driver link ("-b DRIVER [--force] PCI").
echo "$@" >> "$STUB_LOG"
[ "${FAKE_MOVE:-0}" = 1 ] || exit 0
drv=$2
for pci; do :; done
ln -sfn "$TURN_SYSFS/bus/pci/drivers/$drv" "$TURN_SYSFS/bus/pci/devices/$pci/driver"
"""


@pytest.fixture
def stub(tmp_path):
    path = tmp_path / "dpdk-devbind.py"
    path.write_text(STUB)
    path.chmod(0o755)
    log = tmp_path / "devbind.log"
    # A modprobe that finds nothing, so the vfio checks do not depend on the host.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "modprobe").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "modprobe").chmod(0o755)
    env = dict(os.environ, TURN_DEVBIND=str(path), STUB_LOG=str(log),
               TURN_NIC_STATE=str(tmp_path / "state"), PATH=f"{bindir}:{os.environ['PATH']}")
    env.pop("TURN_SYSFS", None)
    return env, log


def run(env, *args, netns=None):
    cmd = [str(SCRIPT), *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)


def calls(log):
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("args, message", [
    ([], "bind, restore or status?"),
    (["frob", "0000:00:00.0"], "unknown action 'frob'"),
    (["bind"], "bind which device?"),
    (["bind", "a;b"], "neither a PCI address"),
    (["--bogus", "bind", "x"], "unknown option --bogus"),
    (["bind", "0000:00:00.0", "extra"], "unexpected argument 'extra'"),
    (["bind", "0000:00:00.0", "--driver", "x/y"], "not a driver name"),
])
def test_bad_arguments_exit_2(stub, args, message):
    env, log = stub
    r = run(env, "--dry-run", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert calls(log) == []


def test_no_such_pci_device(stub):
    env, log = stub
    for dev in ["0000:ff:1f.7", "ff:1f.6"]:
        r = run(env, "--dry-run", "bind", dev)
        assert r.returncode == 1
        assert "no PCI device 0000:ff:1f." in r.stderr
    r = run(env, "--dry-run", "bind", "nosuchif0")
    assert r.returncode == 1 and "no network interface 'nosuchif0'" in r.stderr
    r = run(env, "--dry-run", "bind", "lo")
    assert r.returncode == 1 and "'lo' is not on a PCI device" in r.stderr
    assert calls(log) == []


def test_devbind_missing(stub):
    env, _ = stub
    env["TURN_DEVBIND"] = "/nonexistent/dpdk-devbind.py"
    r = run(env, "--dry-run", "bind", "0000:00:00.0")
    assert r.returncode == 1 and "install the dpdk package" in r.stderr


def default_route_pci():
    out = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.split()
    if "dev" not in out:
        return None, None
    ifc = out[out.index("dev") + 1]
    path = os.path.realpath(f"/sys/class/net/{ifc}/device")
    pcis = [p for p in path.split("/") if len(p) == 12 and p[4] == ":" and p[7] == ":" and p[10] == "."]
    return ifc, (pcis[-1] if pcis else None)


def test_refuses_this_hosts_default_route_nic(stub):
    env, log = stub
    ifc, pci = default_route_pci()
    if pci is None:
        pytest.skip("this host's default route is not on a PCI NIC")
    for dev in [pci, ifc]:
        r = run(env, "--dry-run", "bind", dev)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"refusing to bind {pci}: its interface {ifc} carries the default route" in r.stderr
    assert calls(log) == []


def test_vfio_missing_on_this_host(stub):
    env, log = stub
    if pathlib.Path("/sys/bus/pci/drivers/vfio-pci").exists():
        pytest.skip("vfio-pci is loaded on this host")
    ifc, pci = default_route_pci()
    if pci is None:
        pytest.skip("no PCI NIC to name")
    # --force gets past the default-route check (dry run: nothing happens either way).
    r = run(env, "--dry-run", "--force", "bind", pci)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "carries the default route; binding it anyway" in r.stdout
    assert "vfio-pci is not loaded and cannot be loaded" in r.stderr
    assert calls(log) == []


@pytest.fixture
def fake_host(tmp_path, stub):
    """A fake sysfs with three PCI NICs on driver fakenic, and a namespace whose
    veth interfaces carry their names: dpt0 (0000:aa:00.0) has the default
    route, dpt1 (0000:bb:00.0) does not, dpt2 (0000:cc:00.0) has no IOMMU group."""
    require_root()
    if shutil.which("ip") is None:
        pytest.skip("iproute2 missing")
    env, log = stub
    sysfs = tmp_path / "sys"
    for d in ["bus/pci/drivers/fakenic", "bus/pci/drivers/vfio-pci", "kernel/iommu_groups/7",
              "kernel/iommu_groups/8", "class/net", "module/vfio/parameters"]:
        (sysfs / d).mkdir(parents=True)
    (sysfs / "module/vfio/parameters/enable_unsafe_noiommu_mode").write_text("N\n")
    ns = "bindnic-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for i, (pci, group) in enumerate([("0000:aa:00.0", 7), ("0000:bb:00.0", 8), ("0000:cc:00.0", None)]):
            dev = sysfs / "bus/pci/devices" / pci
            dev.mkdir(parents=True)
            (dev / "driver").symlink_to(sysfs / "bus/pci/drivers/fakenic")
            if group is not None:
                (dev / "iommu_group").symlink_to(sysfs / f"kernel/iommu_groups/{group}")
            (sysfs / f"class/net/dpt{i}").mkdir()
            (sysfs / f"class/net/dpt{i}/device").symlink_to(dev)
            # veth, not dummy: these kernels have no dummy module.
            subprocess.run(["ip", "-n", ns, "link", "add", f"dpt{i}", "type", "veth", "peer", "name", f"dpt{i}p"],
                           check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", f"dpt{i}p", "up"], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", f"dpt{i}", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "198.18.0.2/24", "dev", "dpt0"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", "198.18.0.1", "dev", "dpt0"], check=True)
        env = dict(env, TURN_SYSFS=str(sysfs), FAKE_MOVE="1")
        yield env, log, sysfs, ns
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def driver(sysfs, pci):
    return os.path.basename(os.readlink(sysfs / "bus/pci/devices" / pci / "driver"))


def test_fake_host_refuses_the_default_route_nic(fake_host):
    env, log, sysfs, ns = fake_host
    r = run(env, "bind", "0000:aa:00.0", netns=ns)
    assert r.returncode == 1
    assert "refusing to bind 0000:aa:00.0: its interface dpt0 carries the default route" in r.stderr
    assert calls(log) == [] and driver(sysfs, "0000:aa:00.0") == "fakenic"
    # --force: bound anyway, and dpdk-devbind.py gets --force too (it refuses active interfaces).
    r = run(env, "--force", "bind", "dpt0", netns=ns)
    assert r.returncode == 0, r.stderr
    assert calls(log) == ["-b vfio-pci --force 0000:aa:00.0"]
    assert driver(sysfs, "0000:aa:00.0") == "vfio-pci"


def test_fake_host_bind_and_restore(fake_host):
    env, log, sysfs, ns = fake_host
    r = run(env, "--dry-run", "bind", "bb:00.0", netns=ns)
    assert r.returncode == 0, r.stderr
    assert "0000:bb:00.0 is in IOMMU group 8" in r.stdout
    assert f"would bind 0000:bb:00.0 (now fakenic) to vfio-pci: {env['TURN_DEVBIND']} -b vfio-pci 0000:bb:00.0" \
        in r.stdout
    assert calls(log) == [] and driver(sysfs, "0000:bb:00.0") == "fakenic"

    r = run(env, "bind", "dpt1", netns=ns)  # by interface name
    assert r.returncode == 0, r.stderr
    assert calls(log) == ["-b vfio-pci 0000:bb:00.0"]
    assert driver(sysfs, "0000:bb:00.0") == "vfio-pci"
    assert "0000:bb:00.0 bound to vfio-pci (was fakenic)" in r.stdout
    assert (pathlib.Path(env["TURN_NIC_STATE"]) / "0000:bb:00.0.driver").read_text().strip() == "fakenic"

    r = run(env, "bind", "0000:bb:00.0", netns=ns)  # idempotent
    assert r.returncode == 0 and "bound to vfio-pci already" in r.stdout
    assert len(calls(log)) == 1

    r = run(env, "--dry-run", "restore", "0000:bb:00.0", netns=ns)
    assert r.returncode == 0 and "would bind 0000:bb:00.0 (now vfio-pci) to fakenic" in r.stdout
    assert len(calls(log)) == 1
    r = run(env, "restore", "0000:bb:00.0", netns=ns)  # the recorded driver
    assert r.returncode == 0, r.stderr
    assert calls(log)[-1] == "-b fakenic 0000:bb:00.0"
    assert driver(sysfs, "0000:bb:00.0") == "fakenic"


def test_fake_host_restore_without_a_record_needs_driver(fake_host):
    env, log, sysfs, ns = fake_host
    r = run(env, "restore", "0000:cc:00.0", netns=ns)
    assert r.returncode == 1 and "pass --driver" in r.stderr
    r = run(env, "restore", "0000:cc:00.0", "--driver", "fakenic", netns=ns)
    assert r.returncode == 0 and "bound to fakenic already" in r.stdout
    assert calls(log) == []


def test_fake_host_needs_an_iommu_group(fake_host):
    env, log, sysfs, ns = fake_host
    r = run(env, "--dry-run", "bind", "0000:cc:00.0", netns=ns)
    assert r.returncode == 1
    assert "0000:cc:00.0 has no IOMMU group" in r.stderr and "intel_iommu=on" in r.stderr
    (sysfs / "module/vfio/parameters/enable_unsafe_noiommu_mode").write_text("Y\n")
    r = run(env, "--dry-run", "bind", "0000:cc:00.0", netns=ns)
    assert r.returncode == 0, r.stderr
    assert "unsafe no-IOMMU mode is on" in r.stdout
    assert calls(log) == []


def test_fake_host_without_vfio_pci(fake_host):
    env, log, sysfs, ns = fake_host
    (sysfs / "bus/pci/drivers/vfio-pci").rmdir()
    r = run(env, "bind", "0000:bb:00.0", netns=ns)
    assert r.returncode == 1 and "vfio-pci is not loaded and cannot be loaded" in r.stderr
    assert calls(log) == [] and driver(sysfs, "0000:bb:00.0") == "fakenic"


def test_fake_host_devbind_that_does_not_bind(fake_host):
    # dpdk-devbind.py exiting 0 without moving the device is caught.
    env, log, sysfs, ns = fake_host
    env["FAKE_MOVE"] = "0"
    r = run(env, "bind", "0000:bb:00.0", netns=ns)
    assert r.returncode == 1
    assert "0000:bb:00.0 is on fakenic after" in r.stderr and "not vfio-pci" in r.stderr
