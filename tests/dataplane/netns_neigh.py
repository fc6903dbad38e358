#!/usr/bin/env python3
"""Next hops mirror the kernel: turn-dataplane (af_packet on veths, no --gw4 default) follows
the relay host's neighbour table over rtnetlink (nexthop/kernel_mirror.h). The test plays the
control plane (one allocation, a permission and channel 0x4001 to the peer, as netns_smoke.py)
and changes the relay namespace's neighbour entry for the peer between client ChannelData
datagrams:

  1. no entry for the peer:               punted (punt_no_next_hop), the peer gets nothing
  1b. the relay host's kernel sends the peer a datagram of its own: it resolves the peer (ARP),
     sends the waiting datagram (which the dataplane learns from), then adds the neighbour:
     fast path, the peer gets it
  1c. after the learned-entry TTL (--learned-ttl 2): still the fast path, since the entry is
     the kernel's neighbour now, which does not expire
  2. ip neigh replace <peer> lladdr <h0>:  fast path, the peer gets it
  3. ip neigh replace <peer> lladdr <bogus MAC>: fast path to the new MAC (the peer's interface
                                          drops a frame not addressed to it), the peer gets nothing
  4. ip neigh replace back to <h0>:       the peer gets it again
  5. ip neigh del <peer>:                  punted again, the peer gets nothing
Then a second peer off the relay's subnet (198.19.5.5, channel 0x4002), reached only through
the default route, whose gateway is the first peer's address (its host answers for both):
  6. no default route:                    punted, the far peer gets nothing
  7. ip route add default via <peer> (and the gateway's neighbour entry): fast path to the
                                          gateway's MAC, the far peer gets it
  8. ip route del default:                 punted again
  9. the default via the peer at metric 100 and a backup default at metric 200 via 198.18.1.9
     (a neighbour with a bogus MAC): fast path to the lower metric's gateway, as the kernel
     sends; the far peer gets it
 10. only the backup default left, and the (on-link) peer's neighbour entry deleted: the first
     peer is on the relay's subnet, which the kernel reaches directly, never through the
     default gateway: punted, not sent to the backup's MAC
 10b. the far peer through that backup default (the primary's deletion made the mirror read
     the routes again): fast path to the backup's bogus MAC, the far peer gets nothing
Then a multipath default route (via the peer's address and 198.18.1.4, both h0's), which gives
no single default next hop:
 11. the far peer, never sent to by the kernel:  punted
 12. after the relay host's kernel sent the far peer a datagram of its own: fast path (the next
     hop learned from that kernel egress), the far peer gets it
 12b. a route to another prefix added (198.19.99.0/24): the learned next hop stays, fast path
 12c. a route covering the far peer added (198.19.5.0/24 via the peer): its learned next hop
     goes with it, punted
 12d. the kernel sends the far peer a datagram again: learned again, fast path
 13. after the learned next hop's TTL (--learned-ttl 2) has passed: punted again
Then one default via the peer again:
 14. the far peer, under no more specific route (198.19.5.0/24 deleted): the default, fast path
 15. 198.19.5.0/24 via the peer added, replaced with one via 198.18.1.4 (`ip route replace`:
     one more RTM_NEWROUTE, no deletion) and deleted: the far peer is under no route again,
     fast path through the default (the replacement must not count as a second route)

At exit the dataplane's counters must say exactly that: fwd_client_channel == 13,
punt_no_next_hop == 8, the mirror's own totals (nexthop_neigh_set >= 3,
nexthop_neigh_removed >= 1, nexthop_defaults_set >= 1) and the learned entries' (at least one
learned, at least one expired).

  tnb_h (client 198.18.1.2, peer 198.18.1.3 on h0)
     h0 <-> n0  (tnb_r: NIC, driven by DPDK af_packet)
     tnb_r: x0k 198.18.1.1 (kernel end, relay IP) <-> x0d (DPDK exception port)

Usage: netns_neigh.py <turn-dataplane>   (root)
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

sm.NS_H, sm.NS_R = "tnb_h", "tnb_r"
NS_H, NS_R = sm.NS_H, sm.NS_R
SOCK = "/tmp/tnb_neigh.sock"
PEER = "198.18.1.3"
BOGUS = "02:00:5e:00:53:99"
BACKUP = "198.18.1.9"  # a backup router: its neighbour entry has the bogus MAC

FAR = "198.19.5.5"
ROUTER2 = "198.18.1.4"  # the multipath default's second router: another of h0's addresses
LEARNED_TTL = 2
KERNEL_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.18.1.1", 0))
s.sendto(b"from the relay's kernel", (sys.argv[1], 6001))
"""
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


def main():
    dp_bin = sys.argv[1]
    sm.setup()
    srv = sm.listen_ipc(SOCK)
    h0 = sm.mac_of(NS_H, "h0")
    # No --gw4: next hops come from the kernel.
    dp = sm.start_dataplane(dp_bin, SOCK, "tnbneigh", "af_packet", ["--learned-ttl", str(LEARNED_TTL)])
    peer = client = far = None
    out, c = "", {}

    check = Checks()

    def neigh(cmd):
        sm.sh(f"ip -n {NS_R} neigh {cmd}")
        time.sleep(0.4)  # the main lcore applies rtnetlink notifications within milliseconds

    def kernel_sends(ip):
        """The relay host's kernel sends `ip` a datagram of its own (kernel egress to learn from)."""
        subprocess.run(["ip", "netns", "exec", NS_R, sys.executable, "-c", KERNEL_SEND, ip], check=True, timeout=10)
        time.sleep(0.4)

    def step(name, want, channel="4001"):
        client.stdin.write(f"{channel} {name}\n")
        client.stdin.flush()
        client.stdout.readline()
        p = peer if channel == "4001" else far
        p.stdin.write("next\n")
        p.stdin.flush()
        got = p.stdout.readline().strip()
        check(got == (f"got {name}" if want else "none"), f"{name}: peer {'gets' if want else 'does not get'} it "
                                                           f"(peer: {got!r})")

    try:
        conn, _ = srv.accept()
        sm.control_plane(conn)
        # The far peer: permission and channel 0x4002 on the same allocation (42).
        far_ip = [198, 19, 5, 5]
        relayed = sm.wa(4, 49152, [198, 18, 1, 1])
        for seq, (t, body) in enumerate([
                (12, struct.pack("<Q", 42) + relayed + sm.wa(4, 0, far_ip)),
                (14, struct.pack("<Q", 42) + relayed + sm.wa(4, 6000, far_ip) + struct.pack("<H", 0x4002) + bytes(6)),
        ], 100):
            conn.send(sm.hdr(t, 16 + len(body), seq) + body)
        sm.sh(f"ip -n {NS_H} addr add {FAR}/32 dev h0")
        time.sleep(0.5)
        peer = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, "-c", PEER_CODE, PEER],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        far = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, "-c", PEER_CODE, FAR],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        client = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, "-c", CLIENT_CODE],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        sm.sh(f"ip -n {NS_R} neigh del {PEER} dev x0k", check=False)
        time.sleep(0.4)
        step("one-no-entry", False)
        kernel_sends(PEER)
        step("one-b-resolved-by-the-kernel", True)
        time.sleep(LEARNED_TTL + 1.5)
        step("one-c-a-neighbour-does-not-expire", True)
        neigh(f"replace {PEER} lladdr {h0} dev x0k nud permanent")
        step("two-entry", True)
        neigh(f"replace {PEER} lladdr {BOGUS} dev x0k nud permanent")
        step("three-bogus-mac", False)
        neigh(f"replace {PEER} lladdr {h0} dev x0k nud permanent")
        step("four-back", True)
        neigh(f"del {PEER} dev x0k")
        step("five-deleted", False)
        step("six-no-route", False, "4002")
        neigh(f"replace {PEER} lladdr {h0} dev x0k nud permanent")
        sm.sh(f"ip -n {NS_R} route add default via {PEER} dev x0k")
        time.sleep(0.4)
        step("seven-default-route", True, "4002")
        sm.sh(f"ip -n {NS_R} route del default")
        time.sleep(0.4)
        step("eight-route-gone", False, "4002")
        neigh(f"replace {BACKUP} lladdr {BOGUS} dev x0k nud permanent")
        sm.sh(f"ip -n {NS_R} route add default via {PEER} dev x0k metric 100")
        sm.sh(f"ip -n {NS_R} route add default via {BACKUP} dev x0k metric 200")
        time.sleep(0.4)
        step("nine-backup-default", True, "4002")
        sm.sh(f"ip -n {NS_R} route del default via {PEER} dev x0k metric 100")
        neigh(f"del {PEER} dev x0k")
        step("ten-on-link-no-entry", False)
        step("ten-b-backup-default", False, "4002")
        sm.sh(f"ip -n {NS_H} addr add {ROUTER2}/32 dev h0")
        neigh(f"replace {PEER} lladdr {h0} dev x0k nud permanent")
        neigh(f"replace {ROUTER2} lladdr {h0} dev x0k nud permanent")
        sm.sh(f"ip -n {NS_R} route del default")  # the backup
        sm.sh(f"ip -n {NS_R} route add default nexthop via {PEER} dev x0k nexthop via {ROUTER2} dev x0k")
        time.sleep(0.4)
        step("eleven-multipath-unlearned", False, "4002")
        kernel_sends(FAR)
        step("twelve-multipath-learned", True, "4002")
        sm.sh(f"ip -n {NS_R} route add 198.19.99.0/24 via {PEER} dev x0k")
        time.sleep(0.4)
        step("twelve-b-other-route-keeps-it", True, "4002")
        sm.sh(f"ip -n {NS_R} route add 198.19.5.0/24 via {PEER} dev x0k")
        time.sleep(0.4)
        step("twelve-c-covering-route-drops-it", False, "4002")
        kernel_sends(FAR)
        step("twelve-d-learned-again", True, "4002")
        time.sleep(LEARNED_TTL + 1.5)
        step("thirteen-learned-expired", False, "4002")
        sm.sh(f"ip -n {NS_R} route del 198.19.5.0/24")
        sm.sh(f"ip -n {NS_R} route replace default via {PEER} dev x0k")
        time.sleep(0.4)
        step("fourteen-single-default", True, "4002")
        sm.sh(f"ip -n {NS_R} route add 198.19.5.0/24 via {PEER} dev x0k")
        sm.sh(f"ip -n {NS_R} route replace 198.19.5.0/24 via {ROUTER2} dev x0k")
        sm.sh(f"ip -n {NS_R} route del 198.19.5.0/24")
        time.sleep(0.4)
        step("fifteen-replaced-route-gone", True, "4002")
    finally:
        for p in (client, peer, far):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
        out, c = sm.stop_dataplane(dp)
        print(out)
        sm.teardown()
        srv.close()
        os.unlink(SOCK)
        sm.sh("rm -rf /var/run/dpdk/tnbneigh", check=False)
    check(c.get("fwd_client_channel") == "13", f"fwd_client_channel == 13 (got {c.get('fwd_client_channel')})")
    check(c.get("punt_no_next_hop") == "8", f"punt_no_next_hop == 8 (got {c.get('punt_no_next_hop')})")
    check(int(c.get("nexthop_rerouted", 0)) >= 1,
          f"a route change removed a learned next hop (got {c.get('nexthop_rerouted')})")
    check(int(c.get("nexthop_learned_total", 0)) >= 1,
          f"a next hop learned from kernel egress (got {c.get('nexthop_learned_total')})")
    check(int(c.get("nexthop_learned_expired", 0)) >= 1,
          f"a learned next hop expired (got {c.get('nexthop_learned_expired')})")
    check(int(c.get("nexthop_defaults_set", 0)) >= 1,
          f"default next hop set from the route (got {c.get('nexthop_defaults_set')})")
    check(int(c.get("nexthop_neigh_set", 0)) >= 3, f"mirror set >= 3 entries (got {c.get('nexthop_neigh_set')})")
    check(int(c.get("nexthop_neigh_removed", 0)) >= 1,
          f"mirror removed >= 1 entry (got {c.get('nexthop_neigh_removed')})")
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
