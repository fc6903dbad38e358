#!/usr/bin/python3
"""Three relays, one harness, one namespace topology (issue 5).

Builds client, relay and peer hosts as network namespaces joined by a switch
(a Linux bridge in a namespace of its own), addresses from 198.18.0.0/15 only,
and puts through the same turn-load runs, REPS times, in rotating order:

  coturn   Debian's turnserver on the relay host's veth (kernel sockets)
  socket   turn-relay alone on the relay host's veth (kernel sockets)
  dpdk     turn-relay + turn-dataplane: the relay host's veth n0 is driven by
           DPDK (net_af_xdp), the relay IP sits on the kernel end x0k of an
           exception veth pair whose other end x0d the dataplane drives too
           (net_af_xdp or net_af_packet), as tests/controlplane/netns_offload_e2e.py

           bnc_c (client host)  c0 198.18.0.2 --+
           bnc_p (peer host)    p0 198.18.0.3 --+-- br0 in bnc_sw (switch)
           bnc_r (relay host)   n0 -------------+
              socket modes: 198.18.0.1/24 on n0
              dpdk mode:    n0 has no IP (DPDK port); 198.18.0.1/24 on x0k <-> x0d (DPDK port)

turn-load runs in bnc_c; its echo peers' sockets live in bnc_p (--peer-netns).
For every relay and repetition:
  1. zero-loss search: sweeps of offered rates in chunks (each its own turn-load
     run, a short phase per rate), stopping at the first chunk with a lossy
     phase, then one chunk of rates between the last clean and the first lossy
     rate; the figure is the highest rate actually offered before the first
     lossy phase (a lower bound if nothing lost or the harness fell short);
  2. latency: one phase at half that rate (p50/p99), with the relay's CPU time
     (/proc/PID/stat over the phase, both processes in dpdk mode; the dataplane
     worker polls, so its lcore is 100 % busy by design and is reported apart);
  3. setup: turn-load --setup-only (Allocate with its 401, CreatePermission,
     ChannelBind).
Prints medians (min-max), the ratios to coturn and the issue's targets, the
load average before and after; writes every JSON and log to OUT.

Everything is bounded: each child has a timeout, the whole run a deadline;
every process the script starts is stopped by PID; namespaces, hugepage
mount and DPDK runtime files are removed at exit.

usage: bench/load/netns_compare.py [--build DIR] [--reps N] [--quick] [--out DIR] ...   (root)
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

NS_C, NS_P, NS_R, NS_SW = "bnc_c", "bnc_p", "bnc_r", "bnc_sw"
RELAY_IP, CLIENT_IP, PEER_IP = "198.18.0.1", "198.18.0.2", "198.18.0.3"
PREFIX = 24
TURN_PORT = 3478
METRICS_PORT = 9790
USER, PASSWORD, REALM = "demo", "demo-password", "turnrelay.local"
DPDK_PREFIX = "bnc_dp"
HUGE_DIR = "/run/bnc_hugepages"
HUGE_NR = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
RELAYS = ("coturn", "socket", "dpdk")
LABEL = {"coturn": "coturn", "socket": "turn-relay (socket)", "dpdk": "turn-relay + turn-dataplane (AF_XDP)"}

T0 = time.monotonic()
started = []          # Popen objects we started, stopped by PID at exit
state = {"huge_old": None, "huge_set": None, "huge_mounted": False, "topology": False}


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True, timeout=30):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"`{cmd}` failed ({r.returncode}): {r.stderr.strip()}")
    return r


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


# ---- topology ------------------------------------------------------------------

def teardown_topology():
    for ns in (NS_C, NS_P, NS_R, NS_SW):
        sh(f"ip netns del {ns}", check=False)


def build_topology():
    teardown_topology()
    for ns in (NS_C, NS_P, NS_R, NS_SW):
        sh(f"ip netns add {ns}")
        sh(f"ip -n {ns} link set lo up")
    state["topology"] = True
    sh(f"ip -n {NS_SW} link add br0 type bridge")
    # no STP / forwarding delay: the ports forward as soon as they are up
    sh(f"ip -n {NS_SW} link set br0 type bridge stp_state 0 forward_delay 0")
    # A switch does not run the frames through iptables: with br_netfilter loaded
    # the bridge would (per-namespace sysctls; the host's stay as they are).
    sh(f"ip netns exec {NS_SW} sysctl -qw net.bridge.bridge-nf-call-iptables=0 "
       "net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0", check=False)
    for host_ns, host_dev, sw_dev in ((NS_C, "c0", "sc"), (NS_P, "p0", "sp"), (NS_R, "n0", "sr")):
        sh(f"ip link add {host_dev} netns {host_ns} type veth peer name {sw_dev} netns {NS_SW}")
        sh(f"ip -n {NS_SW} link set {sw_dev} master br0")
    sh(f"ip -n {NS_R} link add x0k type veth peer name x0d")
    sh(f"ip -n {NS_C} addr add {CLIENT_IP}/{PREFIX} dev c0")
    sh(f"ip -n {NS_P} addr add {PEER_IP}/{PREFIX} dev p0")
    for ns, dev in ((NS_C, "c0"), (NS_P, "p0"), (NS_R, "n0"), (NS_R, "x0k"), (NS_R, "x0d"),
                    (NS_SW, "sc"), (NS_SW, "sp"), (NS_SW, "sr"), (NS_SW, "br0")):
        sh(f"ip -n {ns} link set {dev} up")
        # Kernel-built packets must carry full checksums: DPDK sees them raw.
        sh(f"ip netns exec {ns} ethtool -K {dev} tx off", check=False)
    # Big enough socket buffers on every host (turn-load forces its own; the relays ask).
    for ns in (NS_C, NS_P, NS_R):
        sh(f"ip netns exec {ns} sysctl -qw net.core.rmem_max=8388608 net.core.wmem_max=8388608", check=False)


def relay_host_socket_mode():
    """Relay IP on n0; kernel answers ARP there."""
    sh(f"ip -n {NS_R} addr flush dev x0k")
    sh(f"ip netns exec {NS_R} sysctl -qw net.ipv4.conf.n0.arp_ignore=0 net.ipv4.conf.n0.rp_filter=0")
    sh(f"ip -n {NS_R} addr replace {RELAY_IP}/{PREFIX} dev n0")
    flush_neighbours()


def relay_host_dpdk_mode():
    """n0 is a DPDK port without IP; the relay IP is on the exception veth's kernel end."""
    sh(f"ip -n {NS_R} addr flush dev n0")
    # The kernel must not answer ARP or take IP packets on n0 itself (weak host
    # model), or a client could be served twice, by the dataplane and the kernel.
    sh(f"ip netns exec {NS_R} sysctl -qw net.ipv4.conf.n0.arp_ignore=8 net.ipv4.conf.n0.rp_filter=1")
    sh(f"ip -n {NS_R} addr replace {RELAY_IP}/{PREFIX} dev x0k")
    flush_neighbours()


def flush_neighbours():
    for ns in (NS_C, NS_P, NS_R):
        sh(f"ip -n {ns} neigh flush all", check=False)
    sh(f"ip netns exec {NS_SW} bridge fdb flush dev br0", check=False)


def udp_counters(ns):
    """UDP RcvbufErrors, InErrors in namespace `ns` (kernel drops on UDP sockets)."""
    out = sh(f"ip netns exec {ns} cat /proc/net/snmp", check=False).stdout.splitlines()
    for i, line in enumerate(out):
        if line.startswith("Udp:") and i + 1 < len(out):
            names, vals = line.split()[1:], out[i + 1].split()[1:]
            d = dict(zip(names, (int(v) for v in vals)))
            return {"RcvbufErrors": d.get("RcvbufErrors", 0), "InErrors": d.get("InErrors", 0)}
    return {"RcvbufErrors": 0, "InErrors": 0}


LINKS = ((NS_C, "c0"), (NS_P, "p0"), (NS_R, "n0"), (NS_R, "x0k"), (NS_R, "x0d"), (NS_SW, "sc"), (NS_SW, "sp"),
         (NS_SW, "sr"))


def softnet_drops():
    """/proc/net/softnet_stat (all CPUs, machine-wide): backlog drops, time squeezes."""
    drops = squeezes = 0
    for line in open("/proc/net/softnet_stat"):
        f = line.split()
        drops += int(f[1], 16)
        squeezes += int(f[2], 16)
    return {"backlog_drops": drops, "time_squeeze": squeezes}


def link_counters():
    """Drop and error counters of every veth in the topology (ip -s link, ethtool -S)."""
    out = {}
    for ns, dev in LINKS:
        c = {}
        r = sh(f"ip -n {ns} -s -j link show {dev}", check=False)
        try:
            st = json.loads(r.stdout)[0]["stats64"]
            for d in ("rx", "tx"):
                c[f"{d}_packets"] = st[d]["packets"]
                c[f"{d}_dropped"] = st[d]["dropped"]
                c[f"{d}_errors"] = st[d]["errors"]
        except (ValueError, KeyError, IndexError):
            pass
        for line in sh(f"ip netns exec {ns} ethtool -S {dev}", check=False).stdout.splitlines():
            k, _, v = line.strip().partition(": ")
            if ("drop" in k or "err" in k) and v.strip().isdigit():
                c[k] = int(v)
        out[f"{ns}/{dev}"] = c
    return out


def udp_snapshot():
    return {"udp": {ns: udp_counters(ns) for ns in (NS_C, NS_P, NS_R)}, "links": link_counters(),
            "softnet": softnet_drops()}


def udp_delta(a, b):
    """Differences, keeping only what moved (UDP counters always)."""
    d = {ns: {k: b["udp"][ns][k] - a["udp"][ns][k] for k in a["udp"][ns]} for ns in a["udp"]}
    links = {}
    for dev, c in b["links"].items():
        moved = {k: v - a["links"].get(dev, {}).get(k, 0) for k, v in c.items()
                 if "packets" not in k and v != a["links"].get(dev, {}).get(k, 0)}
        if moved:
            links[dev] = moved
    d["links"] = links
    d["softnet"] = {k: b["softnet"][k] - a["softnet"][k] for k in a["softnet"]}
    return d


# ---- hugepages -----------------------------------------------------------------

def hugepages_up(n):
    old = int(open(HUGE_NR).read())
    if old < n:
        state["huge_old"] = old
        state["huge_set"] = n
        with open(HUGE_NR, "w") as f:
            f.write(str(n))
    got = int(open(HUGE_NR).read())
    free = int(open(HUGE_NR.replace("nr_hugepages", "free_hugepages")).read())
    if free < n // 2:
        raise RuntimeError(f"only {free} free 2 MiB hugepages (nr_hugepages {got}); want {n}")
    os.makedirs(HUGE_DIR, exist_ok=True)
    if sh(f"mountpoint -q {HUGE_DIR}", check=False).returncode != 0:
        sh(f"mount -t hugetlbfs -o pagesize=2M nodev {HUGE_DIR}")
        state["huge_mounted"] = True
    log(f"hugepages: {got} x 2 MiB reserved ({free} free), hugetlbfs on {HUGE_DIR}")


def hugepages_down():
    sh(f"rm -f {HUGE_DIR}/{DPDK_PREFIX}*", check=False)
    if state["huge_mounted"]:
        sh(f"umount {HUGE_DIR}", check=False)
        sh(f"rmdir {HUGE_DIR}", check=False)
        state["huge_mounted"] = False
    if state["huge_old"] is not None:
        # Give back only what we added, and only if nobody changed the pool
        # since (another session on the machine may have raised it meanwhile).
        try:
            if int(open(HUGE_NR).read()) == state["huge_set"]:
                with open(HUGE_NR, "w") as f:
                    f.write(str(state["huge_old"]))
        except (OSError, ValueError):
            pass
        state["huge_old"] = None
    sh(f"rm -rf /var/run/dpdk/{DPDK_PREFIX}*", check=False)


# ---- processes -----------------------------------------------------------------

def start(argv, logpath):
    f = open(logpath, "w")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, text=True)
    p._bnc_log = f
    started.append(p)
    return p


def stop(p, sig=signal.SIGTERM, wait=10, twice=False):
    if p is None or p.poll() is not None:
        return
    p.send_signal(sig)
    if twice:  # turn-relay: the first SIGTERM starts the drain, the second ends it
        time.sleep(0.3)
        if p.poll() is None:
            p.send_signal(sig)
    try:
        p.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)
    p._bnc_log.close()


def stop_all():
    for p in reversed(started):
        try:
            stop(p, wait=5)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


def wait_listen(ns, port, proc, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited ({proc.returncode}) before listening")
        if sh(f"ip netns exec {ns} ss -Hlun 'sport = :{port}'", check=False).stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {ns} UDP {port}")


def metrics():
    r = sh(f"ip netns exec {NS_R} curl -s --max-time 2 http://127.0.0.1:{METRICS_PORT}/metrics", check=False)
    out = {}
    for line in r.stdout.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def relayed_by_path(m):
    return {path: sum(v for k, v in m.items() if k.startswith("turn_relayed_packets_total") and f'path="{path}"' in k)
            for path in ("dataplane", "socket")}


def threads_of(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            st = open(f"/proc/{pid}/task/{tid}/stat").read()
            psr = int(st[st.rfind(")") + 2:].split()[36])
            aff = sh(f"taskset -pc {tid}", check=False).stdout.strip().rpartition(":")[2].strip()
            out.append({"tid": int(tid), "comm": comm, "last_cpu": psr, "affinity": aff})
        except (OSError, ValueError, IndexError):
            pass
    return out


class Relay:
    """One relay under test, started fresh for each repetition."""

    def __init__(self, kind, a, out):
        self.kind, self.a, self.out = kind, a, out
        self.procs = []         # started here, stopped in reverse
        self.server_pids = []   # summed into the server's CPU
        self.watch_pids = []    # reported apart (the dataplane's polling worker)
        self.info = {}

    def turn_relay_config(self, rep, dataplane_sock=None):
        path = f"{self.out}/{self.kind}-{rep}.toml"
        with open(path, "w") as f:
            f.write(f"""[server]
listen = ["{RELAY_IP}:{TURN_PORT}"]
relay_ips = ["{RELAY_IP}"]
relay_port_min = 30000
relay_port_max = 49999
realm = "{REALM}"

[auth]
users = ["{USER}:{PASSWORD}"]
rest_secrets = []

# Quota and unauthenticated-rate limits lifted as in compare.sh (coturn has none by default).
[allocation]
max_per_user = 100000
max_total = 100000

# The peers are in 198.18.0.0/15 (benchmarking space), which the default deny list blocks.
[policy]
allow_peers = ["198.18.0.0/15"]
unauth_per_ip_per_s = 1000000

[metrics]
listen = "127.0.0.1:{METRICS_PORT}"

[drain]
deadline_s = 1
""")
            if dataplane_sock:
                f.write(f'\n[dataplane]\nsocket = "{dataplane_sock}"\n')
        return path

    def start(self, rep):
        a = self.a
        if self.kind == "coturn":
            relay_host_socket_mode()
            cmd = ["ip", "netns", "exec", NS_R, a.turnserver, "-n", f"--listening-ip={RELAY_IP}",
                   f"--listening-port={TURN_PORT}", f"--relay-ip={RELAY_IP}", "--min-port=30000",
                   "--max-port=49999", "--lt-cred-mech", f"--user={USER}:{PASSWORD}", f"--realm={REALM}",
                   "--allowed-peer-ip=198.18.0.0-198.19.255.255", "--no-tls", "--no-dtls", "--no-cli",
                   f"--db={self.out}/coturn-{rep}.db", "--log-file=stdout"]
            p = start(cmd, f"{self.out}/coturn-{rep}.log")
            self.procs.append(p)
            wait_listen(NS_R, TURN_PORT, p)
            self.server_pids = [p.pid]
            self.info["command"] = " ".join(cmd[4:])
        elif self.kind == "socket":
            relay_host_socket_mode()
            cfg = self.turn_relay_config(rep)
            p = start(["ip", "netns", "exec", NS_R, a.turn_relay, "--config", cfg], f"{self.out}/socket-{rep}.log")
            self.procs.append(p)
            wait_listen(NS_R, TURN_PORT, p)
            self.server_pids = [p.pid]
            self.info["command"] = f"turn-relay --config {cfg}"
        else:
            relay_host_dpdk_mode()
            sock = f"{self.out}/dataplane-{rep}.sock"
            cfg = self.turn_relay_config(rep, sock)
            p = start(["ip", "netns", "exec", NS_R, a.turn_relay, "--config", cfg], f"{self.out}/dpdk-relay-{rep}.log")
            self.procs.append(p)
            end = time.monotonic() + 10
            while not os.path.exists(sock) and time.monotonic() < end:
                time.sleep(0.1)
            prefix = f"{DPDK_PREFIX}{rep}"
            pmd_nic, pmd_exc = "net_af_xdp", f"net_{a.exc_pmd}"
            xa = f",{a.xdp_args}" if a.xdp_args else ""
            nic_args = f"iface=n0,start_queue=0,queue_count=1{xa}"
            exc_args = f"iface=x0d,start_queue=0,queue_count=1{xa}" if a.exc_pmd == "af_xdp" else "iface=x0d"
            dp_cmd = ["ip", "netns", "exec", NS_R, a.turn_dataplane, "-l", a.lcores, "-m", str(a.dp_mem_mb),
                      "--huge-dir", HUGE_DIR, "--no-pci", f"--file-prefix={prefix}", "--log-level=lib.eal:error",
                      f"--vdev={pmd_nic}0,{nic_args}", f"--vdev={pmd_exc}1,{exc_args}", "--",
                      "--nic", f"{pmd_nic}0", "--exc", f"{pmd_exc}1", "--ipc", sock, "--flows", str(a.flows)]
            # No --gw4: client and peers share the relay's L2 segment; next hops are
            # learned from the kernel's own egress on the exception port.
            dp = start(dp_cmd, f"{self.out}/dpdk-dataplane-{rep}.log")
            self.procs.append(dp)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                if dp.poll() is not None:
                    raise RuntimeError(f"turn-dataplane exited ({dp.returncode}); see {self.out}/dpdk-dataplane-{rep}.log")
                if metrics().get("turn_dataplane_connected") == 1:
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError("turn-dataplane did not attach to turn-relay within 30 s")
            wait_listen(NS_R, TURN_PORT, p)
            time.sleep(0.5)
            self.server_pids = [p.pid, dp.pid]
            ths = threads_of(dp.pid)
            workers = [t for t in ths if "worker" in t["comm"] or "lcore" in t["comm"]]
            self.watch_pids = [t["tid"] for t in workers]
            self.info["command"] = f"turn-relay --config {cfg}; " + " ".join(dp_cmd[4:])
            self.info["dataplane_threads"] = ths
            self.info["relay_threads"] = threads_of(p.pid)
            self.metrics0 = relayed_by_path(metrics())

    def stop(self, rep):
        res = {}
        if self.kind == "dpdk" and self.procs:
            m = relayed_by_path(metrics())
            res["relayed_by_path"] = {k: m[k] - self.metrics0.get(k, 0) for k in m}
        for p in reversed(self.procs):
            stop(p, sig=signal.SIGINT if p is not self.procs[0] else signal.SIGTERM,
                 twice=(self.kind != "coturn" and p is self.procs[0]), wait=15)
        if self.kind == "dpdk":
            counters = {}
            try:
                for ln in open(f"{self.out}/dpdk-dataplane-{rep}.log"):
                    parts = ln.split()
                    if len(parts) == 2 and parts[1].isdigit():
                        counters[parts[0]] = int(parts[1])
            except OSError:
                pass
            res["dataplane_counters"] = counters
            sh(f"rm -rf /var/run/dpdk/{DPDK_PREFIX}{rep} {HUGE_DIR}/{DPDK_PREFIX}{rep}*", check=False)
        self.procs = []
        return res


# ---- turn-load -------------------------------------------------------------------

def turn_load(a, relay, args, json_path, bound_s):
    cmd = ["ip", "netns", "exec", NS_C, a.turn_load, "--server", f"{RELAY_IP}:{TURN_PORT}",
           "--user", USER, "--password", PASSWORD, "--peer-addr", PEER_IP, "--peer-netns", NS_P,
           "--quiet", "--json", json_path] + args
    for pid in relay.server_pids:
        cmd += ["--server-pid", str(pid)]
    for tid in relay.watch_pids:
        cmd += ["--watch-pid", str(tid)]
    u0 = udp_snapshot()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=bound_s)
    u1 = udp_snapshot()
    if r.returncode != 0 or not os.path.exists(json_path):
        raise RuntimeError(f"turn-load failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    j = json.load(open(json_path))
    j["bnc_udp_drops_by_ns"] = udp_delta(u0, u1)
    json.dump(j, open(json_path, "w"), indent=1)
    return j


def traffic_args(a):
    return ["--allocations", str(a.allocs), "--threads", str(a.threads), "--mode", a.mode, "--size", str(a.size),
            "--grace", str(a.grace)]


def sweep_bound(a, n):
    return a.setup_timeout + n * (a.step_s + a.grace + 0.5) + 30


def run_sweep(a, relay, rates, tag):
    j = turn_load(a, relay, traffic_args(a) + ["--sweep", ",".join(str(int(r)) for r in rates),
                                               "--duration", str(a.step_s), "--setup-timeout", str(a.setup_timeout)],
                  f"{relay.out}/{tag}.json", sweep_bound(a, len(rates)))
    for p in j["sweep"]:
        p["run_udp_drops_by_ns"] = j["bnc_udp_drops_by_ns"]
        p["run_json"] = f"{tag}.json"
    return j["sweep"]


def zero_loss_search(a, relay, rep):
    """Chunked sweep up the rate list, stop at the first lossy chunk, then refine."""
    base = f"{relay.kind}-sweep-{rep}"
    phases = []
    rates = list(a.rates)
    lossy_at = None
    for i in range(0, len(rates), a.chunk):
        chunk = rates[i:i + a.chunk]
        got = run_sweep(a, relay, chunk, f"{base}-{i // a.chunk}")
        phases += got
        if any(p["lost"] for p in got) or any(p["offered_pps"] < 0.97 * p["target_pps"] for p in got):
            lossy_at = i
            break
        if time.monotonic() > a.deadline:
            break
    best, bound, first_lossy = evaluate(phases)
    refine = []
    if first_lossy is not None and a.refine > 0:
        lo = best if best > 0 else 0
        hi = first_lossy["target_pps"]
        if hi - lo > 0.08 * hi:
            step = (hi - lo) / (a.refine + 1)
            refine = [int(round(lo + step * (k + 1), -2)) for k in range(a.refine)]
            got = run_sweep(a, relay, refine, f"{base}-refine")
            b2, _, _ = evaluate(got)
            phases += got
            best = max(best, b2)
    return {"zero_loss": best, "lower_bound": bound, "phases": phases, "first_lossy": first_lossy,
            "refine_rates": refine, "stopped_chunk": lossy_at}


def evaluate(phases):
    """Highest offered rate before the first lossy phase (in rate order)."""
    best, bound, first = 0.0, True, None
    for p in phases:
        if p["lost"] != 0:
            bound, first = False, p
            break
        best = max(best, p["offered_pps"])
        if p["offered_pps"] < 0.97 * p["target_pps"]:
            break  # the harness fell short: lower bound
    return best, bound, first


def run_relay(a, kind, rep, out):
    relay = Relay(kind, a, out)
    res = {"kind": kind, "rep": rep, "loadavg_before": loadavg()}
    try:
        relay.start(rep)
        res.update(relay.info)
        log(f"rep {rep}: {kind}: zero-loss search")
        z = zero_loss_search(a, relay, rep)
        res["sweep"] = z
        half = max(1000, int(z["zero_loss"] / 2))
        log(f"rep {rep}: {kind}: zero-loss {z['zero_loss']:,.0f}/s{' (lower bound)' if z['lower_bound'] else ''};"
            f" latency at {half:,}/s")
        perf = None
        if a.perf and rep == 1:
            # Whole-machine call-graph samples while the half-rate phase runs (it
            # starts after turn-load's allocation setup, well within 2 s).
            perf = start(["perf", "record", "-a", "-g", "-F", "499", "-o", f"{out}/perf-{kind}.data", "--",
                          "sleep", str(a.half_s)], f"{out}/perf-{kind}.log")
            time.sleep(0.2)
        h = turn_load(a, relay, traffic_args(a) + ["--rate", str(half), "--duration", str(a.half_s),
                                                   "--setup-timeout", str(a.setup_timeout)],
                      f"{out}/{kind}-half-{rep}.json", sweep_bound(a, 1))
        res["half"] = h["traffic"]
        res["half_rate"] = half
        if perf is not None:
            perf.wait(timeout=a.half_s + 30)
        if a.common_rate > 0:
            log(f"rep {rep}: {kind}: latency and CPU at the common rate {a.common_rate:,}/s")
            c = turn_load(a, relay, traffic_args(a) + ["--rate", str(a.common_rate), "--duration", str(a.half_s),
                                                       "--setup-timeout", str(a.setup_timeout)],
                          f"{out}/{kind}-common-{rep}.json", sweep_bound(a, 1))
            res["common"] = c["traffic"]
        log(f"rep {rep}: {kind}: setup ({a.setup_n} allocations, {a.setup_threads} threads)")
        s = turn_load(a, relay, ["--allocations", str(a.setup_n), "--threads", str(a.setup_threads),
                                 "--mode", a.mode, "--setup-only", "--duration", str(a.setup_bound)],
                      f"{out}/{kind}-setup-{rep}.json", a.setup_bound + 40)
        res["setup"] = s["setup"]
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 - report and go on with the next relay
        res["ok"] = False
        res["error"] = str(e)
        log(f"rep {rep}: {kind}: FAILED: {e}")
    finally:
        res.update(relay.stop(rep))
        res["loadavg_after"] = loadavg()
    return res


# ---- summary -----------------------------------------------------------------------

def fmt(vals, digits=0, pre=""):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{pre}{med:,.{digits}f}"
    return f"{pre}{med:,.{digits}f} ({min(vals):,.{digits}f}-{max(vals):,.{digits}f})"


def cpu_split(h, grace):
    """(server CPU ns per relayed packet, same without the polling worker, worker's share of a core)."""
    tot = h.get("server_cpu_ns_per_relayed_packet")
    pk = 2.0 * h["received"]
    w = sum(v for v in h.get("watch_cpu_s_by_pid", {}).values() if v and v > 0)
    excl = (h["server_cpu_s"] - w) * 1e9 / pk if (tot is not None and pk) else None
    window = h.get("duration_s", 0) + grace
    busy = w / window if window else None
    return tot, excl, busy


def summarize(a, results, out, la0, la1):
    lines = []
    P = lines.append
    rows = {}
    for kind in a.relays:
        rs = [r for r in results if r["kind"] == kind and r.get("ok")]
        if not rs:
            rows[kind] = None
            continue
        row = {"zl": [], "lb": 0, "p50": [], "p99": [], "loss": [], "cpu": [], "cpu_excl": [], "busy": [],
               "setup": [], "setup_fail": 0, "half": [], "fast_share": []}
        for r in rs:
            row["zl"].append(r["sweep"]["zero_loss"])
            row["lb"] += r["sweep"]["lower_bound"]
            h = r["half"]
            row["half"].append(r["half_rate"])
            row["p50"].append(h["latency_us"]["p50"])
            row["p99"].append(h["latency_us"]["p99"])
            row["loss"].append(100 * h["loss_ratio"])
            tot, excl, busy = cpu_split(h, a.grace)
            row["cpu"].append(tot)
            if kind == "dpdk":
                row["cpu_excl"].append(excl)
                row["busy"].append(busy)
            row["setup"].append(r["setup"]["rate_per_s"])
            row["setup_fail"] += r["setup"]["failed"]
            if "relayed_by_path" in r:
                d = r["relayed_by_path"]
                tot_p = d.get("dataplane", 0) + d.get("socket", 0)
                if tot_p:
                    row["fast_share"].append(100 * d.get("dataplane", 0) / tot_p)
        row["n"] = len(rs)
        row["c_p50"] = [r["common"]["latency_us"]["p50"] for r in rs if "common" in r]
        row["c_p99"] = [r["common"]["latency_us"]["p99"] for r in rs if "common" in r]
        row["c_loss"] = [100 * r["common"]["loss_ratio"] for r in rs if "common" in r]
        row["c_cpu"] = [cpu_split(r["common"], a.grace)[0] for r in rs if "common" in r]
        row["c_excl"] = [cpu_split(r["common"], a.grace)[1] for r in rs if "common" in r]
        row["c_busy"] = [cpu_split(r["common"], a.grace)[2] for r in rs if "common" in r]
        rows[kind] = row

    reps_done = max([r["n"] for r in rows.values() if r] or [0])
    P(f"load average before: {' '.join(la0)}; after: {' '.join(la1)}")
    P("")
    P("| relay | runs | highest zero-loss (echoes/s) | latency run at (echoes/s) | p50 at half (us) | p99 at half (us) "
      "| loss at half (%) | relay CPU per relayed packet at half (ns) | setup (allocations/s) | setup failures |")
    P("|---|---|---|---|---|---|---|---|---|---|")
    for kind in a.relays:
        r = rows[kind]
        if r is None:
            P(f"| {LABEL[kind]} | 0 | failed: see below | | | | | | | |")
            continue
        lb = f" [≥: lower bound in {r['lb']} of {r['n']}]" if r["lb"] else ""
        cpu = fmt(r["cpu"])
        if kind == "dpdk":
            cpu += f"; without the polling worker: {fmt(r['cpu_excl'])}"
        P(f"| {LABEL[kind]} | {r['n']} | {fmt(r['zl'])}{lb} | {fmt(r['half'])} | {fmt(r['p50'], 1)} | "
          f"{fmt(r['p99'], 1)} | {fmt(r['loss'], 3)} | {cpu} | {fmt(r['setup'])} | {r['setup_fail']} |")
    P("")
    if a.common_rate > 0:
        P(f"At one common rate for all, {a.common_rate:,} echoes/s ({2 * a.common_rate:,} relayed packets/s):")
        P("")
        P("| relay | p50 (us) | p99 (us) | loss (%) | relay CPU per relayed packet (ns) |")
        P("|---|---|---|---|---|")
        for kind in a.relays:
            r = rows[kind]
            if r is None or not r["c_p50"]:
                continue
            cpu = fmt(r["c_cpu"])
            if kind == "dpdk":
                cpu += (f"; without the polling worker: {fmt(r['c_excl'])}; worker busy "
                        f"{fmt([100 * b for b in r['c_busy']])} % of a core")
            P(f"| {LABEL[kind]} | {fmt(r['c_p50'], 1)} | {fmt(r['c_p99'], 1)} | {fmt(r['c_loss'], 3)} | {cpu} |")
        P("")
    if rows.get("dpdk"):
        r = rows["dpdk"]
        P(f"dpdk: the dataplane worker lcore polls: it used {fmt([100 * b for b in r['busy']], 0)} % of a core "
          f"during the half-rate phase (by design), included in the CPU per packet above. "
          f"Share of relayed packets on the dataplane's fast path (turn-relay metrics, whole run): "
          f"{fmt(r['fast_share'], 1)} %.")
        P("")
    m = statistics.median
    c = rows.get("coturn")
    targets = {"socket": 1.5, "dpdk": 3.0}
    if c:
        P("| ratio to coturn (medians) | zero-loss rate | setup rate | p99 at half load | CPU per relayed packet |")
        P("|---|---|---|---|---|")
        for kind in ("socket", "dpdk"):
            r = rows.get(kind)
            if not r:
                continue
            ratio = lambda x, y: m(x) / m(y) if m(y) else float("nan")  # noqa: E731
            P(f"| {LABEL[kind]} / coturn | {'≥' if r['lb'] else ''}{ratio(r['zl'], c['zl']):.2f}x | "
              f"{ratio(r['setup'], c['setup']):.2f}x | {ratio(r['p99'], c['p99']):.2f}x | "
              f"{ratio(r['cpu'], c['cpu']):.2f}x |")
        P("")
        P("Targets (issue 5):")
        for kind in ("socket", "dpdk"):
            r = rows.get(kind)
            if not r:
                continue
            zr = m(r["zl"]) / m(c["zl"]) if m(c["zl"]) else float("nan")
            sr = m(r["setup"]) / m(c["setup"]) if m(c["setup"]) else float("nan")
            pr = m(r["p99"]) / m(c["p99"]) if m(c["p99"]) else float("nan")
            t = targets[kind]
            P(f"- {LABEL[kind]}: zero-loss {zr:.2f}x vs ≥{t}x: {'met' if zr >= t else 'MISSED'}"
              f"{' (lower bound)' if r['lb'] else ''}; setup {sr:.2f}x vs ≥2x: {'met' if sr >= 2 else 'MISSED'}; "
              f"p99 at half {pr:.2f}x vs ≤1x: {'met' if pr <= 1 else 'MISSED'}")
        P("")
    P("first lossy phase per run (kernel UDP drop counters by namespace over that whole sweep run):")
    for r in results:
        if not r.get("ok"):
            P(f"- {r['kind']} run {r['rep']}: FAILED: {r.get('error')}")
            continue
        f = r["sweep"]["first_lossy"]
        if f is None:
            P(f"- {r['kind']} run {r['rep']}: no loss up to {max(p['offered_pps'] for p in r['sweep']['phases']):,.0f}/s "
              f"offered (lower bound)")
        else:
            d = f.get("run_udp_drops_by_ns", {})
            drops = ", ".join(f"{ns} {v['RcvbufErrors']:,}" for ns, v in d.items() if ns.startswith("bnc_"))
            links = "; ".join(f"{dev} " + ", ".join(f"{k} {v:,}" for k, v in c.items())
                              for dev, c in d.get("links", {}).items())
            sn = d.get("softnet", {})
            drops += (f"; veth drops/errors: {links or 'none'}; softnet backlog drops {sn.get('backlog_drops', 0):,}, "
                      f"time squeezes {sn.get('time_squeeze', 0):,}")
            P(f"- {r['kind']} run {r['rep']}: target {f['target_pps']:,.0f}/s, offered {f['offered_pps']:,.0f}/s, "
              f"lost {f['lost']:,}; turn-load CPU {f.get('client_cpu_s', 0):.2f} s, relay CPU "
              f"{f.get('server_cpu_s', 0):.2f} s in the {f.get('duration_s', 0):g} s phase; UDP RcvbufErrors "
              f"over that turn-load run: {drops}")
    P("")
    P(f"median (min-max) of {reps_done} runs; one echo = two relayed packets; JSON and logs in {out}")
    text = "\n".join(lines)
    print(text)
    open(f"{out}/summary.md", "w").write(text + "\n")


# ---- main --------------------------------------------------------------------------

def main():
    root = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(root, "build"), help="build dir holding the three binaries")
    ap.add_argument("--turn-load"), ap.add_argument("--turn-relay"), ap.add_argument("--turn-dataplane")
    ap.add_argument("--turnserver", default="/usr/bin/turnserver")
    ap.add_argument("--out", default=f"/tmp/bnc-compare.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one short repetition (~2 minutes)")
    ap.add_argument("--relays", default=",".join(RELAYS), help="subset of coturn,socket,dpdk")
    ap.add_argument("--rates", default="10000,20000,30000,40000,50000,60000,70000,80000,90000,100000,120000,140000,"
                                       "160000,180000,200000")
    ap.add_argument("--chunk", type=int, default=4, help="sweep phases per turn-load run")
    ap.add_argument("--refine", type=int, default=3, help="rates tried between the last clean and first lossy one")
    ap.add_argument("--step-s", type=float, default=2.0)
    ap.add_argument("--grace", type=float, default=1.0)
    ap.add_argument("--half-s", type=float, default=5.0)
    ap.add_argument("--allocs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", default="channel", choices=("channel", "send"))
    ap.add_argument("--size", type=int, default=172)
    ap.add_argument("--setup-n", type=int, default=3000)
    ap.add_argument("--common-rate", type=int, default=10000,
                    help="one more phase at this rate for every relay (latency, CPU at equal load); 0: none")
    ap.add_argument("--setup-threads", type=int, default=4)
    ap.add_argument("--setup-bound", type=float, default=60)
    ap.add_argument("--setup-timeout", type=float, default=10)
    ap.add_argument("--lcores", default="0,1", help="dataplane EAL -l (main lcore, worker lcores)")
    ap.add_argument("--exc-pmd", default="af_xdp", choices=("af_xdp", "af_packet"))
    ap.add_argument("--xdp-args", default="", help="extra net_af_xdp devargs, e.g. busy_budget=0")
    ap.add_argument("--hugepages", type=int, default=512, help="2 MiB hugepages to reserve for the dataplane")
    ap.add_argument("--dp-mem-mb", type=int, default=512, help="EAL -m for the dataplane")
    ap.add_argument("--flows", type=int, default=8192)
    ap.add_argument("--budget-s", type=float, default=840, help="deadline for the whole run")
    ap.add_argument("--perf", action="store_true",
                    help="perf record -a -g during each relay's first half-rate phase (OUT/perf-RELAY.data)")
    a = ap.parse_args()
    if a.quick:
        a.reps = 1
        a.rates = "20000,40000,60000,80000,100000,120000,160000"
        a.chunk, a.refine = 4, 2
        a.step_s, a.grace, a.half_s = 1.0, 0.5, 3.0
        a.setup_n = 1000
        a.budget_s = min(a.budget_s, 170)
    a.rates = [float(x) for x in a.rates.split(",")]
    a.relays = [x for x in a.relays.split(",") if x]
    for x in a.relays:
        if x not in RELAYS:
            ap.error(f"unknown relay {x}")
    a.turn_load = a.turn_load or os.path.join(a.build, "bench/load/turn-load")
    a.turn_relay = a.turn_relay or os.path.join(a.build, "controlplane/turn-relay")
    a.turn_dataplane = a.turn_dataplane or os.path.join(a.build, "dataplane/turn-dataplane")
    if os.geteuid() != 0:
        sys.exit("netns_compare: needs root (namespaces, hugepages, AF_XDP)")
    need = [a.turn_load] + ([a.turnserver] if "coturn" in a.relays else []) + \
        ([a.turn_relay] if {"socket", "dpdk"} & set(a.relays) else []) + \
        ([a.turn_dataplane] if "dpdk" in a.relays else [])
    for f in need:
        if not os.access(f, os.X_OK):
            sys.exit(f"netns_compare: missing {f}")
    a.deadline = T0 + a.budget_s
    os.makedirs(a.out, exist_ok=True)

    def on_signal(sig, _frm):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    # A hard stop, whatever happens: cleanup still runs from the exception.
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(a.budget_s + 120))

    la0 = loadavg()
    results = []
    try:
        log(f"load average {' '.join(la0)}; building topology")
        build_topology()
        if "dpdk" in a.relays:
            hugepages_up(a.hugepages)
        with open(f"{a.out}/commands.txt", "w") as f:
            f.write(f"date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
                    f"machine: {os.cpu_count()} cores, {os.uname().release}, load average {' '.join(la0)}\n"
                    f"argv: {' '.join(sys.argv)}\nsettings: {json.dumps({k: v for k, v in vars(a).items()})}\n")
        for rep in range(1, a.reps + 1):
            order = a.relays[(rep - 1) % len(a.relays):] + a.relays[:(rep - 1) % len(a.relays)]
            for kind in order:
                if time.monotonic() > a.deadline:
                    log(f"deadline reached: skipping {kind} rep {rep}")
                    continue
                results.append(run_relay(a, kind, rep, a.out))
                json.dump(results, open(f"{a.out}/results.json", "w"), indent=1)
    except KeyboardInterrupt as e:
        log(f"interrupted: {e}")
    finally:
        stop_all()
        teardown_topology()
        hugepages_down()
    la1 = loadavg()
    with open(f"{a.out}/commands.txt", "a") as f:
        for r in results:
            if "command" in r:
                f.write(f"{r['kind']} rep {r['rep']}: {r['command']}\n")
    summarize(a, results, a.out, la0, la1)
    log("done")
    return 0 if results and all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
