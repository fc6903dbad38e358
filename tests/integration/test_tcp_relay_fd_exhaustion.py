"""A TCP allocation's relayed listener paused for lack of descriptors
(StreamIo::pause_on_exhaustion) must not outlive its descriptor: when the allocation ends
and StreamIo::close_tcp_relay closes the listener, its paused entry goes too. Otherwise, once
the 100 ms are up, StreamIo::expire() re-arms that descriptor number with the dead listener's
epoll tag, and by then the number belongs to another socket (here the next allocation's UDP
relayed socket): its events go to the dead listener's slot and are ignored, the new
allocation never hears from its peer, and the loop spins on the unread, level-triggered
socket (as it did until a review found it).

Trigger: a TCP allocation with a permission; peers connect to its relayed address until
accept4() fails with EMFILE (turn-relay runs with a low open-files limit, which its own
warning and accept_paused code path are there for); the client then sends, in one write,
Refresh LIFETIME=0 and an Allocate for UDP relaying.
"""

import resource
import socket
import struct
import time

import pytest

from conftest import log_tail, stop_process
from test_tcp_allocations import (ALLOCATE, A_LIFETIME, A_PEER, A_REALM, A_TRANSPORT, A_NONCE, A_USERNAME,
                                  CREATE_PERMISSION, REFRESH, decode, encode, error_code, max_busy,
                                  permitted_tcp_allocation, start_tcp_relay, xor_addr)

SEND, DATA = 0x006, 0x007
A_DATA = 0x0013
NOFILE = 48


@pytest.fixture
def relay(tmp_path):
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

    r = start_tcp_relay(tmp_path, extra="[allocation]\nmax_tcp_peer_connections = 1000\n", preexec_fn=limit)
    yield r
    stop_process(r.proc, second_signal_after=0.5)


def test_paused_relay_listener_entry_ends_with_its_descriptor(relay, echo_peer):
    echo = echo_peer
    peers = []
    try:
        ctl, relayed = permitted_tcp_allocation(relay)
        # Peers until the relay runs out of descriptors (its accept4 fails: EMFILE).
        for _ in range(NOFILE + 8):
            p = socket.socket()
            p.settimeout(0.5)
            try:
                p.connect(relayed)
            except OSError:
                p.close()
                break
            peers.append(p)
        deadline = time.monotonic() + 5
        while "accept_paused" not in relay.log.read_text():
            assert time.monotonic() < deadline, "precondition: the relay never ran out of descriptors\n" + log_tail(relay.log)
            time.sleep(0.01)
        # At once (the listener is paused for 100 ms at a time, again and again while peers
        # wait in its backlog): end the TCP allocation, and allocate for UDP in the same write.
        auth = [(A_USERNAME, b"alice"), (A_REALM, ctl.realm), (A_NONCE, ctl.nonce)]
        m1, t1 = encode(REFRESH, 0, [(A_LIFETIME, struct.pack("!I", 0))] + auth, ctl.key)
        m2, t2 = encode(ALLOCATE, 0, [(A_TRANSPORT, bytes([17, 0, 0, 0]))] + auth, ctl.key)
        ctl.s.sendall(m1 + m2)
        got = {}
        while len(got) < 2:
            m, cls, rtid, at = decode(ctl.recv_msg())
            if rtid in (t1, t2):
                got[rtid] = (cls, at)
        assert got[t1][0] == 2, error_code(got[t1][1])
        assert got[t2][0] == 2, error_code(got[t2][1])
        for p in peers:
            p.close()
        peers.clear()
        time.sleep(0.3)  # the paused entry's 100 ms are up
        # The new UDP allocation: a permission, a Send indication to the echo peer, its answer
        # back as a Data indication.
        c, a, _ = ctl.request(CREATE_PERMISSION, [(A_PEER, xor_addr("127.0.0.1", echo.port))])
        assert c == 2, error_code(a)
        payload = b"are you there?"
        ind, _ = encode(SEND, 1, [(A_PEER, xor_addr("127.0.0.1", echo.port)), (A_DATA, payload)])
        answered = False
        for _ in range(3):
            ctl.s.sendall(ind)
            end = time.monotonic() + 1.0
            try:
                while time.monotonic() < end:
                    m, cls, _, at = decode(ctl.recv_msg(timeout=max(0.05, end - time.monotonic())))
                    if (m, cls) == (DATA, 1) and at.get(A_DATA, b"")[:len(payload)] == payload:
                        answered = True
                        break
            except (socket.timeout, TimeoutError):
                pass
            if answered:
                break
        assert relay.proc.poll() is None, "turn-relay died\n" + log_tail(relay.log)
        busy = max_busy(relay)
        assert answered, (f"the new UDP allocation never got its peer's answer (event loop busy ratio {busy:.2f}):"
                          " its relayed socket's epoll entry was rewritten with the closed TCP relay listener's tag")
        assert busy < 0.5, f"event loop spinning ({busy:.2f})"
    finally:
        for p in peers:
            p.close()
