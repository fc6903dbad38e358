#!/usr/bin/env python3
"""turn-dataplane refuses bad configurations at start-up with a message that says what to fix,
and exits non-zero without a crash (no abort, no core): one case per kind of mistake. Usage
errors (an option missing, unknown or out of range) exit 2 before EAL starts; the rest (ports,
memory, the exception port's interface) exit 1, after EAL if they need it, which is then
cleaned up: no case leaves /var/run/dpdk/<its prefix> behind (dataplane/README.md "Command
line"; tests/dataplane/usage_exit.py has --help, hugepages and SIGTERM).
Ports are in-memory (net_null), no namespaces, no hugepages (--no-huge).

Usage: startup_errors.py <turn-dataplane>
"""
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402

EAL = ["-l", "0,1", "--no-huge", "-m", "256", "--no-pci", "--log-level=lib.eal:error"]


def run(dp, prefix, vdevs, args, eal=EAL):
    cmd = [dp, *eal, f"--file-prefix={prefix}", *[f"--vdev={v}" for v in vdevs], "--", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:  # a configuration it did not refuse: it ran until killed
        rc, out = None, "".join(b.decode(errors="replace") for b in (e.stdout, e.stderr) if b)
    finally:
        left = os.path.exists(f"/var/run/dpdk/{prefix}")
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    return rc, out, left


def main():
    dp = sys.argv[1]
    null2 = ["net_null0", "net_null1"]
    base = ["--nic", "net_null0", "--exc", "net_null1", "--ipc", f"/tmp/dp-startup-{os.getpid()}.sock"]
    ipc = base[4:]
    # (name, vdevs, args, message, exit status[, EAL arguments])
    cases = [
        ("no --exc", null2, ["--nic", "net_null0", *ipc], "--nic and --exc name the NIC and exception ports", 2),
        ("no --ipc", null2, base[:4], "--ipc is required", 2),
        ("unknown port", null2, ["--nic", "net_null0", "--exc", "net_tap9", *ipc],
         "no DPDK port named 'net_tap9' (add it with --vdev=... or -a <pci>)", 1),
        ("flows not a number", null2, base + ["--flows", "lots"],
         "--flows lots: expected a whole number from 1 to 16777216", 2),
        ("flows zero", null2, base + ["--flows", "0"], "--flows 0: expected a whole number from 1 to 16777216", 2),
        ("mtu too small", null2, base + ["--mtu", "100"], "--mtu 100: expected a whole number from 576 to 9216", 2),
        ("bad gateway MAC", null2, base + ["--gw4", "not-a-mac"], "bad MAC not-a-mac for --gw4", 2),
        ("broadcast gateway MAC", null2, base + ["--gw4", "ff:ff:ff:ff:ff:ff"],
         "--gw4 ff:ff:ff:ff:ff:ff: a gateway MAC must be a unicast, nonzero address", 2),
        ("multicast gateway MAC", null2, base + ["--gw4", "01:00:5e:00:00:01"],
         "--gw4 01:00:5e:00:00:01: a gateway MAC must be a unicast, nonzero address", 2),
        ("all-zero gateway MAC", null2, base + ["--gw6", "00:00:00:00:00:00"],
         "--gw6 00:00:00:00:00:00: a gateway MAC must be a unicast, nonzero address", 2),
        ("one port for both", null2, ["--nic", "net_null0", "--exc", "net_null0", *ipc],
         "--nic and --exc both name net_null0: the exception port is a port of its own", 2),
        ("VLAN ID out of range", null2, base + ["--gw4", "02:00:00:00:00:01", "--gw4-vlan", "4095"],
         "--gw4-vlan 4095: expected a whole number from 1 to 4094", 2),
        ("VLAN without its gateway", null2, base + ["--gw6-vlan", "10"],
         "--gw4-vlan / --gw6-vlan tag the static default next hop: give its MAC with --gw4 / --gw6 too", 2),
        ("unknown exception kernel interface", null2, base + ["--exc-kernel-if", "nosuch0"],
         "--exc-kernel-if nosuch0: no such interface in this network namespace", 1),
        ("unknown option", null2, base + ["--bogus"], "unknown option --bogus", 2),
        ("missing value", null2, base + ["--mtu"], "missing value for --mtu", 2),
    ]
    # 12287 mbufs of ~9.4 KB do not fit in 64 MiB: the message says how much they need.
    small = [e if e != "256" else "64" for e in EAL]
    cases.append(("mbufs for a jumbo MTU without the memory", null2, base + ["--mtu", "9000"],
                  "mbuf pool: Cannot allocate memory (12287 mbufs of 9402 bytes for 1 workers and --mtu 9000, "
                  "about 114 MiB: reserve more hugepages", 1, small))
    # Two workers, a NIC with one queue pair (net_pcap on an empty capture): each worker needs
    # its own NIC queue. (An exception port with fewer queues is fine: netns_offload_workers.py.)
    pcap_in = f"/tmp/dp-startup-{os.getpid()}.pcap"
    with open(pcap_in, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # a capture with no packets
    two_workers = ["--lcores", "0@0,1@1,2@1", *EAL[2:]]
    cases.append(("fewer NIC queues than workers",
                  [f"net_pcap0,rx_pcap={pcap_in},tx_pcap={pcap_in}.out", "net_null1"],
                  ["--nic", "net_pcap0", *base[2:]],
                  "net_pcap0 has 1 queue pair(s), fewer than the 2 workers: each worker needs its own NIC queue",
                  1, two_workers))
    if not os.path.exists("/dev/vhost-net"):
        cases.append(("virtio-user without vhost-net",
                      ["net_null0", "virtio_user1,path=/dev/vhost-net,queues=1,queue_size=1024,iface=dpst0"],
                      ["--nic", "net_null0", "--exc", "virtio_user1", *ipc],
                      "virtio-user needs /dev/vhost-net (modprobe vhost_net)", 1))
    check = Checks()
    for i, (name, vdevs, args, want, want_rc, *eal) in enumerate(cases):
        rc, out, left = run(dp, f"dpstart{os.getpid()}_{i}", vdevs, args, *eal)
        if not check(rc == want_rc and want in out and not left,
                     f"{name}: rc={rc} (want {want_rc}), message {'found' if want in out else 'missing'}, "
                     f"/var/run/dpdk/<prefix> {'left behind' if left else 'removed'}"):
            print(out)
    for f in (pcap_in, pcap_in + ".out"):
        if os.path.exists(f):
            os.unlink(f)
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
