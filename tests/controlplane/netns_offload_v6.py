#!/usr/bin/env python3
"""End to end over IPv6 (fd00::/8) on the topology of netns_offload_e2e.py (helpers imported):
turn-relay + turn-dataplane (AF_XDP, --gw6) over IPC; the client allocates an IPv6 relayed
address from [fd00::1]:3478 (REQUESTED-ADDRESS-FAMILY IPv6), binds a channel to the IPv6 peer
and sends ChannelData of several sizes; the peer echoes each one. Checks: payloads identical at
both ends, the peer sees the relayed address, the dataplane's fwd_client_channel /
fwd_peer_channel and /metrics path="dataplane" count them, path="socket" stays 0.

Then Send/Data indications over IPv6: the client installs a permission for the peer's IP
(CreatePermission) and sends Send indications (XOR-PEER-ADDRESS + DATA, same sizes, other
payloads) to a second peer port that has no channel, so the peer's echoes come back as Data
indications (RFC 8656 section 11.3: no channel is bound to that transport address). Checks:
the peer gets exactly the DATA payloads from the relayed address, the client gets one Data
indication per payload whose DATA is byte-identical and whose XOR-PEER-ADDRESS is the peer's
second port, the dataplane's fwd_client_send == fwd_peer_data == number sent, and /metrics
path="dataplane" counts both phases while path="socket" stays 0.

  tcv6_h (client fd00::2, peer fd00::3 on h0)  h0 <-> n0 (DPDK)   tcv6_r: x0k fd00::1 <-> x0d

Usage: netns_offload_v6.py <turn-relay> <turn-dataplane>   (root)
       netns_offload_v6.py client | peer                    (run inside tcv6_h by the test)
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import netns_offload_e2e as e2e
from netns_offload_e2e import (COOKIE, TURN_PORT, PEER_PORT, CLIENT_PORT, Turn, attr, sh, setup,
                               teardown, metrics, metric, start_dataplane, stop_dataplane, wait_metric,
                               write_relay_config, stop_relay)
from checks import Checks  # netns_offload_e2e put tests/ on the path

# Our own namespaces (the imported helpers read these module globals at call time), so this
# test never collides with netns_offload_e2e.py.
e2e.NS_H, e2e.NS_R = "tcv6_h", "tcv6_r"
NS_H, NS_R = e2e.NS_H, e2e.NS_R

RELAY6, CLIENT6, PEER6 = "fd00::1", "fd00::2", "fd00::3"
SIZES = [1, 4, 5, 100, 700, 1200]
SEND_PORT = PEER_PORT + 1  # the peer's second port: Send/Data indications, no channel bound


def send_payload(i, size):
    return bytes((i * 13 + k * 11 + size + 0x5A) & 0xFF for k in range(size))


def parse_attrs(msg):
    """All attributes of a STUN message as a list of (type, value)."""
    _, ln = struct.unpack("!HH", msg[:4])
    out, off = [], 20
    while off + 4 <= min(len(msg), 20 + ln):
        at, al = struct.unpack("!HH", msg[off:off + 4])
        out.append((at, msg[off + 4:off + 4 + al]))
        off += 4 + al + (-al % 4)
    return out


def unxor_addr6(v, txid):
    key = struct.pack("!I", COOKIE) + txid
    port = struct.unpack("!H", v[2:4])[0] ^ (COOKIE >> 16)
    return socket.inet_ntop(socket.AF_INET6, bytes(a ^ b for a, b in zip(v[4:20], key))), port


def payload(i, size):
    return bytes((i * 31 + k * 7 + size) & 0xFF for k in range(size))


def xor_addr6(ip, port, txid):
    key = struct.pack("!I", COOKIE) + txid
    return struct.pack("!BBH", 0, 2, port ^ (COOKIE >> 16)) + bytes(
        a ^ b for a, b in zip(socket.inet_pton(socket.AF_INET6, ip), key))


def client():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind((CLIENT6, CLIENT_PORT))
    s.settimeout(2)
    turn = Turn(s, (RELAY6, TURN_PORT), "alice", "alice-pw")
    t, a = turn.authed(0x0003, attr(0x0019, bytes([17, 0, 0, 0])) + attr(0x0017, bytes([2, 0, 0, 0])))
    assert t == 0x0103, "Allocate failed: 0x%x %r" % (t, a.get(0x0009))
    rel = a[0x0016]
    out = {"relayed_family": rel[1], "relayed_port": struct.unpack("!H", rel[2:4])[0] ^ (COOKIE >> 16)}
    t, _ = turn.authed(0x0009, lambda txid: attr(0x000C, struct.pack("!HH", 0x4001, 0))
                       + attr(0x0012, xor_addr6(PEER6, PEER_PORT, txid)))
    assert t == 0x0109, "ChannelBind failed: 0x%x" % t
    time.sleep(1.0)  # the offload messages reach the dataplane well within this
    echoed = []
    for i, size in enumerate(SIZES):
        p = payload(i, size)
        s.sendto(struct.pack("!HH", 0x4001, len(p)) + p + b"\0" * (-len(p) % 4), (RELAY6, TURN_PORT))
        try:
            data, src = s.recvfrom(4096)
            echoed.append([data.hex(), list(src[:2])])
        except socket.timeout:
            echoed.append(None)
    out["echoed"] = echoed

    # Send indications to the peer's second port (no channel there), Data indications back.
    t, _ = turn.authed(0x0008, lambda txid: attr(0x0012, xor_addr6(PEER6, SEND_PORT, txid)))
    assert t == 0x0108, "CreatePermission failed: 0x%x" % t
    time.sleep(1.0)
    data_ind = []
    for i, size in enumerate(SIZES):
        p = send_payload(i, size)
        txid = os.urandom(12)
        body = attr(0x0012, xor_addr6(PEER6, SEND_PORT, txid)) + attr(0x0013, p)
        s.sendto(struct.pack("!HHI", 0x0016, len(body), COOKIE) + txid + body, (RELAY6, TURN_PORT))
        try:
            data, src = s.recvfrom(4096)
        except socket.timeout:
            data_ind.append(None)
            continue
        mtype = struct.unpack("!H", data[:2])[0]
        attrs = parse_attrs(data) if len(data) >= 20 else []
        peer_addr = [list(unxor_addr6(v, data[8:20])) for at, v in attrs if at == 0x0012 and len(v) == 20]
        datas = [v.hex() for at, v in attrs if at == 0x0013]
        data_ind.append({"type": mtype, "peer": peer_addr[0] if peer_addr else None,
                         "data": datas[0] if len(datas) == 1 else None, "src": list(src[:2])})
    out["data_ind"] = data_ind
    print(json.dumps(out), flush=True)


def peer():
    import select
    socks = {}
    for port in (PEER_PORT, SEND_PORT):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind((PEER6, port))
        socks[s] = port
    while True:
        ready, _, _ = select.select(list(socks), [], [], 20)
        if not ready:
            break
        for s in ready:
            data, src = s.recvfrom(4096)
            print(json.dumps([data.hex(), list(src[:2]), socks[s]]), flush=True)
            s.sendto(data, src)


def main():
    relay_bin, dp_bin = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="turn-offload-v6-")
    sock = os.path.join(tmp, "dataplane.sock")
    cfg = os.path.join(tmp, "relay.toml")
    mport, prefix = 9703, "tcpe2e_v6"
    write_relay_config(cfg, mport, sock, relay=RELAY6, allow="fd00::/8")
    setup()
    sh(f"ip -n {NS_H} addr add {CLIENT6}/64 dev h0 nodad; ip -n {NS_H} addr add {PEER6}/64 dev h0 nodad")
    sh(f"ip -n {NS_R} addr add {RELAY6}/64 dev x0k nodad")
    check = Checks(echo=False)
    relay = dp = peer_p = client_p = None
    res, counters, mets, relay_out = {}, {}, {}, ""
    me = os.path.abspath(__file__)
    try:
        relay = subprocess.Popen(["ip", "netns", "exec", NS_R, relay_bin, "--config", cfg],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(50):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        gw = sh(f"ip netns exec {NS_H} cat /sys/class/net/h0/address").stdout.strip()
        dp = start_dataplane(dp_bin, sock, prefix, ["--gw6", gw])
        check(wait_metric(mport, "turn_dataplane_connected", 1, 100) == 1, "dataplane attached")
        peer_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "peer"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        client_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "client"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = client_p.communicate(timeout=40)
        res = json.loads(out) if out.strip() else {}
        check(res, "client: " + err)
        for d in ("client_to_peer", "peer_to_client"):
            wait_metric(mport, f'turn_relayed_packets_total{{direction="{d}",path="dataplane"}}', 2 * len(SIZES))
            text = metrics(mport)
            mets[d] = {p: metric(text, f'turn_relayed_packets_total{{direction="{d}",path="{p}"}}')
                       for p in ("dataplane", "socket")}
    finally:
        for p in (client_p, peer_p):
            if p is not None and p.poll() is None:
                p.kill()
        if dp is not None:
            counters = stop_dataplane(dp)
        relay_out = stop_relay(relay)
        teardown()
        sh(f"rm -rf {tmp} /var/run/dpdk/{prefix}", check=False)
    peer_lines = [json.loads(x) for x in peer_p.stdout.read().splitlines() if x.strip()] if peer_p else []
    print("client: relayed family/port", res.get("relayed_family"), res.get("relayed_port"), "echo lengths",
          [len(e[0]) // 2 if e else None for e in res.get("echoed", [])])
    print("peer got lengths/sources/ports:", [[len(x[0]) // 2, x[1], x[2]] for x in peer_lines])
    print("client Data indications:", [[d["type"], d["peer"], len(d["data"] or "") // 2, d["src"]] if d else None
                                       for d in res.get("data_ind", [])])
    print("metrics:", mets)
    n = len(SIZES)
    if res.get("relayed_family") != 2:
        print(relay_out)
    check(res.get("relayed_family") == 2, "relayed address is IPv6")
    want_client = [[(struct.pack("!HH", 0x4001, sz) + payload(i, sz)).hex(), [RELAY6, TURN_PORT]]
                   for i, sz in enumerate(SIZES)]
    got_client = [[e[0][:8 + 2 * sz], e[1]] if e else None for e, sz in zip(res.get("echoed", []), SIZES)]
    check(got_client == want_client, "client got the ChannelData echoes")
    check([x[0] for x in peer_lines if x[2] == PEER_PORT] == [payload(i, sz).hex() for i, sz in enumerate(SIZES)],
          "peer got exactly the ChannelData payloads")
    check([x[0] for x in peer_lines if x[2] == SEND_PORT] == [send_payload(i, sz).hex() for i, sz in enumerate(SIZES)],
          "peer got exactly the Send indication payloads on its second port")
    check(all(x[1] == [RELAY6, res.get("relayed_port")] for x in peer_lines), "peer saw the relayed address")
    want_ind = [{"type": 0x0017, "peer": [PEER6, SEND_PORT], "data": send_payload(i, sz).hex(),
                 "src": [RELAY6, TURN_PORT]} for i, sz in enumerate(SIZES)]
    check(res.get("data_ind") == want_ind,
          "client got one Data indication per payload, DATA byte-identical, from the peer's second port")
    for d in ("client_to_peer", "peer_to_client"):
        check(mets.get(d) == {"dataplane": 2 * n, "socket": 0}, f"/metrics {d}: {mets.get(d)} (want dataplane {2 * n}, socket 0)")
    for k in ("fwd_client_channel", "fwd_peer_channel", "fwd_client_send", "fwd_peer_data"):
        check(counters.get(k) == str(n), f"dataplane {k} == {n} (got {counters.get(k)})")
    sys.exit(check.finish())


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] in ("client", "peer"):
        {"client": client, "peer": peer}[sys.argv[1]]()
    else:
        main()
