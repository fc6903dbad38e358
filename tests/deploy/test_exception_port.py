"""deploy/setup-exception-port.sh in a network namespace the test makes:
argument errors, a dry run that creates nothing, the veth pair with the relay
addresses (198.18.0.0/15, fd00::/8), up, tx checksum offload off on the kernel
end, a second run that changes nothing, names taken by something else,
addresses on 802.1Q VLANs (ADDR/LEN@VLAN: a VLAN device of the kernel end), and
the MTU of both ends (--mtu, turn-dataplane's --mtu)."""
import os
import shutil
import subprocess
import uuid

import pytest

from unitfile import DEPLOY, require_root

SCRIPT = DEPLOY / "setup-exception-port.sh"


@pytest.fixture
def ns():
    require_root()
    if shutil.which("ip") is None:
        pytest.skip("iproute2 missing")
    name = "excport-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])


def run(ns, *args):
    return subprocess.run(["ip", "netns", "exec", ns, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=30)


def ip(ns, *args):
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True).stdout


@pytest.mark.parametrize("args, message", [
    ([], "which relay address"),
    (["198.18.5.1"], "with its prefix length"),
    (["--kernel-if", "a", "--dataplane-if", "a", "198.18.5.1/24"], "must differ"),
    (["--kernel-if", "bad/name", "198.18.5.1/24"], "not an interface name"),
    (["--kernel-if", "x" * 16, "198.18.5.1/24"], "not an interface name"),
    (["--frob", "198.18.5.1/24"], "unknown option --frob"),
    (["198.18.5.1/24@0"], "the VLAN after @ is a number from 1 to 4094"),
    (["198.18.5.1/24@4095"], "the VLAN after @ is a number from 1 to 4094"),
    (["198.18.5.1/24@1x"], "the VLAN after @ is a number from 1 to 4094"),
    (["198.18.5.1/24@"], "the VLAN after @ is a number from 1 to 4094"),
    (["--kernel-if", "x" * 12, "198.18.5.1/24@4094"], "needs a shorter --kernel-if"),
    (["--mtu", "575", "198.18.5.1/24"], "--mtu '575': a number from 576 to 9216"),
    (["--mtu", "9217", "198.18.5.1/24"], "--mtu '9217': a number from 576 to 9216"),
    (["--mtu", "01500", "198.18.5.1/24"], "--mtu '01500': a number from 576 to 9216"),
    (["--mtu", "big", "198.18.5.1/24"], "--mtu 'big': a number from 576 to 9216"),
    (["198.18.5.1/24", "--mtu"], "--mtu needs a number"),
])
def test_bad_arguments_exit_2(ns, args, message):
    r = run(ns, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "exc0-k" not in ip(ns, "link")


def test_dry_run_creates_nothing(ns):
    r = run(ns, "--dry-run", "198.18.5.1/24", "fd00:5::1/64")
    assert r.returncode == 0, r.stderr
    for line in ["would run: ip link add exc0-k type veth peer name exc0-d",
                 "would run: ip -4 addr add 198.18.5.1/24 dev exc0-k",
                 "would run: ip -6 addr add fd00:5::1/64 dev exc0-k nodad",
                 "would run: ip link set exc0-k up"]:
        assert line in r.stdout
    assert "exc0" not in ip(ns, "link")


def test_creates_the_pair_and_is_idempotent(ns):
    args = ["--kernel-if", "exck", "--dataplane-if", "excd", "198.18.5.1/24", "fd00:5::1/64"]
    r = run(ns, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    link = ip(ns, "-d", "link", "show", "exck")
    assert "exck@excd" in link and " veth " in link and "state UP" in link
    assert "state UP" in ip(ns, "link", "show", "excd")
    addrs = ip(ns, "-o", "addr", "show", "dev", "exck")
    assert "inet 198.18.5.1/24" in addrs and "inet6 fd00:5::1/64" in addrs
    offload = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-k", "exck"], capture_output=True,
                             text=True).stdout
    assert "tx-checksumming: off" in offload
    r = run(ns, *args)
    assert r.returncode == 0, r.stderr
    assert "veth pair exck / excd exists already" in r.stdout
    assert "exck has 198.18.5.1/24 already" in r.stdout
    assert ip(ns, "-o", "addr", "show", "dev", "exck").count("198.18.5.1/24") == 1
    # An address added later is added; the others stay.
    r = run(ns, *args, "198.18.6.1/24")
    assert r.returncode == 0, r.stderr
    addrs = ip(ns, "-o", "addr", "show", "dev", "exck")
    assert "198.18.6.1/24" in addrs and "198.18.5.1/24" in addrs


def mtu_of(ns, dev):
    return int(subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/mtu"], capture_output=True,
                              text=True).stdout)


def test_mtu_of_both_ends(ns):
    r = run(ns, "--dry-run", "--mtu", "9000", "198.18.5.1/24")
    assert r.returncode == 0, r.stderr
    assert "would run: ip link set exc0-k mtu 9000" in r.stdout
    assert "would run: ip link set exc0-d mtu 9000" in r.stdout
    args = ["--kernel-if", "exck", "--dataplane-if", "excd", "198.18.5.1/24"]
    r = run(ns, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mtu_of(ns, "exck") == 1500 and mtu_of(ns, "excd") == 1500  # left as it is without --mtu
    r = run(ns, "--mtu", "9000", *args)  # on the existing pair
    assert r.returncode == 0, r.stdout + r.stderr
    assert mtu_of(ns, "exck") == 9000 and mtu_of(ns, "excd") == 9000
    r = run(ns, "--mtu", "1400", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mtu_of(ns, "exck") == 1400 and mtu_of(ns, "excd") == 1400
    # An /etc/default/turn-dataplane without EXC_MTU (written before it existed; the
    # install copies the example with cp -n) gives the unit's --mtu ${EXC_MTU} an empty
    # value: the pair is set up as before, its MTU left alone.
    r = run(ns, "--mtu", "", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mtu_of(ns, "exck") == 1400 and mtu_of(ns, "excd") == 1400


def test_names_taken_by_something_else(ns):
    subprocess.run(["ip", "-n", ns, "link", "add", "other-k", "type", "veth", "peer", "name", "other-p"], check=True)
    r = run(ns, "--kernel-if", "other-k", "--dataplane-if", "exc0-d", "198.18.5.1/24")
    assert r.returncode == 1 and "its peer is 'other-p', not exc0-d" in r.stderr
    r = run(ns, "--kernel-if", "exc0-k", "--dataplane-if", "other-p", "198.18.5.1/24")
    assert r.returncode == 1 and "other-p exists but exc0-k does not" in r.stderr
    assert "exc0-k" not in ip(ns, "link")
    # A device with the VLAN device's name that is not that VLAN of the kernel end.
    subprocess.run(["ip", "-n", ns, "link", "add", "exc0-k", "type", "veth", "peer", "name", "exc0-d"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "add", "exc0-k.200", "type", "veth", "peer", "name", "other-v"],
                   check=True)
    r = run(ns, "198.18.5.1/24@200")
    assert r.returncode == 1 and "exc0-k.200 exists and is not VLAN 200 of exc0-k" in r.stderr, r.stderr


def test_dry_run_with_vlans(ns):
    r = run(ns, "--dry-run", "198.18.5.1/24@200", "fd00:5::1/64@200", "198.18.6.1/24@4094", "198.18.7.1/24")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in ["would run: ip link add link exc0-k name exc0-k.200 type vlan id 200",
                 "would run: ip link add link exc0-k name exc0-k.4094 type vlan id 4094",
                 "would run: ip -4 addr add 198.18.5.1/24 dev exc0-k.200",
                 "would run: ip -6 addr add fd00:5::1/64 dev exc0-k.200 nodad",
                 "would run: ip -4 addr add 198.18.6.1/24 dev exc0-k.4094",
                 "would run: ip -4 addr add 198.18.7.1/24 dev exc0-k",
                 "would run: ethtool -K exc0-k tx off txvlan off tx-vlan-stag-hw-insert off",
                 "would run: ip link set exc0-k.200 up"]:
        assert line in out, out
    assert out.count("type vlan id 200") == 1  # one device per VLAN
    assert "exc0" not in ip(ns, "link")


def kernel_has_vlans(ns):
    subprocess.run(["ip", "-n", ns, "link", "add", "probe-a", "type", "veth", "peer", "name", "probe-b"], check=True)
    ok = subprocess.run(["ip", "-n", ns, "link", "add", "link", "probe-a", "name", "probe-a.5", "type", "vlan",
                         "id", "5"], capture_output=True).returncode == 0
    subprocess.run(["ip", "-n", ns, "link", "del", "probe-a"])
    return ok


def test_vlan_device_holds_its_addresses(ns):
    args = ["--kernel-if", "exck", "--dataplane-if", "excd", "198.18.5.1/24@200", "198.18.7.1/24"]
    r = run(ns, *args)
    if not kernel_has_vlans(ns):
        # This kernel cannot make VLAN devices (no 8021q): a clear failure naming what is missing.
        assert r.returncode == 1, r.stdout + r.stderr
        assert "the kernel needs 802.1Q VLAN support: modprobe 8021q" in r.stderr
        return
    assert r.returncode == 0, r.stdout + r.stderr
    link = ip(ns, "-d", "link", "show", "exck.200")
    assert "vlan protocol 802.1Q id 200 " in link and "state UP" in link
    assert "inet 198.18.5.1/24" in ip(ns, "-o", "addr", "show", "dev", "exck.200")
    assert "inet 198.18.7.1/24" in ip(ns, "-o", "addr", "show", "dev", "exck")
    offload = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-k", "exck"], capture_output=True,
                             text=True).stdout
    assert "tx-vlan-offload: off" in offload
    r = run(ns, *args)
    assert r.returncode == 0 and "VLAN device exck.200 exists already" in r.stdout, r.stdout + r.stderr
