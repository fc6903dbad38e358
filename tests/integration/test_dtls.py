"""TURN over DTLS (RFC 7350, RFC 8656 section 3.1): the client talks to the server in DTLS
1.2 records over UDP, one STUN message or ChannelData per record and datagram; the relayed
transport stays UDP.

The module's server has DTLS listeners (127.0.0.1 and ::1) on a UDP port of their own, with a
certificate for the IP SANs 127.0.0.1 and ::1 signed by a throwaway CA (tls_ca.py), so that
clients verify it for real. Clients:

- coturn's `turnutils_uclient -S` (DTLS): channels and Send indications (`-s`), IPv4 and IPv6,
  300- and 4000-byte messages, all at once against turnutils_peer: exit 0, received == sent
  > 0, no loss, DTLS 1.2 negotiated; turn-relay relayed at least every message both ways and
  counted a session per uclient client. (uclient first offers DTLS 1.0 and gets a
  protocol_version alert, then retries with 1.2. It does not send close_notify on every
  session it opened, so some of its allocations outlive it, as over plain UDP: the
  allocation-ends-with-the-session checks use the Python client below.)
- `openssl s_client -dtls1_2`: the chain verifies against the CA for the IP address
  (`-verify_ip`), ALPN "stun.turn" is selected when offered (RFC 7443) and a client offering
  only other protocols is served without ALPN; a client trusting another CA fails; DTLS 1.0
  only (`-dtls1`) is refused with a protocol_version alert.
- A DTLS client written here: pyOpenSSL (python3-openssl) with memory BIOs over a connected
  UDP socket, each record flushed as one datagram, plus the STUN/TURN encoder of
  test_tcp_tls.py. Binding answers the client's address over both families; Allocate,
  ChannelData and Send/Data with an echo peer (IPv4 and IPv6 relays); the client's
  close_notify ends the allocation (turn_allocations back down, reason `client`) and the same
  5-tuple can allocate again at once; a client that restarts on the same port (new
  handshake, no close_notify) replaces its session and its old allocation is gone;
  turn-relay carries 9216-byte datagrams (its largest) both ways, one record each, and drops
  a larger peer datagram (`too_large`); REQUESTED-TRANSPORT TCP gets 400; data relayed
  leaves with one less TTL / Hop Limit than its record arrived with (9 -> 8), and a peer
  datagram that arrived with 1 is dropped (`ttl_expired`), not relayed to the client; a
  ClientHello in fragments, a datagram each (ciphertext MTU 256, a long server name), in
  order or with each flight's records reversed (the client resends after 1 s), completes
  the handshake and relays, as does `openssl s_client -mtu 256` with a long -servername.
- Hand-made datagrams: a ClientHello without cookie gets exactly one HelloVerifyRequest, no
  larger than the ClientHello, and no session (also from 200 source ports); the same
  ClientHello with the cookie starts one (ServerHello back), but not from another source
  port. Anything else from a source
  without a session (random bytes, a STUN Binding in the clear, an epoch-1 application data
  record, an epoch-0 ServerHello, an epoch-1 ClientHello, a truncated ClientHello) gets no
  answer and is counted as `turn_drops_total{reason="dtls_no_session"}`, one each. The plain
  UDP listener still answers STUN and does not speak DTLS.
- turn-relay's [dtls] settings, each on a server of its own: idle_timeout_s = 2 closes a
  silent session without allocation (close_notify, reason `idle`) and a handshake that
  never finishes (reason `tls_handshake`), not one that keeps sending or holds an
  allocation; mtu = 576 keeps every handshake datagram within 576 - 28 bytes;
  max_sessions_per_ip = 1 and max_sessions = 3 give the session over the limit no handshake
  (reason `limit`), and there is room again once one ends; handshakes_per_ip_per_s = 1
  refuses a second handshake within the second (reason `rate`), not one from another
  address or a second later. SIGHUP with new [tls] files: new sessions get the new
  certificate, an older one keeps working. Configuration errors stop start-up naming the
  key; `--listen-dtls` adds a listener; SIGTERM drains (Allocate over DTLS 403), the
  close_notify of the last allocation's session ends the drain, and the other sessions get
  close_notify as the process exits 0.

With TURN_SERVER=coturn the protocol tests run against coturn (it serves DTLS on its TLS
listening port) to validate the tests themselves; the metric assertions and turn-relay's
[dtls] behaviours are skipped there, and the differences listed in README.md are allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import select
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from OpenSSL import SSL
from cryptography import x509

import tls_ca
from conftest import (_ACTIVE_LOGS, TurnServer, dtls_client_hello, dtls_hello_answered,
                      dtls_hello_verify_cookie, find_turn_relay_bin, free_port, log_tail,
                      relay_port_window, server_kind, start_server, stop_process, stop_server,
                      stun_binding, write_turnrelay_config)
from test_tcp_tls import (A_DATA, A_REQUESTED_TRANSPORT, A_XOR_MAPPED, A_XOR_PEER, A_XOR_RELAYED,
                          ALLOCATE, BINDING, DATA, INDICATION, UDP, Closed, Message, StreamClient,
                          channel_bind, closed, create_permission, encode, metric0, poll,
                          send_indication)
from test_uclient import UCLIENT, assert_no_loss, parse_summary, relay_port

TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 2
SMALL_MTU = 576

turnrelay_only = pytest.mark.skipif(server_kind() != "turnrelay",
                                    reason="turn-relay's [dtls] behaviour and metrics")

# DTLS record content types and handshake message types (RFC 6347, RFC 5246)
ALERT, HANDSHAKE, APPLICATION_DATA = 21, 22, 23
SERVER_HELLO = 2
A_REQUESTED_ADDRESS_FAMILY = 0x0017


def record(ctype: int, epoch: int, seq: int, payload: bytes) -> bytes:
    """One DTLS 1.2 record (RFC 6347 4.1) in the clear."""
    return (struct.pack("!BHH", ctype, 0xFEFD, epoch) + seq.to_bytes(6, "big")
            + struct.pack("!H", len(payload)) + payload)


# -------------------------------------------------------------------------------------
# Certificates and servers


@dataclass
class DtlsCert:
    chain: Path
    key: Path
    authority: tls_ca.CertAuthority   # the CA that signed it (what clients trust)
    other_ca: Path                    # a CA that did not

    @property
    def ca(self) -> Path:
        return self.authority.cert


@pytest.fixture(scope="module")
def dtls_cert(tmp_path_factory) -> DtlsCert:
    d = tmp_path_factory.mktemp("dtls-ca")
    ca = tls_ca.make_ca(d, "dtls-test")
    other = tls_ca.make_ca(d / "other", "other-test")
    leaf = tls_ca.make_server_cert(d, ca, "relay", "IP:127.0.0.1,IP:::1")
    return DtlsCert(chain=leaf.chain, key=leaf.key, authority=ca, other_ca=other.cert)


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory, dtls_cert):
    """This module's server: UDP, TLS and DTLS listeners on 127.0.0.1 and ::1, default [dtls]
    settings. Overrides conftest's turn_server, so conftest's `server` checks this one."""
    srv = start_server(tmp_path_factory.mktemp("turnserver"),
                       tls_files=(dtls_cert.chain, dtls_cert.key), dtls=True)
    yield srv
    stop_server(srv)


@pytest.fixture(autouse=True)
def _sessions_gone(turn_server):
    """Each test's DTLS sessions on the module's server have ended before the next test
    starts. A client's close_notify is handled after the client has moved on, so without
    this a test's baseline (allocations, sessions) could still count the last test's."""
    before = open_sessions(turn_server)
    yield
    poll(lambda: open_sessions(turn_server), lambda v: v <= before, timeout=5.0)


def own_server(tmp_path: Path, cert: DtlsCert, **settings) -> TurnServer:
    """A turn-relay of the test's own with these [dtls] settings (stop with stop_server)."""
    if server_kind() != "turnrelay":
        pytest.skip("turn-relay's [dtls] settings")
    return start_server(tmp_path, tls_files=(cert.chain, cert.key), dtls=True,
                        dtls_settings=settings)


def dtls_metric(srv: TurnServer, name: str, **labels) -> float:
    return metric0(srv, name, transport="dtls", **labels)


def open_sessions(srv: TurnServer) -> float:
    return dtls_metric(srv, "turn_connections")


def allocations(srv: TurnServer) -> float:
    return metric0(srv, "turn_allocations")


def wait_value(fn, want: float, what: str, timeout: float = 5.0) -> None:
    v = poll(fn, lambda v: v == want, timeout)
    assert v == want, f"{what} is {v}, expected {want} within {timeout} s"


# -------------------------------------------------------------------------------------
# A DTLS client: pyOpenSSL over memory BIOs, one datagram per flush


class DtlsTurnClient(StreamClient):
    """A TURN client on one DTLS 1.2 session. OpenSSL runs on memory BIOs: what it writes
    is sent as one datagram per flush (one record per STUN message or ChannelData), every
    datagram received is handed to it whole. No retransmission timer (loopback does not
    lose datagrams), so a handshake the server does not answer just times out. The STUN
    side (transact, request, allocate, binding) is StreamClient's, over records."""

    def __init__(self, server: TurnServer, family: int = 4, *, cafile: Optional[Path] = None,
                 alpn: Optional[List[bytes]] = None, source: Optional[Tuple[str, int]] = None,
                 handshake: bool = True, timeout: float = TIMEOUT_S):
        self.server = server
        self.addr = server.dtls_addr(family)
        self.sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        if source is not None:
            self.sock.bind(source)
        self.sock.connect(self.addr)
        ctx = SSL.Context(SSL.DTLS_METHOD)
        if cafile is not None:
            ctx.load_verify_locations(str(cafile))
            ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
        self.tls = SSL.Connection(ctx, None)
        if alpn:
            self.tls.set_alpn_protos(alpn)
        self.tls.set_connect_state()
        self.tls.set_ciphertext_mtu(1200)
        self.buf = b""
        self.key = self.realm = self.nonce = None
        self.datagrams_in: List[bytes] = []
        self.datagrams_out: List[bytes] = []
        if handshake:
            self.handshake(timeout)

    # --- datagrams

    def _flush(self) -> None:
        while True:
            try:
                data = self.tls.bio_read(65536)
            except SSL.WantReadError:
                return
            self.datagrams_out.append(data)
            self.sock.send(data)

    def _receive(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
            raise socket.timeout("no datagram from the server")
        try:
            data = self.sock.recv(65536)
        except ConnectionRefusedError as e:
            raise Closed(f"ICMP port unreachable: {e}")
        self.datagrams_in.append(data)
        self.tls.bio_write(data)

    def handshake(self, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except SSL.WantReadError:
                self._flush()
            self._receive(deadline)

    def read_record(self, timeout: float = TIMEOUT_S) -> bytes:
        """The next record's plaintext; Closed on close_notify (or a fatal alert)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.tls.recv(65536)
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                raise Closed("close_notify from the server")
            except SSL.Error as e:
                raise Closed(f"DTLS error: {e}")
            self._receive(deadline)

    def wait_close_notify(self, timeout: float) -> Optional[float]:
        """Seconds until the server's close_notify (records before it are discarded);
        None if none came within `timeout`."""
        t0 = time.monotonic()
        while True:
            remaining = t0 + timeout - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self.read_record(remaining)
            except Closed:
                return time.monotonic() - t0
            except socket.timeout:
                return None

    def peer_subject(self) -> str:
        return self.tls.get_peer_certificate().to_cryptography().subject.rfc4514_string()

    # --- StreamClient's transport, over records

    def send(self, data: bytes) -> None:
        self.tls.send(data)
        self._flush()

    def read_frame(self, timeout: float = TIMEOUT_S):
        rec = self.read_record(timeout)
        first, length = struct.unpack("!HH", rec[:4])
        if 0x4000 <= first <= 0x7FFF:
            return "channel", (first, rec[4:4 + length], len(rec))
        return "stun", Message(rec)

    def local(self) -> Tuple[str, int]:
        return self.sock.getsockname()[:2]

    def close(self, notify: bool = True) -> None:
        if self.sock.fileno() < 0:
            return
        if notify:
            try:
                self.tls.shutdown()
                self._flush()
            except (SSL.Error, OSError):
                pass
        self.sock.close()


def handshake_refused(server: TurnServer, family: int = 4, source=None,
                      timeout: float = 1.0) -> bool:
    """True if a DTLS handshake gets no answer after the cookie exchange (the ClientHello
    with the cookie is not answered) within `timeout`."""
    c = DtlsTurnClient(server, family, source=source, handshake=False)
    try:
        c.handshake(timeout)
        return False
    except socket.timeout:
        # The cookie exchange itself was answered: the HelloVerifyRequest came.
        assert c.datagrams_in and dtls_hello_verify_cookie(c.datagrams_in[0]), (
            f"not even a HelloVerifyRequest: {[d[:16].hex() for d in c.datagrams_in]}")
        assert len(c.datagrams_in) == 1, "the ClientHello with the cookie was answered"
        return True
    finally:
        c.close(notify=False)


def udp_socket(family: int = 4) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1" if family == 4 else "::1", 0))
    return s


def datagrams(sock: socket.socket, quiet: float, limit: float = TIMEOUT_S) -> List[bytes]:
    """Datagrams on `sock` until none came for `quiet` s (or `limit` s in all)."""
    out: List[bytes] = []
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not select.select([sock], [], [], min(quiet, end - time.monotonic()))[0]:
            break
        out.append(sock.recv(65536))
    return out


def cookie_exchange(sock: socket.socket, addr) -> Tuple[bytes, bytes, bytes]:
    """ClientHello without cookie -> HelloVerifyRequest. Returns (the ClientHello's random,
    the answer, its cookie)."""
    rnd = os.urandom(32)
    hello = dtls_client_hello(client_random=rnd)
    sock.sendto(hello, addr)
    sock.settimeout(TIMEOUT_S)
    answer = sock.recvfrom(65536)[0]
    cookie = dtls_hello_verify_cookie(answer)
    assert cookie, f"not a HelloVerifyRequest: {answer.hex()}"
    return rnd, answer, cookie


def start_handshake(sock: socket.socket, addr, quiet: float = 0.5) -> List[bytes]:
    """The cookie exchange, then the ClientHello with the cookie (RFC 6347 4.2.1: message_seq
    1, same random); returns the server's first flight."""
    rnd, _, cookie = cookie_exchange(sock, addr)
    sock.sendto(dtls_client_hello(cookie=cookie, client_random=rnd, record_seq=1,
                                  message_seq=1), addr)
    return datagrams(sock, quiet)


# -------------------------------------------------------------------------------------
# 1. turnutils_uclient -S (DTLS)

UCLIENT_CASES = [
    # (id, server family, extra flags, peer family, message length)
    ("ipv4-channels", 4, [], 4, 300),
    ("ipv4-send-indications", 4, ["-s"], 4, 300),
    ("ipv6-channels", 6, ["-x"], 6, 300),
    ("ipv6-send-indications", 6, ["-x", "-s"], 6, 300),
    ("ipv4-4000-bytes", 4, [], 4, 4000),
]
UCLIENT_MESSAGES = 40
UCLIENT_CLIENTS = 2
UCLIENT_INTERVAL_MS = 5
UCLIENT_TIMEOUT_S = 60


class UclientRuns:
    """Every case at once (each run takes ~6 s, mostly uclient's own waits), one shared
    turnutils_peer; the relay's counters before the first starts and after the last ends."""

    def __init__(self, server: TurnServer, peer, workdir: Path):
        self.server = server
        self.before = self.counters()
        self.procs: Dict[str, Tuple[subprocess.Popen, List[str], Path]] = {}
        self.results: Dict[str, Tuple[object, str, str]] = {}
        for case_id, family, flags, peer_family, length in UCLIENT_CASES:
            host = "127.0.0.1" if family == 4 else "::1"
            peer_ip = "127.0.0.1" if peer_family == 4 else "::1"
            cmd = [UCLIENT, "-v", "-S", "-u", server.username, "-w", server.password,
                   "-p", str(server.dtls_addr(family)[1]), "-n", str(UCLIENT_MESSAGES),
                   "-l", str(length), "-z", str(UCLIENT_INTERVAL_MS),
                   "-m", str(UCLIENT_CLIENTS), "-e", peer_ip, "-r", str(peer.port)] + flags + [host]
            out = workdir / f"uclient-{case_id}.log"
            with open(out, "wb") as f:
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            self.procs[case_id] = (proc, cmd, out)
        for case_id, (proc, cmd, out) in self.procs.items():
            try:
                proc.wait(timeout=UCLIENT_TIMEOUT_S)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                stop_process(proc, grace=2)
                rc = f"killed after {UCLIENT_TIMEOUT_S} s"
            self.results[case_id] = (rc, out.read_text(errors="replace"), " ".join(cmd))
        self.after = self.counters()

    def counters(self) -> Dict[str, float]:
        c = {d: metric0(self.server, "turn_relayed_packets_total", direction=d, path="socket")
             for d in ("client_to_peer", "peer_to_client")}
        c["accepted"] = dtls_metric(self.server, "turn_connections_accepted_total")
        return c

    def grew(self, key: str) -> float:
        return self.after[key] - self.before[key]

    def close(self) -> None:
        for proc, _, _ in self.procs.values():
            stop_process(proc, grace=2)


@pytest.fixture(scope="module")
def uclient_runs(turn_server, turnutils_peer, tmp_path_factory):
    runs = UclientRuns(turn_server, turnutils_peer, tmp_path_factory.mktemp("uclient"))
    try:
        yield runs
    finally:
        runs.close()


@pytest.mark.parametrize("case", UCLIENT_CASES, ids=[c[0] for c in UCLIENT_CASES])
def test_uclient_dtls(server, uclient_runs, case):
    case_id, _, flags, _, length = case
    rc, out, cmd = uclient_runs.results[case_id]
    s, relays = assert_no_loss(rc, out, cmd)
    assert s["sent_bytes"] >= s["sent"] * length, f"messages shorter than {length}: {s}"
    assert "method=DTLSv1.2" in out, "uclient made no DTLS 1.2 session:\n" + out[-3000:]
    for r in relays:
        assert server.relay_min <= relay_port(r) <= server.relay_max, r
        assert (r.count(":") > 1) == ("-x" in flags), f"relayed address family: {r}"


@turnrelay_only
def test_uclient_dtls_counted(server, uclient_runs):
    """turn-relay relayed at least every message uclient sent and received, and started a
    DTLS session (cookie verified) for at least every uclient client."""
    sent = sum(parse_summary(out)["sent"] for _, out, _ in uclient_runs.results.values())
    recv = sum(parse_summary(out)["recv"] for _, out, _ in uclient_runs.results.values())
    c2p, p2c = uclient_runs.grew("client_to_peer"), uclient_runs.grew("peer_to_client")
    assert sent > 0 and c2p >= sent and p2c >= recv, (
        f"turn_relayed_packets_total grew by client_to_peer={c2p}, peer_to_client={p2c}; "
        f"uclient sent {sent}, received {recv}")
    want = len(UCLIENT_CASES) * UCLIENT_CLIENTS
    assert uclient_runs.grew("accepted") >= want, (
        f"turn_connections_accepted_total{{transport=dtls}} grew by "
        f"{uclient_runs.grew('accepted')}, expected at least {want}")


# -------------------------------------------------------------------------------------
# 2. openssl s_client: certificate, ALPN, DTLS 1.0 refused


def s_client(addr, *args, timeout: float = 10) -> Tuple[int, str]:
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    cmd = ["openssl", "s_client", "-connect", f"{host}:{addr[1]}", *args]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return -1, f"timed out after {timeout} s: {' '.join(cmd)}\n" + (
            (e.stdout or b"").decode(errors="replace"))
    return proc.returncode, proc.stdout.decode(errors="replace")


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("offer,selected", [("stun.turn", "stun.turn"),
                                            ("h2,stun.turn", "stun.turn"),
                                            ("h2", None), (None, None)],
                         ids=["stun.turn", "h2+stun.turn", "h2-only", "no-alpn"])
def test_s_client_verifies_and_alpn(server, dtls_cert, family, offer, selected):
    addr = server.dtls_addr(family)
    accepted = dtls_metric(server, "turn_connections_accepted_total")
    args = ["-dtls1_2", "-CAfile", str(dtls_cert.ca), "-verify_return_error",
            "-verify_ip", addr[0]] + (["-alpn", offer] if offer else [])
    rc, out = s_client(addr, *args)
    assert rc == 0, f"s_client exit {rc}:\n{out}"
    assert "Verify return code: 0 (ok)" in out, out
    assert "Protocol  : DTLSv1.2" in out, out
    if selected:
        assert f"ALPN protocol: {selected}" in out, out
    else:
        assert "No ALPN negotiated" in out, out
    if server.kind == "turnrelay":
        v = poll(lambda: dtls_metric(server, "turn_connections_accepted_total"),
                 lambda v: v >= accepted + 1)
        assert v == accepted + 1, f"accepted_total{{dtls}} {accepted} -> {v}"


def test_s_client_untrusted_ca_fails(server, dtls_cert):
    rc, out = s_client(server.dtls_addr(4), "-dtls1_2", "-CAfile", str(dtls_cert.other_ca),
                       "-verify_return_error")
    assert rc != 0, f"s_client accepted a certificate from a CA it does not trust:\n{out}"
    assert "unable to get local issuer certificate" in out or "verify error" in out, out


def test_dtls_1_0_refused(server):
    if "-dtls1 " not in subprocess.run(["openssl", "s_client", "-help"], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT).stdout.decode():
        pytest.skip("this openssl has no -dtls1")
    failed = closed(server, "dtls", "tls_handshake")
    rc, out = s_client(server.dtls_addr(4), "-dtls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert rc != 0 and "Cipher is (NONE)" in out and "DTLSv1.2" not in out, (
        f"a DTLS 1.0 handshake was not refused (exit {rc}):\n{out}")
    # coturn 4.6.1 refuses it with an internal_error alert.
    want = "alert protocol version" if server.kind == "turnrelay" else "SSL alert number"
    assert want in out, f"DTLS 1.0 not refused with an alert ({want!r}):\n{out}"
    if server.kind == "turnrelay":
        v = poll(lambda: closed(server, "dtls", "tls_handshake"), lambda v: v >= failed + 1)
        assert v == failed + 1, f"closed_total{{dtls,tls_handshake}} {failed} -> {v}"


# -------------------------------------------------------------------------------------
# 3. Cookies: no state and no amplification for an unverified source


def test_hello_without_cookie_is_stateless(server):
    accepted = dtls_metric(server, "turn_connections_accepted_total")
    sessions = open_sessions(server)
    addr = server.dtls_addr(4)
    with udp_socket(4) as s:
        hello = dtls_client_hello()
        s.sendto(hello, addr)
        got = datagrams(s, quiet=1.0)
    assert len(got) == 1, f"{len(got)} datagrams for one ClientHello without cookie"
    assert dtls_hello_verify_cookie(got[0]), f"not a HelloVerifyRequest: {got[0].hex()}"
    assert len(got[0]) <= len(hello), (
        f"HelloVerifyRequest of {len(got[0])} bytes for a ClientHello of {len(hello)}")

    # 200 more sources: a HelloVerifyRequest each, still no session.
    socks = [udp_socket(4) for _ in range(200)]
    try:
        for s in socks:
            s.sendto(dtls_client_hello(), addr)
        answers: List[List[bytes]] = [[] for _ in socks]
        deadline = time.monotonic() + TIMEOUT_S
        for s, a in zip(socks, answers):   # the first answer of each (5 s in all)
            if select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]:
                a.append(s.recv(65536))
        time.sleep(0.5)                    # then anything more that comes
        for s, a in zip(socks, answers):
            while select.select([s], [], [], 0)[0]:
                a.append(s.recv(65536))
    finally:
        for s in socks:
            s.close()
    bad = [(i, [len(d) for d in a]) for i, a in enumerate(answers)
           if len(a) != 1 or not dtls_hello_verify_cookie(a[0]) or len(a[0]) > len(hello)]
    assert not bad, f"sources whose answer was not one small HelloVerifyRequest: {bad[:10]}"
    if server.kind == "turnrelay":
        time.sleep(0.2)
        assert dtls_metric(server, "turn_connections_accepted_total") == accepted, (
            "a session was started for a source that never returned its cookie")
        assert open_sessions(server) == sessions


def test_hello_with_cookie_starts_session(server):
    """The same ClientHello with the cookie is answered with the server's flight (ServerHello
    first) and is a session; a fatal alert from the client ends it. The cookie is only good
    from the source port it was sent to."""
    accepted = dtls_metric(server, "turn_connections_accepted_total")
    failed = closed(server, "dtls", "tls_handshake")
    addr = server.dtls_addr(4)
    # The cookie belongs to the source address and port: from another port it starts no
    # handshake (turn-relay answers a new HelloVerifyRequest, coturn 4.6.1 nothing).
    with udp_socket(4) as s, udp_socket(4) as other:
        rnd, _, cookie = cookie_exchange(s, addr)
        other.sendto(dtls_client_hello(cookie=cookie, client_random=rnd, record_seq=1,
                                       message_seq=1), addr)
        got = datagrams(other, quiet=0.5)
        answer = [g[:16].hex() for g in got]
        assert all(dtls_hello_verify_cookie(g) for g in got), (
            f"a cookie from another source port was answered with {answer}")
    if server.kind == "turnrelay":
        assert len(got) == 1, f"a cookie from another source port: answered with {answer}"
        assert dtls_metric(server, "turn_connections_accepted_total") == accepted
    with udp_socket(4) as s:
        flight = start_handshake(s, addr)
        assert flight, "no answer to the ClientHello with the cookie"
        assert flight[0][0] == HANDSHAKE and flight[0][13] == SERVER_HELLO, (
            f"the flight does not start with a ServerHello: {flight[0][:32].hex()}")
        if server.kind == "turnrelay":
            wait_value(lambda: dtls_metric(server, "turn_connections_accepted_total"),
                       accepted + 1, "turn_connections_accepted_total{dtls}")
        s.sendto(record(ALERT, 0, 2, b"\x02\x28"), addr)   # fatal handshake_failure
    if server.kind == "turnrelay":
        wait_value(lambda: closed(server, "dtls", "tls_handshake"), failed + 1,
                   "closed_total{dtls,tls_handshake}")


# -------------------------------------------------------------------------------------
# 4. Datagrams that are not a ClientHello from a source without a session

GARBAGE = [
    # (id, datagram, coturn 4.6.1 answers it)
    ("random-bytes", b"\x00" + os.urandom(99), False),
    # coturn serves STUN in the clear on its DTLS port too (a Binding success comes back).
    ("plain-stun-binding", encode(BINDING, []), True),
    ("application-data-epoch-1", record(APPLICATION_DATA, 1, 7, os.urandom(48)), False),
    # coturn answers an illegal_parameter alert.
    ("server-hello-epoch-0", record(HANDSHAKE, 0, 0, bytes([SERVER_HELLO]) + os.urandom(60)),
     True),
    ("client-hello-epoch-1", dtls_client_hello()[:3] + b"\x00\x01" + dtls_client_hello()[5:],
     False),
    ("truncated-client-hello", dtls_client_hello()[:20], False),
]


def test_no_session_datagrams_dropped(server):
    drops = metric0(server, "turn_drops_total", reason="dtls_no_session")
    socks = []
    try:
        for i, (_, payload, _) in enumerate(GARBAGE):
            family = 4 if i % 2 == 0 else 6
            s = udp_socket(family)
            socks.append(s)
            s.sendto(payload, server.dtls_addr(family))
        time.sleep(1.0)
        answered = [GARBAGE[i][0] for i, s in enumerate(socks)
                    if select.select([s], [], [], 0)[0]
                    and not (server.kind == "coturn" and GARBAGE[i][2])]
    finally:
        for s in socks:
            s.close()
    assert not answered, f"answered from a source without a session: {answered}"
    if server.kind == "turnrelay":
        wait_value(lambda: metric0(server, "turn_drops_total", reason="dtls_no_session"),
                   drops + len(GARBAGE), "turn_drops_total{reason=dtls_no_session}")
    with DtlsTurnClient(server, 4) as c:
        assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()


# -------------------------------------------------------------------------------------
# 5. STUN over DTLS, and the plain UDP listener beside it


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_binding_over_dtls(server, dtls_cert, family):
    with DtlsTurnClient(server, family, cafile=dtls_cert.ca, alpn=[b"stun.turn"]) as c:
        assert c.tls.get_protocol_version_name() == "DTLSv1.2"
        assert c.tls.get_alpn_proto_negotiated() == b"stun.turn"
        cert = c.tls.get_peer_certificate().to_cryptography()
        ips = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
        assert ipaddress.ip_address(c.addr[0]) in ips, f"{c.addr[0]} not in the SAN {ips}"
        for _ in range(3):
            r = c.binding()
            assert r.xor_addr(A_XOR_MAPPED) == c.local(), (
                f"XOR-MAPPED-ADDRESS {r.xor_addr(A_XOR_MAPPED)} != {c.local()}")


@turnrelay_only
def test_last_request_then_close_notify(server):
    """A Binding and the client's close_notify in one datagram: the answer comes, then the
    server's own close_notify (RFC 6347 keeps RFC 5246 section 7.2.1's reply). Before, the
    session closed without one."""
    with DtlsTurnClient(server, 4) as c:
        tid = os.urandom(12)
        c.tls.send(encode(BINDING, [], tid=tid))
        try:
            c.tls.shutdown()
        except SSL.Error:
            pass
        out = b""
        while True:
            try:
                out += c.tls.bio_read(65536)
            except SSL.WantReadError:
                break
        c.sock.send(out)  # the Binding's record and the close_notify alert, one datagram
        answers = []
        while select.select([c.sock], [], [], 1.0)[0]:
            answers.append(c.sock.recv(65536))
        for d in answers:
            c.tls.bio_write(d)
        got, close_notify = b"", False
        try:
            while True:
                got += c.tls.recv(65536)
        except SSL.ZeroReturnError:
            close_notify = True
        except SSL.WantReadError:
            pass
        assert tid in got, f"no answer to the request before close_notify: {[(d[0], len(d)) for d in answers]}"
        assert close_notify, f"no close_notify from the server: {[(d[0], len(d)) for d in answers]}"


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_plain_udp_listener_unaffected(server, family):
    drops = metric0(server, "turn_drops_total", reason="dtls_no_session")
    accepted = dtls_metric(server, "turn_connections_accepted_total")
    with udp_socket(family) as s:
        s.settimeout(2.0)
        s.sendto(encode(BINDING, [], fingerprint=False), server.addr(family))
        r = s.recvfrom(2048)[0]
        assert struct.unpack("!H", r[:2])[0] == 0x0101, f"no Binding success: {r[:20].hex()}"
    mapped = stun_binding(server.addr(family), timeout=2.0)
    assert mapped is not None and mapped[0] == server.addr(family)[0], mapped
    if server.kind == "turnrelay":
        # The plain UDP listener does not speak DTLS: a ClientHello gets no HelloVerifyRequest.
        with udp_socket(family) as s:
            s.sendto(dtls_client_hello(), server.addr(family))
            got = datagrams(s, quiet=0.5)
        assert not any(dtls_hello_verify_cookie(d) for d in got), "plain UDP answered DTLS"
        assert metric0(server, "turn_drops_total", reason="dtls_no_session") == drops
        assert dtls_metric(server, "turn_connections_accepted_total") == accepted


# -------------------------------------------------------------------------------------
# 6. Allocations over DTLS; the session's end ends the allocation


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_allocate_relay_and_close_notify(server, echo_peer, family):
    allocs0 = allocations(server)
    sessions0 = open_sessions(server)
    client_closed = closed(server, "dtls", "client")
    c = DtlsTurnClient(server, family)
    source = c.local()
    try:
        # REQUESTED-ADDRESS-FAMILY (RFC 8656 18.1) IPv6 for the IPv6 case (IPv4 is the default).
        r = c.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)] + (
            [(A_REQUESTED_ADDRESS_FAMILY, b"\x02\x00\x00\x00")] if family == 6 else []))
        assert r.type == ALLOCATE | 0x0100, f"Allocate failed: {r} (error {r.error_code})"
        relayed = r.xor_addr(A_XOR_RELAYED)
        assert relayed[0] == ("127.0.0.1" if family == 4 else "::1"), relayed
        assert server.relay_min <= relayed[1] <= server.relay_max, relayed
        if server.kind == "turnrelay":
            assert allocations(server) == allocs0 + 1
            assert open_sessions(server) == sessions0 + 1
        peer = echo_peer.addr(family)
        # Send indication -> Data indication (before a channel is bound to the peer, after
        # which the echo comes back as ChannelData).
        create_permission(c, peer)
        for payload in (b"send indication", os.urandom(1200)):
            c.send(send_indication(peer, payload))
            kind, m = c.read_frame()
            assert kind == "stun" and m.type == DATA | INDICATION, f"expected Data: {m}"
            assert m.get(A_DATA) == payload and m.xor_addr(A_XOR_PEER) == peer
        channel_bind(c, 0x4001, peer)
        for payload in (b"x", b"over dtls", os.urandom(1000), os.urandom(4000)):
            c.send(struct.pack("!HH", 0x4001, len(payload)) + payload)
            kind, frame = c.read_frame()
            assert kind == "channel", f"expected ChannelData back: {frame}"
            assert frame[0] == 0x4001 and frame[1] == payload, (
                f"channel {frame[0]:#x}, {len(frame[1])} bytes back for {len(payload)}")
        assert echo_peer.sources() == {relayed}, echo_peer.sources()
    finally:
        c.close()   # close_notify
    if server.kind == "turnrelay":
        wait_value(lambda: allocations(server), allocs0, "turn_allocations after close_notify",
                   timeout=2.0)
        wait_value(lambda: open_sessions(server), sessions0, "turn_connections{dtls}")
        assert closed(server, "dtls", "client") == client_closed + 1
    # The 5-tuple is free: a new session from the same address and port allocates at once
    # (an allocation left behind would get 437 Allocation Mismatch).
    with DtlsTurnClient(server, family, source=source) as again:
        r = again.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)])
        assert r.type == ALLOCATE | 0x0100, f"Allocate on the same 5-tuple again: {r}"


@pytest.mark.xfail(server_kind() == "coturn", strict=True,
                   reason="coturn 4.6.1 does not answer a new handshake on the 5-tuple of a "
                          "DTLS session it still holds")
def test_client_restart_on_same_port_replaces_session(server):
    """A client that restarts on the same address and port (a new handshake, no
    close_notify before) replaces its old session, whose allocation ends with it: the new
    session allocates at once (an allocation left behind would get 437)."""
    client_closed = closed(server, "dtls", "client")
    old = DtlsTurnClient(server, 4)
    source = old.local()
    old.allocate()
    # This client's allocation by its log line (the allocation gauge also moves with
    # sessions earlier tests left to their idle timeout).
    created = re.compile(rf"event=allocation_created id=(\d+) client={re.escape(source[0])}:{source[1]} "
                         rf"\S+ transport=dtls ")
    old_id = None
    if server.kind == "turnrelay":
        found = created.findall(server.log())
        assert found, server.log()[-2000:]
        old_id = found[-1]
    old.close(notify=False)
    with DtlsTurnClient(server, 4, source=source) as new:
        if server.kind == "turnrelay":
            deadline = time.monotonic() + 5
            while f"event=allocation_connection_closed id={old_id} " not in server.log():
                assert time.monotonic() < deadline, "the old session's allocation did not end:\n" + \
                    server.log()[-2000:]
                time.sleep(0.05)
            assert closed(server, "dtls", "client") == client_closed + 1
        r = new.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)])
        assert r.type == ALLOCATE | 0x0100, f"Allocate after the restart: {r} ({r.error_code})"
        assert new.binding().xor_addr(A_XOR_MAPPED) == source


# Linux socket options (not all in Python's socket module): the TTL / Hop Limit to send
# with, and asking for the received one as ancillary data.
_IP_TTL, _IP_RECVTTL, _IPV6_UNICAST_HOPS, _IPV6_RECVHOPLIMIT, _IPV6_HOPLIMIT = 2, 12, 16, 51, 52


def _set_ttl(sock: socket.socket, family: int, ttl: int) -> None:
    if family == 6:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, _IP_TTL, ttl)


def _recv_with_ttl(sock: socket.socket, timeout: float = TIMEOUT_S):
    """(payload, TTL or Hop Limit it arrived with)."""
    sock.settimeout(timeout)
    data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4))
    for level, kind, value in anc:
        if (level, kind) in ((socket.IPPROTO_IP, _IP_TTL), (socket.IPPROTO_IPV6, _IPV6_HOPLIMIT)):
            return data, struct.unpack("=i", value[:4])[0]
    return data, None


@turnrelay_only
@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_relayed_data_leaves_with_one_less_ttl(server, family):
    """RFC 8656 section 14's preferred behaviour over DTLS, through the turn-relay process: a
    Send indication in a record that arrived with TTL (Hop Limit) 9 reaches the peer with 8;
    a peer datagram that arrived with 1 is dropped (ttl_expired) rather than relayed to the
    client, one with 7 is."""
    peer = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("::1" if family == 6 else "127.0.0.1", 0))
    if family == 6:
        peer.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)
    else:
        peer.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
    paddr = peer.getsockname()[:2]
    try:
        with DtlsTurnClient(server, family) as c:
            r = c.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)] + (
                [(A_REQUESTED_ADDRESS_FAMILY, b"\x02\x00\x00\x00")] if family == 6 else []))
            assert r.type == ALLOCATE | 0x0100, f"Allocate failed: {r} (error {r.error_code})"
            relayed = r.xor_addr(A_XOR_RELAYED)
            create_permission(c, paddr)
            _set_ttl(c.sock, family, 9)
            c.send(send_indication(paddr, b"ttl nine"))
            data, ttl = _recv_with_ttl(peer)
            assert data == b"ttl nine" and ttl == 8, (data, ttl)

            drops = metric0(server, "turn_drops_total", reason="ttl_expired")
            _set_ttl(peer, family, 1)
            peer.sendto(b"expired", relayed)
            with pytest.raises((socket.timeout, TimeoutError)):
                c.read_frame(timeout=0.5)
            wait_value(lambda: metric0(server, "turn_drops_total", reason="ttl_expired"), drops + 1,
                       "turn_drops_total{reason=ttl_expired}")
            _set_ttl(peer, family, 7)
            peer.sendto(b"seven", relayed)
            kind, m = c.read_frame()
            assert kind == "stun" and m.get(A_DATA) == b"seven", (kind, m)
    finally:
        peer.close()


@turnrelay_only
def test_late_copy_of_the_client_hello_changes_nothing(server):
    """A late or duplicated copy of a session's own ClientHello (with the cookie, the same
    client random) on the same 5-tuple is no restart: the session and its allocation stay,
    and the next request is answered."""
    allocs0 = allocations(server)
    client_closed = closed(server, "dtls", "client")
    with DtlsTurnClient(server, 4) as c:
        c.allocate()
        hellos = [d for d in c.datagrams_out if len(d) > 25 and d[0] == 22 and d[13] == 1]
        assert len(hellos) == 2, f"expected the ClientHello and its repeat with the cookie: {len(hellos)}"
        for _ in range(3):
            c.sock.send(hellos[1])
        time.sleep(0.3)
        assert allocations(server) == allocs0 + 1, "the allocation ended"
        assert closed(server, "dtls", "client") == client_closed
        assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()


def records_of(data: bytes) -> List[bytes]:
    """The DTLS records in `data`, back to back (RFC 6347 section 4.1)."""
    out, i = [], 0
    while i + 13 <= len(data):
        n = struct.unpack("!H", data[i + 11:i + 13])[0]
        out.append(data[i:i + 13 + n])
        i += 13 + n
    return out


class FragmentingDtlsClient(DtlsTurnClient):
    """A DtlsTurnClient whose records go in datagrams of their own (a ClientHello larger than
    its ciphertext MTU goes in fragments, one datagram each), in the order OpenSSL wrote them
    or, with `reverse`, each flight's last first; it resends its last flight after 1 s
    without an answer, as DTLS clients do (RFC 6347 section 4.2.4)."""

    def __init__(self, server: TurnServer, family: int = 4, *, mtu: int, server_name: bytes,
                 reverse: bool = False):
        self.reverse = reverse
        self.flight: List[bytes] = []
        super().__init__(server, family, handshake=False)
        self.tls.set_ciphertext_mtu(mtu)
        self.tls.set_tlsext_host_name(server_name)
        self.handshake()

    def _flush(self) -> None:
        data = b""
        while True:
            try:
                data += self.tls.bio_read(65536)
            except SSL.WantReadError:
                break
        if not data:
            return
        self.flight = records_of(data)[::-1] if self.reverse else records_of(data)
        for r in self.flight:
            self.datagrams_out.append(r)
            self.sock.send(r)

    def handshake(self, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except SSL.WantReadError:
                self._flush()
            while not select.select([self.sock], [], [], 1.0)[0]:
                if time.monotonic() >= deadline:
                    raise socket.timeout("no answer to the handshake")
                for r in self.flight:
                    self.sock.send(r)
            self._receive(deadline)


LONG_SERVER_NAME = ".".join(["relay" * 12] * 3)   # 182 bytes: the ClientHello outgrows 228


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reordered"])
def test_fragmented_client_hello(server, reverse):
    """A ClientHello larger than the client's MTU (a long server name, ciphertext MTU 256)
    goes in fragments, a datagram each: the handshake completes and the session relays.
    Reordered (each flight's records last first) it completes too, on the client's
    retransmissions: a later fragment that comes before the first finds no session (cookies
    keep no state) and is dropped, and OpenSSL drops a ChangeCipherSpec that comes before the
    ClientKeyExchange. Before, the later fragments of the ClientHello with the cookie were
    taken for a new handshake on the session's 5-tuple and given to DTLSv1_listen, which
    reads first fragments only: lost, and the handshake never completed."""
    with FragmentingDtlsClient(server, 4, mtu=256, server_name=LONG_SERVER_NAME.encode(),
                               reverse=reverse) as c, udp_socket(4) as peer:
        hellos = [d for d in c.datagrams_out if d[0] == HANDSHAKE and d[3:5] == b"\0\0" and d[13] == 1]
        assert any(int.from_bytes(d[19:22], "big") > 0 for d in hellos), (
            f"the ClientHello was not fragmented: {[len(d) for d in hellos]}")
        relayed = c.allocate()
        create_permission(c, peer.getsockname())
        c.send(send_indication(peer.getsockname(), b"after a fragmented ClientHello"))
        peer.settimeout(TIMEOUT_S)
        assert peer.recvfrom(100) == (b"after a fragmented ClientHello", relayed)


def test_s_client_small_mtu_fragmented_client_hello(server, dtls_cert):
    """openssl s_client -mtu 256 with a long -servername sends its ClientHello in two
    datagrams (228 bytes and the rest): the handshake completes. Before, s_client
    retransmitted its ClientHello with the cookie until it was killed."""
    rc, out = s_client(server.dtls_addr(4), "-dtls1_2", "-mtu", "256", "-servername",
                       LONG_SERVER_NAME, "-CAfile", str(dtls_cert.ca), "-verify_return_error")
    assert rc == 0 and "Protocol  : DTLSv1.2" in out, f"s_client exit {rc}:\n{out}"


@turnrelay_only
def test_largest_datagrams_over_dtls(server):
    """turn-relay reads datagrams of up to 9216 bytes (jumbo frames) on every socket: a
    9216-byte peer datagram comes to the client whole, as one Data indication in one record
    (a datagram far over the handshake mtu); a 9217-byte one is dropped
    (turn_drops_total{reason="too_large"}) and the session goes on; a ChannelData record
    from the client that fits in 9216 bytes reaches the peer whole."""
    too_large = metric0(server, "turn_drops_total", reason="too_large")
    with DtlsTurnClient(server, 4) as c, udp_socket(4) as peer:
        relayed = c.allocate()
        create_permission(c, peer.getsockname())
        biggest = os.urandom(9216)
        peer.sendto(biggest, relayed)
        kind, m = c.read_frame()
        assert kind == "stun" and m.type == DATA | INDICATION and m.get(A_DATA) == biggest, m
        assert len(c.datagrams_in[-1]) > 9216
        peer.sendto(os.urandom(9217), relayed)
        with pytest.raises(socket.timeout):
            kind, m = c.read_frame(timeout=0.5)
            pytest.fail(f"a message came back for a 9217-byte datagram: {kind}")
        wait_value(lambda: metric0(server, "turn_drops_total", reason="too_large"),
                   too_large + 1, "turn_drops_total{reason=too_large}")
        channel_bind(c, 0x4002, peer.getsockname())
        c.binding()   # a 28-byte request: the record overhead of the negotiated cipher
        overhead = len(c.datagrams_out[-1]) - 28
        payload = os.urandom(9216 - 4 - overhead)   # and the ChannelData header
        c.send(struct.pack("!HH", 0x4002, len(payload)) + payload)
        assert len(c.datagrams_out[-1]) == 9216, (c.tls.get_cipher_name(), overhead)
        peer.settimeout(TIMEOUT_S)
        got, src = peer.recvfrom(65536)
        assert got == payload and src[:2] == relayed, (len(got), src)
        peer.sendto(b"after", relayed)
        kind, frame = c.read_frame()
        assert kind == "channel" and frame[1] == b"after", frame


@turnrelay_only
def test_tcp_allocation_over_dtls_refused(server):
    with DtlsTurnClient(server, 4) as c:
        r = c.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, struct.pack("!B3x", 6))])
        assert r.type == ALLOCATE | 0x0110 and r.error_code == 400, (
            f"REQUESTED-TRANSPORT TCP over DTLS: {r} (error {r.error_code})")
        # The session is still usable.
        assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()


# -------------------------------------------------------------------------------------
# 7. turn-relay's [dtls] settings


@turnrelay_only
def test_idle_timeout_and_mtu(tmp_path, dtls_cert):
    """idle_timeout_s = 2: a silent session without allocation gets close_notify after
    about 2 s (reason idle); one whose handshake never finishes is closed too (reason
    tls_handshake); one that sends a Binding every 0.5 s and one holding an allocation stay.
    mtu = 576: the server's handshake datagrams fit in 576 bytes with IPv4 and UDP headers."""
    srv = own_server(tmp_path, dtls_cert, idle_timeout_s=IDLE_TIMEOUT_S, mtu=SMALL_MTU)
    try:
        chatty = DtlsTurnClient(srv, 6)
        holder = DtlsTurnClient(srv, 4)
        holder.allocate()
        half = udp_socket(4)
        flight = start_handshake(half, srv.dtls_addr(4), quiet=0.3)
        silent = DtlsTurnClient(srv, 4)
        t0 = time.monotonic()   # the silent session's last datagram
        assert open_sessions(srv) == 4
        silent_closed: Optional[float] = None
        while time.monotonic() - t0 < 2 * IDLE_TIMEOUT_S + 0.5:
            if silent_closed is None:
                w = silent.wait_close_notify(0.05)
                if w is not None:
                    silent_closed = time.monotonic() - t0
            chatty.binding(timeout=1.0)
            time.sleep(0.4)
        flight += datagrams(half, quiet=0.1)
        half.close()
        try:
            assert silent_closed is not None, (
                f"the silent session got no close_notify within {2 * IDLE_TIMEOUT_S + 0.5} s")
            assert silent_closed >= IDLE_TIMEOUT_S - 0.7, (
                f"closed after {silent_closed:.2f} s, before idle_timeout_s = {IDLE_TIMEOUT_S}")
            assert closed(srv, "dtls", "idle") == 1
            wait_value(lambda: closed(srv, "dtls", "tls_handshake"), 1,
                       "closed_total{dtls,tls_handshake} (the handshake that never finished)")
            assert chatty.binding().xor_addr(A_XOR_MAPPED) == chatty.local()
            assert holder.binding().xor_addr(A_XOR_MAPPED) == holder.local()
            assert open_sessions(srv) == 2
        finally:
            chatty.close()
            holder.close()
            silent.close(notify=False)
        wait_value(lambda: open_sessions(srv), 0, "turn_connections{dtls}")
        assert allocations(srv) == 0, "the holder's close_notify did not end its allocation"
        assert flight and flight[0][13] == SERVER_HELLO, [d[:16].hex() for d in flight]
        biggest = max(len(d) for d in flight)
        assert biggest <= SMALL_MTU - 28, (
            f"a handshake datagram of {biggest} bytes with mtu = {SMALL_MTU}")
        assert len(flight) > 1
    finally:
        stop_server(srv)


@turnrelay_only
def test_junk_records_do_not_hold_a_session(tmp_path, dtls_cert):
    """A session without allocation that sends only records holding no STUN or ChannelData
    message is closed at idle_timeout_s like a silent one (before: every datagram restarted
    the clock, so junk held a session, and its slot of max_sessions, for ever)."""
    srv = own_server(tmp_path, dtls_cert, idle_timeout_s=IDLE_TIMEOUT_S)
    try:
        junk = DtlsTurnClient(srv, 4)
        t0 = time.monotonic()
        closed_after: Optional[float] = None
        while closed_after is None and time.monotonic() - t0 < 2 * IDLE_TIMEOUT_S + 1:
            junk.send(b"junk: neither STUN nor ChannelData")
            if junk.wait_close_notify(0.3) is not None:
                closed_after = time.monotonic() - t0
        junk.close(notify=False)
        assert closed_after is not None, f"junk every 0.3 s held the session past {2 * IDLE_TIMEOUT_S + 1} s"
        assert closed_after >= IDLE_TIMEOUT_S - 0.7, closed_after
        assert closed(srv, "dtls", "idle") == 1
    finally:
        stop_server(srv)


@turnrelay_only
def test_session_limits(tmp_path, dtls_cert):
    """max_sessions_per_ip = 1, max_sessions = 3: a second session from 127.0.0.1 and a
    fourth in all get no handshake (reason limit); ::1 and 127.0.0.2 are other addresses;
    once a session ends there is room again."""
    srv = own_server(tmp_path, dtls_cert, max_sessions=3, max_sessions_per_ip=1)
    clients: List[DtlsTurnClient] = []
    try:
        a = DtlsTurnClient(srv, 4)
        clients.append(a)
        assert handshake_refused(srv, 4), "a second session from 127.0.0.1 got a handshake"
        assert closed(srv, "dtls", "limit") == 1
        clients.append(DtlsTurnClient(srv, 6))
        clients.append(DtlsTurnClient(srv, 4, source=("127.0.0.2", 0)))
        assert open_sessions(srv) == 3
        assert handshake_refused(srv, 4, source=("127.0.0.3", 0)), (
            "a fourth session (max_sessions = 3) got a handshake")
        assert closed(srv, "dtls", "limit") == 2
        for c in clients[1:]:
            assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()
        a.close()
        wait_value(lambda: open_sessions(srv), 2, "turn_connections{dtls}")
        clients.append(DtlsTurnClient(srv, 4))
        assert clients[-1].binding().xor_addr(A_XOR_MAPPED) == clients[-1].local()
        assert closed(srv, "dtls", "limit") == 2
    finally:
        for c in clients:
            c.close()
        stop_server(srv)


@turnrelay_only
def test_handshake_rate(tmp_path, dtls_cert):
    """handshakes_per_ip_per_s = 1: a second handshake from 127.0.0.1 within the second gets
    none (reason rate); ::1 is another source; a second later 127.0.0.1 gets one again."""
    srv = own_server(tmp_path, dtls_cert, handshakes_per_ip_per_s=1)
    try:
        t0 = time.monotonic()
        with DtlsTurnClient(srv, 4) as c:
            assert c.binding()
        assert handshake_refused(srv, 4, timeout=0.5), "second handshake within 1 s answered"
        assert closed(srv, "dtls", "rate") == 1
        with DtlsTurnClient(srv, 6) as c:
            assert c.binding()
        time.sleep(max(0.0, t0 + 1.3 - time.monotonic()))
        with DtlsTurnClient(srv, 4) as c:
            assert c.binding()
        assert closed(srv, "dtls", "rate") == 1
    finally:
        stop_server(srv)


@turnrelay_only
def test_sighup_new_certificate_for_new_sessions(tmp_path, dtls_cert):
    """SIGHUP with replaced [tls] files: a new DTLS session gets the new certificate, one
    made before keeps working."""
    srv = own_server(tmp_path, dtls_cert)
    try:
        first = DtlsTurnClient(srv, 4, cafile=dtls_cert.ca)
        assert "CN=relay" in first.peer_subject()
        renewed = tls_ca.make_server_cert(tmp_path / "renewed", dtls_cert.authority, "renewed",
                                          "IP:127.0.0.1,IP:::1")
        os.replace(renewed.chain, tmp_path / srv.tls_cert)
        os.replace(renewed.key, tmp_path / srv.tls_key)
        srv.proc.send_signal(signal.SIGHUP)
        assert poll(lambda: "event=tls_reloaded" in srv.log(), bool, timeout=5), srv.log()[-2000:]
        with DtlsTurnClient(srv, 6, cafile=dtls_cert.ca) as second:
            subject = second.peer_subject()
            assert "CN=renewed" in subject, f"new session after SIGHUP got {subject}"
            assert second.binding().xor_addr(A_XOR_MAPPED) == second.local()
        assert first.binding().xor_addr(A_XOR_MAPPED) == first.local(), (
            "a session made before the reload must keep working")
        first.close()
    finally:
        stop_server(srv)


# -------------------------------------------------------------------------------------
# 8. Configuration


def run_config(tmp_path: Path, srv: TurnServer, extra_args=()) -> Tuple[object, str]:
    cfg = write_turnrelay_config(srv)
    log = tmp_path / "turn-relay.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg), *extra_args],
                                cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        stop_process(proc, grace=2)
        rc = "still running after 10 s"
    return rc, log.read_text(errors="replace")


def bare_server(tmp_path: Path) -> TurnServer:
    lo, hi = relay_port_window()
    return TurnServer(kind="turnrelay", port=free_port(), workdir=tmp_path, relay_min=lo,
                      relay_max=hi, metrics_port=free_port(kinds=(socket.SOCK_STREAM,)))


@turnrelay_only
@pytest.mark.parametrize("case", ["no-certificate", "same-as-udp-listener", "mtu-100"])
def test_configuration_errors_stop_startup(tmp_path, dtls_cert, case):
    srv = bare_server(tmp_path)
    srv.dtls_port = free_port(kinds=(socket.SOCK_DGRAM,))
    srv.tls_cert, srv.tls_key = str(dtls_cert.chain), str(dtls_cert.key)
    if case == "no-certificate":
        srv.tls_cert = srv.tls_key = None
        want = ["[tls].certificate", "listen_dtls"]
    elif case == "same-as-udp-listener":
        srv.dtls_port = srv.port
        want = ["[server].listen_dtls"]
    else:
        srv.dtls_settings = {"mtu": 100}
        want = ["[dtls].mtu"]
    rc, out = run_config(tmp_path, srv)
    assert rc != 0 and not isinstance(rc, str), f"turn-relay started ({case}): {rc}\n{out}"
    for w in want:
        assert w in out, f"start-up error does not name {w} ({case}):\n{out}"


@turnrelay_only
def test_cli_listen_dtls(tmp_path, dtls_cert):
    """--listen-dtls IP:PORT on the command line adds a DTLS listener."""
    srv = bare_server(tmp_path)
    srv.tls_cert, srv.tls_key = str(dtls_cert.chain), str(dtls_cert.key)
    port = free_port(kinds=(socket.SOCK_DGRAM,))
    cfg = write_turnrelay_config(srv)
    log = tmp_path / "cli.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg),
                                 "--listen-dtls", f"127.0.0.1:{port}"], cwd=tmp_path,
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        ok = poll(lambda: dtls_hello_answered(("127.0.0.1", port), timeout=0.3), bool,
                  timeout=10, interval=0.1)
        assert ok, "no HelloVerifyRequest on --listen-dtls:\n" + log.read_text(errors="replace")
        assert proc.poll() is None
    finally:
        stop_process(proc, grace=3, second_signal_after=1.0)


# -------------------------------------------------------------------------------------
# 9. SIGTERM


@turnrelay_only
def test_sigterm_drains_and_sends_close_notify(tmp_path, dtls_cert):
    """SIGTERM drains: Allocate over DTLS gets 403, sessions are still served; the
    close_notify of the session holding the last allocation ends it, so the drain ends; the
    process exits 0 and the other session gets close_notify."""
    srv = own_server(tmp_path, dtls_cert)
    try:
        holder = DtlsTurnClient(srv, 4)
        holder.allocate()
        idle = DtlsTurnClient(srv, 6)
        assert idle.binding()
        srv.proc.send_signal(signal.SIGTERM)
        assert poll(lambda: "draining" in srv.log(), bool, timeout=5), "no drain in the log"
        assert idle.binding().xor_addr(A_XOR_MAPPED) == idle.local(), "Binding during drain"
        with DtlsTurnClient(srv, 4) as late:
            r = late.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)])
            assert r.error_code == 403, f"Allocate during the drain: {r}"
        assert srv.proc.poll() is None, "exited while an allocation was held"
        t0 = time.monotonic()
        holder.close()
        try:
            rc = srv.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("turn-relay still draining 5 s after the close_notify of its only "
                        "allocation's session:\n" + log_tail(srv.log_path, 20))
        assert rc == 0, f"exit code {rc}:\n{log_tail(srv.log_path, 20)}"
        assert time.monotonic() - t0 < 5
        assert idle.wait_close_notify(2.0) is not None, (
            "the open session got no close_notify when turn-relay exited")
        idle.close(notify=False)
    finally:
        stop_process(srv.proc, grace=2)
        if (f"{srv.kind} server", srv.log_path) in _ACTIVE_LOGS:
            _ACTIVE_LOGS.remove((f"{srv.kind} server", srv.log_path))
