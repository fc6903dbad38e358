"""RFC 8016 mobility: an allocation follows its client to a new address (MOBILITY-TICKET).

Clients:
  * coturn's `turnutils_uclient -M`, which asks for a ticket and, on every refresh, moves its
    allocation to a new socket (a new 5-tuple) with it: zero loss, and (turn-relay) the moves
    counted in `turn_mobility_moves_total`;
  * a hand-written UDP client that allocates with a ticket, moves to a new socket twelve
    times, and after every move relays through the same relayed address to an echo peer
    (Send indication out, Data indication back to the new socket), while the old 5-tuple
    gets 437. With several event loops (turn-relay's default: one per core) the new 5-tuple
    usually lands on another loop than the allocation's; twelve moves make it certain in
    practice (2^-12 chance per run that none does with two loops) that the hand-over between
    loops (`turn_mobility_forwarded_total`) is exercised.
Refusals (turn-relay): an altered or made-up ticket 400, an allocation that did not ask for a
ticket gets none (another user's credentials, 441, and mobility switched off, 405, are in the
unit tests: these servers have one user and mobility on). Against coturn (`TURN_SERVER=coturn`,
started with --mobility) the client tests run too; the relay's metrics and refusal codes are
turn-relay's; coturn's answer to the hand-written client's move never arrives (see below),
so that test is turn-relay's alone.
"""
from __future__ import annotations

import select
import socket
import struct
import subprocess
import time
from typing import Optional, Tuple

import pytest

from conftest import TurnServer, server_kind, stop_process
from test_tcp_tls import (MAGIC_BYTES, A_DATA, A_LIFETIME, A_REQUESTED_TRANSPORT, A_XOR_RELAYED, ALLOCATE, DATA, ERROR,
                          INDICATION, REFRESH, SUCCESS, UDP, Message, StreamClient, create_permission,
                          metric0, send_indication)
from test_uclient import LENGTH, UCLIENT, assert_no_loss

A_MOBILITY_TICKET = 0x8030
A_REQUESTED_ADDRESS_FAMILY = 0x0017
TIMEOUT_S = 5.0
MOVES = 12
BYSTANDERS = 32

turnrelay_only = pytest.mark.skipif(server_kind() != "turnrelay", reason="turn-relay's metrics and codes")


class UdpClient(StreamClient):
    """A TURN client over UDP whose socket can be replaced (a new local port: a new 5-tuple),
    keeping its credentials. The STUN side (transact, request) is StreamClient's."""

    def __init__(self, server: TurnServer, family: int = 4):
        self.server = server
        self.addr = server.addr(family)
        self.family = family
        self.buf = b""
        self.key = self.realm = self.nonce = None
        self.sock = self._socket()

    def _socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET6 if self.family == 6 else socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(self.addr)
        return s

    def move(self) -> socket.socket:
        """A new socket from now on; returns the old one (still open)."""
        old, self.sock = self.sock, self._socket()
        return old

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def read_frame(self, timeout: float = TIMEOUT_S):
        if not select.select([self.sock], [], [], max(0.0, timeout))[0]:
            raise socket.timeout("no datagram")
        d = self.sock.recv(65536)
        first, length = struct.unpack("!HH", d[:4])
        if 0x4000 <= first <= 0x7FFF:
            return "channel", (first, d[4:4 + length], len(d))
        if len(d) < 20 or d[4:8] != MAGIC_BYTES:
            return "other", d  # not for the tests (skipped by transact)
        return "stun", Message(d)

    def data_indication(self, timeout: float = TIMEOUT_S) -> bytes:
        """The payload of the next Data indication on the current socket."""
        deadline = time.monotonic() + timeout
        while True:
            kind, frame = self.read_frame(deadline - time.monotonic())
            if kind == "stun" and frame.type == DATA | INDICATION:
                return frame.get(A_DATA)


def mobile_allocation(c: UdpClient) -> Tuple[Tuple[str, int], bytes]:
    family = [(A_REQUESTED_ADDRESS_FAMILY, struct.pack("!B3x", 2))] if c.family == 6 else []
    r = c.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP), (A_MOBILITY_TICKET, b"")] + family)
    assert r.type == ALLOCATE | SUCCESS, f"Allocate failed: {r} ({r.error_code})"
    ticket = r.get(A_MOBILITY_TICKET)
    assert ticket, f"no MOBILITY-TICKET in the Allocate answer: {r}"
    return r.xor_addr(A_XOR_RELAYED), ticket


def mobility_refresh(c: UdpClient, ticket: bytes, lifetime: int = 600) -> Message:
    return c.request(REFRESH, [(A_LIFETIME, struct.pack("!I", lifetime)), (A_MOBILITY_TICKET, ticket)])


def loops(server: TurnServer) -> int:
    text = server.metrics() or ""
    return sum(1 for line in text.splitlines() if line.startswith("turn_event_loop_busy_ratio{"))


# coturn 4.6.1 (--mobility) logs this client's Refresh from the new socket as "REFRESH
# processed, success" but no answer reaches the new socket (nor the old one, connected or
# not); its own uclient -M works with it (test_uclient_mobility).
@turnrelay_only
@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_allocation_follows_the_client(server, echo_peer, family):
    moves0 = metric0(server, "turn_mobility_moves_total")
    forwarded0 = metric0(server, "turn_mobility_forwarded_total")
    # Bystanders: allocations of other clients on the same listener, spread over the loops.
    # The socket a move connects to the client joins the listener's SO_REUSEPORT group; if
    # that changed which loop the kernel picks for other 5-tuples, their Refreshes would
    # reach a loop without their allocation (437).
    bystanders = [UdpClient(server, family) for _ in range(BYSTANDERS)]
    for b in bystanders:
        b.allocate()
    c = UdpClient(server, family)
    relayed, ticket = mobile_allocation(c)
    peer = echo_peer.addr(family)
    create_permission(c, peer)
    seen = set()
    for i in range(MOVES + 1):
        if i > 0:
            old = c.move()
            r = mobility_refresh(c, ticket)
            assert r.type == REFRESH | SUCCESS, f"move {i}: {r} ({r.error_code})"
            fresh = r.get(A_MOBILITY_TICKET)
            assert fresh and fresh != ticket, f"move {i}: no new ticket"
            ticket = fresh
            # The old 5-tuple holds nothing any more.
            new, c.sock = c.sock, old
            gone = c.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 600))])
            c.sock = new
            old.close()
            assert gone.type == REFRESH | ERROR and gone.error_code == 437, f"move {i}: old 5-tuple {gone}"
        payload = f"move {i} via {c.local()}".encode()
        c.send(send_indication(peer, payload))
        assert c.data_indication() == payload, f"move {i}: the echo did not come back to the new 5-tuple"
        seen.add(c.local())
    assert len(seen) == MOVES + 1
    for k, b in enumerate(bystanders):
        r = b.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 0))])
        assert r.type == REFRESH | SUCCESS, f"bystander {k} {b.local()} lost its allocation's loop: {r}"
        b.close()
    # The peer always saw the same relayed address.
    assert echo_peer.sources() >= {relayed} and all(s[1] == relayed[1] for s in echo_peer.sources()
                                                    if s[0] == relayed[0])
    if server.kind == "turnrelay":
        assert metric0(server, "turn_mobility_moves_total") == moves0 + MOVES
        if loops(server) > 1:
            assert metric0(server, "turn_mobility_forwarded_total") > forwarded0, \
                "no move was handed between event loops"
    r = mobility_refresh(c, ticket, lifetime=0)
    assert r.type == REFRESH | SUCCESS
    c.close()


@turnrelay_only
def test_refusals(server):
    c = UdpClient(server)
    _, ticket = mobile_allocation(c)
    other = UdpClient(server)
    plain = UdpClient(server)
    r = plain.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)])
    assert r.type == ALLOCATE | SUCCESS and r.get(A_MOBILITY_TICKET) is None, \
        "an allocation that did not ask gets no ticket"
    altered = bytes([ticket[0] ^ 1]) + ticket[1:]
    r = mobility_refresh(other, altered)
    assert r.type == REFRESH | ERROR and r.error_code == 400, f"altered ticket: {r} ({r.error_code})"
    r = mobility_refresh(other, b"not a ticket")
    assert r.type == REFRESH | ERROR and r.error_code == 400, f"not a ticket: {r} ({r.error_code})"
    # `plain`'s 5-tuple has an allocation: a ticket there is an ordinary Refresh of it.
    r = mobility_refresh(plain, ticket)
    assert r.type == REFRESH | SUCCESS
    for x in (c, other, plain):
        x.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 0))])
        x.close()


def test_uclient_mobility(server, turnutils_peer):
    """coturn's uclient -M: a ticket with every allocation, each refresh from a new socket."""
    moves0 = metric0(server, "turn_mobility_moves_total")
    cmd = [UCLIENT, "-M", "-v", "-u", server.username, "-w", server.password, "-p", str(server.port),
           "-n", "60", "-l", str(LENGTH), "-m", "4", "-e", "127.0.0.1", "-r", str(turnutils_peer.port), "127.0.0.1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stop_process(p)
        pytest.fail(f"uclient -M did not finish in 60 s: {' '.join(cmd)}")
    text = out.decode(errors="replace")
    assert_no_loss(p.returncode, text, " ".join(cmd))
    assert "read_mobility_ticket: ERROR" not in text, "uclient refused the ticket"
    if server.kind == "turnrelay":
        assert metric0(server, "turn_mobility_moves_total") >= moves0 + 4, "uclient -M moved nothing"
