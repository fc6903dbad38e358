#!/usr/bin/env python3
"""Differential end to end: the same TURN scenario run twice on the topology of
netns_offload_e2e.py (whose helpers it imports), once with offload on (turn-relay +
turn-dataplane on AF_XDP over IPC) and once with offload off (turn-relay alone in socket
mode, the relay IP on n0 itself, no dataplane). Both runs must deliver byte-identical
datagrams at both ends:

  - allocate, CreatePermission (peer IP), ChannelBind 0x4001 -> peer:6000;
  - ChannelData of several sizes (distinct payloads) echoed by peer:6000;
  - Send indications -> peer:6001 (permission only, no channel), echoed back to the client
    as Data indications (compared with the transaction ID masked);
  - a second peer host (198.18.2.4, no permission) sends to the relayed port: nothing may
    reach the client; with offload the dataplane's drop_no_permission counts exactly these;
  - every datagram carries a TOS byte (DSCP and ECN, several values, 0 among them), which the
    peer echoes with the TOS it received: both runs must keep it in both directions (RFC 8656
    section 14), compared with the payloads. A third run, offload on with [server].dscp = 46,
    must deliver the same payloads with every datagram marked EF and its ECN bits kept (the
    rule reaches the dataplane as IPC Settings);
  - every datagram also carries its own TTL, and the peer echoes with the TTL it received:
    the peer must get one less than the client sent and the client one less than the peer
    sent (RFC 8656 section 14, preferred behaviour), in every run; then the client sends
    ChannelData with TTL 1 and the peer host (with its permission) datagrams with TTL 1,
    which neither path relays: the peer and the client get nothing more, and the dataplane's
    drop_ttl_expired or the control plane's turn_drops_total{reason="ttl_expired"} counts
    exactly those.

The counters say which path carried the traffic: the dataplane's fwd_* counters and /metrics
turn_relayed_packets_total path="dataplane" (offload) vs path="socket" (socket mode).

Usage: netns_offload_diff.py <turn-relay> <turn-dataplane>   (root)
       netns_offload_diff.py client | peer                    (run inside tcpe_h by the test)
"""
import hashlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

from netns_offload_e2e import (NS_H, NS_R, RELAY, CLIENT, PEER, TURN_PORT, PEER_PORT, CLIENT_PORT, COOKIE, Turn, attr,
                               xor_addr, unxor, sh, setup, teardown, metrics, metric, start_dataplane, write_relay_config, stop_relay,
                               stop_dataplane, wait_metric)
from checks import Checks  # noqa: E402  (netns_offload_e2e put tests/ on the path)

PEER_PORT2 = PEER_PORT + 1          # permission only (no channel): Send / Data indications
STRANGER = "198.18.2.4"             # second peer host, no permission
SIZES = [1, 3, 4, 5, 64, 255, 512, 1000, 1200]
SEND_SIZES = [1, 7, 100, 800]
N_STRANGER = 7
# IPv4 TOS per datagram (i-th ChannelData / Send indication): EF, EF + ECT(1), AF41 + ECT(0),
# CE, none, CS1.
TOS = [0xB8, 0xB9, 0x8A, 0x03, 0x00, 0x20]
# IPv4 TTL per datagram, sent by the client (the peer's echo comes back with one less than the
# peer got, so at least 3 for the echo to reach the client).
TTLS = [64, 9, 3, 200, 128, 33, 255]
N_TTL1 = 5                          # ChannelData with TTL 1 at the end: never relayed
N_TTL1_PEER = 4                     # and from the permitted peer host, TTL 1, to the relayed port
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)


def recv_marks(s):
    """A datagram, its source, its TOS byte and its TTL (None without the control message)."""
    data, anc, _, src = s.recvmsg(4096, 2 * socket.CMSG_SPACE(4))
    tos = ttl = None
    for level, kind, value in anc:
        if level == socket.IPPROTO_IP and kind == socket.IP_TOS and value:
            tos = value[0]
        if level == socket.IPPROTO_IP and kind == socket.IP_TTL and len(value) >= 4:
            ttl = struct.unpack("=i", value[:4])[0]
    return data, src, tos, ttl


def send_marks(s, data, dst, tos, ttl):
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    s.sendto(data, dst)


def payload(tag, i, size):
    out = b""
    while len(out) < size:
        out += hashlib.sha256(b"%s-%d-%d-%d" % (tag, i, size, len(out))).digest()
    return out[:size]


def strip_txid(msg):
    # STUN header: type, length, cookie, 12-byte transaction ID (random per message).
    return msg[:8] + b"\0" * 12 + msg[20:] if len(msg) >= 20 else msg


def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((CLIENT, CLIENT_PORT))
    s.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    s.settimeout(2)
    turn = Turn(s, (RELAY, TURN_PORT), "alice", "alice-pw")
    t, a = turn.authed(0x0003, attr(0x0019, bytes([17, 0, 0, 0])))
    assert t == 0x0103, "Allocate failed: 0x%x %r" % (t, a.get(0x0009))
    out = {"relayed": unxor(a[0x0016])}
    t, _ = turn.authed(0x0008, attr(0x0012, xor_addr(PEER, PEER_PORT2)))
    assert t == 0x0108, "CreatePermission failed: 0x%x" % t
    t, _ = turn.authed(0x0009, attr(0x000C, struct.pack("!HH", 0x4001, 0)) + attr(0x0012, xor_addr(PEER, PEER_PORT)))
    assert t == 0x0109, "ChannelBind failed: 0x%x" % t
    print(json.dumps(out), flush=True)
    for cmd in sys.stdin:
        cmd = cmd.split()
        if cmd[0] == "run":
            got = {"channel": [], "data_ind": []}
            for i, size in enumerate(SIZES):
                p = payload(b"cd", i, size)
                send_marks(s, struct.pack("!HH", 0x4001, len(p)) + p + b"\0" * (-len(p) % 4), (RELAY, TURN_PORT),
                           TOS[i % len(TOS)], TTLS[i % len(TTLS)])
                try:
                    data, src, tos, ttl = recv_marks(s)
                    got["channel"].append([data.hex(), list(src), tos, ttl])
                except socket.timeout:
                    got["channel"].append(None)
            for i, size in enumerate(SEND_SIZES):
                p = payload(b"si", i, size)
                body = attr(0x0012, xor_addr(PEER, PEER_PORT2)) + attr(0x0013, p)
                send_marks(s, struct.pack("!HHI", 0x0016, len(body), COOKIE) + os.urandom(12) + body,
                           (RELAY, TURN_PORT), TOS[(i + 3) % len(TOS)], TTLS[(i + 3) % len(TTLS)])
                try:
                    data, src, tos, ttl = recv_marks(s)
                    got["data_ind"].append([strip_txid(data).hex(), list(src), tos, ttl])
                except socket.timeout:
                    got["data_ind"].append(None)
            # TTL 1: relayed by neither path (each counts it); the peer would print anything it got.
            for i in range(N_TTL1):
                p = payload(b"ttl1", i, 20)
                send_marks(s, struct.pack("!HH", 0x4001, len(p)) + p, (RELAY, TURN_PORT), 0, 1)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
            print(json.dumps(got), flush=True)
        elif cmd[0] == "listen":  # anything arriving now is a leak
            s.settimeout(float(cmd[1]))
            leaked = []
            try:
                while True:
                    data, src = s.recvfrom(4096)
                    leaked.append([data.hex(), list(src)])
            except socket.timeout:
                pass
            print(json.dumps({"leaked": leaked}), flush=True)
            return



def peer():
    socks = []
    for port in (PEER_PORT, PEER_PORT2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((PEER, port))
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        socks.append(s)
    while True:
        r, _, _ = select.select(socks, [], [], 30)
        if not r:
            return
        for s in r:
            data, src, tos, ttl = recv_marks(s)
            print(json.dumps([s.getsockname()[1], data.hex(), list(src), tos, ttl]), flush=True)
            send_marks(s, data, src, tos or 0, ttl or 64)  # echoed with the TOS and TTL it came with


def stranger(relayed_port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((STRANGER, 7000))
    for i in range(N_STRANGER):
        s.sendto(b"stranger-%d" % i, (RELAY, relayed_port))
        time.sleep(0.01)
    # The permitted peer host, TTL 1: dropped for its TTL, not its permission.
    p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    p.bind((PEER, 7001))
    p.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
    for i in range(N_TTL1_PEER):
        p.sendto(b"ttl1-peer-%d" % i, (RELAY, relayed_port))
        time.sleep(0.01)


# ---- orchestrator ------------------------------------------------------------

def run_mode(relay_bin, dp_bin, offload, mport, dscp=None):
    tmp = tempfile.mkdtemp(prefix="turn-offload-diff-")
    sock = os.path.join(tmp, "dataplane.sock")
    cfg = os.path.join(tmp, "relay.toml")
    prefix = "tcpdiff"
    write_relay_config(cfg, mport, sock if offload else None,
                       server_extra=f"dscp = {dscp}\n" if dscp is not None else "")
    setup()
    sh(f"ip -n {NS_H} addr add {STRANGER}/24 dev h0")
    if not offload:
        # Socket mode: no dataplane on n0, so the relay IP lives on n0 and the kernel serves it.
        sh(f"ip -n {NS_R} addr del {RELAY}/24 dev x0k")
        sh(f"ip -n {NS_R} addr add {RELAY}/24 dev n0")
        sh(f"ip netns exec {NS_R} sysctl -qw net.ipv4.conf.n0.arp_ignore=0")
    res = {"fails": [], "counters": {}, "metrics": {}}
    relay = dp = peer_p = client_p = None
    me = os.path.abspath(__file__)

    def client_cmd(cmd):
        client_p.stdin.write(cmd + "\n")
        client_p.stdin.flush()
        line = client_p.stdout.readline()
        return json.loads(line) if line.strip() else {}

    try:
        relay = subprocess.Popen(["ip", "netns", "exec", NS_R, relay_bin, "--config", cfg],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if offload:
            for _ in range(50):
                if os.path.exists(sock):
                    break
                time.sleep(0.1)
            dp = start_dataplane(dp_bin, sock, prefix)
            if wait_metric(mport, "turn_dataplane_connected", 1, 100) != 1:
                res["fails"].append("dataplane attached")
        else:
            wait_metric(mport, "turn_dataplane_connected", 0, 30)
        peer_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "peer"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        client_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "client"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        line = client_p.stdout.readline()
        if not line.strip():
            res["fails"].append("client allocated: " + client_p.stderr.read())
            return res
        res["relayed"] = json.loads(line)["relayed"]
        time.sleep(1.0)  # offload messages reach the dataplane well within this
        res["client"] = client_cmd("run")
        st = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "stranger",
                               str(res["relayed"][1])])
        res["leaked"] = client_cmd("listen 1.5").get("leaked")
        st.wait(timeout=10)
        client_p.wait(timeout=10)
        n_c2p = len(SIZES) + len(SEND_SIZES)
        path = "dataplane" if offload else "socket"
        for d in ("client_to_peer", "peer_to_client"):
            wait_metric(mport, f'turn_relayed_packets_total{{direction="{d}",path="{path}"}}', n_c2p)
            text = metrics(mport)
            res["metrics"][d] = {p: metric(text, f'turn_relayed_packets_total{{direction="{d}",path="{p}"}}')
                                 for p in ("dataplane", "socket")}
        res["settings_applied"] = metric(text, "turn_dataplane_settings_applied")
        res["ttl_drops"] = metric(text, 'turn_drops_total{reason="ttl_expired"}')
    finally:
        for p in (client_p, peer_p):
            if p is not None and p.poll() is None:
                p.kill()
        if dp is not None:
            res["counters"] = stop_dataplane(dp)
        stop_relay(relay)
        teardown()
        sh(f"rm -rf {tmp} /var/run/dpdk/{prefix}", check=False)
    res["peer"] = [json.loads(x) for x in peer_p.stdout.read().splitlines() if x.strip()] if peer_p else []
    return res


def main():
    relay_bin, dp_bin = sys.argv[1], sys.argv[2]
    check = Checks(echo=False)

    on = run_mode(relay_bin, dp_bin, True, 9701)
    off = run_mode(relay_bin, dp_bin, False, 9702)
    ef = run_mode(relay_bin, dp_bin, True, 9703, dscp=46)
    n_cd, n_si = len(SIZES), len(SEND_SIZES)
    for name, r, dscp in (("offload", on, None), ("socket", off, None), ("offload dscp=46", ef, 46)):
        print(f"{name}: relayed={r.get('relayed')} metrics={r.get('metrics')} leaked={r.get('leaked')}")
        check.fails.extend(f"{name}: {f}" for f in r["fails"])
        c = r.get("client", {})
        check(len(c.get("channel", [])) == n_cd and None not in c["channel"], f"{name}: all ChannelData echoed")
        check(len(c.get("data_ind", [])) == n_si and None not in c["data_ind"], f"{name}: all Data indications")
        check(r.get("leaked") == [], f"{name}: nothing from the stranger reached the client")
        # Peer side: exact payloads, from the relayed address, to the right port.
        want_peer = ([[PEER_PORT, payload(b"cd", i, sz).hex()] for i, sz in enumerate(SIZES)]
                     + [[PEER_PORT2, payload(b"si", i, sz).hex()] for i, sz in enumerate(SEND_SIZES)])
        check([x[:2] for x in r["peer"]] == want_peer, f"{name}: peer got exactly the payloads")
        check(all(x[2] == [RELAY, r.get("relayed", [0, 0])[1]] for x in r["peer"]), f"{name}: peer saw the relayed address")
        # RFC 8656 section 14: the TOS byte (DSCP + ECN) kept both ways; the peer echoed what it got.
        want_tos = [TOS[i % len(TOS)] for i in range(len(SIZES))] + [TOS[(i + 3) % len(TOS)] for i in range(len(SEND_SIZES))]
        if dscp is not None:  # that DSCP, the datagram's own ECN bits (the peer echoes what it got)
            want_tos = [(t & 0x03) | dscp << 2 for t in want_tos]
        check([x[3] for x in r["peer"]] == want_tos, f"{name}: peer got each datagram's TOS {[x[3] for x in r['peer']]}")
        back = [x[2] if x else None for x in c.get("channel", []) + c.get("data_ind", [])]
        check(back == want_tos, f"{name}: client got each echo's TOS {back}")
        # RFC 8656 section 14: one less TTL each way (client sent t, peer got t - 1 and echoed
        # with it, client got t - 2); direct links, so the relay is the only hop that counts.
        sent_ttl = [TTLS[i % len(TTLS)] for i in range(len(SIZES))] + [TTLS[(i + 3) % len(TTLS)] for i in range(len(SEND_SIZES))]
        got_ttl = [x[4] for x in r["peer"]]
        check(got_ttl == [t - 1 for t in sent_ttl], f"{name}: peer got each datagram's TTL less one {got_ttl}")
        back_ttl = [x[3] if x else None for x in c.get("channel", []) + c.get("data_ind", [])]
        check(back_ttl == [t - 2 for t in sent_ttl], f"{name}: client got each echo's TTL less one {back_ttl}")
        # Client side: framing as the client expects it, independent of the other run.
        for i, sz in enumerate(SIZES):
            got = c.get("channel", [None] * n_cd)[i]
            if got:
                data = bytes.fromhex(got[0])
                check(data[:4] == struct.pack("!HH", 0x4001, sz) and data[4:4 + sz] == payload(b"cd", i, sz),
                      f"{name}: ChannelData {i} framing/payload")
                check(got[1] == [RELAY, TURN_PORT], f"{name}: ChannelData {i} from the server address")
        for i, sz in enumerate(SEND_SIZES):
            got = c.get("data_ind", [None] * n_si)[i]
            if got:
                data = bytes.fromhex(got[0])
                body = attr(0x0012, xor_addr(PEER, PEER_PORT2)) + attr(0x0013, payload(b"si", i, sz))
                t, ln = struct.unpack("!HH", data[:4])
                check(t == 0x0017 and ln == len(data) - 20, f"{name}: Data indication {i} header")
                # Exactly XOR-PEER-ADDRESS and DATA (order compared by the differential below).
                check(sorted_attrs(data[20:]) == sorted_attrs(body), f"{name}: Data indication {i} attributes")
                check(got[1] == [RELAY, TURN_PORT], f"{name}: Data indication {i} from the server address")
    # Differential: byte-identical at both ends.
    for key in ("channel", "data_ind"):
        a = [x[0] if x else None for x in on.get("client", {}).get(key, [])]
        b = [x[0] if x else None for x in off.get("client", {}).get(key, [])]
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                print(f"DIFF client {key}[{i}]:\n  offload {x}\n  socket  {y}")
        check(a == b and len(a) > 0, f"client {key} bytes identical offload vs socket")
    pa = [x[:2] + x[3:] for x in on["peer"]]
    pb = [x[:2] + x[3:] for x in off["peer"]]
    check(pa == pb, "peer datagrams identical offload vs socket")
    # Which path carried them.
    n = n_cd + n_si
    for d in ("client_to_peer", "peer_to_client"):
        check(on["metrics"].get(d) == {"dataplane": n, "socket": 0}, f"offload: /metrics {d} {on['metrics'].get(d)}")
        check(off["metrics"].get(d, {}).get("socket") == n and not off["metrics"].get(d, {}).get("dataplane"),
              f"socket mode: /metrics {d} {off['metrics'].get(d)}")
    check([x[:2] for x in ef["peer"]] == [x[:2] for x in on["peer"]], "peer datagrams identical with dscp=46")
    # The TTL-1 ChannelData: dropped by the dataplane with offload (which counts them), by the
    # control plane in socket mode.
    check(off.get("ttl_drops") == N_TTL1 + N_TTL1_PEER,
          f"socket: turn_drops_total{{reason=\"ttl_expired\"}} == {N_TTL1 + N_TTL1_PEER} (got {off.get('ttl_drops')})")
    check(not on.get("ttl_drops"), f"offload: no ttl_expired drop reached the control plane (got {on.get('ttl_drops')})")
    for name, r in (("offload", on), ("offload dscp=46", ef)):
        # turn-dataplane answered the Settings with the same rule.
        check(r.get("settings_applied") == 1, f"{name}: turn_dataplane_settings_applied {r.get('settings_applied')}")
        cnt = r["counters"]
        print(f"{name} dataplane counters:", {k: v for k, v in cnt.items() if k.startswith(("fwd_", "drop_"))})
        for k, v in (("fwd_client_channel", n_cd), ("fwd_peer_channel", n_cd), ("fwd_client_send", n_si),
                     ("fwd_peer_data", n_si), ("drop_no_permission", N_STRANGER), ("drop_ttl_expired", N_TTL1 + N_TTL1_PEER)):
            check(cnt.get(k) == str(v), f"{name}: dataplane {k} == {v} (got {cnt.get(k)})")
    sys.exit(check.finish())


def sorted_attrs(b):
    out, off = [], 0
    while off + 4 <= len(b):
        t, ln = struct.unpack("!HH", b[off:off + 4])
        out.append(b[off:off + 4 + ln + (-ln % 4)])
        off += 4 + ln + (-ln % 4)
    return sorted(out)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] in ("client", "peer"):
        {"client": client, "peer": peer}[sys.argv[1]]()
    elif len(sys.argv) == 3 and sys.argv[1] == "stranger":
        stranger(int(sys.argv[2]))
    else:
        main()
