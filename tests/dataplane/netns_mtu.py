#!/usr/bin/env python3
"""--mtu above Ethernet's 1500 on real interfaces (af_xdp on veth pairs, MTU 3000).

turn-dataplane sets both ports' MTU from --mtu and sizes its mbufs for it, so frames up
to that size take the fast path and the exception path whole; a relayed packet that
would exceed it is punted (punt_mtu). At start-up it refuses an --mtu a port cannot
carry (net_af_packet: 1500) and an exception port whose kernel end has another MTU,
each with a message saying what to fix. The kernel end is named with --exc-kernel-if
here, the option for PMDs that name no interface.

Same topology and stand-in control plane as netns_smoke.py:
  tdp_h (client 198.18.1.2, peer 198.18.1.3 on h0, MTU 3000)
     h0 <-> n0  (tdp_r: NIC)
     tdp_r: x0k 198.18.1.1 (kernel end, relay IP) <-> x0d (exception port)

Usage: netns_mtu.py <path to turn-dataplane>   (root)
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns_smoke as smoke  # noqa: E402  (namespaces, control plane, start/stop)

DP = sys.argv[1]
SOCK = "/tmp/tdp_mtu.sock"
MTU = 3000


def start_fails(pmd, extra, want):
    """turn-dataplane exits 1 at start-up with `want` in its output."""
    p = smoke.start_dataplane(DP, SOCK, "tdpmtu0", pmd, ["--no-kernel-mirror", *extra])
    try:
        out = p.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        p.kill()
        out = p.communicate()[0]
    smoke.sh("rm -rf /var/run/dpdk/tdpmtu0", check=False)
    good = p.returncode == 1 and want in out
    print(("ok   " if good else "FAIL ") + f"{pmd} {' '.join(extra)}: rc={p.returncode}, wants '{want}'")
    if not good:
        print(out)
    return good


def main():
    smoke.setup()
    smoke.sh(f"ip -n {smoke.NS_H} link set h0 mtu {MTU}")  # n0 and x0d are the dataplane's to set
    checks = []
    dp = None
    counters = {}
    try:
        # Start-up refusals. af_packet carries 1500-byte packets at most.
        checks.append(start_fails("af_packet", ["--mtu", str(MTU)],
                                  "takes an MTU from 46 to 1500, not --mtu 3000"))
        # x0k still has 1500: the kernel would drop the large packets punted to it.
        checks.append(start_fails("af_xdp", ["--mtu", str(MTU), "--exc-kernel-if", "x0k"],
                                  "the exception port's kernel interface x0k has MTU 1500 and --mtu is 3000"))
        # Refused before any port was set up: n0 and x0d still have 1500.
        for dev in ("n0", "x0d"):
            checks.append(" mtu 1500 " in smoke.sh(f"ip -n {smoke.NS_R} -o link show {dev}").stdout)
        smoke.sh(f"ip -n {smoke.NS_R} link set x0k mtu {MTU}")

        srv = smoke.listen_ipc(SOCK)
        gw = smoke.mac_of(smoke.NS_H, "h0")
        dp = smoke.start_dataplane(DP, SOCK, "tdpmtu", "af_xdp",
                                   ["--gw4", gw, "--mtu", str(MTU), "--exc-kernel-if", "x0k"])
        conn, _ = srv.accept()
        smoke.control_plane(conn)
        time.sleep(0.5)
        # ChannelData 0x4001 <-> peer 198.18.1.3:6000 via relayed 198.18.1.1:49152.
        # Client -> peer: 2900 bytes (IP packet 2932 on each leg).
        # Peer -> client: 2960 bytes (ChannelData IP packet 2992: fits 3000),
        # then 2970 bytes (2998 from the peer, 3002 as ChannelData: punted).
        # Relay host's kernel -> client: 2500 bytes through the exception port.
        peer = smoke.run_in(smoke.NS_H, """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.18.1.3", 6000)); s.settimeout(10)
data, src = s.recvfrom(4096); print("peer got", len(data), data == bytes([7]) * 2900, src, flush=True)
s.sendto(bytes([8]) * 2960, src)
s.sendto(bytes([9]) * 2970, src)
""")
        time.sleep(0.3)
        client = smoke.run_in(smoke.NS_H, """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.18.1.2", 50000)); s.settimeout(3)
s.sendto(struct.pack("!HH", 0x4001, 2900) + bytes([7]) * 2900, ("198.18.1.1", 3478))
got = []
try:
    while True:
        data, src = s.recvfrom(4096); got.append((len(data), data[:4].hex(), set(data[4:]), src))
except socket.timeout:
    pass
for g in got:
    print("client got", g, flush=True)
""")
        pout, perr = peer.communicate(timeout=30)
        cout, cerr = client.communicate(timeout=30)
        print(pout.strip(), perr.strip())
        print(cout.strip(), cerr.strip())
        checks.append("peer got 2900 True ('198.18.1.1', 49152)" in pout)
        checks.append("client got (2964, '40010b90', {8}, ('198.18.1.1', 3478))" in cout)
        checks.append("{9}" not in cout)  # the 3002-byte one went to the kernel, not the client

        # Kernel egress larger than 1500 leaves through the exception port and the NIC.
        recv = smoke.run_in(smoke.NS_H, """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.18.1.2", 50001)); s.settimeout(10)
data, src = s.recvfrom(4096); print("host got", len(data), set(data), src, flush=True)
""")
        time.sleep(0.3)
        smoke.sh(f"ip netns exec {smoke.NS_R} {sys.executable} -c \"import socket; s=socket.socket(socket.AF_INET, "
                 f"socket.SOCK_DGRAM); s.bind(('198.18.1.1', 7000)); s.sendto(bytes([5]) * 2500, ('198.18.1.2', 50001))\"")
        rout, rerr = recv.communicate(timeout=30)
        print(rout.strip(), rerr.strip())
        checks.append("host got 2500 {5} ('198.18.1.1', 7000)" in rout)
        for dev in ("n0", "x0d"):  # set by turn-dataplane through the PMD
            link = smoke.sh(f"ip -n {smoke.NS_R} -o link show {dev}").stdout
            print(link.split("\\")[0])
            checks.append(f" mtu {MTU} " in link)
    finally:
        if dp is not None:
            out, counters = smoke.stop_dataplane(dp)
            print(out)
            checks.append("next hops follow the kernel's neighbours and routes on x0k" in out)
        smoke.teardown()
        if os.path.exists(SOCK):
            os.unlink(SOCK)
        smoke.sh("rm -rf /var/run/dpdk/tdpmtu /var/run/dpdk/tdpmtu0", check=False)
    fast = (counters.get("fwd_client_channel") == "1" and counters.get("fwd_peer_channel") == "1"
            and counters.get("punt_mtu") == "1" and int(counters.get("exception_to_nic", "0")) >= 1)
    ok = all(checks) and fast
    print("RESULT:", "PASS" if ok else "FAIL", f"(checks {checks}, counters ok={fast})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
