#!/usr/bin/env python3
"""End to end with a real third-party client: coturn's turnutils_uclient (in the client
namespace) through turn-relay with turn-dataplane attached (AF_XDP on veths), against
coturn's turnutils_peer (echo peer, in the same host namespace on the peer address).

Topology and helpers come from netns_offload_e2e.py (imported, namespaces renamed so this
test never collides with that one). Two runs, each with its own dataplane instance so its
exit counters are that run's alone (the second one is attached by resync):
  * channels (uclient's default): ChannelData both ways;
  * Send indications (-s): Send indications client->peer, Data indications peer->client.
uclient's summary (parsed with tests/integration/test_uclient.py's parse_summary) must show
zero loss and received == sent > 0.

Fast path: coturn 4.6.1's uclient picks channel numbers at random in RFC 5766's
0x4000-0x7FFF (seen: 0x4bf3, 0x5427, 0x621c in one run). turn-relay accepts 0x5000-0x7FFF
(strict_channel_range = false) and offloads those bindings; the dataplane forwards whatever
channel the control plane bound, so every ChannelData is on the fast path both ways:
fwd_client_channel == fwd_peer_channel == sent and path="socket" does not move. The Send run has no channel numbers and is entirely on the fast
path: fwd_client_send == fwd_peer_data == sent, path="socket" does not move.
The channels run's dataplane counters are also checked as operators see them: turn-relay's
/metrics (turn_dataplane_worker_packets_total and friends) against what turn-dataplane prints
at exit, promtool's linter on that exposition, and a real Prometheus server (Debian's
`prometheus`, in the relay's namespace) scraping it, whose stored series must agree. So are
its ports' statistics (turn_dataplane_port_*, rte_eth_stats): both ports named as started and
link up, the NIC's rx/tx packets at least what the workers received and sent out it, the
exception port's at least the punts and the kernel's egress (both > 0: the STUN requests and
answers), bytes >= 42 per packet, and Prometheus stored the same values. And its next-hop
table's (turn_dataplane_nexthop_*, ipc::NextHopCounters): a capacity > 0 and the kernel mirror's
gauge present.
A fourth run: uclient over TCP (-t, RFC 8656 section 3.1): the connection reaches turn-relay
through the dataplane's exception path and its allocations are never offloaded, so every
packet of it is relayed by turn-relay's sockets (path="socket" moves by exactly what was sent
both ways) and none by the fast path (fwd_* == 0; the peer's datagrams are punt_miss).
A fifth run: RFC 6062 TCP allocations (uclient -t -T), zero loss with the dataplane attached
and nothing on its fast path.
A sixth run: uclient over DTLS (-S on UDP, RFC 7350): the DTLS port is no listener the
dataplane knows, so the client's records take the exception path like the peer's datagrams
to the relayed ports (punt_miss), and the allocations are never offloaded (the dataplane
would forward plaintext): zero loss, everything on path="socket", nothing on the fast path.
A third run (if python3-aioice is installed for /usr/bin/python3): aioice's TURN client
allocates and exchanges datagrams with the same echo peer. aioice always binds a channel
(0x4000 up) before sending, so it never uses Send/Data indications; after one warm-up datagram
(which can beat the binding's offload and go the socket path), all of its ChannelData must be
on the fast path both ways.

Usage: netns_offload_clients.py <turn-relay> <turn-dataplane>   (root)
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import netns_offload_e2e as e2e  # noqa: E402
from checks import Checks  # noqa: E402
from netns_offload_e2e import RELAY, PEER, TURN_PORT, metric, metrics, start_dataplane, stop_dataplane, \
    wait_metric  # noqa: E402

try:
    import pytest  # noqa: F401  test_uclient imports it at module level
except ImportError:  # not installed for this interpreter: a stub for its decorators will do
    import types
    sys.modules["pytest"] = types.SimpleNamespace(
        mark=types.SimpleNamespace(parametrize=lambda *a, **k: (lambda f: f)),
        fixture=lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f)))
from test_uclient import parse_summary  # noqa: E402  uclient's summary, parsed as the integration tests do

# Our own namespaces: the imported helpers read these module globals at call time.
e2e.NS_H, e2e.NS_R = "tccl_h", "tccl_r"
NS_H, NS_R = e2e.NS_H, e2e.NS_R
UPEER_PORT = 3480
DTLS_PORT = 5349
MPORT = 9731
MSGS, LEN, CLIENTS = 50, 120, 2
DIRS = ("client_to_peer", "peer_to_client")
AIOICE_N = 20
# aioice (Debian's python3-aioice, for /usr/bin/python3) allocates through the relay and
# talks to turnutils_peer (an echo peer). Its TURN client always binds a channel (numbers
# from 0x4000 up) before sending, so its traffic is ChannelData both ways, never Send/Data
# indications. One warm-up datagram right after the bind (which may beat the offload to the
# dataplane), then AIOICE_N datagrams each echoed back.
AIOICE_CLIENT = r"""
import asyncio, json, sys
from aioice import turn
RELAY, PORT, PEER, PPORT, N = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
class P(asyncio.DatagramProtocol):
    def __init__(self):
        self.q = asyncio.Queue()
    def datagram_received(self, data, addr):
        self.q.put_nowait((data, addr))
async def main():
    tr, pr = await turn.create_turn_endpoint(P, (RELAY, PORT), "alice", "alice-pw")
    out = {"relayed": list(tr.get_extra_info("sockname")), "echoed": 0, "bad": []}
    tr.sendto(b"warm-up", (PEER, PPORT))
    try:
        await asyncio.wait_for(pr.q.get(), 3)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(1.0)
    for i in range(N):
        msg = b"aioice-%d-" % i + b"x" * 100
        tr.sendto(msg, (PEER, PPORT))
        try:
            data, addr = await asyncio.wait_for(pr.q.get(), 2)
        except asyncio.TimeoutError:
            out["bad"].append([i, "timeout"])
            continue
        if data == msg and tuple(addr) == (PEER, PPORT):
            out["echoed"] += 1
        else:
            out["bad"].append([i, repr(data[:20]), list(addr)])
    out["channel"] = tr._TurnTransport__inner_protocol.peer_to_channel.get((PEER, PPORT)) \
        if hasattr(tr, "_TurnTransport__inner_protocol") else None
    tr.close()
    await asyncio.sleep(0.3)
    print(json.dumps(out), flush=True)
asyncio.run(main())
"""


def socket_counts():
    text = metrics(MPORT)
    return {d: metric(text, f'turn_relayed_packets_total{{direction="{d}",path="socket"}}') or 0 for d in DIRS}


PROM_PORT = 9732
# The dataplane's ports as /metrics labels them (netns_offload_e2e.start_dataplane's --vdev names).
PORT_NAMES = {"nic": f"net_{e2e.PMD}0", "exception": f"net_{e2e.PMD}1"}
PORT_COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_missed", "rx_errors", "tx_errors",
                 "rx_nombuf")


def port_series(text):
    """{(family without turn_dataplane_port_, port label): (name label, value)} from an exposition."""
    out = {}
    for line in text.splitlines():
        m = re.match(r'turn_dataplane_port_(\w+)\{port="(\w+)",name="([^"]*)"\} (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2))] = (m.group(3), float(m.group(4)))
    return out


def worker_totals(text):
    """turn_dataplane_worker_packets_total summed over workers, by counter name."""
    out = {}
    for line in text.splitlines():
        m = re.match(r'turn_dataplane_worker_packets_total\{worker="\d+",counter="(\w+)"\} (\S+)$', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + int(float(m.group(2)))
    return out


class Prometheus:
    """Debian's prometheus in the relay's namespace, scraping turn-relay's /metrics every second."""

    def __init__(self, workdir):
        cfg = os.path.join(workdir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: turn-relay\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{MPORT}']\n")
        self.log = os.path.join(workdir, "prometheus.log")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", NS_R, "prometheus", f"--config.file={cfg}",
                 f"--storage.tsdb.path={os.path.join(workdir, 'prom-data')}",
                 f"--web.listen-address=127.0.0.1:{PROM_PORT}", "--log.level=warn"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._get("/-/ready") is not None:
                return
            time.sleep(0.3)
        raise RuntimeError("prometheus not ready: " + open(self.log).read()[-2000:])

    def _get(self, path, query=None):
        args = ["ip", "netns", "exec", NS_R, "curl", "-sf", "-G", f"http://127.0.0.1:{PROM_PORT}{path}"]
        if query is not None:
            args[5:5] = ["--data-urlencode", f"query={query}"]
        p = subprocess.run(args, capture_output=True, text=True, timeout=10)
        return p.stdout if p.returncode == 0 else None

    def value(self, query):
        """Sum of an instant query's samples, or None without any."""
        body = self._get("/api/v1/query", query)
        res = json.loads(body)["data"]["result"] if body else []
        return sum(float(x["value"][1]) for x in res) if res else None

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_uclient(extra, port=TURN_PORT):
    cmd = ["ip", "netns", "exec", NS_H, "turnutils_uclient", "-v", "-u", "alice", "-w", "alice-pw",
           "-p", str(port), "-n", str(MSGS), "-l", str(LEN), "-z", "5", "-m", str(CLIENTS),
           "-e", PEER, "-r", str(UPEER_PORT), *extra, RELAY]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=60, text=True)
    return p.returncode, p.stdout, " ".join(cmd)


def main():
    relay_bin, dp_bin = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="turn-offload-clients-")
    sock = os.path.join(tmp, "dataplane.sock")
    cfg = os.path.join(tmp, "relay.toml")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=relay.test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    e2e.write_relay_config(cfg, MPORT, sock, port_max=49200, tcp=True, dtls_port=DTLS_PORT,
                           extra=f'[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n')
    e2e.setup()
    relay = dp = upeer = prom = None
    prefixes = ("tccl_a", "tccl_b", "tccl_c", "tccl_d", "tccl_e", "tccl_f")
    resyncs = 2  # after the first two runs

    check = Checks()

    def check_ports(name, sent):
        """The dataplane's port statistics (rte_eth_stats, turn_dataplane_port_*). Called once the
        dataplane has stopped: /metrics then holds its last report, workers' and ports' counters
        read together, with no traffic since. Every packet a worker took from the NIC the NIC
        received, every forward and every frame of kernel egress the NIC sent (less what its tx
        queue refused), every punt the exception port sent and every frame of kernel egress it
        received; the STUN exchanges went through the exception port both ways."""
        text = metrics(MPORT)
        ports, w = port_series(text), worker_totals(text)
        print(f"{name}: port series {ports}", flush=True)
        for port, dev in PORT_NAMES.items():
            for fam in [c + "_total" for c in PORT_COUNTERS] + ["link_up", "link_speed_mbps"]:
                got = ports.get((fam, port))
                check(got is not None and got[0] == dev,
                      f"{name}: turn_dataplane_port_{fam}{{port=\"{port}\"}} exported with name=\"{dev}\" ({got})")
            check(ports.get(("link_up", port), ("", 0))[1] == 1, f"{name}: {port} port link up")

        def v(fam, port):
            return ports.get((fam + "_total", port), ("", -1))[1]

        fwd = sum(w.get(k, 0) for k in ("fwd_client_channel", "fwd_client_send", "fwd_peer_channel", "fwd_peer_data"))
        punts = sum(n for k, n in w.items() if k.startswith("punt_"))
        egress = w.get("exception_to_nic", 0)
        check(w.get("rx", 0) >= 2 * sent and fwd >= 2 * sent,
              f"{name}: workers received {w.get('rx', 0)} and forwarded {fwd} >= 2 x sent {sent}")
        check(v("rx_packets", "nic") >= w.get("rx", 0),
              f"{name}: NIC rx_packets {v('rx_packets', 'nic')} >= workers' rx {w.get('rx', 0)}")
        nic_out = fwd + egress - w.get("drop_nic_tx_full", 0)
        check(v("tx_packets", "nic") >= nic_out,
              f"{name}: NIC tx_packets {v('tx_packets', 'nic')} >= forwarded + kernel egress {nic_out}")
        # Frames of at least Ethernet + IPv4 + UDP (or ARP): bytes are bytes, not packets.
        for d in ("rx", "tx"):
            check(v(d + "_bytes", "nic") >= 42 * v(d + "_packets", "nic") > 0,
                  f"{name}: NIC {d}_bytes {v(d + '_bytes', 'nic')} >= 42 x {d}_packets")
        exc_out = punts - w.get("drop_exception_tx_full", 0)
        check(punts > 0 and v("tx_packets", "exception") >= exc_out,
              f"{name}: exception tx_packets {v('tx_packets', 'exception')} >= punts {exc_out} > 0")
        check(egress > 0 and v("rx_packets", "exception") >= egress,
              f"{name}: exception rx_packets {v('rx_packets', 'exception')} >= kernel egress {egress} > 0")
        # The next-hop table's state comes with the same reports (ipc::NextHopCounters).
        capacity = metric(text, "turn_dataplane_nexthop_capacity")
        check(capacity is not None and capacity > 0, f"{name}: turn_dataplane_nexthop_capacity {capacity} > 0")
        mirror = metric(text, "turn_dataplane_nexthop_kernel_mirror")
        check(mirror in (0, 1), f"{name}: turn_dataplane_nexthop_kernel_mirror exported ({mirror})")
        if prom is None:
            return
        # The Prometheus server stored the same figures (the series keep their last values
        # while no dataplane is attached, so it converges on them).
        for fam, port in [(f + "_total", p) for f in ("rx_packets", "tx_packets") for p in PORT_NAMES] + \
                         [("link_up", p) for p in PORT_NAMES]:
            q = f'turn_dataplane_port_{fam}{{port="{port}",name="{PORT_NAMES[port]}"}}'
            want, got = ports.get((fam, port), ("", None))[1], None
            for _ in range(20):
                got = prom.value(q)
                if got == want:
                    break
                time.sleep(0.5)
            check(got == want, f"{name}: Prometheus {q} = {got} == /metrics {want}")

    def one_run(name, extra, prefix, resyncs, port=TURN_PORT):
        nonlocal dp
        dp = start_dataplane(dp_bin, sock, prefix)
        check(wait_metric(MPORT, "turn_dataplane_connected", 1, 100) == 1, f"{name}: dataplane attached")
        check(wait_metric(MPORT, "turn_dataplane_resyncs_total", resyncs, 50) == resyncs,
              f"{name}: resync #{resyncs}")
        time.sleep(0.3)
        before = socket_counts()
        rc, out, cmd = run_uclient(extra, port)
        time.sleep(2.0)  # the relay polls the dataplane's counters every second
        after = socket_counts()
        scraped = metrics(MPORT)
        counters = stop_dataplane(dp)
        dp = None
        check(wait_metric(MPORT, "turn_dataplane_connected", 0, 50) == 0, f"{name}: dataplane detached")
        tail = "\n".join(out.splitlines()[-25:])
        print(f"--- {name}: {cmd}\n{tail}", flush=True)
        check(rc == 0 and "ERROR" not in out, f"{name}: uclient rc={rc}, no ERROR")
        try:
            s = parse_summary(out)
        except AssertionError as e:
            check(False, f"{name}: uclient summary ({e})")
            s = {"sent": 0, "recv": -1, "lost": -1, "send_dropped": -1}
        print(f"{name}: summary {s}")
        check(s["sent"] > 0 and s["recv"] == s["sent"], f"{name}: received == sent > 0 ({s['recv']}/{s['sent']})")
        check(s["lost"] == 0 and s["send_dropped"] == 0, f"{name}: zero loss")
        delta = {d: after[d] - before[d] for d in DIRS}
        fwd = {k: int(v) for k, v in counters.items() if k.startswith(("fwd_", "drop_", "punt"))}
        print(f"{name}: dataplane counters {fwd}; path=socket delta {delta}", flush=True)
        if prom is not None and name == "channels":
            # promtool's linter accepts the exposition with the dataplane's series in it, and the
            # Prometheus server stored the same figures (it scrapes every second).
            lint = subprocess.run(["promtool", "check", "metrics"], input=scraped, capture_output=True, text=True)
            check(lint.returncode == 0 and "turn_dataplane" not in lint.stdout + lint.stderr,
                  f"{name}: promtool check metrics ({(lint.stdout + lint.stderr).strip()[:300]})")
            want = metric(scraped, 'turn_dataplane_express_packets_total{worker="0"}')
            for k in ("fwd_client_channel", "fwd_peer_channel"):
                q = f'sum(turn_dataplane_worker_packets_total{{counter="{k}"}})'
                got = None
                for _ in range(20):
                    got = prom.value(q)
                    if got == int(counters.get(k, 0)):
                        break
                    time.sleep(0.5)
                check(got == int(counters.get(k, 0)), f"{name}: Prometheus {q} = {got} == {counters.get(k, 0)}")
            got = prom.value('sum(turn_dataplane_express_packets_total)')
            check(want is not None and got == want, f"{name}: Prometheus express packets {got} == /metrics {want}")
        # The workers' counters as /metrics exports them (summed over workers), from the relay's
        # last poll: the same figures turn-dataplane prints when it stops.
        exported = {}
        for line in scraped.splitlines():
            m = re.match(r'turn_dataplane_worker_packets_total\{worker="\d+",counter="(\w+)"\} (\S+)$', line)
            if m:
                exported[m.group(1)] = exported.get(m.group(1), 0) + int(float(m.group(2)))
        for k in ("fwd_client_channel", "fwd_peer_channel", "fwd_client_send", "fwd_peer_data"):
            check(exported.get(k, 0) == int(counters.get(k, 0)),
                  f"{name}: /metrics {k} {exported.get(k, 0)} == dataplane's {counters.get(k, 0)}")
        if name == "channels":
            check_ports(name, s["sent"])
        return s, out, counters, delta

    try:
        relay = subprocess.Popen(["ip", "netns", "exec", NS_R, relay_bin, "--config", cfg],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(50):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        upeer = subprocess.Popen(["ip", "netns", "exec", NS_H, "turnutils_peer", "-L", PEER, "-p", str(UPEER_PORT)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.path.exists("/usr/bin/prometheus"):
            prom = Prometheus(tmp)
        else:
            print("prometheus not installed: its checks skipped", flush=True)
        time.sleep(0.3)

        # Run 1: channels.
        s, out, c, delta = one_run("channels", [], prefixes[0], 1)
        chans = [int(x, 16) for x in re.findall(r"success: 0x([0-9a-fA-F]+)", out)]
        print("channels: uclient bound channel numbers:", [hex(x) for x in chans], flush=True)
        check(len(chans) >= CLIENTS, f"channels: uclient reported its channel numbers ({len(chans)})")
        cc, pc = int(c.get("fwd_client_channel", 0)), int(c.get("fwd_peer_channel", 0))
        # Client -> peer: every bound channel (RFC 5766 numbers included) is offloaded and
        # forwarded by the dataplane; nothing goes through turn-relay's sockets.
        check(cc == s["sent"], f"channels: fwd_client_channel {cc} == sent {s['sent']}")
        check(delta["client_to_peer"] == 0, f"channels: client_to_peer path=socket == 0 ({delta['client_to_peer']})")
        # Peer -> client: the dataplane frames the peer's datagrams as ChannelData on the
        # bound number itself: all fast path.
        check(pc == s["sent"], f"channels: fwd_peer_channel {pc} == sent {s['sent']}")
        # Most of it through the express lane (dataplane/worker/express.cc), the rest through
        # the stages (first packets of a flow, bursts after one the lane gave back).
        ex = int(c.get("express_packets", 0))
        print(f"channels: express_packets {ex} of {cc + pc}", flush=True)
        check(ex > 0, f"channels: express lane forwarded some ({ex})")
        check(delta["peer_to_client"] == 0, f"channels: peer_to_client path=socket == 0 ({delta['peer_to_client']})")

        # Run 2: Send / Data indications, entirely on the fast path.
        s, out, c, delta = one_run("send", ["-s"], prefixes[1], 2)
        cs, pd = int(c.get("fwd_client_send", 0)), int(c.get("fwd_peer_data", 0))
        check(cs == s["sent"], f"send: fwd_client_send {cs} == sent {s['sent']}")
        check(pd == s["sent"], f"send: fwd_peer_data {pd} == sent {s['sent']}")
        check(all(v == 0 for v in delta.values()), f"send: path=socket == 0 ({delta})")
        # Run 3: aioice (ChannelData on 0x4000, both ways on the fast path).
        if os.path.exists("/usr/lib/python3/dist-packages/aioice"):
            dp = start_dataplane(dp_bin, sock, prefixes[2])
            check(wait_metric(MPORT, "turn_dataplane_connected", 1, 100) == 1, "aioice: dataplane attached")
            resyncs += 1
            check(wait_metric(MPORT, "turn_dataplane_resyncs_total", resyncs, 50) == resyncs, "aioice: resync #3")
            time.sleep(0.3)
            before = socket_counts()
            p = subprocess.run(["ip", "netns", "exec", NS_H, "/usr/bin/python3", "-c", AIOICE_CLIENT, RELAY,
                                str(TURN_PORT), PEER, str(UPEER_PORT), str(AIOICE_N)],
                               capture_output=True, text=True, timeout=40)
            time.sleep(2.0)
            after = socket_counts()
            c = stop_dataplane(dp)
            dp = None
            delta = {d: after[d] - before[d] for d in DIRS}
            try:
                res = json.loads(p.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                res = {}
            print("aioice:", res, "rc", p.returncode, p.stderr[-2000:], flush=True)
            cc, pc = int(c.get("fwd_client_channel", 0)), int(c.get("fwd_peer_channel", 0))
            print(f"aioice: dataplane fwd_client_channel={cc} fwd_peer_channel={pc}; path=socket delta {delta}",
                  flush=True)
            check(res.get("relayed", [""])[0] == RELAY, "aioice: relayed address on the relay IP")
            check(res.get("echoed") == AIOICE_N and not res.get("bad"), f"aioice: {AIOICE_N} echoed, none lost")
            # All but possibly the warm-up datagram (sent right after the bind) on the fast path.
            check(cc >= AIOICE_N and cc + delta["client_to_peer"] == AIOICE_N + 1,
                  f"aioice: fwd_client_channel {cc} >= {AIOICE_N}, + socket == {AIOICE_N + 1}")
            check(pc >= AIOICE_N and pc + delta["peer_to_client"] == AIOICE_N + 1,
                  f"aioice: fwd_peer_channel {pc} >= {AIOICE_N}, + socket == {AIOICE_N + 1}")
        else:
            print("aioice: python3-aioice not installed, run skipped", flush=True)

        # Run 4: uclient over TCP (RFC 8656 section 3.1). The TCP connection reaches turn-relay
        # through the dataplane's exception path, and the allocation made over it is never
        # offloaded (its peer packets must go out on that connection): everything the client
        # and the echo peer exchange is relayed by turn-relay's sockets, none by the fast path.
        resyncs += 1
        s, out, c, delta = one_run("tcp", ["-t"], prefixes[3], resyncs)
        fwd = sum(int(v) for k, v in c.items() if k.startswith("fwd_"))
        check(fwd == 0, f"tcp: nothing on the fast path (fwd_* = {fwd})")
        check(delta["client_to_peer"] == s["sent"] and delta["peer_to_client"] == s["sent"],
              f"tcp: path=socket both ways == sent {s['sent']} ({delta})")
        check(int(c.get("punt_not_udp", 0)) > s["sent"] // 2,
              f"tcp: the TCP segments took the exception path (punt_not_udp {c.get('punt_not_udp', 0)})")
        check(int(c.get("punt_miss", 0)) >= s["sent"],
              f"tcp: the peer's datagrams to the relayed ports were punted, not forwarded "
              f"(punt_miss {c.get('punt_miss', 0)} >= {s['sent']})")
        tcp_accepted = metric(metrics(MPORT), 'turn_connections_accepted_total{transport="tcp"}') or 0
        check(tcp_accepted >= CLIENTS, f"tcp: turn-relay accepted the TCP connections ({tcp_accepted})")

        # Run 5: RFC 6062 TCP allocations (uclient -t -T) with the dataplane attached: every
        # connection (control, data, relayed) is TCP, so all of it is the kernel's and turn-relay's.
        resyncs += 1
        s, out, c, delta = one_run("tcp-relay", ["-t", "-T"], prefixes[4], resyncs)
        fwd = sum(int(v) for k, v in c.items() if k.startswith("fwd_"))
        check(fwd == 0, f"tcp-relay: nothing on the fast path (fwd_* = {fwd})")
        text = metrics(MPORT)
        binds = metric(text, 'turn_requests_total{method="connection_bind",code="200"}') or 0
        check(binds >= CLIENTS, f"tcp-relay: ConnectionBind answered ({binds})")

        # Run 6: uclient over DTLS (-S over UDP). Its records reach turn-relay's DTLS socket
        # through the exception path; its allocations stay with the control plane.
        resyncs += 1
        s, out, c, delta = one_run("dtls", ["-S"], prefixes[5], resyncs, port=DTLS_PORT)
        fwd = sum(int(v) for k, v in c.items() if k.startswith("fwd_"))
        check(fwd == 0, f"dtls: nothing on the fast path (fwd_* = {fwd})")
        check(delta["client_to_peer"] == s["sent"] and delta["peer_to_client"] == s["sent"],
              f"dtls: path=socket both ways == sent {s['sent']} ({delta})")
        check(int(c.get("punt_miss", 0)) >= 2 * s["sent"],
              f"dtls: the client's records and the peer's datagrams were punted, not forwarded "
              f"(punt_miss {c.get('punt_miss', 0)} >= {2 * s['sent']})")
        text = metrics(MPORT)
        dtls = metric(text, 'turn_connections_accepted_total{transport="dtls"}') or 0
        check(dtls >= CLIENTS, f"dtls: turn-relay started the DTLS sessions ({dtls})")
    finally:
        if prom is not None:
            prom.close()
        if dp is not None:
            stop_dataplane(dp)
        if upeer is not None and upeer.poll() is None:
            upeer.terminate()
            try:
                upeer.wait(timeout=5)
            except subprocess.TimeoutExpired:
                upeer.kill()
        e2e.stop_relay(relay)
        e2e.teardown()
        e2e.sh(f"rm -rf {tmp} " + " ".join(f"/var/run/dpdk/{p}" for p in prefixes), check=False)
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
