#!/usr/bin/env python3
"""Restarts during traffic: turn-relay with [state].dir + turn-dataplane (AF_XDP on veths),
one TURN client streaming ChannelData at a steady rate to an echo peer, and both processes
killed with SIGKILL (no clean shutdown) while the stream runs.

Timeline (seconds from the start of the stream, STREAM_S long at RATE packets/s):
  DP_KILL      kill -9 turn-dataplane: packets are lost until a dataplane runs again.
  DP_START     start a new dataplane; the control plane resyncs it and forwarding resumes.
  CP_KILL      kill -9 turn-relay. The dataplane keeps forwarding the established flow.
  CP_START     start turn-relay again on the same configuration and state directory; it takes
               over the allocation from its snapshot (same id, relayed port, channel), the
               dataplane reconnects (its backoff is at most 5 s) and is resynced with entries it
               already holds, so the resync sweeps nothing.

Checks:
  * packets are lost only while no dataplane ran (DP_KILL up to the new one's attach plus
    SETTLE_S), and every packet sent after that is echoed;
  * every packet sent while no control plane ran (CP_KILL up to the dataplane's re-attach) is
    echoed: the control-plane restart does not interrupt forwarding;
  * the new turn-relay logged state_restored with allocations=1, and the second dataplane, which
    lived through the control-plane restart and is stopped cleanly at the end, reports
    ipc_swept 0 (its resync by the new control plane removed no entry);
  * after the stream the client's Refresh and ChannelBind refresh are answered with success
    (the allocation was never lost; the nonce secret in the state directory keeps the
    client's nonce valid), and the echo peer saw one relayed address throughout.

  tcrs_h (client 198.18.2.2, peer 198.18.2.3 on h0)
     h0 <-> n0  (tcrs_r: NIC, driven by DPDK AF_XDP)
     tcrs_r: x0k 198.18.2.1 (kernel end, relay IP) <-> x0d (exception port)

Usage: netns_offload_restart.py <turn-relay> <turn-dataplane>   (root)
       netns_offload_restart.py client | peer                    (run inside tcrs_h by the test)
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import netns_offload_e2e as e2e  # noqa: E402
from checks import Checks  # noqa: E402
from netns_offload_e2e import RELAY, CLIENT, PEER, TURN_PORT, Turn, attr, xor_addr, metric, metrics, sh, \
    start_dataplane, stop_dataplane, wait_metric  # noqa: E402

e2e.NS_H, e2e.NS_R = "tcrs_h", "tcrs_r"
NS_H, NS_R = e2e.NS_H, e2e.NS_R
PEER_PORT, CLIENT_PORT, MPORT = 6100, 50100, 9741
CHANNEL = 0x4001
RATE, STREAM_S = 100, 16.0
DP_KILL, DP_START, CP_KILL, CP_START, SETTLE_S = 2.0, 3.0, 7.0, 9.0, 1.5


def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((CLIENT, CLIENT_PORT))
    s.settimeout(2)
    turn = Turn(s, (RELAY, TURN_PORT), "alice", "alice-pw")
    t, a = turn.authed(0x0003, attr(0x0019, bytes([17, 0, 0, 0])))
    assert t == 0x0103, "Allocate failed: 0x%x %r" % (t, a.get(0x0009))
    bind = attr(0x000C, struct.pack("!HH", CHANNEL, 0)) + attr(0x0012, xor_addr(PEER, PEER_PORT))
    t, _ = turn.authed(0x0009, bind)
    assert t == 0x0109, "ChannelBind failed: 0x%x" % t
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # "go"
    t0 = time.time()
    print(json.dumps({"t0": t0}), flush=True)
    n = int(RATE * STREAM_S)
    sent_at = [0.0] * n
    echoed = [False] * n
    s.settimeout(0.2)
    stop = threading.Event()

    def rx():
        while not stop.is_set():
            try:
                data, _ = s.recvfrom(2048)
            except socket.timeout:
                continue
            if len(data) >= 8 and struct.unpack("!H", data[:2])[0] == CHANNEL:
                seq = struct.unpack("!I", data[4:8])[0]
                if seq < n:
                    echoed[seq] = True

    th = threading.Thread(target=rx)
    th.start()
    for i in range(n):
        due = t0 + i / RATE
        now = time.time()
        if due > now:
            time.sleep(due - now)
        sent_at[i] = time.time() - t0
        payload = struct.pack("!I", i) + b"x" * 60
        s.sendto(struct.pack("!HH", CHANNEL, len(payload)) + payload, (RELAY, TURN_PORT))
    time.sleep(1.0)
    stop.set()
    th.join()
    s.settimeout(2)
    # The allocation is still there: Refresh and a ChannelBind refresh succeed.
    t_ref, _ = turn.authed(0x0004, b"")
    t_bind, _ = turn.authed(0x0009, bind)
    print(json.dumps({"sent_at": sent_at, "echoed": echoed, "refresh": t_ref, "rebind": t_bind}), flush=True)


def peer():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((PEER, PEER_PORT))
    s.settimeout(5)
    count, sources = 0, set()
    try:
        while True:
            data, src = s.recvfrom(2048)
            count += 1
            sources.add("%s:%d" % src)
            s.sendto(data, src)
    except socket.timeout:
        pass
    print(json.dumps({"count": count, "sources": sorted(sources)}), flush=True)


def main():
    relay_bin, dp_bin = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="turn-offload-restart-")
    sock = os.path.join(tmp, "dataplane.sock")
    state = os.path.join(tmp, "state")
    cfg = os.path.join(tmp, "relay.toml")
    e2e.write_relay_config(cfg, MPORT, sock, extra=f'[state]\ndir = "{state}"\nsave_interval_ms = 100\n')
    e2e.setup()
    relays, dps = [], []
    peer_p = client_p = None
    outs = []
    dp_counters = []
    res, peer_res = {}, {}
    events = {}

    check = Checks()

    def start_relay():
        p = subprocess.Popen(["ip", "netns", "exec", NS_R, relay_bin, "--config", cfg],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        relays.append(p)
        return p

    def wait_attached(what):
        check(wait_metric(MPORT, "turn_dataplane_connected", 1, 120) == 1, what)

    try:
        if os.path.exists(sock):
            os.unlink(sock)
        relay = start_relay()
        for _ in range(50):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        dp = start_dataplane(dp_bin, sock, "tcrs_a")
        dps.append(dp)
        wait_attached("dataplane A attached to turn-relay 1")
        me = os.path.abspath(__file__)
        peer_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "peer"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        client_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "client"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        line = client_p.stdout.readline()
        check(line.strip() != "" and json.loads(line).get("ready"), "client allocated and bound a channel")
        time.sleep(1.0)  # offloaded and saved (every 100 ms) well within this
        client_p.stdin.write("go\n")
        client_p.stdin.flush()
        t0 = json.loads(client_p.stdout.readline())["t0"]

        def at(t):
            d = t0 + t - time.time()
            if d > 0:
                time.sleep(d)
            return time.time() - t0

        events["dp_kill"] = at(DP_KILL)
        dp.kill()  # SIGKILL
        dp.communicate()
        dps.remove(dp)
        sh("rm -rf /var/run/dpdk/tcrs_a", check=False)
        events["dp_start"] = at(DP_START)
        dp = start_dataplane(dp_bin, sock, "tcrs_b")
        dps.append(dp)
        wait_attached("dataplane B attached to turn-relay 1")
        events["dp_attached"] = time.time() - t0
        events["cp_kill"] = at(CP_KILL)
        relay.kill()  # SIGKILL: nothing saved on the way out
        outs.append(relay.communicate()[0])
        events["cp_start"] = at(CP_START)
        relay = start_relay()
        wait_attached("dataplane B re-attached to turn-relay 2")
        events["cp_attached"] = time.time() - t0
        line = client_p.stdout.readline()
        res = json.loads(line) if line.strip() else {}
        client_p.wait(timeout=20)
        peer_line = peer_p.stdout.readline()
        peer_res = json.loads(peer_line) if peer_line.strip() else {}
        print("events:", json.dumps({k: round(v, 3) for k, v in events.items()}))
        dp_counters.append(stop_dataplane(dp))  # SIGINT: prints its counters
        dps.remove(dp)
    finally:
        for p in (client_p, peer_p):
            if p is not None and p.poll() is None:
                p.kill()
        for dp in dps:
            dp.kill()
            dp.communicate()
        for p in relays:
            outs.append(e2e.stop_relay(p))
        e2e.teardown()
        sh(f"rm -rf {tmp} /var/run/dpdk/tcrs_a /var/run/dpdk/tcrs_b", check=False)

    for o in outs:
        print(o)
    sent_at, echoed = res.get("sent_at", []), res.get("echoed", [])
    check(len(sent_at) == int(RATE * STREAM_S), "client streamed every packet")
    before_dp_kill = [e for t, e in zip(sent_at, echoed) if t < events.get("dp_kill", 0) - 0.05]
    cp_down = [e for t, e in zip(sent_at, echoed) if events.get("cp_kill", 1e9) <= t < events.get("cp_attached", 0)]
    after = [e for t, e in zip(sent_at, echoed) if t >= events.get("dp_attached", 1e9) + SETTLE_S]
    lost = [round(t, 2) for t, e in zip(sent_at, echoed) if not e]
    print(f"packets: {len(sent_at)} sent, {sum(echoed)} echoed; while no control plane ran or it was "
          f"not yet attached: {sum(cp_down)}/{len(cp_down)}; after the dataplane restart + settle: "
          f"{sum(after)}/{len(after)}; lost at t = {lost[:5]} .. {lost[-5:]}")
    check(len(cp_down) > RATE and all(cp_down), "every packet sent while no control plane ran was echoed")
    check(len(before_dp_kill) > 0 and all(before_dp_kill), "every packet before the dataplane kill was echoed")
    check(len(after) > RATE and all(after), "every packet after the new dataplane settled was echoed")
    check(all(events.get("dp_kill", 0) - 0.05 <= t < events.get("dp_attached", 0) + SETTLE_S for t in lost),
          "packets were lost only while no dataplane ran")
    check(res.get("refresh") == 0x0104, "Refresh after both restarts succeeded (got %r)" % res.get("refresh"))
    check(res.get("rebind") == 0x0109, "ChannelBind refresh succeeded (got %r)" % res.get("rebind"))
    check(peer_res.get("count", 0) >= sum(echoed), "peer echoed what the client got back")
    check(len(peer_res.get("sources", [])) == 1, "peer saw one relayed address across both restarts (%r)" %
          peer_res.get("sources"))
    restored = [o for o in outs if "event=state_restored" in o]
    check(len(restored) == 1 and "allocations=1" in restored[0], "turn-relay 2 logged state_restored allocations=1")
    c = dp_counters[0] if dp_counters else {}
    check(c.get("ipc_swept") == "0", "dataplane B's resync by turn-relay 2 swept nothing (got %r)" % c.get("ipc_swept"))
    check(int(c.get("fwd_client_channel", 0)) >= len(after) and int(c.get("fwd_peer_channel", 0)) >= len(after),
          "dataplane B forwarded the stream on the fast path both ways")
    sys.exit(check.finish())


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "client":
        client()
    elif len(sys.argv) == 2 and sys.argv[1] == "peer":
        peer()
    else:
        main()
