#!/usr/bin/env python3
"""802.1Q VLAN tags through turn-dataplane on real interfaces (af_packet or af_xdp on veths).

The relay's next hop is on VLAN 200 (`--gw4 <MAC> --gw4-vlan 200`): every frame the fast path
sends must leave tagged 200, whatever tag the frame it relays came with. These machines' kernel
has no 802.1Q support (no VLAN devices), so the hosts here are raw AF_PACKET sockets on h0 that
write tagged frames themselves and read the tag of what arrives from the kernel's packet
metadata (PACKET_AUXDATA; the receiving veth moves the tag there) or from the frame.

  1. client ChannelData on VLAN 100 -> the peer gets the data as UDP, tagged 200
  2. client ChannelData untagged     -> the same, tagged 200
  3. peer UDP on VLAN 200            -> the client gets ChannelData, tagged 200
Counters at exit: fwd_client_channel == 2, fwd_peer_channel == 1 (the fast path, not the
kernel). The test plays the control plane as netns_smoke.py does.

  tvl_h: h0 (no IP: the raw-socket hosts 198.18.1.2 and 198.18.1.3 live here)
     h0 <-> n0  (tvl_r: NIC, driven by DPDK)
     tvl_r: x0k 198.18.1.1 <-> x0d (DPDK exception port)

Usage: netns_vlan.py <turn-dataplane> [af_packet|af_xdp]   (root)
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns_smoke as sm  # noqa: E402  the scripted control plane, start/stop of the dataplane
from checks import Checks  # noqa: E402  (netns_smoke put tests/ on the path)

sm.NS_H, sm.NS_R = "tvl_h", "tvl_r"
NS_H, NS_R = sm.NS_H, sm.NS_R
SOCK = "/tmp/tvl_vlan.sock"

# The hosts: each step sends one frame on h0 and waits for the frame the relay sends back.
HOSTS = r"""
import json, socket, struct, sys, time
h0_mac, n0_mac = (bytes.fromhex(m.replace(":", "")) for m in sys.argv[1:3])
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 0x10
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.bind(("h0", 0))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)

def csum(b):
    b += b"\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff

def ip(a):
    return socket.inet_aton(a)

def frame(vlan, src, sport, dst, dport, payload):
    udp_len = 8 + len(payload)
    pseudo = ip(src) + ip(dst) + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    ck = csum(pseudo + udp) or 0xffff
    udp = udp[:6] + struct.pack("!H", ck) + udp[8:]
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, 17, 0, ip(src), ip(dst))
    iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
    tag = struct.pack("!HH", 0x8100, vlan) if vlan else b""
    return n0_mac + h0_mac + tag + b"\x08\x00" + iph + udp

def wait_for(dst, dport):
    # The next IPv4/UDP frame to dst:dport from the relay: its VLAN (from the
    # packet metadata or the frame), source, payload, and whether the IP and
    # UDP checksums hold.
    end = time.time() + 5
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            data, anc, _, addr = s.recvmsg(4096, socket.CMSG_SPACE(20))
        except socket.timeout:
            break
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        vlan = None
        for level, kind, c in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(c) >= 20:
                status, _, _, _, _, tci, tpid = struct.unpack("IIIHHHH", c[:20])
                if status & TP_STATUS_VLAN_VALID:
                    vlan = [tpid or 0x8100, tci]
        off = 12
        if data[off:off + 2] == b"\x81\x00":
            vlan = [0x8100, struct.unpack("!H", data[off + 2:off + 4])[0]]
            off += 4
        if data[off:off + 2] != b"\x08\x00":
            continue
        l3 = data[off + 2:]
        if len(l3) < 28 or l3[9] != 17 or l3[16:20] != ip(dst) or struct.unpack("!H", l3[22:24])[0] != dport:
            continue
        udp_len = struct.unpack("!H", l3[24:26])[0]
        pseudo = l3[12:20] + struct.pack("!BBH", 0, 17, udp_len)
        return {"vlan": vlan, "dst_mac": data[0:6].hex(":"), "src": socket.inet_ntoa(l3[12:16]),
                "sport": struct.unpack("!H", l3[20:22])[0], "payload": l3[28:20 + udp_len].hex(),
                "ip_ok": csum(l3[:20]) == 0, "udp_ok": csum(pseudo + l3[20:20 + udp_len]) == 0}
    return None

res = {}
cd = struct.pack("!HH", 0x4001, 5) + b"hello" + b"\0" * 3
s.send(frame(100, "198.18.1.2", 50000, "198.18.1.1", 3478, cd))
res["client_tagged"] = wait_for("198.18.1.3", 6000)
s.send(frame(0, "198.18.1.2", 50000, "198.18.1.1", 3478, cd))
res["client_untagged"] = wait_for("198.18.1.3", 6000)
s.send(frame(200, "198.18.1.3", 6000, "198.18.1.1", 49152, b"world"))
res["peer_tagged"] = wait_for("198.18.1.2", 50000)
print(json.dumps(res), flush=True)
"""


def setup():
    teardown()
    sm.sh(f"ip netns add {NS_H}; ip netns add {NS_R}")
    sm.sh(f"ip link add h0 netns {NS_H} type veth peer name n0 netns {NS_R}")
    sm.sh(f"ip -n {NS_R} link add x0k type veth peer name x0d")
    sm.sh(f"ip -n {NS_R} addr add 198.18.1.1/24 dev x0k")
    for ns, dev in ((NS_H, "h0"), (NS_R, "n0"), (NS_R, "x0k"), (NS_R, "x0d")):
        sm.sh(f"ip -n {ns} link set {dev} up")
        sm.sh(f"ip netns exec {ns} ethtool -K {dev} tx off", check=False)
    sm.sh(f"ip -n {NS_H} link set lo up; ip -n {NS_R} link set lo up")
    sm.sh(f"ip netns exec {NS_R} sysctl -qw net.ipv4.conf.n0.arp_ignore=8 net.ipv4.conf.n0.rp_filter=1")


def teardown():
    sm.teardown()


def main():
    dp_bin = sys.argv[1]
    pmd = sys.argv[2] if len(sys.argv) > 2 else "af_packet"
    setup()
    srv = sm.listen_ipc(SOCK)
    h0, n0 = sm.mac_of(NS_H, "h0"), sm.mac_of(NS_R, "n0")
    dp = sm.start_dataplane(dp_bin, SOCK, "tvlvlan", pmd, ["--gw4", h0, "--gw4-vlan", "200"])
    res, c = {}, {}

    check = Checks()

    try:
        conn, _ = srv.accept()
        sm.control_plane(conn)
        time.sleep(0.5)
        hosts = subprocess.run(["ip", "netns", "exec", NS_H, sys.executable, "-c", HOSTS, h0, n0],
                               capture_output=True, text=True, timeout=60)
        print(hosts.stdout.strip(), hosts.stderr.strip())
        res = json.loads(hosts.stdout.strip().splitlines()[-1]) if hosts.stdout.strip() else {}
    finally:
        out, c = sm.stop_dataplane(dp)
        print(out)
        teardown()
        srv.close()
        os.unlink(SOCK)
        sm.sh("rm -rf /var/run/dpdk/tvlvlan", check=False)
    want = {"client_tagged": ("198.18.1.1", 49152, b"hello".hex()),
            "client_untagged": ("198.18.1.1", 49152, b"hello".hex()),
            "peer_tagged": ("198.18.1.1", 3478, (bytes.fromhex("40010005") + b"world").hex())}
    for step, (src, sport, payload) in want.items():
        r = res.get(step)
        check(r is not None, f"{step}: the relay's frame arrived")
        if r is None:
            continue
        check(r["vlan"] == [0x8100, 200], f"{step}: tagged 802.1Q VLAN 200, priority 0 (got {r['vlan']})")
        check(r["dst_mac"] == h0, f"{step}: to the next hop's MAC (got {r['dst_mac']})")
        check((r["src"], r["sport"], r["payload"]) == (src, sport, payload),
              f"{step}: from {src}:{sport} with the relayed bytes (got {r['src']}:{r['sport']} {r['payload']})")
        check(r["ip_ok"] and r["udp_ok"], f"{step}: IPv4 and UDP checksums hold")
    check(c.get("fwd_client_channel") == "2", f"fwd_client_channel == 2 (got {c.get('fwd_client_channel')})")
    check(c.get("fwd_peer_channel") == "1", f"fwd_peer_channel == 1 (got {c.get('fwd_peer_channel')})")
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
