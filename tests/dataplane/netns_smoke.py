#!/usr/bin/env python3
"""Smoke test of turn-dataplane on real interfaces (af_packet on veth pairs).

Builds its own namespaces (198.18.0.0/15 only), plays the control plane over the
unix SOCK_SEQPACKET socket (src/ipc/protocol.h v1), and checks that a client's
ChannelData reaches the peer and the peer's answer comes back as ChannelData,
both through the dataplane's fast path (its counters, printed at exit, say so),
while ARP goes through the exception port to the kernel.

  tdp_h (client 198.18.1.2, peer 198.18.1.3 on h0)
     h0 <-> n0  (tdp_r: NIC, driven by DPDK af_packet)
     tdp_r: x0k 198.18.1.1 (kernel end, relay IP) <-> x0d (DPDK exception port)

Usage: netns_smoke.py <path to turn-dataplane> [af_packet|af_xdp]   (root)
"""
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from dataplane_process import stop_dataplane  # noqa: E402,F401  (netns_neigh.py uses it from here too)

DP = sys.argv[1]
PMD = sys.argv[2] if len(sys.argv) > 2 else "af_packet"
SOCK = "/tmp/tdp_smoke.sock"
NS_H, NS_R = "tdp_h", "tdp_r"


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def setup():
    teardown()
    sh(f"ip netns add {NS_H}; ip netns add {NS_R}")
    sh(f"ip link add h0 netns {NS_H} type veth peer name n0 netns {NS_R}")
    sh(f"ip -n {NS_R} link add x0k type veth peer name x0d")
    sh(f"ip -n {NS_H} addr add 198.18.1.2/24 dev h0; ip -n {NS_H} addr add 198.18.1.3/24 dev h0")
    sh(f"ip -n {NS_R} addr add 198.18.1.1/24 dev x0k")
    for ns, dev in ((NS_H, "h0"), (NS_R, "n0"), (NS_R, "x0k"), (NS_R, "x0d")):
        sh(f"ip -n {ns} link set {dev} up")
        # Kernel-built packets must carry full checksums: af_packet sees them raw.
        sh(f"ip netns exec {ns} ethtool -K {dev} tx off", check=False)
    sh(f"ip -n {NS_H} link set lo up; ip -n {NS_R} link set lo up")
    # af_packet only taps n0: the relay host's kernel must not answer ARP or take IP
    # packets there itself (weak host model), or the client could be served twice.
    sh(f"ip netns exec {NS_R} sysctl -qw net.ipv4.conf.n0.arp_ignore=8 net.ipv4.conf.n0.rp_filter=1")


def teardown():
    sh(f"ip netns del {NS_H}", check=False)
    sh(f"ip netns del {NS_R}", check=False)


def mac_of(ns, dev):
    return sh(f"ip netns exec {ns} cat /sys/class/net/{dev}/address").stdout.strip()


def hdr(t, length, seq):
    return struct.pack("<HHIQ", 1, t, length, seq)


def wa(fam, port, ip):
    return struct.pack("<BBH", fam, 0, port) + bytes(ip).ljust(16, b"\0")


def control_plane(conn):
    hello = conn.recv(4096)
    assert struct.unpack("<HHIQ", hello[:16])[1] == 1, "expected Hello"
    ip = lambda last: [198, 18, 1, last]
    msgs = [
        (2, struct.pack("<Q", 1)),
        (10, struct.pack("<Q", 42) + wa(4, 50000, ip(2)) + wa(4, 3478, ip(1)) + wa(4, 49152, ip(1)) + wa(0, 0, b"")
         + struct.pack("<Q", 0) + bytes(8)),
        (12, struct.pack("<Q", 42) + wa(4, 49152, ip(1)) + wa(4, 0, ip(3))),
        (14, struct.pack("<Q", 42) + wa(4, 49152, ip(1)) + wa(4, 6000, ip(3)) + struct.pack("<H", 0x4001) + bytes(6)),
        (3, struct.pack("<QQ", 1, 3)),
    ]
    for seq, (t, body) in enumerate(msgs, 1):
        conn.send(hdr(t, 16 + len(body), seq) + body)


def listen_ipc(path):
    """The control plane's end of the IPC socket (the test plays the control plane)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(30)
    return srv


def start_dataplane(dp_bin, sock, prefix, pmd, extra=()):
    """turn-dataplane in the relay namespace: n0 is the NIC, x0d the exception port."""
    return subprocess.Popen(["ip", "netns", "exec", NS_R, dp_bin, "-l", "0,1", "--no-huge", "-m", "512", "--no-pci",
                             f"--file-prefix={prefix}", "--log-level=lib.eal:error",
                             f"--vdev=net_{pmd}0,iface=n0", f"--vdev=net_{pmd}1,iface=x0d", "--",
                             "--nic", f"net_{pmd}0", "--exc", f"net_{pmd}1", "--ipc", sock, "--flows", "1024",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_in(ns, code):
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def main():
    setup()
    srv = listen_ipc(SOCK)
    gw = mac_of(NS_H, "h0")
    dp = start_dataplane(DP, SOCK, "tdpsmoke", PMD, ["--gw4", gw])
    ok = False
    try:
        conn, _ = srv.accept()
        control_plane(conn)
        time.sleep(0.5)
        peer = run_in(NS_H, """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.18.1.3", 6000)); s.settimeout(10)
data, src = s.recvfrom(2048); print("peer got", data, src, flush=True)
s.sendto(b"world", src)
""")
        time.sleep(0.3)
        client = run_in(NS_H, """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.18.1.2", 50000)); s.settimeout(10)
s.sendto(struct.pack("!HH", 0x4001, 5) + b"hello", ("198.18.1.1", 3478))
data, src = s.recvfrom(2048); print("client got", data, src, flush=True)
""")
        pout, perr = peer.communicate(timeout=20)
        cout, cerr = client.communicate(timeout=20)
        print(pout.strip(), perr.strip())
        print(cout.strip(), cerr.strip())
        ok = ("peer got b'hello' ('198.18.1.1', 49152)" in pout
              and "client got b'@\\x01\\x00\\x05world' ('198.18.1.1', 3478)" in cout)
    finally:
        out, counters = stop_dataplane(dp)
        print(out)
        teardown()
        srv.close()
        os.unlink(SOCK)
        sh("rm -rf /var/run/dpdk/tdpsmoke", check=False)
    fast = counters.get("fwd_client_channel") == "1" and counters.get("fwd_peer_channel") == "1"
    print("RESULT:", "PASS" if ok and fast else "FAIL", "(payloads ok=%s, fast path counters ok=%s)" % (ok, fast))
    sys.exit(0 if ok and fast else 1)


if __name__ == "__main__":
    main()
