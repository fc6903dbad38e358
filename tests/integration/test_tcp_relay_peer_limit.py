"""RFC 6062 peer connections over [tcp].max_connections (the process-wide bound on peer
connections, Shared::peer_connections), refused as at the per-allocation limit
([allocation].max_tcp_peer_connections):

* a peer that connects to a permitted TCP allocation while the process already holds
  max_connections peer connections is closed and counted as
  turn_drops_total{reason="tcp_peer_limit"} (it was closed with no counter at all);
* a Connect refused for the same reason is answered 508 Insufficient Capacity (it was 447
  Connection Timeout or Failure, as if the peer had been unreachable).
"""

import os
import socket
import struct
import subprocess
import time
import urllib.request

import pytest

from conftest import find_turn_relay_bin, free_port, log_tail, relay_port_window, stop_process
from test_tcp_allocations import (ALLOCATE, A_PEER, A_RELAYED, A_TRANSPORT, CONNECT, CONNECTION_ATTEMPT,
                                  CREATE_PERMISSION, EchoPeer, Stream, error_code, unxor_addr, xor_addr)


@pytest.fixture
def relay(tmp_path):
    port = free_port(span=1)
    metrics = free_port(kinds=(socket.SOCK_STREAM,))
    lo, hi = relay_port_window()
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f"""
[server]
listen = ["127.0.0.1:{port}"]
listen_tcp = ["127.0.0.1:{port}"]
relay_ips = ["127.0.0.1"]
relay_port_min = {lo}
relay_port_max = {hi}
realm = "tcp6062.test"
threads = 1
[auth]
users = ["alice:alice-pw", "bob:bob-pw"]
[tcp]
max_connections = 2
[policy]
allow_peers = ["127.0.0.0/8"]
unauth_per_ip_per_s = 1000
[metrics]
listen = "127.0.0.1:{metrics}"
""")
    os.chmod(cfg, 0o600)
    log = tmp_path / "relay.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg)], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    r = type("Relay", (), {})()
    r.addr, r.log, r.proc, r.metrics = ("127.0.0.1", port), log, proc, metrics
    yield r
    stop_process(proc, second_signal_after=0.5)


def refusals(relay):
    text = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=3).read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith("turn_drops_total{") or l.startswith("turn_connections_closed_total{"))


def full_allocation(relay):
    """A TCP allocation with a permission and two accepted peers: the process's peer
    connections are at [tcp].max_connections (2)."""
    ctl = Stream(relay.addr)
    c, a, tid = ctl.request(ALLOCATE, [(A_TRANSPORT, bytes([6, 0, 0, 0]))])
    assert c == 2, error_code(a)
    relayed = unxor_addr(a[A_RELAYED], tid)
    c, a, _ = ctl.request(CREATE_PERMISSION, [(A_PEER, xor_addr("127.0.0.1", 0))])
    assert c == 2
    peers = []
    for _ in range(2):
        peers.append(socket.create_connection(relayed, timeout=5))
        m, cls, _, _ = ctl.indication()
        assert (m, cls) == (CONNECTION_ATTEMPT, 1)
    return ctl, relayed, peers


def test_peer_over_the_process_limit_is_counted(relay):
    ctl, relayed, peers = full_allocation(relay)
    before = refusals(relay)
    p = socket.create_connection(relayed, timeout=5)
    p.settimeout(3)
    try:
        assert p.recv(10) == b""  # closed by the relay (precondition)
    except ConnectionResetError:
        pass
    p.close()
    with pytest.raises(socket.timeout):
        ctl.indication(timeout=0.5)
    time.sleep(0.3)
    assert refusals(relay) > before, "a peer connection refused at [tcp].max_connections moved no counter"
    for s in peers + [ctl.s]:
        s.close()


def test_connect_over_the_process_limit_is_508(relay):
    ctl, relayed, peers = full_allocation(relay)
    peer = EchoPeer()
    c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peer.port))])
    assert c == 3
    assert error_code(a) == 508, (f"Connect refused for capacity ([tcp].max_connections peer connections) "
                                  f"answered {error_code(a)}, as if the peer had been unreachable")
    peer.close()
    for s in peers + [ctl.s]:
        s.close()
