#!/usr/bin/env python3
"""Two dataplane workers end to end: turn-relay + turn-dataplane with two worker lcores, real
TURN clients and an echo peer in their own namespace (the topology of netns_offload_e2e.py,
namespaces renamed). The ports as a relay host with a veth exception port has them: the NIC
with a queue pair per worker (here AF_PACKET with qpairs=2, whose fanout spreads frames over
the queues by flow hash), the exception port with one (AF_XDP on a veth: DPDK 22.11's PMD
reads a veth's channels as one "combined" queue), so worker 1 hands its punts to worker 0
through the dataplane's exception ring. The STUN requests of 16 clients, punted by both
workers, all get their answers.

  Phase 1, spread: 16 clients each allocate, bind a channel to the echo peer and exchange
  20 ChannelData with it. Both workers punted requests (punt_not_fast_path). Every datagram
  comes back intact; all of them took the fast path (fwd_client_channel and fwd_peer_channel
  both grew by 320, summed over the workers /metrics exports); both workers forwarded some
  (RSS-like spreading reached both queues); most of it through the express lane, which
  polices the limit every allocation has here; turn-relay's per-allocation figures (the
  dataplane's AllocStates, one per worker, summed by the dataplane's counters report) say
  320 each way on path="dataplane", none on path="socket".

  Phase 2, one bandwidth budget per allocation for both directions and both workers
  ([allocation].bandwidth_bps = 8000: 1000 payload bytes per second, so the budget is the
  64 KiB floor and refills by less than a datagram while the test runs): client 0 sends 30
  datagrams of 1000 bytes back to back and gets all 30 echoes (60 kB both ways together fit);
  then 150 more at once: the fast path drops the excess (drop_rate_limited grows), and both
  directions together forward 62-66 datagrams in all: the budget (less what phase 1 spent,
  3.4 kB, partly refilled), plus at most one of refill. Buckets of each worker's own would
  forward up to twice that when the two directions are on different workers.

Usage: netns_offload_workers.py <turn-relay> <turn-dataplane>   (root)
       netns_offload_workers.py clients                          (run inside the client namespace)
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns_offload_e2e as e2e  # noqa: E402
from checks import Checks  # noqa: E402
from netns_offload_e2e import RELAY, PEER, PEER_PORT, TURN_PORT, Turn, attr, metric, metrics, sh, stop_relay, \
    unxor, write_relay_config, xor_addr  # noqa: E402

e2e.NS_H, e2e.NS_R = "tcwk_h", "tcwk_r"
NS_H, NS_R = e2e.NS_H, e2e.NS_R
CLIENTS, MSGS = 16, 20
FIRST_PORT = 50100
MPORT = 9741
RATE_BPS = 8000             # [allocation].bandwidth_bps: 1000 B/s
BUDGET = 65536              # bytes: the 64 KiB floor (one second at the rate is less)
SIZE = 1000                 # payload bytes of a phase 2 datagram
FIRST_BURST, SECOND_BURST = 30, 150
PHASE1_BYTES = 2 * MSGS * 88  # at most what phase 1 took from client 0's budget, both ways


# ---- inside the client namespace --------------------------------------------------------

def clients():
    turns = []
    for k in range(CLIENTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((e2e.CLIENT, FIRST_PORT + k))
        s.settimeout(2)
        t = Turn(s, (RELAY, TURN_PORT), "alice", "alice-pw")
        typ, a = t.authed(0x0003, attr(0x0019, bytes([17, 0, 0, 0])))
        assert typ == 0x0103, "Allocate failed: 0x%x %r" % (typ, a.get(0x0009))
        typ, _ = t.authed(0x0009, attr(0x000C, struct.pack("!HH", 0x4001, 0)) + attr(0x0012, xor_addr(PEER, PEER_PORT)))
        assert typ == 0x0109, "ChannelBind failed: 0x%x" % typ
        turns.append((t, unxor(a[0x0016])))
    print(json.dumps({"relayed": [r for _, r in turns]}), flush=True)

    def frame(payload):
        return struct.pack("!HH", 0x4001, len(payload)) + payload + b"\0" * (-len(payload) % 4)

    def collect(s, want, until):
        got = []
        while len(got) < want and time.monotonic() < until:
            s.settimeout(max(0.01, until - time.monotonic()))
            try:
                data, src = s.recvfrom(4096)
            except socket.timeout:
                break
            ch, ln = struct.unpack("!HH", data[:4])
            got.append((ch, data[4:4 + ln], src))
        return got

    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "spread":  # every client: MSGS datagrams, round robin, then the echoes
            sent = {}
            for i in range(MSGS):
                for k, (t, _) in enumerate(turns):
                    p = b"c%d-m%d-" % (k, i) + b"x" * 80
                    sent.setdefault(k, set()).add(p)
                    t.s.sendto(frame(p), (RELAY, TURN_PORT))
                time.sleep(0.002)
            out = {"echoed": 0, "bad": []}
            for k, (t, _) in enumerate(turns):
                for ch, p, src in collect(t.s, MSGS, time.monotonic() + 3):
                    if ch == 0x4001 and p in sent[k] and src == (RELAY, TURN_PORT):
                        sent[k].discard(p)
                        out["echoed"] += 1
                    else:
                        out["bad"].append([k, ch, p[:16].decode(errors="replace"), list(src)])
            print(json.dumps(out), flush=True)
        elif cmd[0] == "burst":  # client 0: N datagrams of SIZE bytes back to back, then the echoes
            n = int(cmd[1])
            t = turns[0][0]
            for i in range(n):
                t.s.sendto(frame(b"%06d" % i + b"y" * (SIZE - 6)), (RELAY, TURN_PORT))
            got = collect(t.s, n, time.monotonic() + 2)
            intact = sum(1 for ch, p, _ in got if ch == 0x4001 and len(p) == SIZE and p[6:] == b"y" * (SIZE - 6))
            print(json.dumps({"echoed": len(got), "intact": intact}), flush=True)


# ---- orchestrator -----------------------------------------------------------------------

def start_dataplane(dp_bin, sock):
    """Two workers: lcores 1 and 2 (on CPUs 1 and 0; the main lcore 0 sleeps in poll()
    between IPC messages), each with its own queue of the AF_PACKET NIC port; the AF_XDP
    exception port's one queue is worker 0's."""
    gw = sh(f"ip netns exec {NS_H} cat /sys/class/net/h0/address").stdout.strip()
    ncpu = os.cpu_count() or 1
    lcores = f"0@0,1@{1 % ncpu},2@{2 % ncpu}"
    return subprocess.Popen(["ip", "netns", "exec", NS_R, dp_bin, "--lcores", lcores, "--no-huge", "-m", "512",
                             "--no-pci", "--file-prefix=tcwk", "--log-level=lib.eal:error",
                             "--vdev=net_af_packet0,iface=n0,qpairs=2", "--vdev=net_af_xdp1,iface=x0d", "--",
                             "--nic", "net_af_packet0", "--exc", "net_af_xdp1", "--ipc", sock,
                             "--gw4", gw, "--flows", "1024"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def worker_series(text, counter):
    """{worker id: value} of turn_dataplane_worker_packets_total{counter=...}."""
    out = {}
    for line in text.splitlines():
        if line.startswith('turn_dataplane_worker_packets_total{') and f'counter="{counter}"' in line:
            w = line.split('worker="')[1].split('"')[0]
            out[w] = float(line.split()[-1])
    return out


def settle(mport, name, tries=50):
    """The value of `name` once two scrapes a second apart agree (counters come every second)."""
    last = None
    for _ in range(tries):
        v = metric(metrics(mport), name)
        if v is not None and v == last:
            return v
        last = v
        time.sleep(1.1)
    return last


def main():
    relay_bin, dp_bin = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="turn-offload-workers-")
    sock = os.path.join(tmp, "dataplane.sock")
    cfg = os.path.join(tmp, "relay.toml")
    write_relay_config(cfg, MPORT, sock, port_max=49152 + 2 * CLIENTS,
                       extra=f"[allocation]\nbandwidth_bps = {RATE_BPS}\nmax_per_user = 0\n")
    e2e.setup()
    relay = dp = peer_p = client_p = None

    check = Checks()

    def cmd(c):
        client_p.stdin.write(c + "\n")
        client_p.stdin.flush()
        line = client_p.stdout.readline()
        return json.loads(line) if line.strip() else {}

    def fwd():
        text = metrics(MPORT)
        out = {c: worker_series(text, c)
               for c in ("fwd_client_channel", "fwd_peer_channel", "drop_rate_limited", "punt_not_fast_path")}
        out["express"] = sum(float(ln.split()[-1]) for ln in text.splitlines()
                             if ln.startswith("turn_dataplane_express_packets_total{"))
        return out

    def total(series):
        return sum(series.values())

    try:
        relay = subprocess.Popen(["ip", "netns", "exec", NS_R, relay_bin, "--config", cfg],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)
        dp = start_dataplane(dp_bin, sock)
        name = 'turn_dataplane_connected'
        for _ in range(100):
            if metric(metrics(MPORT), name) == 1:
                break
            time.sleep(0.1)
        check(metric(metrics(MPORT), name) == 1, "the dataplane with two workers attached")
        peer_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable,
                                   os.path.join(os.path.dirname(os.path.abspath(__file__)), "netns_offload_e2e.py"),
                                   "peer"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, os.path.abspath(__file__), "clients"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = json.loads(client_p.stdout.readline())
        check(len(first.get("relayed", [])) == CLIENTS, f"{CLIENTS} allocations with a channel each")
        time.sleep(1.0)  # the bindings reach the dataplane

        punts = fwd()["punt_not_fast_path"]
        print("punted STUN per worker:", punts)
        check(len(punts) == 2 and all(v > 0 for v in punts.values()),
              f"both workers punted STUN requests, worker 1 through worker 0's exception queue ({punts})")

        # Phase 1.
        before = fwd()
        res = cmd("spread")
        print("spread:", res)
        n = CLIENTS * MSGS
        check(res.get("echoed") == n and not res.get("bad"), f"all {n} datagrams echoed intact")
        for d in ("client_to_peer", "peer_to_client"):
            v = settle(MPORT, f'turn_relayed_packets_total{{direction="{d}",path="dataplane"}}')
            check(v == n, f"turn_relayed_packets_total{{direction={d},path=dataplane}} == {n} (got {v})")
            v = metric(metrics(MPORT), f'turn_relayed_packets_total{{direction="{d}",path="socket"}}') or 0
            check(v == 0, f"nothing on path=socket {d} (got {v})")
        after = fwd()
        for c in ("fwd_client_channel", "fwd_peer_channel"):
            grew = {w: after[c].get(w, 0) - before[c].get(w, 0) for w in after[c]}
            print(c, "per worker:", grew)
            check(sorted(grew) == ["0", "1"], f"{c}: both workers export it (got {sorted(grew)})")
            check(sum(grew.values()) == n, f"{c} summed over the workers grew by {n} (got {sum(grew.values())})")
            check(all(v > 0 for v in grew.values()), f"{c}: both workers forwarded some ({grew})")
        # Every allocation has a limit here: the express lane polices it and still finishes
        # the bursts (before, limited allocations never took the lane). Not all: a burst with
        # anything else in it goes through the stages, and after one the lane finished less
        # than half of, the next 15 skip it (85 % in the first runs).
        lane = after["express"] - before["express"]
        check(lane >= n, f"the express lane forwarded most of it, limits and all ({lane} of {2 * n})")

        # Phase 2.
        before = fwd()
        res = cmd(f"burst {FIRST_BURST}")
        print("first burst:", res)
        check(res.get("echoed") == FIRST_BURST and res.get("intact") == FIRST_BURST,
              f"{FIRST_BURST} x {SIZE} B each way fit the budget of {BUDGET} B: all echoed")
        res = cmd(f"burst {SECOND_BURST}")
        print("second burst:", res)
        time.sleep(2.5)  # two counters reports
        after = fwd()
        out = total(after["fwd_client_channel"]) - total(before["fwd_client_channel"])
        back = total(after["fwd_peer_channel"]) - total(before["fwd_peer_channel"])
        dropped = total(after["drop_rate_limited"]) - total(before["drop_rate_limited"])
        print(f"phase 2: forwarded {out} to the peer, {back} back, {dropped} dropped over the budget")
        check(dropped > 0, "the budget dropped some of the second burst (drop_rate_limited grew)")
        # The client sent 180, of which `out` were forwarded and the rest dropped; the peer
        # echoed `out`, of which `back` were forwarded and the rest dropped.
        check(back + dropped == FIRST_BURST + SECOND_BURST,
              f"every datagram was forwarded or dropped on the fast path: {back} + {dropped} == "
              f"{FIRST_BURST + SECOND_BURST}")
        # Both ways together: the budget less what phase 1 spent (at most), and no more
        # than the whole budget and a datagram of refill (1000 B/s, the bursts take
        # milliseconds).
        low, high = (BUDGET - PHASE1_BYTES) // SIZE, BUDGET // SIZE + 1
        check(low <= out + back <= high,
              f"forwarded both ways {low} <= {out + back} <= {high} (one budget of {BUDGET} B for both "
              f"directions and workers)")
        ways = {c: sorted(w for w in after[c] if after[c][w] != before[c].get(w, 0))
                for c in ("fwd_client_channel", "fwd_peer_channel")}
        print("phase 2 was forwarded by workers", ways)
        check(res.get("echoed", 0) == res.get("intact", -1), "what came back is intact")
    finally:
        for p in (client_p, peer_p):
            if p is not None:
                p.kill()
                p.wait()
        if dp is not None:
            dp_out = e2e.dataplane_process.stop_dataplane(dp)[0]
            print(dp_out)
            check("net_af_xdp1 has 1 queue(s) for 2 workers" in dp_out,
                  "turn-dataplane said worker 1 punts through the others' exception queue")
        print(stop_relay(relay)[-3000:])
        e2e.teardown()
        sh("rm -rf /var/run/dpdk/tcwk", check=False)

    sys.exit(check.finish())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        clients()
    else:
        main()
