#!/usr/bin/env python3
"""rtnetlink messages of any length reach the kernel mirror (nexthop/kernel_mirror.h). An
interface with many long alternative names (`ip link property add dev X altname NAME`) has an
RTM_NEWLINK of tens of KiB: longer than a 4 KiB notification buffer, a 16 KiB dump buffer,
and the 32 KiB the kernel gives a dump datagram unless asked for room for its longest link
(without which it ends the dump there, silently, as if done). The mirror must read such a
message whole at start-up (its link dump) and while it runs (notifications), and lose
nothing that follows it.

The big one is the exception port's own interface (x0d): from its link message the mirror
learns the kernel's end (x0k), whose neighbours alone it follows. Had it missed it, it would
follow every interface's, and take the one the test puts on another interface (o0).

Topology and stand-in control plane of netns_smoke.py (one allocation; a permission and
channel 0x4001 to the peer 198.18.1.3, here also 0x4002 to a second peer 198.18.1.4), no
--gw4: next hops come from the kernel only. IPv6 is off in the relay namespace so that no
route changes (each a full flush) happen on their own.

  0. before start: x0d gets 300 altnames of 120 characters (its RTM_NEWLINK > 32 KiB,
     checked); neighbour entries (permanent, h0's MAC): the peer on x0k, the second peer
     on o0 only (a veth of the relay namespace that is not the exception port's)
  1. turn-dataplane starts, says it follows x0k (it read x0d's link), and uses the peer's
     entry, known only from its start-up dump: the client's ChannelData takes the fast path
  2. the second peer's ChannelData is punted (o0's neighbour is not the NIC's)
  then, each time in one shell command so the notifications queue together, 20 altnames
  added to or removed from x0d (4 RTM_NEWLINK notifications of the whole link, each
  > 32 KiB: a listener in the namespace counts them, 12 in all), then a neighbour change:
  3. the peer's entry gets a bogus MAC: fast path to that MAC, the peer gets nothing
  4. back to h0's MAC:                     the peer gets it again
  5. the entry deleted:                    punted (punt_no_next_hop), the peer gets nothing

At exit: fwd_client_channel == 3, punt_no_next_hop == 2, nexthop_neigh_set >= 3,
nexthop_neigh_removed >= 1, and nexthop_flushes == 0 (the long notifications were read
whole, not lost and made up for by a full resync), no rtnetlink error printed.

  tbl_h (client 198.18.1.2, peers 198.18.1.3 and 198.18.1.4 on h0)
     h0 <-> n0  (tbl_r: NIC, driven by DPDK af_packet)
     tbl_r: x0k 198.18.1.1 (kernel end, relay IP) <-> x0d (DPDK exception port)
            o0 <-> o1 (no address)

Usage: netns_big_links.py <turn-dataplane>   (root)
"""
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns_smoke as sm  # noqa: E402  topology and the scripted control plane
from checks import Checks  # noqa: E402  (netns_smoke put tests/ on the path)

sm.NS_H, sm.NS_R = "tbl_h", "tbl_r"
NS_H, NS_R = sm.NS_H, sm.NS_R
SOCK = "/tmp/tbl_big_links.sock"
PREFIX = "tblbig"
PEER = "198.18.1.3"
PEER2 = "198.18.1.4"  # its neighbour entry is on o0 only
BOGUS = "02:00:5e:00:53:99"
DEV = "x0d"  # the interface given the altnames: the exception port's

PEER_CODE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 6000)); s.settimeout(0.5)
for line in sys.stdin:
    try:
        data, _ = s.recvfrom(2048)
        print("got", data.decode(), flush=True)
    except socket.timeout:
        print("none", flush=True)
"""
CLIENT_CODE = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.18.1.2", 50000))
for line in sys.stdin:
    ch, p = line.split()
    p = p.encode()
    s.sendto(struct.pack("!HH", int(ch, 16), len(p)) + p + b"\\0" * (-len(p) % 4), ("198.18.1.1", 3478))
    print("sent", flush=True)
"""
# The length of the kernel's RTM_NEWLINK for one interface (RTM_GETLINK by index).
LINK_SIZE_CODE = """
import socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0)); s.settimeout(5)
idx = socket.if_nametoindex(sys.argv[1])
s.send(struct.pack("=IHHII", 32, 18, 1, 1, 0) + struct.pack("=BxHiII", 0, 0, idx, 0, 0))
print(len(s.recv(1 << 20)))
"""
# Counts the namespace's link notifications longer than 32 KiB until stdin closes.
MONITOR_CODE = """
import select, socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((0, 1))  # RTMGRP_LINK
print("ready", flush=True)
sizes = []
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 60)
    if s in r:
        sizes.append(len(s.recv(1 << 20)))
    elif not r or sys.stdin.readline() == "":
        break
print(sum(1 for n in sizes if n > 32768), max(sizes, default=0), flush=True)
"""


def altnames(first, count):
    """`count` altnames of 120 characters, unique per index."""
    return [f"tbl{i:04d}".ljust(120, "a") for i in range(first, first + count)]


def altnames_cmd(op, names):
    """ip commands adding (op "add") or deleting ("del") `names` on DEV, 5 per command (iproute2's
    request holds 7 of them; each command is one RTM_NEWLINK notification of the whole link)."""
    return " && ".join(f"ip -n {NS_R} link property {op} dev {DEV} " + " ".join(f"altname {n}" for n in names[i:i + 5])
                       for i in range(0, len(names), 5))


def link_size():
    r = subprocess.run(["ip", "netns", "exec", NS_R, sys.executable, "-c", LINK_SIZE_CODE, DEV],
                       capture_output=True, text=True, timeout=10)
    return int(r.stdout.strip()) if r.stdout.strip().isdigit() else -1


def main():
    dp_bin = sys.argv[1]
    check = Checks()
    srv = dp = peer = peer2 = client = monitor = None
    out, c = "", {}
    started = alive_at_end = False
    monitor_out = ""

    def step(name, want, p=None, channel="4001"):
        p = p or peer
        client.stdin.write(f"{channel} {name}\n")
        client.stdin.flush()
        client.stdout.readline()
        p.stdin.write("next\n")
        p.stdin.flush()
        got = p.stdout.readline().strip()
        check(got == (f"got {name}" if want else "none"), f"{name}: peer {'gets' if want else 'does not get'} it "
                                                           f"(peer: {got!r})")

    def altnames_then(first, neigh_cmd, delete=False):
        # delete: altnames added before start go (the link's message stays > 32 KiB)
        cmd = altnames_cmd("del" if delete else "add", altnames(first, 20))
        sm.sh(f"{cmd} && ip -n {NS_R} neigh {neigh_cmd}")
        time.sleep(0.4)  # the main lcore applies rtnetlink notifications within milliseconds

    try:
        sm.setup()
        # No IPv6 in the relay namespace: its addresses and routes come and go on their own
        # (a route change is a full flush, which the exit counters say there was none of).
        sm.sh(f"ip netns exec {NS_R} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
              "net.ipv6.conf.default.disable_ipv6=1")
        sm.sh(f"ip -n {NS_R} link add o0 type veth peer name o1 && ip -n {NS_R} link set o0 up && "
              f"ip -n {NS_R} link set o1 up")
        sm.sh(f"ip -n {NS_H} addr add {PEER2}/24 dev h0")
        h0 = sm.mac_of(NS_H, "h0")
        sm.sh(altnames_cmd("add", altnames(0, 300)))
        size = link_size()
        check(size > 32768, f"{DEV}'s RTM_NEWLINK is longer than 32 KiB before start ({size} bytes)")
        sm.sh(f"ip -n {NS_R} neigh replace {PEER} lladdr {h0} dev x0k nud permanent")
        sm.sh(f"ip -n {NS_R} neigh replace {PEER2} lladdr {h0} dev o0 nud permanent")
        time.sleep(0.3)

        srv = sm.listen_ipc(SOCK)
        srv.settimeout(0.5)
        dp = sm.start_dataplane(dp_bin, SOCK, PREFIX, "af_packet")  # no --gw4: next hops come from the kernel
        conn = None
        deadline = time.monotonic() + 30
        while conn is None and dp.poll() is None and time.monotonic() < deadline:
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                pass
        started = check(conn is not None, "turn-dataplane started and connected to the control plane")
        if started:
            sm.control_plane(conn)
            # The second peer: permission and channel 0x4002 on the same allocation (42).
            relayed = sm.wa(4, 49152, [198, 18, 1, 1])
            peer2_ip = [198, 18, 1, 4]
            for seq, (t, body) in enumerate([
                    (12, struct.pack("<Q", 42) + relayed + sm.wa(4, 0, peer2_ip)),
                    (14, struct.pack("<Q", 42) + relayed + sm.wa(4, 6000, peer2_ip) + struct.pack("<H", 0x4002)
                     + bytes(6)),
            ], 100):
                conn.send(sm.hdr(t, 16 + len(body), seq) + body)
            time.sleep(0.5)
            peer = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, "-c", PEER_CODE, PEER],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            peer2 = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, "-c", PEER_CODE, PEER2],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            client = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, "-c", CLIENT_CODE],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            monitor = subprocess.Popen(["ip", "netns", "exec", NS_R, sys.executable, "-c", MONITOR_CODE],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            check(monitor.stdout.readline().strip() == "ready", "link notification listener ready")
            time.sleep(0.3)
            step("one-from-dump", True)
            step("two-other-interface", False, peer2, "4002")
            altnames_then(300, f"replace {PEER} lladdr {BOGUS} dev x0k nud permanent")
            step("three-bogus-mac", False)
            altnames_then(0, f"replace {PEER} lladdr {h0} dev x0k nud permanent", delete=True)
            step("four-back", True)
            altnames_then(320, f"del {PEER} dev x0k")
            step("five-deleted", False)
            size = link_size()
            check(size > 32768, f"{DEV}'s RTM_NEWLINK is still longer than 32 KiB ({size} bytes)")
            alive_at_end = dp.poll() is None
            monitor_out, _ = monitor.communicate(input="", timeout=20)
    finally:
        for p in (client, peer, peer2, monitor):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
        if dp is not None:
            out, c = sm.stop_dataplane(dp)
            print(out)
        sm.teardown()
        if srv is not None:
            srv.close()
            os.unlink(SOCK)
        sm.sh(f"rm -rf /var/run/dpdk/{PREFIX}", check=False)
    if not started:
        sys.exit(check.finish())
    big = [int(w) for w in monitor_out.split() if w.isdigit()]
    check(len(big) == 2 and big[0] >= 12,
          f"12 link notifications longer than 32 KiB arrived while it ran (count, longest: {monitor_out.strip()!r})")
    check(alive_at_end, "turn-dataplane still running after the long notifications")
    check("next hops follow the kernel's neighbours and routes on x0k" in out,
          "it follows x0k, the kernel end it learned from x0d's link message")
    check("rtnetlink" not in out, "no rtnetlink error printed")
    check(c.get("fwd_client_channel") == "3", f"fwd_client_channel == 3 (got {c.get('fwd_client_channel')})")
    check(c.get("punt_no_next_hop") == "2", f"punt_no_next_hop == 2 (got {c.get('punt_no_next_hop')})")
    check(int(c.get("nexthop_neigh_set", 0)) >= 3, f"mirror set >= 3 entries (got {c.get('nexthop_neigh_set')})")
    check(int(c.get("nexthop_neigh_removed", 0)) >= 1,
          f"mirror removed >= 1 entry (got {c.get('nexthop_neigh_removed')})")
    check(c.get("nexthop_flushes") == "0",
          f"no full flush: the long notifications were read whole (nexthop_flushes {c.get('nexthop_flushes')})")
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
