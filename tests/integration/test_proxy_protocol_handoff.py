"""On a [tcp].proxy_protocol listener a header naming the 5-tuple of an open connection is
refused, "the newcomer is refused, never the open one, so a header cannot end another
client's connection and allocation" (docs/CONFIGURATION.md). read_proxy_header checks the
connections of its own event loop; a second connection with the same header that lands on
another loop is admitted there, and a ConnectionBind naming the first connection's loop hands
it over (StreamIo::tcp_handoff). The loop adopting it (StreamIo::adopt_all) must refuse it
too, not take the open connection of that 5-tuple for a stale one and close it (which ended
its allocation until a review found it).
"""

import struct
import time

import pytest

from conftest import log_tail, stop_process
from test_tcp_allocations import (ALLOCATE, A_CONNECTION_ID, A_PEER, A_TRANSPORT, CONNECT, CONNECTION_BIND,
                                  REFRESH, EchoPeer, Stream, error_code, start_tcp_relay, xor_addr)

LOOPS = 2


@pytest.fixture
def relay(tmp_path):
    r = start_tcp_relay(tmp_path, threads=LOOPS, extra="""[tcp]
proxy_protocol = ["127.0.0.1:{port}"]
proxy_protocol_from = ["127.0.0.1/32"]
[log]
level = "debug"
""")
    yield r
    stop_process(r.proc, second_signal_after=0.5)


def proxied(relay, user):
    """A connection through the 'proxy' (the test, from 127.0.0.1) whose header names the
    client 198.51.100.7:40000 -> 127.0.0.1:port."""
    s = Stream(relay.addr, user=user)
    s.s.sendall(f"PROXY TCP4 198.51.100.7 127.0.0.1 40000 {relay.port}\r\n".encode())
    return s


def test_header_tuple_handed_to_the_open_connections_loop_is_refused(relay):
    peer = EchoPeer()
    victim = proxied(relay, "alice")
    c, a, _ = victim.request(ALLOCATE, [(A_TRANSPORT, bytes([6, 0, 0, 0]))])
    assert c == 2, error_code(a)
    c, a, _ = victim.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peer.port))])
    assert c == 2, error_code(a)
    victim_loop = struct.unpack("!I", a[A_CONNECTION_ID])[0] % LOOPS
    # The same header again until it lands on the other loop (on the victim's it is refused).
    other = None
    for _ in range(40):
        s = proxied(relay, "bob")
        try:
            c, a, _ = s.request(REFRESH, [])  # 437 (no allocation): credentials for the bind
            if error_code(a) == 437:
                other = s
                break
        except (ConnectionError, OSError):
            pass
        s.close()
    assert other is not None, "precondition: the duplicate header never landed on the other loop"
    # A ConnectionBind for an id of the victim's loop (any id: unknown ids are answered there),
    # which hands the newcomer over to that loop: refused there, closed unanswered.
    bogus = (0x10000000 // LOOPS) * LOOPS + victim_loop
    with pytest.raises((ConnectionError, OSError)):
        other.request(CONNECTION_BIND, [(A_CONNECTION_ID, struct.pack("!I", bogus))])
    time.sleep(0.3)
    # The victim's connection and allocation are untouched.
    try:
        c, a, _ = victim.request(REFRESH, [])
        alive = c == 2
    except (ConnectionError, OSError):
        alive = False
    assert alive, "another connection's duplicate PROXY header, handed to the victim's loop, ended its allocation:\n" + \
        "\n".join(l for l in log_tail(relay.log, 20).splitlines() if "allocation" in l)
    text = relay.log.read_text()
    assert "names the 5-tuple of an open connection of another event loop" in text
    assert "allocation_connection_closed" not in text
    peer.close()
