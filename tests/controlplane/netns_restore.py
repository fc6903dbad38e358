#!/usr/bin/env python3
"""Restored allocations stay reachable when the kernel's SO_REUSEPORT hash changes.

turn-relay with two event loops saves its UDP allocations per loop ([state].dir); a loop's
allocations belong to the clients the kernel's SO_REUSEPORT hash sends to that loop's socket.
That hash mixes a secret drawn once per boot and a value per network namespace, so after a
reboot, or in another namespace (a container restarted), most clients would reach the other
loop, which does not know them (437), while their restored allocation holds its port and the
user's quota. The relay keeps the saving process's identity (boot id and namespace) in the
state directory; a process whose identity differs gives each restored allocation a client
path (a socket connected to its client, which the kernel prefers to the listeners).

  1. 24 users (max_per_user = 1) allocate from 24 client ports in namespace A;
  2. turn-relay stops cleanly and starts again on the same state in namespace B: every client
     (from the same ports, in B) refreshes its allocation (200), and the relay said
     client_paths=yes;
  3. it stops and starts again in B: the same, with client_paths=no (same hash).

Loopback inside two namespaces made and removed here. Usage: netns_restore.py <turn-relay> (root)
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402
from netns_offload_e2e import Turn, attr, stop_relay  # noqa: E402  (the namespace scripts' TURN client)

NS_A, NS_B = "rst_a", "rst_b"
PORT, FIRST_SRC, N = 3478, 41000, 24
REALM, PASSWORD = "restore.test", "pw"


def clients(mode):
    """Every client's answer, run inside a namespace: Allocate (mode "allocate") or Refresh,
    from its own port; 200, the error code, or None when nothing came."""
    out = {}
    lifetime = attr(0x000D, struct.pack("!I", 600))
    for i in range(N):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        s.bind(("127.0.0.1", FIRST_SRC + i))
        turn = Turn(s, ("127.0.0.1", PORT), f"u{i}", PASSWORD)
        method, body = (0x0003, attr(0x0019, bytes([17, 0, 0, 0])) + lifetime) if mode == "allocate" else (0x0004, lifetime)
        try:
            t, a = turn.authed(method, body)
            err = a.get(0x0009, b"\0\0\0\0")
            out[i] = 200 if t & 0x0110 == 0x0100 else (err[2] & 7) * 100 + err[3]
        except RuntimeError:
            out[i] = None
        s.close()
    return out


# ---- the test ----

def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def teardown():
    for ns in (NS_A, NS_B):
        sh(f"ip netns del {ns}", check=False)


def run_clients(ns, mode):
    p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--clients", mode],
                       capture_output=True, text=True, timeout=120)
    try:
        return {int(k): v for k, v in json.loads(p.stdout).items()}
    except ValueError:
        return {"error": p.stdout + p.stderr}


def start(relay, ns, cfg, log):
    f = open(log, "wb")
    p = subprocess.Popen(["ip", "netns", "exec", ns, relay, "--config", cfg], stdout=f, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline and "event=started" not in open(log, errors="replace").read():
        if p.poll() is not None:
            break
        time.sleep(0.1)
    return p


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--clients":
        print(json.dumps(clients(sys.argv[2])))
        return 0
    relay = sys.argv[1]
    check = Checks()
    work = tempfile.mkdtemp(prefix="netns-restore-")
    cfg = os.path.join(work, "relay.toml")
    users = ", ".join(f'"u{i}:{PASSWORD}"' for i in range(N))
    with open(cfg, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{PORT}"]
relay_ips = ["127.0.0.1"]
relay_port_min = 62000
relay_port_max = 62199
realm = "{REALM}"
threads = 2
[auth]
users = [{users}]
nonce_lifetime_s = 3600
[allocation]
max_per_user = 1
[policy]
unauth_per_ip_per_s = 100000
[state]
dir = "{work}/state"
save_interval_ms = 100
[metrics]
listen = ""
[log]
format = "text"
""")
    procs = []
    try:
        teardown()
        for ns in (NS_A, NS_B):
            sh(f"ip netns add {ns}")
            sh(f"ip -n {ns} link set lo up")
        logs = [os.path.join(work, f"relay{i}.log") for i in range(3)]
        p = start(relay, NS_A, cfg, logs[0])
        procs.append(p)
        got = run_clients(NS_A, "allocate")
        check(got == {i: 200 for i in range(N)}, f"namespace A: {N} allocations ({got})")
        stop_relay(p)
        for k, (ns, paths) in enumerate([(NS_B, "yes"), (NS_B, "no")], start=1):
            p = start(relay, ns, cfg, logs[k])
            procs.append(p)
            log = open(logs[k], errors="replace").read()
            check(f"event=state_restored allocations={N} saved={N}" in log,
                  f"restart {k} in namespace B: all {N} restored")
            check(f"client_paths={paths}" in log, f"restart {k}: client_paths={paths} (another hash: {paths})")
            got = run_clients(ns, "refresh")
            bad = {i: c for i, c in got.items() if c != 200}
            check(not bad, f"restart {k}: every client refreshes its restored allocation (not 200: {bad})")
            stop_relay(p)
            check(p.returncode == 0, f"restart {k}: clean stop (exit {p.returncode})")
    finally:
        for p in procs:
            stop_relay(p)
        teardown()
        if check.ok:
            subprocess.run(["rm", "-rf", work])
        else:
            print("logs kept in", work)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
