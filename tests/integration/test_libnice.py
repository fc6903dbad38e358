"""libnice (gir1.2-nice-0.1 0.1.21, driven through PyGObject): two NiceAgents in one GLib
main context connect through the server under test.

Agent A (controlling) has the server as its TURN relay (nice_agent_set_relay_info,
NICE_RELAY_TYPE_TURN_UDP, user demo) and libnice's `force-relay` property, so its only
local candidates are relayed ones. Agent B (controlled) has no relay and only a host
candidate on loopback. Both agents get the loopback address of the family under test as
their only local address (nice_agent_add_local_address), so nothing leaves loopback.
Credentials and candidates are exchanged in process; the test waits for
NICE_COMPONENT_STATE_READY on both sides, sends 20 datagrams each way (one of 1000 bytes)
with nice_agent_send and receives them through nice_agent_attach_recv callbacks.

What PyGObject cannot call: the typelib marks nice_agent_attach_recv not introspectable
(its callback takes a raw buffer), nice_agent_get_selected_pair's NiceCandidate** out
arguments come out as plain in-arguments, and Nice.Agent.send takes a UTF-8 `str`. Those
three functions are therefore called from libnice.so.10 with ctypes, on the agent's
GObject pointer; everything else goes through gi. get_selected_pair's candidates are read
as the C struct: `NiceCandidateType type; NiceCandidateTransport transport; NiceAddress
addr` (a sockaddr union at offset 8), which is libnice's public, stable layout.

IPv6: libnice 0.1.21 never sends REQUESTED-ADDRESS-FAMILY in its Allocate (nor
ADDITIONAL-ADDRESS-FAMILY), and without it RFC 8656 section 7.2 has the server allocate an
IPv4 relayed address, whatever the family of the client's 5-tuple. So a libnice agent
talking to TURN at [::1] gets a 127.0.0.1 relayed candidate (seen with turn-relay and
coturn), which cannot pair with a ::1 host candidate. The IPv6 case is therefore: A talks
TURN over ::1 (its only local address is ::1), its relayed candidate is on 127.0.0.1, and B
has a host candidate on 127.0.0.1 — an IPv6 client with an IPv4 relay. An IPv6 relayed
candidate cannot be obtained from libnice.

Wrong password: libnice answers the first 401 with a long-term-credential Allocate, gets
a second 401 and gives up on that relay; it reports nothing else (no error signal), it
just emits candidate-gathering-done with no relayed candidate (G_MESSAGES_DEBUG=libnice
shows `stun_turn_process/disc ... res 2` twice, i.e. STUN_USAGE_TURN_RETURN_ERROR, then
"Candidate gathering FINISHED"). With force-relay A then has no local candidate at all, its
component stays in "gathering" (it does not go to FAILED) and never reaches READY; the test
waits a few seconds for that.

Not usable here: nice_candidate_relay_address() on a candidate returned by
get_local_candidates() crashes libnice 0.1.21 (the copy lacks the TURN data it reads), so
the TURN server an allocation went through is checked in turn-relay's log instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import socket
import struct
import time

import pytest

try:
    import gi
    gi.require_version("Nice", "0.1")
    gi.require_version("GLib", "2.0")
    from gi.repository import GLib, Nice
except (ImportError, ValueError) as e:  # no python3-gi, or no gir1.2-nice-0.1
    pytest.skip(f"libnice GObject bindings unavailable (python3-gi + gir1.2-nice-0.1): {e}",
                allow_module_level=True)

MESSAGES = 20            # each way
BIG = 1000               # size of the one large message each way
GATHER_TIMEOUT_S = 10
READY_TIMEOUT_S = 20
RECV_TIMEOUT_S = 10
WRONG_PASSWORD_READY_WAIT_S = 4

# -------------------------------------------------------------------------------------
# libnice functions PyGObject cannot call (see the module docstring)

_libnice = ctypes.CDLL(ctypes.util.find_library("nice") or "libnice.so.10")
_libglib = ctypes.CDLL(ctypes.util.find_library("glib-2.0") or "libglib-2.0.so.0")

_RECV_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
                              ctypes.c_uint, ctypes.POINTER(ctypes.c_char), ctypes.c_void_p)
_libnice.nice_agent_attach_recv.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
                                            ctypes.c_void_p, _RECV_FUNC, ctypes.c_void_p]
_libnice.nice_agent_attach_recv.restype = ctypes.c_int
_libnice.nice_agent_send.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_char_p]
_libnice.nice_agent_send.restype = ctypes.c_int
_libnice.nice_agent_get_selected_pair.argtypes = [
    ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
_libnice.nice_agent_get_selected_pair.restype = ctypes.c_int
_libglib.g_main_context_default.restype = ctypes.c_void_p

ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _gptr(obj) -> int:
    """The C pointer of a GObject wrapped by PyGObject."""
    return ctypes.pythonapi.PyCapsule_GetPointer(obj.__gpointer__, None)


def _c_candidate(ptr: int):
    """(type, ip, port) of a NiceCandidate* (type and the sockaddr union at offset 8)."""
    ctype = ctypes.c_int.from_address(ptr).value
    sa = ctypes.string_at(ptr + 8, 28)
    fam = struct.unpack_from("=H", sa, 0)[0]
    port = struct.unpack_from("!H", sa, 2)[0]
    if fam == socket.AF_INET:
        ip = socket.inet_ntop(socket.AF_INET, sa[4:8])
    elif fam == socket.AF_INET6:
        ip = socket.inet_ntop(socket.AF_INET6, sa[8:24])
    else:
        ip = f"<family {fam}>"
    return Nice.CandidateType(ctype), ip, port


def _cand(c: "Nice.Candidate"):
    return c.type, c.addr.dup_string(), c.addr.get_port()


# -------------------------------------------------------------------------------------
# Bounded GLib main-context iteration


def run_until(pred, timeout: float) -> bool:
    """Iterate the default main context until pred() or timeout; a 20 ms GLib timeout source
    keeps each blocking iteration short. Returns pred()."""
    ctx = GLib.MainContext.default()
    tick = GLib.timeout_source_new(20)
    tick.set_callback(lambda *_: True)
    tick.attach(ctx)
    try:
        deadline = time.monotonic() + timeout
        while not pred() and time.monotonic() < deadline:
            ctx.iteration(True)
        return bool(pred())
    finally:
        tick.destroy()


def gather_both(a, b):
    """Starts candidate gathering on both agents and waits until both are done."""
    a.gather()
    b.gather()
    assert run_until(lambda: a.gathered and b.gathered, GATHER_TIMEOUT_S), \
        f"gathering not done in {GATHER_TIMEOUT_S}s (A {a.gathered}, B {b.gathered})"


def drain(seconds: float) -> None:
    run_until(lambda: False, seconds)


# -------------------------------------------------------------------------------------
# Agents


class Agent:
    def __init__(self, name: str, host_ip: str, controlling: bool, turn=None,
                 force_relay: bool = False):
        self.name = name
        self.agent = Nice.Agent.new(GLib.MainContext.default(), Nice.Compatibility.RFC5245)
        self.agent.set_property("controlling-mode", controlling)
        self.agent.set_property("upnp", False)
        self.agent.set_property("ice-tcp", False)
        self.agent.set_property("force-relay", force_relay)
        addr = Nice.Address.new()
        assert addr.set_from_string(host_ip)
        self.agent.add_local_address(addr)
        self.stream = self.agent.add_stream(1)
        assert self.stream > 0
        if turn is not None:
            ip, port, user, password = turn
            assert self.agent.set_relay_info(self.stream, 1, ip, port, user, password,
                                             Nice.RelayType.UDP)  # NICE_RELAY_TYPE_TURN_UDP
        self.gathered = False
        self.states = []
        self.selected_signal = None
        self.received = []
        self.agent.connect("candidate-gathering-done", self._on_gathered)
        self.agent.connect("component-state-changed", self._on_state)
        self.agent.connect("new-selected-pair-full", self._on_selected)
        # Keep the ctypes callback alive as long as the agent.
        self._recv_cb = _RECV_FUNC(self._on_recv)
        assert _libnice.nice_agent_attach_recv(_gptr(self.agent), self.stream, 1,
                                               _libglib.g_main_context_default(),
                                               self._recv_cb, None)

    def _on_gathered(self, agent, stream_id):
        self.gathered = True

    def _on_state(self, agent, stream_id, component_id, state):
        self.states.append(Nice.ComponentState(state))

    def _on_selected(self, agent, stream_id, component_id, lcand, rcand):
        self.selected_signal = (_cand(lcand), _cand(rcand))

    def _on_recv(self, agent, stream_id, component_id, length, buf, data):
        self.received.append(ctypes.string_at(buf, length))

    @property
    def state(self):
        return Nice.ComponentState(self.agent.get_component_state(self.stream, 1))

    def gather(self):
        assert self.agent.gather_candidates(self.stream), f"{self.name}: gather_candidates failed"

    def local_candidates(self):
        return self.agent.get_local_candidates(self.stream, 1)

    def credentials(self):
        ok, ufrag, pwd = self.agent.get_local_credentials(self.stream)
        assert ok
        return ufrag, pwd

    def set_remote(self, other: "Agent"):
        ufrag, pwd = other.credentials()
        assert self.agent.set_remote_credentials(self.stream, ufrag, pwd)
        n = self.agent.set_remote_candidates(self.stream, 1, other.local_candidates())
        assert n == len(other.local_candidates()), f"{self.name}: set_remote_candidates -> {n}"

    def send(self, payload: bytes) -> int:
        return _libnice.nice_agent_send(_gptr(self.agent), self.stream, 1, len(payload), payload)

    def selected_pair(self):
        lp, rp = ctypes.c_void_p(), ctypes.c_void_p()
        if not _libnice.nice_agent_get_selected_pair(_gptr(self.agent), self.stream, 1,
                                                     ctypes.byref(lp), ctypes.byref(rp)):
            return None
        return _c_candidate(lp.value), _c_candidate(rp.value)

    def close(self):
        """nice_agent_close_async (deletes the TURN allocation: Refresh LIFETIME 0), bounded."""
        closed = []
        self.agent.close_async(lambda *_: closed.append(True))
        run_until(lambda: closed, 3)
        self.agent.remove_stream(self.stream)


def _loopback(family: int) -> str:
    return "127.0.0.1" if family == 4 else "::1"


def _payloads(tag: bytes):
    msgs = [tag + b" #%02d " % i + os.urandom(16 + 7 * i) for i in range(MESSAGES - 1)]
    msgs.insert(MESSAGES // 2, tag + b" big " + os.urandom(BIG - len(tag) - 5))
    assert len(msgs) == MESSAGES and len(msgs[MESSAGES // 2]) == BIG
    return msgs


def _relayed_metrics(server):
    return {d: server.metric("turn_relayed_packets_total", direction=d)
            for d in ("client_to_peer", "peer_to_client")}


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_relay_only_agent_exchanges_datagrams(server, family):
    host = _loopback(family)     # A's local address and the TURN server's address
    peer_host = "127.0.0.1"      # relayed family and B's host (see the module docstring)
    before = _relayed_metrics(server) if server.kind == "turnrelay" else None
    a = Agent("A", host, controlling=True, force_relay=True,
              turn=(host, server.port, server.username, server.password))
    b = Agent("B", peer_host, controlling=False)
    try:
        gather_both(a, b)

        a_cands = [_cand(c) for c in a.local_candidates()]
        b_cands = [_cand(c) for c in b.local_candidates()]
        assert a_cands, "A (force-relay) has no local candidate: the TURN allocation failed"
        for ctype, ip, port in a_cands:
            assert ctype == Nice.CandidateType.RELAYED, f"A has a non-relayed candidate: {a_cands}"
            assert ip == peer_host, f"A's relayed candidate not on {peer_host}: {a_cands}"
            assert server.relay_min <= port <= server.relay_max, \
                f"relayed port {port} outside {server.relay_min}..{server.relay_max}"
        if server.kind == "turnrelay":
            # The allocation was made over the family under test (A's only local address).
            client = re.escape("127.0.0.1:" if family == 4 else "[::1]:")
            for _, ip, port in a_cands:
                assert re.search(rf"event=allocation_created .*client={client}\d+ .*"
                                 rf"relayed={re.escape(ip)}:{port} ", server.log()), \
                    f"no allocation from {host} for relayed {ip}:{port} in the server log"
        assert b_cands and all(t == Nice.CandidateType.HOST and ip == peer_host
                               for t, ip, _ in b_cands), f"B's candidates: {b_cands}"

        a.set_remote(b)
        b.set_remote(a)
        ready = Nice.ComponentState.READY
        assert run_until(lambda: a.state == ready and b.state == ready, READY_TIMEOUT_S), \
            (f"not READY in {READY_TIMEOUT_S}s: A {a.state.value_nick} {a.states}, "
             f"B {b.state.value_nick} {b.states}")

        # Selected pairs: A uses its relayed candidate towards B's host candidate; B talks to
        # A's relayed address.
        pa, pb = a.selected_pair(), b.selected_pair()
        assert pa is not None and pb is not None, f"no selected pair (A {pa}, B {pb})"
        (la_type, la_ip, la_port), (ra_type, ra_ip, ra_port) = pa
        assert la_type == Nice.CandidateType.RELAYED, f"A's selected local candidate: {pa}"
        assert (la_ip, la_port) in [(ip, port) for _, ip, port in a_cands], pa
        assert (ra_ip, ra_port) in [(ip, port) for _, ip, port in b_cands], pa
        assert (pb[1][1], pb[1][2]) == (la_ip, la_port), \
            f"B's selected remote {pb[1]} is not A's relayed candidate {pa[0]}"
        assert a.selected_signal is not None and a.selected_signal[0][0] == \
            Nice.CandidateType.RELAYED, f"new-selected-pair-full for A: {a.selected_signal}"

        a_to_b, b_to_a = _payloads(b"A->B"), _payloads(b"B->A")
        for i in range(MESSAGES):
            assert a.send(a_to_b[i]) == len(a_to_b[i]), f"A send #{i} failed"
            assert b.send(b_to_a[i]) == len(b_to_a[i]), f"B send #{i} failed"
            drain(0.005)
        assert run_until(lambda: len(a.received) >= MESSAGES and len(b.received) >= MESSAGES,
                         RECV_TIMEOUT_S), \
            f"received A {len(a.received)}/{MESSAGES}, B {len(b.received)}/{MESSAGES}"
        drain(0.2)  # anything extra (duplicates) would show up now
        assert b.received == a_to_b, "B did not receive A's datagrams intact and in order"
        assert a.received == b_to_a, "A did not receive B's datagrams intact and in order"
        assert a.selected_pair()[0][0] == Nice.CandidateType.RELAYED

        if server.kind == "turnrelay":
            after = _relayed_metrics(server)
            for d, n in before.items():
                assert n is not None and after[d] is not None, f"turn_relayed_packets_total{{{d}}}"
                assert after[d] - n >= MESSAGES, \
                    f"turn_relayed_packets_total{{direction={d}}} grew {after[d] - n} < {MESSAGES}"
    finally:
        a.close()
        b.close()
        drain(0.2)


def test_wrong_password_gives_no_relayed_candidate(server):
    if server.kind == "turnrelay":
        failures_before = server.metric("turn_auth_failures_total")
        allocations_before = server.log().count("event=allocation_created")
    a = Agent("A", "127.0.0.1", controlling=True, force_relay=True,
              turn=("127.0.0.1", server.port, server.username, "wrong-password"))
    b = Agent("B", "127.0.0.1", controlling=False)
    try:
        gather_both(a, b)
        a_cands = [_cand(c) for c in a.local_candidates()]
        assert not any(t == Nice.CandidateType.RELAYED for t, _, _ in a_cands), \
            f"relayed candidate despite a wrong password: {a_cands}"
        # force-relay: no host candidate either
        assert a_cands == [], a_cands
        b.set_remote(a)
        ufrag, pwd = b.credentials()
        assert a.agent.set_remote_credentials(a.stream, ufrag, pwd)
        a.agent.set_remote_candidates(a.stream, 1, b.local_candidates())
        ready = Nice.ComponentState.READY
        assert not run_until(lambda: a.state == ready or b.state == ready,
                             WRONG_PASSWORD_READY_WAIT_S), \
            f"READY without a relay: A {a.states}, B {b.states}"
        assert a.selected_pair() is None
        assert ready not in a.states and Nice.ComponentState.CONNECTED not in a.states, a.states
        if server.kind == "turnrelay":
            failures = server.metric("turn_auth_failures_total")
            assert failures is not None and failures_before is not None
            assert failures - failures_before >= 1, "turn_auth_failures_total did not grow"
            assert server.log().count("event=allocation_created") == allocations_before, \
                "the server allocated for a wrong password"
    finally:
        a.close()
        b.close()
        drain(0.2)
