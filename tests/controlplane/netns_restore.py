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
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402

NS_A, NS_B = "rst_a", "rst_b"
PORT, FIRST_SRC, N = 3478, 41000, 24
REALM, PASSWORD = "restore.test", "pw"
MAGIC = 0x2112A442


# ---- a minimal TURN client (long-term credentials), run inside a namespace ----

def attr(t, v):
    return struct.pack("!HH", t, len(v)) + v + b"\0" * ((4 - len(v) % 4) % 4)


def message(mtype, tid, attrs, key=None):
    body = b"".join(attrs)
    if key is not None:
        head = struct.pack("!HHI", mtype, len(body) + 24, MAGIC) + tid
        body += attr(0x0008, hmac.new(key, head + body, hashlib.sha1).digest())
    head = struct.pack("!HHI", mtype, len(body) + 8, MAGIC) + tid
    body += attr(0x8028, struct.pack("!I", (zlib.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF))
    return struct.pack("!HHI", mtype, len(body), MAGIC) + tid + body


def parse(data):
    mtype, mlen, _ = struct.unpack("!HHI", data[:8])
    attrs, off = {}, 20
    while off + 4 <= 20 + mlen:
        t, n = struct.unpack("!HH", data[off:off + 4])
        attrs.setdefault(t, data[off + 4:off + 4 + n])
        off += 4 + n + (4 - n % 4) % 4
    if (mtype & 0x0110) == 0x0100:
        return 200, attrs
    err = attrs.get(0x0009, b"\0\0\0\0")
    return (err[2] & 7) * 100 + err[3], attrs


def transact(s, msg, tid):
    for _ in range(3):
        s.sendto(msg, ("127.0.0.1", PORT))
        try:
            while True:
                data, _ = s.recvfrom(4096)
                if data[8:20] == tid:
                    return parse(data)
        except socket.timeout:
            continue
    return None, {}


def request(s, method, attrs, user):
    tid = os.urandom(12)
    code, a = transact(s, message(method, tid, attrs), tid)
    if code not in (401, 438):
        return code
    key = hashlib.md5(f"{user}:{REALM}:{PASSWORD}".encode()).digest()
    tid = os.urandom(12)
    full = attrs + [attr(0x0006, user.encode()), attr(0x0014, REALM.encode()), attr(0x0015, a[0x0015])]
    return transact(s, message(method, tid, full, key), tid)[0]


def clients(mode):
    """Every client's answer: Allocate (mode "allocate") or Refresh, from its own port."""
    out = {}
    for i in range(N):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        s.bind(("127.0.0.1", FIRST_SRC + i))
        lifetime = attr(0x000D, struct.pack("!I", 600))
        if mode == "allocate":
            out[i] = request(s, 0x0003, [attr(0x0019, bytes([17, 0, 0, 0])), lifetime], f"u{i}")
        else:
            out[i] = request(s, 0x0004, [lifetime], f"u{i}")
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


def stop(p):
    """A clean stop: the first signal starts the drain, the second ends it (the allocations are saved)."""
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


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
        stop(p)
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
            stop(p)
            check(p.returncode == 0, f"restart {k}: clean stop (exit {p.returncode})")
    finally:
        for p in procs:
            stop(p)
        teardown()
        if check.ok:
            subprocess.run(["rm", "-rf", work])
        else:
            print("logs kept in", work)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
