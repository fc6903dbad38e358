#!/usr/bin/env python3
"""Relay to relay through the dataplane: two relay-only ICE agents of the SAME relay talk to
each other, so each one's peer is the other one's relayed address (the relay's own IP, another
relayed port). This is the common production case of two WebRTC endpoints that both use
iceTransportPolicy 'relay' with the same TURN server. turn-relay (control plane) runs with
turn-dataplane attached (AF_XDP on veths; TURN_DP_PMD=af_packet for AF_PACKET, no hugepages).

Topology and helpers come from netns_offload_e2e.py (imported, with this test's own namespace
names and its own /24 so it never collides with the other netns tests):

  trr_h (clients 198.18.12.2 on h0; 198.18.12.3 is set up by the shared helper, unused here)
     h0 <-> n0  (trr_r: NIC, driven by DPDK; the dataplane's --gw4 is h0's MAC, so trr_h is
                 the relay's default next hop)
     trr_r: x0k 198.18.12.1 (relay IP; turn-relay) <-> x0d (exception port)

turn-relay's [policy] allow_peers is ["198.18.12.1/32"]: the relay's own IPs are denied as
peers by default (docs/CONFIGURATION.md [policy]), and a relay-to-relay call needs exactly them.

Clients: python3-aioice (0.8, for /usr/bin/python3), the ICE agent aiortc uses. One process in
trr_h runs two aioice Connections, both TransportPolicy.RELAY with turn-relay over UDP as their
TURN server and no host addresses at all (aioice 0.8 pairs host sockets even under RELAY, see
netns_offload_webrtc.py), one controlling and one controlled. They exchange credentials and
candidates in-process, as SDP candidate lines, connect, then exchange N datagrams each way,
ping-pong (A sends a_i, B receives it and sends b_i, A receives it), payloads of 16..1200 B.
aioice binds a channel (0x4000 up) to the other side's relayed address before its first check,
so the data is ChannelData client -> relay and, out of the other allocation, relay -> client.

trr_h is made a router (ip_forward on, no ICMP redirects): a real next hop routes a packet for
the relay IP straight back to the relay, so a dataplane that sent the relay-to-relay datagrams
out of its NIC would still see them delivered (a second time through the NIC, as peer packets).
Delivery alone therefore cannot tell where a datagram went; assertions 2 and 3 do.

Assertions, and why each is what it is:
  1. Delivery: B received exactly a_0..a_N-1 and A exactly b_0..b_N-1, in order, byte for byte
     (SHA-256 and length); each agent offered one candidate, relay on 198.18.12.1; the selected
     pair on both sides is local relay on the relay IP <-> remote relay on the relay IP, at the
     other agent's relayed port.
  2. Fast path (turn-dataplane's exit counters, as the other netns tests read them; the
     dataplane runs for this exchange only):
     * hairpin >= 2N: each of the 2N data datagrams went client -> relay -> client without
       leaving by the NIC: the dataplane took it from one offloaded relayed address to the
       other inside the dataplane (the counter counts each packet taken so, once). ICE checks
       and consent add more.
     * fwd_client_channel + fwd_client_send >= 2N: every datagram entered as a client's
       ChannelData on the fast path; fwd_peer_channel + fwd_peer_data >= 2N: and left, out of
       the other allocation, to its client on the fast path.
     * turn-relay's /metrics turn_relayed_packets_total path="dataplane" grew >= 2N each way
       (the allocations' usage, which operators bill and watch, counts hairpinned datagrams on
       both allocations), and path="socket" by at most SOCKET_MAX each way: aioice sends its
       first check right after its ChannelBind is answered, and that check (and a few
       retransmissions, every RTO) can reach the relay before the channel or the other side's
       permission has been offloaded over IPC, so they take turn-relay's sockets (same race as
       netns_offload_webrtc.py's SOCKET_MAX); SOCKET_MAX is far below N, so a relay that
       relayed the data itself fails.
  3. Nothing relayed left by the NIC towards the next hop: a packet socket on h0 in trr_h
     counts the IPv4 UDP frames arriving there whose destination is the relay IP at a relayed
     port (49152..PORT_MAX). The relay's legitimate traffic to trr_h is addressed to the
     clients (198.18.12.2), and trr_h sends nothing to relayed ports itself, so every such
     frame is a relayed datagram the dataplane sent out of its NIC to its next hop instead of
     keeping it in: the count must be 0. A dataplane that hairpins through its next hop makes
     it >= 2N. The same socket's count of frames to the clients must be >= 2N and its drop
     count 0, so a sniffer that saw nothing cannot pass for "nothing leaked".
Seen (2-core machine, about 10 s in all): fwd_client_channel = fwd_peer_channel = hairpin = 404
(the 2N datagrams and 4 ICE checks), path="socket" 0. A dataplane without the hairpin sends the
same 404 out of its NIC: the sniffer counts 404 at the next hop (and hairpin is absent or 0).

Bounded in time: the clients stop by themselves within CLIENT_TIMEOUT_S, the sniffer within
SNIFF_MAX_S; every process is started by this script and stopped by its PID; the namespaces
and the DPDK runtime directory (/var/run/dpdk/trr) are removed at the end (no hugepages).
Exit code 77 (skip) if python3-aioice is not installed for /usr/bin/python3.

Behind a 1:1 NAT (third argument "nat"): turn-relay also has external_ips = [EXTERNAL]
(198.18.12.200, on no interface: what a cloud NAT maps to the relay IP), so each agent's relayed
candidate, and so its peer, is EXTERNAL:port. The dataplane learns the pair (ipc::ExternalIps,
echoed; turn_dataplane_external_ips_applied must read 1) and takes such packets from one
allocation to the other itself, presenting them as coming from the sender's external address,
as turn-relay's sockets do (Config::to_internal / to_external). The same assertions hold with
EXTERNAL for the relay IP in the candidates and pairs; the sniffer counts frames to relayed
ports on either IP. Without the dataplane's part (a dataplane that ignores ExternalIps, so turn-relay
withholds the external peers), the data takes turn-relay's sockets and check 2 fails.

Usage: netns_offload_relay_to_relay.py <turn-relay> <turn-dataplane> [nat]   (root)
       netns_offload_relay_to_relay.py clients | sniff [nat]                (run inside trr_h by the test)
"""
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import netns_offload_e2e as e2e  # noqa: E402
from checks import Checks  # noqa: E402
from netns_offload_e2e import TURN_PORT, start_dataplane, stop_dataplane, \
    wait_metric  # noqa: E402

# Our own namespaces and /24: the imported helpers read these module globals at call time.
e2e.NS_H, e2e.NS_R = "trr_h", "trr_r"
e2e.RELAY, e2e.CLIENT, e2e.PEER = "198.18.12.1", "198.18.12.2", "198.18.12.3"
NS_H, NS_R = e2e.NS_H, e2e.NS_R
RELAY, CLIENT = e2e.RELAY, e2e.CLIENT
EXTERNAL = None  # "nat" mode: 198.18.12.200 (see the docstring)
PORT_MIN, PORT_MAX = 49152, 49200  # write_relay_config's relay_port_min, and our relay_port_max
MPORT = 9751
DP_PREFIX = "trr"
PYTHON = "/usr/bin/python3"  # Debian's interpreter: python3-aioice
USER, PASSWORD = "alice", "alice-pw"
N = 200
SOCKET_MAX = 10
# The clients keep their allocations HOLD_S after the exchange: turn-relay's path="dataplane"
# figures come from per-allocation counters it polls from the dataplane every second, and an
# allocation deleted before the next poll takes its packets since the last poll with it.
HOLD_S = 2.5
CONNECT_TIMEOUT_S = 20
RECV_TIMEOUT_S = 2.0
MAX_LOST = 3  # per direction: the exchange is broken, stop within the time bound
CLIENT_TIMEOUT_S = 60  # the whole clients process (seen: 3.2-3.7 s, HOLD_S included)
SNIFF_MAX_S = 80
DIRS = ("client_to_peer", "peer_to_client")


def payload(side, i):
    """Datagram i of side "a" or "b": deterministic, 16..1200 B. Starts "a007:": bytes 2-3 are
    ASCII digits, a STUN length of 12336 or more that never matches the datagram's, so aioice
    (which takes anything whose length field fits for STUN) always hands it over as data."""
    size = 16 + (i * 397 + (0 if side == "a" else 211)) % 1185
    head = b"%s%03d:" % (side.encode(), i)
    body, k = b"", 0
    while len(body) < size - len(head):
        body += hashlib.sha256(b"%s-%d-%d" % (side.encode(), i, k)).digest()
        k += 1
    return head + body[:size - len(head)]


def digest(data):
    return [len(data), hashlib.sha256(data).hexdigest()]


def emit(obj):
    print(json.dumps(obj), flush=True)


# ---- the clients: two relay-only aioice agents, in trr_h ---------------------------------

def clients_main():
    import asyncio
    import aioice.ice
    from aioice import Candidate, Connection, TransportPolicy

    # No host sockets: only the relayed candidate, and no host socket that aioice 0.8 would
    # pair (and check from) anyway.
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: []
    out = {"got_a": [], "got_b": [], "lost": {"a": 0, "b": 0}}

    def desc(c):
        return [c.type, c.host, c.port]

    async def recv(conn, side):
        try:
            return await asyncio.wait_for(conn.recv(), RECV_TIMEOUT_S)
        except asyncio.TimeoutError:
            out["lost"][side] += 1
            return None

    async def run():
        a, b = (Connection(ice_controlling=controlling, components=1, turn_server=(RELAY, TURN_PORT),
                           turn_username=USER, turn_password=PASSWORD, use_ipv6=False,
                           transport_policy=TransportPolicy.RELAY) for controlling in (True, False))
        try:
            out["phase"] = "gather"
            await asyncio.gather(a.gather_candidates(), b.gather_candidates())
            out["candidates"] = {"a": [c.to_sdp() for c in a.local_candidates],
                                 "b": [c.to_sdp() for c in b.local_candidates]}
            # Signalling, in-process: ufrag/pwd and the candidates as SDP lines.
            for me, other in ((a, b), (b, a)):
                me.remote_username, me.remote_password = other.local_username, other.local_password
                for c in other.local_candidates:
                    await me.add_remote_candidate(Candidate.from_sdp(c.to_sdp()))
                await me.add_remote_candidate(None)
            t0 = time.monotonic()
            out["phase"] = "connect"
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), CONNECT_TIMEOUT_S)
            out["phase"] = "exchange"
            out["connect_s"] = round(time.monotonic() - t0, 2)
            out["pairs"] = {}
            for side, conn in (("a", a), ("b", b)):
                p = conn._nominated.get(1)
                out["pairs"][side] = [desc(p.local_candidate), desc(p.remote_candidate)] if p else None
            # Ping-pong: a_i from A to B, then b_i from B to A.
            t0 = time.monotonic()
            for i in range(N):
                await a.send(payload("a", i))
                got = await recv(b, "b")
                out["got_b"].append(digest(got) if got is not None else None)
                await b.send(payload("b", i))
                got = await recv(a, "a")
                out["got_a"].append(digest(got) if got is not None else None)
                if max(out["lost"].values()) > MAX_LOST:
                    break
            out["exchange_s"] = round(time.monotonic() - t0, 2)
            out["phase"] = "done"
            await asyncio.sleep(HOLD_S)  # see HOLD_S
        finally:
            # Refresh LIFETIME 0 each, bounded: without an answer aioice retransmits for ~40 s.
            try:
                await asyncio.wait_for(asyncio.gather(a.close(), b.close(), return_exceptions=True), 5)
            except asyncio.TimeoutError:
                out["close"] = "timeout"

    try:
        asyncio.run(asyncio.wait_for(run(), CLIENT_TIMEOUT_S - 10))
    except BaseException as e:  # reported; the orchestrator judges
        out["error"] = repr(e)[:2000]
    emit(out)


# ---- the sniffer: frames arriving on h0 in trr_h -----------------------------------------

def sniff_main():
    """Counts IPv4 UDP frames arriving on h0 (not those trr_h sends: PACKET_OUTGOING) until a
    line or EOF on stdin or SNIFF_MAX_S, then prints the counts."""
    eth_p_ip, sol_packet, packet_statistics = 0x0800, 263, 6
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(eth_p_ip))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("h0", eth_p_ip))
    relay, client = socket.inet_aton(RELAY), socket.inet_aton(CLIENT)
    own = {relay} | ({socket.inet_aton(EXTERNAL)} if EXTERNAL else set())
    res = {"to_relayed_ports": 0, "to_relayed_ports_from_relay": 0, "to_client": 0, "samples": []}

    def take(frame, pkttype):
        if pkttype == socket.PACKET_OUTGOING or len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or len(ip) < ihl + 8:
            return
        sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
        if ip[16:20] == client:
            res["to_client"] += 1
        elif ip[16:20] in own and PORT_MIN <= dport <= PORT_MAX:
            res["to_relayed_ports"] += 1
            res["to_relayed_ports_from_relay"] += ip[12:16] == relay
            if len(res["samples"]) < 3:
                res["samples"].append([frame[6:12].hex(":"), socket.inet_ntoa(ip[12:16]), sport,
                                       socket.inet_ntoa(ip[16:20]), dport])

    emit({"ready": True})
    deadline = time.monotonic() + SNIFF_MAX_S
    while time.monotonic() < deadline:
        r, _, _ = select.select([s, sys.stdin], [], [], 0.5)
        if s in r:
            frame, addr = s.recvfrom(65535)
            take(frame, addr[2])
        if sys.stdin in r:
            sys.stdin.readline()
            break
    s.setblocking(False)
    while True:  # what is still queued
        try:
            frame, addr = s.recvfrom(65535)
        except BlockingIOError:
            break
        take(frame, addr[2])
    res["socket_drops"] = struct.unpack("II", s.getsockopt(sol_packet, packet_statistics, 8))[1]
    emit(res)


# ---- orchestrator -------------------------------------------------------------------------

def last_json(text):
    try:
        return json.loads([x for x in text.splitlines() if x.strip()][-1])
    except (IndexError, ValueError):
        return {}


def main():
    relay_bin, dp_bin = sys.argv[1], sys.argv[2]
    if not os.path.exists(PYTHON) or not e2e.has_module(PYTHON, "aioice"):
        print(f"SKIP: python3-aioice is not installed for {PYTHON} (deploy/install-deps.sh installs it)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="turn-offload-r2r-")
    sock = os.path.join(tmp, "dataplane.sock")
    cfg = os.path.join(tmp, "relay.toml")
    # The relay IP alone as an allowed peer (behind the NAT: the external IP): each client's
    # peer is the other's relayed address.
    advertised = EXTERNAL or RELAY
    e2e.write_relay_config(cfg, MPORT, sock, relay=RELAY, allow=f"{advertised}/32", port_max=PORT_MAX,
                           users=(f"{USER}:{PASSWORD}",),
                           server_extra=f'external_ips = ["{EXTERNAL}"]\n' if EXTERNAL else "")
    # meson's timeout sends SIGTERM: turn it into an exception so that the finally below
    # still stops our processes and deletes the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("SIGTERM"))
    t_start = time.monotonic()
    e2e.setup()
    # trr_h is the relay's next hop (--gw4): make it route like one (see the docstring).
    e2e.sh(f"ip netns exec {NS_H} sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 "
           "net.ipv4.conf.h0.send_redirects=0")
    relay = dp = clients = sniffer = relay_log = None
    counters, res, sniffed = {}, {}, {}
    relay_tail = ""
    before = after = None
    check = Checks()
    try:
        relay_log = open(os.path.join(tmp, "relay.log"), "w")
        relay = subprocess.Popen(["ip", "netns", "exec", NS_R, relay_bin, "--config", cfg],
                                 stdout=relay_log, stderr=subprocess.STDOUT, text=True)
        for _ in range(50):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        dp = start_dataplane(dp_bin, sock, DP_PREFIX)
        check(wait_metric(MPORT, "turn_dataplane_connected", 1, 100) == 1, "dataplane attached")
        check(wait_metric(MPORT, "turn_dataplane_resyncs_total", 1, 50) == 1, "dataplane resynced")
        if EXTERNAL:
            check(wait_metric(MPORT, "turn_dataplane_external_ips_applied", 1, 50) == 1,
                  "the dataplane confirmed the external IPs (turn_dataplane_external_ips_applied 1)")
        time.sleep(0.3)
        before = e2e.relayed_snapshot(MPORT)
        me = os.path.abspath(__file__)
        mode = ["nat"] if EXTERNAL else []
        sniffer = subprocess.Popen(["ip", "netns", "exec", NS_H, PYTHON, me, "sniff"] + mode, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        check(json.loads(sniffer.stdout.readline() or "{}").get("ready"), "sniffer on h0 ready")
        t0 = time.monotonic()
        clients = subprocess.Popen(["ip", "netns", "exec", NS_H, PYTHON, me, "clients"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = clients.communicate(timeout=CLIENT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            clients.kill()
            out, err = clients.communicate()
        clients = None
        took = time.monotonic() - t0
        time.sleep(2.0)  # the relay polls the dataplane's counters every second
        after = e2e.relayed_snapshot(MPORT)
        s_out, _ = sniffer.communicate("stop\n", timeout=10)
        sniffer = None
        sniffed = last_json(s_out)
        counters = {k: int(v) for k, v in stop_dataplane(dp).items()}
        dp = None
        res = last_json(out)
        summary = {k: v for k, v in res.items() if k not in ("got_a", "got_b")}
        print(f"--- clients ({took:.1f} s): {json.dumps(summary)}", flush=True)
        if not res or res.get("error"):
            print(f"clients stderr:\n{err[-4000:]}", flush=True)
    finally:
        for p in (clients, sniffer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if dp is not None:
            stop_dataplane(dp)
        if relay is not None:
            e2e.stop_relay(relay)
        if relay_log is not None:
            relay_log.close()
            with open(relay_log.name) as f:
                relay_tail = "".join(f.readlines()[-40:])
        e2e.teardown()
        e2e.sh(f"rm -rf {tmp} /var/run/dpdk/{DP_PREFIX}", check=False)

    # 1. Delivery, candidates, selected pairs.
    check(not res.get("error"), f"clients ran without error ({res.get('error')} in phase {res.get('phase')})")
    for side, other in (("b", "a"), ("a", "b")):
        got = res.get("got_" + side, [])
        want = [digest(payload(other, i)) for i in range(N)]
        bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
        check(got == want, f"{side.upper()} received all {N} datagrams from {other.upper()} intact, in order "
              f"(received {len(got)}, lost {res.get('lost', {}).get(side)}, wrong at {bad[:10]})")
    cands = res.get("candidates", {})
    relayed = {}
    for side in ("a", "b"):
        cs = cands.get(side, [])
        ok = len(cs) == 1 and " typ relay" in cs[0] and f" {advertised} " in cs[0]
        check(ok, f"{side.upper()} offered one candidate, relay on {advertised} ({cs})")
        if ok:
            relayed[side] = int(cs[0].split()[5])
    for side, other in (("a", "b"), ("b", "a")):
        pair = (res.get("pairs") or {}).get(side) or [[None] * 3, [None] * 3]
        check(pair[0][0] == "relay" and pair[0][1] == advertised and PORT_MIN <= (pair[0][2] or 0) <= PORT_MAX,
              f"{side.upper()}: selected pair local is relay on {advertised} ({pair[0]})")
        check(pair[1] == ["relay", advertised, relayed.get(other)],
              f"{side.upper()}: selected pair remote is {other.upper()}'s relayed address "
              f"{advertised}:{relayed.get(other)} ({pair[1]})")

    # 2. The fast path: the dataplane's exit counters and turn-relay's /metrics.
    fwd = {k: v for k, v in counters.items() if k.startswith(("fwd_", "drop_", "punt")) or k == "hairpin"}
    print(f"dataplane counters {fwd}", flush=True)
    hp = counters.get("hairpin")
    check(hp is not None and hp >= 2 * N, f"hairpin {hp} >= {2 * N}"
          + (" (counter not reported by this turn-dataplane)" if hp is None else ""))
    up = counters.get("fwd_client_channel", 0) + counters.get("fwd_client_send", 0)
    down = counters.get("fwd_peer_channel", 0) + counters.get("fwd_peer_data", 0)
    check(up >= 2 * N, f"fwd_client_channel + fwd_client_send = {up} >= {2 * N}")
    check(down >= 2 * N, f"fwd_peer_channel + fwd_peer_data = {down} >= {2 * N}")
    if before is not None and after is not None:
        delta = {k: after[k] - before[k] for k in before}
        print("/metrics deltas " + ", ".join(f"{d}/{p}={v:g}" for (d, p), v in delta.items()), flush=True)
        for d in DIRS:
            check(delta[(d, "dataplane")] >= 2 * N,
                  f"/metrics {d} path=dataplane grew by {delta[(d, 'dataplane')]:g} >= {2 * N}")
            check(delta[(d, "socket")] <= SOCKET_MAX,
                  f"/metrics {d} path=socket grew by {delta[(d, 'socket')]:g} <= {SOCKET_MAX}")
    else:
        check(False, "/metrics snapshots taken")

    # 3. Nothing relayed left by the NIC to the next hop.
    print(f"sniffer on {NS_H}/h0: {json.dumps(sniffed)}", flush=True)
    check(sniffed.get("to_client", 0) >= 2 * N and sniffed.get("socket_drops") == 0,
          f"sniffer saw the relay's traffic to the clients ({sniffed.get('to_client')} frames >= {2 * N}, "
          f"{sniffed.get('socket_drops')} dropped)")
    leaked = sniffed.get("to_relayed_ports")
    check(leaked == 0, f"no relayed datagram left the relay's NIC for {advertised}:{PORT_MIN}-{PORT_MAX} "
          f"({leaked} arrived at the next hop, {sniffed.get('to_relayed_ports_from_relay')} of them from "
          f"{RELAY}; first: {sniffed.get('samples')})")

    if not check.ok:
        print("turn-relay log (tail):\n" + relay_tail, flush=True)
    print(f"took {time.monotonic() - t_start:.1f} s", flush=True)
    sys.exit(check.finish())


if __name__ == "__main__":
    if sys.argv[-1] == "nat":
        EXTERNAL = "198.18.12.200"
        sys.argv.pop()
    if len(sys.argv) == 2 and sys.argv[1] in ("clients", "sniff"):
        {"clients": clients_main, "sniff": sniff_main}[sys.argv[1]]()
    else:
        main()
