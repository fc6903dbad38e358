"""RFC 6062 peer connections over [tcp].max_connections (the process-wide bound on peer
connections, Shared::peer_connections), refused as at the per-allocation limit
([allocation].max_tcp_peer_connections):

* a peer that connects to a permitted TCP allocation while the process already holds
  max_connections peer connections is closed and counted as
  turn_drops_total{reason="tcp_peer_limit"} (it was closed with no counter at all);
* a Connect refused for the same reason is answered 508 Insufficient Capacity (it was 447
  Connection Timeout or Failure, as if the peer had been unreachable).
"""

import socket
import time

import pytest

from conftest import stop_process
from test_tcp_allocations import (A_PEER, CONNECT, CONNECTION_ATTEMPT, EchoPeer, error_code, metric,
                                  permitted_tcp_allocation, start_tcp_relay, xor_addr)

LIMIT_DROPS = 'turn_drops_total{reason="tcp_peer_limit"}'


@pytest.fixture
def relay(tmp_path):
    r = start_tcp_relay(tmp_path, extra="[tcp]\nmax_connections = 2\n")
    yield r
    stop_process(r.proc, second_signal_after=0.5)


def full_allocation(relay):
    """A TCP allocation with a permission and two accepted peers: the process's peer
    connections are at [tcp].max_connections (2)."""
    ctl, relayed = permitted_tcp_allocation(relay)
    peers = []
    for _ in range(2):
        peers.append(socket.create_connection(relayed, timeout=5))
        m, cls, _, _ = ctl.indication()
        assert (m, cls) == (CONNECTION_ATTEMPT, 1)
    return ctl, relayed, peers


def test_peer_over_the_process_limit_is_counted(relay):
    ctl, relayed, peers = full_allocation(relay)
    before = metric(relay, LIMIT_DROPS)
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
    assert metric(relay, LIMIT_DROPS) == before + 1, "a peer connection refused at [tcp].max_connections is not counted"
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
