#!/usr/bin/env python3
"""End to end: turn-relay (control plane) + turn-dataplane (DPDK, AF_XDP on veth; TURN_DP_PMD=af_packet for AF_PACKET) linked
over the IPC socket, a real TURN client and a UDP echo peer in their own namespace.

The client allocates and binds a channel with real STUN requests (they are punted by the
dataplane to the kernel, where turn-relay answers); turn-relay offloads the allocation,
permission and channel over IPC; the client's ChannelData then takes the dataplane's fast
path both ways. Checks: payloads echoed, the dataplane's forward counters, turn-relay's
/metrics (path="dataplane" grows, path="socket" does not); then the dataplane is restarted:
the control plane resyncs the new one and traffic resumes on its fast path (counters folded
across the restart); the allocation is deleted right after phase B's exchange, and its last
packets still reach /metrics (the dataplane's final counters after the Del); after Refresh
LIFETIME 0 the flow is gone from the dataplane (the peer receives nothing).

  tcpe_h (client 198.18.2.2, peer 198.18.2.3 on h0)
     h0 <-> n0  (tcpe_r: NIC, driven by DPDK AF_XDP)
     tcpe_r: x0k 198.18.2.1 (kernel end, relay IP; turn-relay listens here) <-> x0d (exception port)

Usage: netns_offload_e2e.py <turn-relay> <turn-dataplane>   (root)
       netns_offload_e2e.py client | peer                    (run inside tcpe_h by the test)
"""
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import dataplane_process  # noqa: E402
from checks import Checks  # noqa: E402  (tests/checks.py; the scripts importing this one find it too)

NS_H, NS_R = "tcpe_h", "tcpe_r"
RELAY, CLIENT, PEER = "198.18.2.1", "198.18.2.2", "198.18.2.3"
TURN_PORT, PEER_PORT, CLIENT_PORT = 3478, 6000, 50000
COOKIE = 0x2112A442
N = 5


# ---- minimal STUN/TURN client (RFC 8489 long-term credentials, RFC 8656) ----

def attr(t, v):
    return struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4)


def xor_addr(ip, port):
    x = bytes(a ^ b for a, b in zip(socket.inet_aton(ip), struct.pack("!I", COOKIE)))
    return struct.pack("!BBH", 0, 1, port ^ (COOKIE >> 16)) + x


def parse(msg):
    t, ln, _ = struct.unpack("!HHI", msg[:8])
    attrs, off = {}, 20
    while off + 4 <= 20 + ln:
        at, al = struct.unpack("!HH", msg[off:off + 4])
        attrs.setdefault(at, msg[off + 4:off + 4 + al])
        off += 4 + al + (-al % 4)
    return t, attrs


def unxor(v):
    port = struct.unpack("!H", v[2:4])[0] ^ (COOKIE >> 16)
    ip = socket.inet_ntoa(bytes(a ^ b for a, b in zip(v[4:8], struct.pack("!I", COOKIE))))
    return ip, port


class Turn:
    def __init__(self, s, server, user, password):
        self.s, self.server, self.user, self.password = s, server, user, password
        self.realm = self.nonce = None

    def request(self, method, body, auth=True):
        txid = os.urandom(12)
        if callable(body):  # attributes that depend on the transaction ID (IPv6 XOR addresses)
            body = body(txid)
        if auth and self.nonce:
            body += attr(0x0006, self.user.encode()) + attr(0x0014, self.realm) + attr(0x0015, self.nonce)
            key = hashlib.md5(f"{self.user}:{self.realm.decode()}:{self.password}".encode()).digest()
            hdr = struct.pack("!HHI", method, len(body) + 24, COOKIE) + txid
            body += attr(0x0008, hmac.new(key, hdr + body, hashlib.sha1).digest())
        msg = struct.pack("!HHI", method, len(body), COOKIE) + txid + body
        for _ in range(3):
            self.s.sendto(msg, self.server)
            try:
                while True:
                    data, _ = self.s.recvfrom(4096)
                    if data[8:20] == txid:
                        return parse(data)
            except socket.timeout:
                continue
        raise RuntimeError("no answer to method 0x%x" % method)

    def authed(self, method, body):
        t, a = self.request(method, body, auth=self.nonce is not None)
        if t & 0x0110 == 0x0110 and 0x0015 in a:  # error with a NONCE: 401 / 438, retry signed
            self.realm, self.nonce = a[0x0014], a[0x0015]
            t, a = self.request(method, body)
        return t, a


def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((CLIENT, CLIENT_PORT))
    s.settimeout(2)
    turn = Turn(s, (RELAY, TURN_PORT), "alice", "alice-pw")
    out = {}
    t, a = turn.authed(0x0003, attr(0x0019, bytes([17, 0, 0, 0])))
    assert t == 0x0103, "Allocate failed: 0x%x %r" % (t, a.get(0x0009))
    out["relayed"] = unxor(a[0x0016])
    t, a = turn.authed(0x0009, attr(0x000C, struct.pack("!HH", 0x4001, 0)) + attr(0x0012, xor_addr(PEER, PEER_PORT)))
    assert t == 0x0109, "ChannelBind failed: 0x%x" % t
    print(json.dumps(out), flush=True)
    # Commands from the orchestrator, one per line.
    for cmd in sys.stdin:
        cmd = cmd.split()
        if cmd[0] == "echo":  # N ChannelData with payloads "<prefix>-i", each echoed back
            echoed = []
            for i in range(N):
                payload = b"%s-%d" % (cmd[1].encode(), i)
                s.sendto(struct.pack("!HH", 0x4001, len(payload)) + payload + b"\0" * (-len(payload) % 4),
                         (RELAY, TURN_PORT))
                try:
                    data, src = s.recvfrom(2048)
                except socket.timeout:
                    echoed.append(None)
                    continue
                ch, ln = struct.unpack("!HH", data[:4])
                echoed.append([ch, data[4:4 + ln].decode(errors="replace"), list(src)])
            print(json.dumps({"echoed": echoed}), flush=True)
        elif cmd[0] == "delete":  # Refresh LIFETIME 0, then ChannelData that must go nowhere
            t, _ = turn.authed(0x0004, attr(0x000D, struct.pack("!I", 0)))
            time.sleep(0.5)
            s.sendto(struct.pack("!HH", 0x4001, 4) + b"gone", (RELAY, TURN_PORT))
            print(json.dumps({"refresh0": t}), flush=True)
            return


def peer():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((PEER, PEER_PORT))
    s.settimeout(20)
    got = []
    try:
        while True:
            data, src = s.recvfrom(2048)
            got.append([data.decode(errors="replace"), list(src)])
            print(json.dumps(got[-1]), flush=True)
            s.sendto(data, src)
    except socket.timeout:
        pass


# ---- orchestrator ------------------------------------------------------------

def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def setup():
    teardown()
    sh(f"ip netns add {NS_H}; ip netns add {NS_R}")
    sh(f"ip link add h0 netns {NS_H} type veth peer name n0 netns {NS_R}")
    sh(f"ip -n {NS_R} link add x0k type veth peer name x0d")
    sh(f"ip -n {NS_H} addr add {CLIENT}/24 dev h0; ip -n {NS_H} addr add {PEER}/24 dev h0")
    sh(f"ip -n {NS_R} addr add {RELAY}/24 dev x0k")
    for ns, dev in ((NS_H, "h0"), (NS_R, "n0"), (NS_R, "x0k"), (NS_R, "x0d")):
        sh(f"ip -n {ns} link set {dev} up")
        sh(f"ip netns exec {ns} ethtool -K {dev} tx off", check=False)
    sh(f"ip -n {NS_H} link set lo up; ip -n {NS_R} link set lo up")
    # The PMD only taps n0: the relay host's kernel must not answer ARP or take
    # IP packets there itself (weak host model), or a client whose ARP entry names
    # n0 would be served twice, by the dataplane and by the kernel.
    sh(f"ip netns exec {NS_R} sysctl -qw net.ipv4.conf.n0.arp_ignore=8 net.ipv4.conf.n0.rp_filter=1")


def teardown():
    sh(f"ip netns del {NS_H}", check=False)
    sh(f"ip netns del {NS_R}", check=False)


def metrics(port):
    return sh(f"ip netns exec {NS_R} curl -s http://127.0.0.1:{port}/metrics", check=False).stdout


def metric(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return None


def relayed_snapshot(port):
    """turn_relayed_packets_total by (direction, path), 0 where absent."""
    text = metrics(port)
    return {(d, p): metric(text, f'turn_relayed_packets_total{{direction="{d}",path="{p}"}}') or 0
            for d in ("client_to_peer", "peer_to_client") for p in ("socket", "dataplane")}


def has_module(python, mod):
    """Whether interpreter `python` can import `mod` (a Debian python3-* package)."""
    return subprocess.run([python, "-c", f"import {mod}"], capture_output=True).returncode == 0


def write_relay_config(path, mport, sock=None, relay=None, allow="198.18.0.0/15", port_max=49160,
                       users=("alice:alice-pw",), extra="", tcp=False, dtls_port=None, server_extra=""):
    """turn-relay's TOML for these tests: one loop on the relay IP, the dataplane socket
    (None: socket mode only), metrics on loopback port `mport`, `extra` sections appended,
    `server_extra` lines added to [server];
    `tcp`: a TURN over TCP listener on the same address too; `dtls_port`: a TURN over DTLS
    listener on that port (`extra` must then carry the [tls] section)."""
    relay = relay or RELAY
    listen = f"[{relay}]" if ":" in relay else relay
    users_toml = ", ".join(f'"{u}"' for u in users)
    with open(path, "w") as f:
        f.write(f'[server]\nlisten = ["{listen}:{TURN_PORT}"]\nrelay_ips = ["{relay}"]\n'
                + (f'listen_tcp = ["{listen}:{TURN_PORT}"]\n' if tcp else '')
                + (f'listen_dtls = ["{listen}:{dtls_port}"]\n' if dtls_port else '')
                + f'relay_port_min = 49152\nrelay_port_max = {port_max}\nthreads = 1\nrealm = "e2e.test"\n'
                + server_extra
                + f'[auth]\nusers = [{users_toml}]\n[policy]\nallow_peers = ["{allow}"]\n'
                f'[metrics]\nlisten = "127.0.0.1:{mport}"\n'
                + (f'[dataplane]\nsocket = "{sock}"\n' if sock else '')
                + extra + '[log]\nlevel = "info"\n[drain]\ndeadline_s = 1\n')


def stop_relay(relay):
    """SIGTERM twice (the second ends the drain at once); returns its output if piped and
    not read before ("" otherwise)."""
    if relay is None:
        return ""
    if relay.poll() is None:
        relay.send_signal(15)
        time.sleep(0.2)
        relay.send_signal(15)
    try:
        out = relay.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        relay.kill()
        out = relay.communicate()[0]
    except ValueError:  # output already read to the end
        out = ""
    return out or ""


# The poll-mode driver on the relay's veths: AF_XDP, as on a relay host (issue 4), unless
# TURN_DP_PMD=af_packet asks for the other one.
PMD = os.environ.get("TURN_DP_PMD", "af_xdp")


def start_dataplane(dp_bin, sock, prefix, extra=()):
    gw = sh(f"ip netns exec {NS_H} cat /sys/class/net/h0/address").stdout.strip()
    return subprocess.Popen(["ip", "netns", "exec", NS_R, dp_bin, "-l", "0,1", "--no-huge", "-m", "512",
                             "--no-pci", f"--file-prefix={prefix}", "--log-level=lib.eal:error",
                             f"--vdev=net_{PMD}0,iface=n0", f"--vdev=net_{PMD}1,iface=x0d", "--",
                             "--nic", f"net_{PMD}0", "--exc", f"net_{PMD}1", "--ipc", sock,
                             "--gw4", gw, "--flows", "1024", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_dataplane(dp):
    """Stops it (tests/dataplane_process.py), prints its output, returns {counter: value}."""
    out, counters = dataplane_process.stop_dataplane(dp)
    print(out)
    return counters


def wait_metric(mport, name, value, tries=60):
    v = None
    for _ in range(tries):
        v = metric(metrics(mport), name)
        if v == value:
            break
        time.sleep(0.1)
    return v


def main():
    relay_bin, dp_bin = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="turn-offload-e2e-")
    sock = os.path.join(tmp, "dataplane.sock")
    cfg = os.path.join(tmp, "relay.toml")
    mport = 9700
    write_relay_config(cfg, mport, sock)
    setup()
    relay = dp = peer_p = client_p = None
    relay_out = ""
    relayed = ["", 0]
    counters_a, counters_b = {}, {}

    check = Checks(echo=False)

    def client_cmd(cmd):
        client_p.stdin.write(cmd + "\n")
        client_p.stdin.flush()
        line = client_p.stdout.readline()
        res = json.loads(line) if line.strip() else {}
        print("client", cmd, "->", res)
        return res

    def check_path_metrics(n, phase):
        for d in ("client_to_peer", "peer_to_client"):
            name = f'turn_relayed_packets_total{{direction="{d}",path="dataplane"}}'
            dpv = wait_metric(mport, name, n)  # counters are requested every second
            sov = metric(metrics(mport), f'turn_relayed_packets_total{{direction="{d}",path="socket"}}')
            print(f"{phase}: metrics {d}: dataplane={dpv} socket={sov}")
            check(dpv == n, f"{phase}: {d} path=dataplane == {n} (got {dpv})")
            check(sov == 0, f"{phase}: {d} path=socket == 0 (got {sov})")

    try:
        relay = subprocess.Popen(["ip", "netns", "exec", NS_R, relay_bin, "--config", cfg],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(50):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        dp = start_dataplane(dp_bin, sock, "tcpe2e_a")
        check(wait_metric(mport, "turn_dataplane_connected", 1, 100) == 1, "dataplane A attached")
        me = os.path.abspath(__file__)
        peer_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "peer"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        client_p = subprocess.Popen(["ip", "netns", "exec", NS_H, sys.executable, me, "client"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        line = client_p.stdout.readline()
        res = json.loads(line) if line.strip() else {}
        check(bool(res), "client allocated (stderr: %s)" % (client_p.stderr.read() if not line.strip() else ""))
        print("client:", res)
        relayed = res.get("relayed", ["", 0])
        check(relayed[0] == RELAY, "relayed address on the relay IP")
        time.sleep(1.0)  # the IPC messages reach the dataplane well within this

        # Phase A: ChannelData both ways on dataplane A's fast path.
        r = client_cmd("echo a")
        check(r.get("echoed") == [[0x4001, "a-%d" % i, [RELAY, TURN_PORT]] for i in range(N)], "A: echoed")
        check_path_metrics(N, "A")

        # Restart the dataplane: the allocation survives in the control plane,
        # the new dataplane is resynced and forwarding resumes on its fast path.
        counters_a = stop_dataplane(dp)
        dp = None
        check(wait_metric(mport, "turn_dataplane_connected", 0) == 0, "dataplane A detached")
        dp = start_dataplane(dp_bin, sock, "tcpe2e_b")
        check(wait_metric(mport, "turn_dataplane_connected", 1, 100) == 1, "dataplane B attached")
        check(metric(metrics(mport), "turn_dataplane_resyncs_total") == 2, "two resyncs")
        time.sleep(0.5)
        r = client_cmd("echo b")
        check(r.get("echoed") == [[0x4001, "b-%d" % i, [RELAY, TURN_PORT]] for i in range(N)], "B: echoed")

        # Deleted right away, before the next counters request: the dataplane reports the
        # allocation's final totals once more after the Del, so /metrics still gets all of B.
        r = client_cmd("delete")
        check(r.get("refresh0") == 0x0104, "Refresh LIFETIME 0 succeeded")
        client_p.wait(timeout=10)
        check_path_metrics(2 * N, "B (after the delete)")
        time.sleep(1.0)
    finally:
        for p in (client_p, peer_p):
            if p is not None and p.poll() is None:
                p.kill()
        if dp is not None:
            counters_b = stop_dataplane(dp)
        relay_out = stop_relay(relay)
        teardown()
        sh(f"rm -rf {tmp} /var/run/dpdk/tcpe2e_a /var/run/dpdk/tcpe2e_b", check=False)
    peer_lines = [json.loads(x) for x in peer_p.stdout.read().splitlines() if x.strip()] if peer_p else []
    print("peer got:", peer_lines)
    want = ["a-%d" % i for i in range(N)] + ["b-%d" % i for i in range(N)]
    check([x[0] for x in peer_lines] == want, "peer got exactly the payloads (not 'gone')")
    check(all(x[1] == [RELAY, relayed[1]] for x in peer_lines), "peer saw the relayed address")
    print(relay_out)
    for name, c in (("A", counters_a), ("B", counters_b)):
        check(c.get("fwd_client_channel") == str(N), f"dataplane {name} fwd_client_channel == {N}")
        check(c.get("fwd_peer_channel") == str(N), f"dataplane {name} fwd_peer_channel == {N}")
        # The client's ChannelData went through the worker's client cache: the first packet
        # misses (the hash answers and fills it), every later forwarded one hits.
        hits = int(c.get("client_cache_lookups", 0)) - int(c.get("client_cache_misses", 0))
        check(hits >= N - 1, f"dataplane {name} client cache hits {hits} >= {N - 1}")
    check(relay_out.count("event=dataplane_resync") == 2, "relay logged two resyncs")
    # The allocation's end line: what it relayed, all on the fast path, summed across the
    # dataplane restart, with dataplane B's final totals after the Del (the line waits for
    # them): phase A's and B's N each way.
    end = re.search(r"event=allocation_deleted .*", relay_out)
    check(end is not None, "relay logged the allocation's end")
    usage = dict(re.findall(r" (packets_to_peer|bytes_to_peer|packets_to_client|bytes_to_client)=(\d+)",
                            end.group(0) if end else ""))
    print("end line usage:", usage)
    for way in ("to_peer", "to_client"):
        n = int(usage.get("packets_" + way, -1))
        check(n == 2 * N, f"end line packets_{way} {n} == {2 * N}")
        check(int(usage.get("bytes_" + way, -1)) == 3 * n, f"end line bytes_{way} == 3 x packets")  # "a-0" ...
    sys.exit(check.finish())


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "client":
        client()
    elif len(sys.argv) == 2 and sys.argv[1] == "peer":
        peer()
    else:
        main()
