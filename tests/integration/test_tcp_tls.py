"""TURN over TCP and TURN over TLS (RFC 8656 section 3.1): the client talks to the server
on a stream, the relayed transport stays UDP.

The module's server has TCP listeners on the UDP port's number (127.0.0.1 and ::1) and TLS
listeners on a port of their own, with a self-signed certificate for the IP SANs 127.0.0.1
and ::1 made by the openssl CLI (turn-relay reads it through paths relative to its working
directory). What must hold:

- coturn's `turnutils_uclient` over TCP (`-t`, channels and Send indications `-s`, IPv4 and
  IPv6) and over TLS (`-t -S`): exit 0, received == sent > 0, no loss, relayed ports in
  range; turn-relay counts the accepted connections per transport and, once uclient is
  gone, has no connection and no allocation left. The four TCP runs go at once (each takes
  4-7 s, mostly uclient's own waits), the two TLS runs alone at uclient's default pace:
  uclient -S takes one TLS record for one message, and a server may legitimately pack
  several queued messages into one record (see TLS_INTERVAL_MS).
- aioice 0.8 `Connection` with `turn_transport="tcp"` (and `turn_ssl` = an SSLContext that
  verifies the test certificate), TURN server on 127.0.0.1 and ::1: a relay-only agent and
  a host-only agent on 127.0.0.1 connect, exchange data both ways, and the nominated pairs
  are relayed -> host and host -> relayed address. aioice's TransportPolicy.RELAY only
  hides host candidates from local_candidates; its host sockets are still paired and can
  win (seen against coturn), so the test closes them after gathering.
- A raw client written here (STUN encoder with MESSAGE-INTEGRITY, key MD5(user:realm:pass)
  and FINGERPRINT; the server's MESSAGE-INTEGRITY is checked too): Binding answers the
  client socket's own address and the TLS listener presents the configured certificate
  (verified against it, IP SAN) and selects ALPN "stun.turn" when offered (RFC 7443);
  the same when the request is written one byte at a time (one TCP segment or TLS record
  each) and for three requests in one write with the last one split; Allocate gets 401 then
  succeeds (a second one on the connection 437), `turn_allocations` and `turn_connections`
  go up and come back down when the socket is closed (the 5-tuple is gone, its relayed port
  is released, reason `client`); ChannelData to the echo peer and back is padded to a
  multiple of 4 on the stream (RFC 8656 section 12.5) in both directions and the peer sees
  the bare payload; Send indication -> Data indication.
- Hostile and misbehaving clients (turn-relay only, its [tcp] settings): a frame that is
  neither STUN nor ChannelData (first bits 11 or 10, a STUN length not a multiple of 4)
  closes the TCP or TLS connection within 2 s (reason `bad_frame`) and the server still
  answers new ones; with idle_timeout_s = 2 a client with no allocation and no complete
  message (half a header; one byte every 0.4 s; a TLS session with nothing sent; a TCP
  connection to the TLS port that never starts the handshake) is closed no earlier than that
  (reason `idle`), one that keeps sending complete messages (a Binding every 0.4 s) or holds
  an allocation is not; non-TLS bytes on the TLS port close with reason `tls_handshake`; the
  connection over max_connections (8) is closed (reason `limit`) and there is room again
  once one closes; a client that stops reading while its peer floods it loses whole
  ChannelData messages (`turn_drops_total{reason="stream_backpressure"}`, send_buffer_bytes
  = 70000, the smallest accepted), never the stream's framing or order, and the connection
  still answers afterwards; after SIGTERM (drain) Allocate over TCP gets 403, open
  connections are still served, and closing the connection of the last allocation ends the
  drain (exit 0 within 5 s); listen_tls without `[tls].certificate`, or with a key that
  is not the certificate's, is a start-up error naming the key at fault; a TLS 1.3 client
  that sends a KeyUpdate split over two records (records of its own, under the traffic keys
  from python's key log) and holds back the second while a peer's datagram arrives for it
  costs the server under 0.4 s of CPU in 2 s, and gets the Data indication once it sends
  the rest.
- Headless Chromium (fixtures and page driver from test_chromium.py) with
  `turn:127.0.0.1:PORT?transport=tcp` and `turn:[::1]:PORT?transport=tcp`,
  iceTransportPolicy 'relay': the data channel opens, messages go both ways, and the
  selected local candidate is relayed with relayProtocol "tcp".

With TURN_SERVER=coturn the protocol tests run against coturn (TCP on the listening port,
--tls-listening-port with the same certificate) to validate the tests themselves; the
metric assertions and the turn-relay [tcp] behaviours are skipped there.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import select
import signal
import socket
import ssl
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import aioice.ice
from aioice import Connection, TransportPolicy

from conftest import (_ACTIVE_LOGS, TurnServer, TurnutilsPeer, find_turn_relay_bin, free_port,
                      log_tail, make_self_signed_cert, relay_port_window, server_kind,
                      start_server, stop_process, stop_server, write_turnrelay_config)
from test_uclient import CLIENTS, INTERVAL_MS, LENGTH, MESSAGES, UCLIENT, assert_no_loss, relay_port

try:  # Chromium's fixtures and page driver; test_chromium skips itself without Chromium.
    from test_chromium import _run_page, assert_relayed_call, browser, http_page  # noqa: F401 (fixtures)
    HAVE_CHROMIUM = True
except (ImportError, pytest.skip.Exception):
    HAVE_CHROMIUM = False

TIMEOUT_S = 10
IDLE_TIMEOUT_S = 2
MAX_CONNECTIONS = 8
SEND_BUFFER_BYTES = 70000   # the smallest turn-relay accepts (a whole 64 KiB message fits)

turnrelay_only = pytest.mark.skipif(server_kind() != "turnrelay",
                                    reason="turn-relay's [tcp] behaviour and metrics")


# -------------------------------------------------------------------------------------
# Servers


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory, tls_certificate):
    """This module's server: UDP + TCP on one port number, TLS on another (both families).
    Overrides conftest's turn_server, so conftest's `server` fixture checks this one."""
    srv = start_server(tmp_path_factory.mktemp("turnserver"), tcp=True,
                       tls_files=tls_certificate)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def strict_server_module(tmp_path_factory, tls_certificate):
    """turn-relay with a short idle timeout, few connections and a small send buffer."""
    if server_kind() != "turnrelay":
        pytest.skip("turn-relay's [tcp] settings")
    srv = start_server(tmp_path_factory.mktemp("strictserver"), tcp=True,
                       tls_files=tls_certificate,
                       tcp_settings={"idle_timeout_s": IDLE_TIMEOUT_S,
                                     "max_connections": MAX_CONNECTIONS,
                                     "send_buffer_bytes": SEND_BUFFER_BYTES})
    yield srv
    stop_server(srv)


@pytest.fixture
def strict_server(strict_server_module):
    strict_server_module.assert_alive()
    # Every test starts with no client connection left over from the one before.
    wait_connections(strict_server_module, 0)
    yield strict_server_module
    strict_server_module.assert_alive()


@pytest.fixture
def client_ctx(tls_certificate) -> ssl.SSLContext:
    """A TLS client context that trusts (only) the test certificate and checks the IP SAN."""
    ctx = ssl.create_default_context(cafile=str(tls_certificate[0]))
    ctx.check_hostname = True
    return ctx


# -------------------------------------------------------------------------------------
# Metrics helpers


def metric0(server: TurnServer, name: str, **labels) -> float:
    v = server.metric(name, **labels)
    return 0.0 if v is None else v


def poll(fn, pred, timeout: float = 5.0, interval: float = 0.05):
    """fn() until pred(value) or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    v = fn()
    while not pred(v) and time.monotonic() < deadline:
        time.sleep(interval)
        v = fn()
    return v


def open_connections(server: TurnServer) -> float:
    return metric0(server, "turn_connections", transport="tcp") + \
        metric0(server, "turn_connections", transport="tls")


@pytest.fixture(autouse=True)
def _connections_gone(turn_server):
    """Each test's TCP and TLS connections to the module's server have ended before the next
    test starts, so that no test's baseline (allocations, connections) counts the last one's
    connection whose close the server has not handled yet."""
    before = open_connections(turn_server)
    yield
    poll(lambda: open_connections(turn_server), lambda v: v <= before, timeout=5.0)


def wait_connections(server: TurnServer, n: float, timeout: float = 5.0) -> None:
    if server.kind != "turnrelay":
        return
    v = poll(lambda: open_connections(server), lambda v: v == n, timeout)
    assert v == n, f"turn_connections (tcp+tls) is {v}, expected {n} within {timeout}s"


def closed(server: TurnServer, transport: str, reason: str) -> float:
    return metric0(server, "turn_connections_closed_total", transport=transport, reason=reason)


# -------------------------------------------------------------------------------------
# A small STUN/TURN encoder and stream client

MAGIC = 0x2112A442
MAGIC_BYTES = struct.pack("!I", MAGIC)

BINDING, ALLOCATE, REFRESH, SEND, DATA, CREATE_PERMISSION, CHANNEL_BIND = 1, 3, 4, 6, 7, 8, 9
REQUEST, INDICATION, SUCCESS, ERROR = 0x0000, 0x0010, 0x0100, 0x0110

A_USERNAME, A_MESSAGE_INTEGRITY, A_ERROR_CODE = 0x0006, 0x0008, 0x0009
A_CHANNEL_NUMBER, A_LIFETIME, A_XOR_PEER, A_DATA = 0x000C, 0x000D, 0x0012, 0x0013
A_REALM, A_NONCE, A_XOR_RELAYED, A_REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0016, 0x0019
A_XOR_MAPPED, A_FINGERPRINT = 0x0020, 0x8028

UDP = struct.pack("!B3x", 17)


def pad4(n: int) -> int:
    return (n + 3) & ~3


def xor_address(addr: Tuple[str, int], tid: bytes) -> bytes:
    host, port = addr[0], addr[1]
    if ":" in host:
        raw = socket.inet_pton(socket.AF_INET6, host)
        key = MAGIC_BYTES + tid
        return struct.pack("!BBH", 0, 2, port ^ (MAGIC >> 16)) + bytes(
            a ^ b for a, b in zip(raw, key))
    raw = socket.inet_pton(socket.AF_INET, host)
    return struct.pack("!BBH", 0, 1, port ^ (MAGIC >> 16)) + bytes(
        a ^ b for a, b in zip(raw, MAGIC_BYTES))


def unxor_address(val: bytes, tid: bytes) -> Tuple[str, int]:
    fam, xport = val[1], struct.unpack("!H", val[2:4])[0]
    port = xport ^ (MAGIC >> 16)
    if fam == 1:
        raw = bytes(a ^ b for a, b in zip(val[4:8], MAGIC_BYTES))
        return socket.inet_ntop(socket.AF_INET, raw), port
    key = MAGIC_BYTES + tid
    return socket.inet_ntop(socket.AF_INET6, bytes(a ^ b for a, b in zip(val[4:20], key))), port


def long_term_key(user: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).digest()


def encode(mtype: int, attrs: List[Tuple[int, bytes]], tid: Optional[bytes] = None,
           key: Optional[bytes] = None, fingerprint: bool = True) -> bytes:
    """A STUN message; MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) and FINGERPRINT last."""
    tid = tid or os.urandom(12)
    body = b""
    for t, v in attrs:
        body += struct.pack("!HH", t, len(v)) + v + b"\0" * (pad4(len(v)) - len(v))
    if key is not None:
        head = struct.pack("!HHI", mtype, len(body) + 24, MAGIC) + tid
        mac = hmac.new(key, head + body, hashlib.sha1).digest()
        body += struct.pack("!HH", A_MESSAGE_INTEGRITY, 20) + mac
    if fingerprint:
        head = struct.pack("!HHI", mtype, len(body) + 8, MAGIC) + tid
        crc = (zlib.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += struct.pack("!HHI", A_FINGERPRINT, 4, crc)
    return struct.pack("!HHI", mtype, len(body), MAGIC) + tid + body


class Message:
    def __init__(self, raw: bytes):
        self.raw = raw
        self.type, self.length, magic = struct.unpack("!HHI", raw[:8])
        assert magic == MAGIC, f"bad magic cookie in {raw[:20].hex()}"
        self.tid = raw[8:20]
        self.attrs: List[Tuple[int, bytes, int]] = []  # (type, value, offset)
        i = 20
        while i + 4 <= 20 + self.length:
            t, n = struct.unpack("!HH", raw[i:i + 4])
            self.attrs.append((t, raw[i + 4:i + 4 + n], i))
            i += 4 + pad4(n)

    def get(self, t: int) -> Optional[bytes]:
        for at, v, _ in self.attrs:
            if at == t:
                return v
        return None

    @property
    def error_code(self) -> Optional[int]:
        v = self.get(A_ERROR_CODE)
        return None if v is None else (v[2] & 7) * 100 + v[3]

    def xor_addr(self, t: int) -> Optional[Tuple[str, int]]:
        v = self.get(t)
        return None if v is None else unxor_address(v, self.tid)

    def check_integrity(self, key: bytes) -> bool:
        """MESSAGE-INTEGRITY over the message up to it, with the length field counting
        through MESSAGE-INTEGRITY (RFC 8489 14.5)."""
        for t, v, off in self.attrs:
            if t == A_MESSAGE_INTEGRITY:
                head = struct.pack("!HH", self.type, off - 20 + 24)
                mac = hmac.new(key, head + self.raw[4:off], hashlib.sha1).digest()
                return hmac.compare_digest(mac, v)
        return False

    def __repr__(self) -> str:
        return (f"<STUN 0x{self.type:04x} tid={self.tid.hex()} error={self.error_code} "
                f"attrs={[hex(t) for t, _, _ in self.attrs]}>")


class Closed(Exception):
    pass


class StreamClient:
    """A TURN client on one TCP or TLS connection, framing by hand (RFC 8656 12.5)."""

    def __init__(self, server: TurnServer, family: int = 4, tls: bool = False,
                 ctx: Optional[ssl.SSLContext] = None, rcvbuf: Optional[int] = None):
        self.server = server
        addr = server.stream_addr(family, tls)
        fam = socket.AF_INET6 if family == 6 else socket.AF_INET
        raw = socket.socket(fam, socket.SOCK_STREAM)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(TIMEOUT_S)
        raw.connect(addr)
        self.sock = raw
        if tls:
            if ctx is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(raw, server_hostname=addr[0])
        self.buf = b""
        self.key: Optional[bytes] = None
        self.realm: Optional[bytes] = None
        self.nonce: Optional[bytes] = None

    def local(self) -> Tuple[str, int]:
        return self.sock.getsockname()[:2]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- raw bytes

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(f"connection reset: {e}")
        if not chunk:
            raise Closed("connection closed by the server")
        self.buf += chunk

    def read_exact(self, n: int, timeout: float = TIMEOUT_S) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout: float = TIMEOUT_S):
        """One frame: ('stun', Message) or ('channel', (number, payload, bytes on wire))."""
        head = self.read_exact(4, timeout)
        first, length = struct.unpack("!HH", head)
        if 0x4000 <= first <= 0x7FFF:
            wire = self.read_exact(pad4(length), timeout)
            return "channel", (first, wire[:length], 4 + len(wire))
        assert first & 0xC000 == 0, f"server sent a frame starting with {head.hex()}"
        rest = self.read_exact(16 + length, timeout)
        return "stun", Message(head + rest)

    def wait_closed(self, timeout: float) -> Optional[str]:
        """'eof' or 'reset' once the server closed the connection, None after `timeout`.
        Anything the server sends before (say a TLS alert) is discarded."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return "eof"
            except socket.timeout:
                return None
            except ssl.SSLWantReadError:
                continue
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return "reset"

    def is_closed_now(self) -> bool:
        """Non-blocking: has the server closed the connection (EOF or reset)?"""
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
            if not data:
                return True
            self.buf += data
            return False
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            return True
        finally:
            self.sock.setblocking(True)

    # --- STUN

    def transact(self, mtype: int, attrs, auth: bool = False,
                 timeout: float = TIMEOUT_S) -> Message:
        """Send a request and return its response (other frames in between are skipped).
        `attrs`: a list of (type, value), or a function of the transaction id returning one
        (XOR-PEER-ADDRESS of an IPv6 peer depends on it)."""
        tid = os.urandom(12)
        if callable(attrs):
            attrs = attrs(tid)
        if auth:
            attrs = attrs + [(A_USERNAME, self.server.username.encode()),
                             (A_REALM, self.realm), (A_NONCE, self.nonce)]
        self.send(encode(mtype, attrs, tid=tid, key=self.key if auth else None))
        deadline = time.monotonic() + timeout
        while True:
            kind, frame = self.read_frame(max(0.01, deadline - time.monotonic()))
            if kind == "stun" and frame.tid == tid:
                return frame

    def request(self, method: int, attrs) -> Message:
        """An authenticated request (long-term credentials), learning REALM/NONCE from a
        401 (or a fresh NONCE from 438) first."""
        if self.key is None:
            r = self.transact(method, attrs)
            if r.type != (method | ERROR) or r.error_code != 401:
                return r
            self.realm, self.nonce = r.get(A_REALM), r.get(A_NONCE)
            assert self.realm and self.nonce, f"401 without REALM and NONCE: {r}"
            self.key = long_term_key(self.server.username, self.realm.decode(),
                                     self.server.password)
        r = self.transact(method, attrs, auth=True)
        if r.type == (method | ERROR) and r.error_code == 438:
            self.nonce = r.get(A_NONCE)
            r = self.transact(method, attrs, auth=True)
        if r.type == (method | SUCCESS):
            assert r.check_integrity(self.key), f"bad MESSAGE-INTEGRITY on the response {r}"
        return r

    def allocate(self) -> Tuple[str, int]:
        r = self.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)])
        assert r.type == ALLOCATE | SUCCESS, f"Allocate failed: {r}"
        relayed = r.xor_addr(A_XOR_RELAYED)
        assert relayed is not None, f"no XOR-RELAYED-ADDRESS: {r}"
        return relayed

    def binding(self, timeout: float = TIMEOUT_S) -> Message:
        r = self.transact(BINDING, [], timeout=timeout)
        assert r.type == BINDING | SUCCESS, f"Binding failed: {r}"
        return r


def channel_bind(c: StreamClient, number: int, peer: Tuple[str, int]) -> None:
    r = c.request(CHANNEL_BIND, lambda tid: [(A_CHANNEL_NUMBER, struct.pack("!HH", number, 0)),
                                             (A_XOR_PEER, xor_address(peer, tid))])
    assert r.type == CHANNEL_BIND | SUCCESS, f"ChannelBind {number:#x} -> {peer} failed: {r}"


def create_permission(c: StreamClient, peer: Tuple[str, int]) -> None:
    r = c.request(CREATE_PERMISSION, lambda tid: [(A_XOR_PEER, xor_address(peer, tid))])
    assert r.type == CREATE_PERMISSION | SUCCESS, f"CreatePermission {peer} failed: {r}"


def channel_data(number: int, payload: bytes) -> bytes:
    """ChannelData padded to a multiple of 4 bytes, as RFC 8656 12.5 requires over TCP."""
    pad = b"\0" * (pad4(len(payload)) - len(payload))
    return struct.pack("!HH", number, len(payload)) + payload + pad


def send_indication(peer: Tuple[str, int], payload: bytes) -> bytes:
    tid = os.urandom(12)
    return encode(SEND | INDICATION, [(A_XOR_PEER, xor_address(peer, tid)), (A_DATA, payload)],
                  tid=tid, fingerprint=False)


STREAMS = [("tcp-ipv4", 4, False), ("tcp-ipv6", 6, False), ("tls-ipv4", 4, True),
           ("tls-ipv6", 6, True)]
STREAM_IDS = [s[0] for s in STREAMS]
STREAM_PARAMS = [s[1:] for s in STREAMS]


def transport_of(tls: bool) -> str:
    return "tls" if tls else "tcp"


# -------------------------------------------------------------------------------------
# 1. turnutils_uclient over TCP and TLS

UCLIENT_CASES = [
    # (id, wave, server family, TLS, extra flags, peer family)
    ("tcp-ipv4-channels", 0, 4, False, ["-t"], 4),
    ("tcp-ipv4-send-indications", 0, 4, False, ["-t", "-s"], 4),
    ("tcp-ipv6-channels", 0, 6, False, ["-t", "-x"], 6),
    ("tcp-ipv6-send-indications", 0, 6, False, ["-t", "-x", "-s"], 6),
    ("tls-ipv4-channels", 1, 4, True, ["-t", "-S"], 4),
    ("tls-ipv6-send-indications", 2, 6, True, ["-t", "-S", "-x", "-s"], 6),
]

UCLIENT_TIMEOUT_S = 60
# uclient -S takes whatever one SSL_read returns, i.e. one TLS record, for one message. A
# server may put several messages queued for a connection into one record (coturn and
# turn-relay both do, e.g. for pipelined requests); uclient then loses all but the first
# (silently for Data indications). Echoes queue up together mostly when they come fast and
# the host is busy, so the TLS cases send at uclient's default pace (one per 20 ms).
TLS_INTERVAL_MS = 20


class UclientRuns:
    """uclient runs take 4-7 s each, mostly uclient's own waits, so the TCP cases run at
    once (wave 0), each with a turnutils_peer of its own. The TLS cases run alone, one after
    the other, so that their echoes rarely queue up (see TLS_INTERVAL_MS). Output goes to a
    file per case; tests collect their case's result."""

    def __init__(self, server: TurnServer, workdir):
        self.server = server
        self.workdir = workdir
        self.accepted0 = {t: metric0(server, "turn_connections_accepted_total", transport=t)
                          for t in ("tcp", "tls")}
        self.procs: Dict[str, Tuple[subprocess.Popen, List[str], object]] = {}
        self.results: Dict[str, Tuple[object, str, str]] = {}
        self.peers: List[TurnutilsPeer] = []
        self.started_waves: set = set()
        # turn-relay's relayed packet counters when each wave started and ended
        self.counters: Dict[int, List[Dict[str, float]]] = {}

    def _relayed(self) -> Dict[str, float]:
        return {d: metric0(self.server, "turn_relayed_packets_total", direction=d)
                for d in ("client_to_peer", "peer_to_client")}

    def _start_wave(self, wave: int) -> None:
        server = self.server
        for case_id, w, family, tls, flags, peer_family in UCLIENT_CASES:
            if w != wave:
                continue
            d = self.workdir / f"peer-{case_id}"
            d.mkdir()
            peer = TurnutilsPeer(d)
            self.peers.append(peer)
            host = "127.0.0.1" if family == 4 else "::1"
            peer_ip = "127.0.0.1" if peer_family == 4 else "::1"
            port = server.stream_addr(family, tls)[1]
            interval = TLS_INTERVAL_MS if tls else INTERVAL_MS
            cmd = [UCLIENT, "-v", "-u", server.username, "-w", server.password,
                   "-p", str(port), "-n", str(MESSAGES), "-l", str(LENGTH),
                   "-z", str(interval), "-m", str(CLIENTS), "-e", peer_ip,
                   "-r", str(peer.port)] + flags + [host]
            out = self.workdir / f"uclient-{case_id}.log"
            with open(out, "wb") as f:
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            self.procs[case_id] = (proc, cmd, out)
        self.started_waves.add(wave)
        self.counters[wave] = [self._relayed()]

    def _collect(self, case_id: str) -> None:
        if case_id in self.results:
            return
        proc, cmd, out = self.procs[case_id]
        try:
            proc.wait(timeout=UCLIENT_TIMEOUT_S)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            stop_process(proc, grace=2)
            rc = f"killed after {UCLIENT_TIMEOUT_S} s"
        self.results[case_id] = (rc, out.read_text(errors="replace"), " ".join(cmd))
        wave = next(c[1] for c in UCLIENT_CASES if c[0] == case_id)
        if len(self.counters[wave]) == 1 and all(
                c[0] in self.results for c in UCLIENT_CASES if c[1] == wave):
            self.counters[wave].append(self._relayed())

    def relayed_during(self, case_id: str) -> str:
        """turn-relay's relayed packets while the case's wave ran (to tell a loss in the
        relay from one in the client when the wave is a single uclient)."""
        wave = next(c[1] for c in UCLIENT_CASES if c[0] == case_id)
        c = self.counters.get(wave, [])
        if self.server.kind != "turnrelay" or len(c) != 2:
            return ""
        runs = sum(1 for x in UCLIENT_CASES if x[1] == wave)
        grew = ", ".join(f"{d}={c[1][d] - c[0][d]:.0f}" for d in c[0])
        return (f"\nturn_relayed_packets_total grew by {grew} while this wave of {runs} "
                f"uclient run(s) ran")

    def result(self, case_id: str) -> Tuple[object, str, str]:
        """(exit code, output, command) of a case; runs the waves up to its own first."""
        wave = next(c[1] for c in UCLIENT_CASES if c[0] == case_id)
        for w in range(wave + 1):
            if w not in self.started_waves:
                for c in UCLIENT_CASES:      # every earlier wave has ended
                    if c[1] < w:
                        self._collect(c[0])
                self._start_wave(w)
        self._collect(case_id)
        return self.results[case_id]

    def close(self) -> None:
        for proc, _, _ in self.procs.values():
            stop_process(proc, grace=2)
        for peer in self.peers:
            peer.close()


@pytest.fixture(scope="module")
def uclient_runs(turn_server, tmp_path_factory):
    runs = UclientRuns(turn_server, tmp_path_factory.mktemp("uclient"))
    try:
        yield runs
    finally:
        runs.close()


@pytest.mark.parametrize("case_id,flags", [(c[0], c[4]) for c in UCLIENT_CASES],
                         ids=[c[0] for c in UCLIENT_CASES])
def test_uclient_stream(server, uclient_runs, case_id, flags):
    rc, out, cmd = uclient_runs.result(case_id)
    try:
        s, relays = assert_no_loss(rc, out, cmd)
    except AssertionError as e:
        raise AssertionError(str(e) + uclient_runs.relayed_during(case_id)) from None
    if "-S" in flags:
        assert "tls_connect: client session connected" in out, "uclient made no TLS session"
    for r in relays:
        assert server.relay_min <= relay_port(r) <= server.relay_max, r
        if "-x" in flags:
            assert r.count(":") > 1, f"IPv6 relay requested (-x), got {r}"


@turnrelay_only
def test_uclient_stream_connections_counted_and_released(server, uclient_runs):
    """After every uclient run: accepted connections counted per transport (at least one
    per uclient session), and none open and no allocation left once uclient exited."""
    for case_id, *_ in UCLIENT_CASES:
        uclient_runs.result(case_id)
    for transport in ("tcp", "tls"):
        runs = sum(1 for c in UCLIENT_CASES if transport_of(c[3]) == transport)
        grew = (metric0(server, "turn_connections_accepted_total", transport=transport)
                - uclient_runs.accepted0[transport])
        assert grew >= runs * CLIENTS, (
            f"turn_connections_accepted_total{{transport={transport}}} grew by {grew}, "
            f"expected at least {runs * CLIENTS} ({runs} uclient runs of {CLIENTS} sessions)")
    wait_connections(server, 0)
    allocs = poll(lambda: metric0(server, "turn_allocations"), lambda v: v == 0)
    assert allocs == 0, f"turn_allocations {allocs} after every uclient exited"


# -------------------------------------------------------------------------------------
# 2. aioice ICE agents, one relay-only through TURN over TCP / TLS


@pytest.fixture
def loopback_hosts(monkeypatch):
    """aioice's host candidates (agent B) and unused host sockets (agent A) on 127.0.0.1
    only, so nothing leaves loopback."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses",
                        lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def drop_host_protocols(conn: Connection) -> None:
    """aioice 0.8's TransportPolicy.RELAY only keeps host candidates out of
    local_candidates: its host sockets stay in Connection._protocols and are paired with
    every remote candidate, so a host/host pair can win (seen against coturn). Close them,
    so that the agent really can only use its relayed candidate."""
    class Ignore:
        def data_received(self, data, component):
            pass   # not the Connection's "connection lost" (which would end recv())

    for p in [p for p in conn._protocols if p.local_candidate.type != "relay"]:
        conn._protocols.remove(p)
        p.receiver = Ignore()
        p.transport.close()


@pytest.mark.parametrize("family,tls", STREAM_PARAMS, ids=STREAM_IDS)
def test_aioice_relay_only_over_stream(server, loopback_hosts, client_ctx, family, tls):
    transport = transport_of(tls)
    accepted = metric0(server, "turn_connections_accepted_total", transport=transport)

    async def run():
        a = Connection(ice_controlling=True, turn_server=server.stream_addr(family, tls),
                       turn_username=server.username, turn_password=server.password,
                       turn_transport="tcp", turn_ssl=client_ctx if tls else False,
                       use_ipv6=False, transport_policy=TransportPolicy.RELAY)
        b = Connection(ice_controlling=False, use_ipv6=False)
        try:
            await asyncio.wait_for(a.gather_candidates(), TIMEOUT_S)
            drop_host_protocols(a)
            await asyncio.wait_for(b.gather_candidates(), TIMEOUT_S)
            cands_a = a.local_candidates
            assert cands_a and all(c.type == "relay" for c in cands_a), (
                f"relay-only agent gathered {cands_a}")
            for c in cands_a:
                await b.add_remote_candidate(c)
            await b.add_remote_candidate(None)
            for c in b.local_candidates:
                await a.add_remote_candidate(c)
            await a.add_remote_candidate(None)
            a.remote_username, a.remote_password = b.local_username, b.local_password
            b.remote_username, b.remote_password = a.local_username, a.local_password
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), TIMEOUT_S)
            got_b, got_a = [], []
            for i in range(10):
                msg = f"a->b {i} ".encode() + os.urandom(i * 100)
                await a.send(msg)
                got_b.append((msg, await asyncio.wait_for(b.recv(), TIMEOUT_S)))
                reply = b"b->a " + msg
                await b.send(reply)
                got_a.append((reply, await asyncio.wait_for(a.recv(), TIMEOUT_S)))
            return cands_a, a._nominated.get(1), b._nominated.get(1), got_a, got_b
        finally:
            await a.close()
            await b.close()

    cands_a, pair_a, pair_b, got_a, got_b = asyncio.run(run())
    assert all(sent == got for sent, got in got_b), "a->b data differs"
    assert all(sent == got for sent, got in got_a), "b->a data differs"
    relay = cands_a[0]
    assert relay.host == "127.0.0.1", f"relayed candidate {relay} is not the IPv4 relay_ip"
    assert server.relay_min <= relay.port <= server.relay_max, relay
    assert pair_a is not None and pair_b is not None, "no nominated pair"
    assert pair_a.local_candidate.type == "relay", f"A's nominated pair is {pair_a}"
    assert (pair_a.local_candidate.host, pair_a.local_candidate.port) == (relay.host, relay.port)
    assert pair_a.remote_candidate.type == "host" and pair_b.local_candidate.type == "host"
    assert pair_b.remote_addr == (relay.host, relay.port), (
        f"B's nominated pair {pair_b} does not go to A's relayed address")
    if server.kind == "turnrelay":
        after = metric0(server, "turn_connections_accepted_total", transport=transport)
        assert after > accepted, f"no {transport} connection accepted for aioice"


# -------------------------------------------------------------------------------------
# 3. A raw client: Binding, Allocate, connection close, ChannelData padding


@pytest.mark.parametrize("family,tls", STREAM_PARAMS, ids=STREAM_IDS)
def test_binding_mapped_address(server, client_ctx, family, tls):
    with StreamClient(server, family, tls, ctx=client_ctx) as c:
        if tls:
            # The server presents the configured certificate (verified by client_ctx).
            cert = c.sock.getpeercert()
            assert ("commonName", "turnrelay.test") in [x for rdn in cert["subject"] for x in rdn]
        r = c.binding()
        assert r.xor_addr(A_XOR_MAPPED) == c.local(), (
            f"XOR-MAPPED-ADDRESS {r.xor_addr(A_XOR_MAPPED)} != client address {c.local()}")


@turnrelay_only
@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_tls_last_request_then_close_notify(server, version):
    """A client that sends its last request and its close_notify in one TCP segment (a
    Refresh 0, then close) gets the answer, then the server's own close_notify (RFC 8446
    section 6.1, RFC 5246 section 7.2.1). Before, the queued answer was dropped with the
    connection and no close_notify came: the client saw an EOF, every time."""
    from OpenSSL import SSL
    ver = SSL.TLS1_3_VERSION if version == "1.3" else SSL.TLS1_2_VERSION
    for _ in range(5):
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(ver)
        ctx.set_max_proto_version(ver)
        s = socket.create_connection(server.stream_addr(4, tls=True), timeout=5)
        s.settimeout(None)  # blocking for pyOpenSSL's handshake; the reads below wait in select
        try:
            c = SSL.Connection(ctx, s)
            c.set_connect_state()
            c.do_handshake()
            tid = os.urandom(12)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # request + close_notify: one segment
            c.sendall(encode(BINDING, [], tid=tid))
            c.shutdown()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            got, end, how = b"", time.monotonic() + 5, "timeout"
            while time.monotonic() < end:
                if not select.select([s], [], [], 0.2)[0]:
                    continue
                try:
                    got += c.recv(65536)
                except SSL.WantReadError:
                    continue
                except SSL.ZeroReturnError:
                    how = "close_notify"
                    break
                except SSL.Error as e:
                    how = f"no close_notify: {e!r}"
                    break
            assert tid in got, f"TLS {version}: the answer to the request before close_notify was lost ({how})"
            assert how == "close_notify", f"TLS {version}: {how}"
        finally:
            s.close()


def hkdf_expand_label(h, secret: bytes, label: bytes, length: int) -> bytes:
    """RFC 8446 section 7.1, with an empty context."""
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\0"
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(secret, t + info + bytes([i]), h).digest()
        out += t
        i += 1
    return out[:length]


class Tls13RecordClient(StreamClient):
    """TLS 1.3 through python's ssl over memory BIOs, which can also write records of its
    own under the client's application traffic keys (read from the key log): for what no
    TLS library sends, such as a handshake message split over two records. Once it wrote one
    of its own, everything it sends goes in its own records; reading stays python's."""

    def __init__(self, server: TurnServer, keylog: Path):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
        self.server = server
        addr = server.stream_addr(4, tls=True)
        self.sock = socket.create_connection(addr, timeout=TIMEOUT_S)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.keylog_filename = str(keylog)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=addr[0])
        self.buf = b""
        self.key = self.realm = self.nonce = None
        self.seq: Optional[int] = None   # records written under the traffic keys
        self.own = False
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._receive(deadline)
        self._flush()   # the client's Finished: the records after it start at 0
        self.seq = 0
        name = self.tls.cipher()[0]
        self.hash = hashlib.sha384 if name.endswith("SHA384") else hashlib.sha256
        self.aead = ChaCha20Poly1305 if "CHACHA20" in name else AESGCM
        self.key_len = 16 if "AES_128" in name else 32
        self.secret = next(bytes.fromhex(line.split()[2]) for line in keylog.read_text().splitlines()
                           if line.startswith("CLIENT_TRAFFIC_SECRET_0 "))

    def _flush(self) -> None:
        data = self.outgoing.read()
        if self.seq is not None:   # python's own records: count them
            i = 0
            while i + 5 <= len(data):
                self.seq += 1
                i += 5 + struct.unpack("!H", data[i + 3:i + 5])[0]
        if data:
            self.sock.sendall(data)

    def _receive(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed("connection closed by the server")
        self.incoming.write(chunk)

    def _fill(self, deadline: float) -> None:
        while True:
            try:
                data = self.tls.read(65536)
                if not data:
                    raise Closed("close_notify from the server")
                self.buf += data
                return
            except ssl.SSLWantReadError:
                self._flush()
            self._receive(deadline)

    def send(self, data: bytes) -> None:
        if self.own:
            self.record(23, data)
        else:
            self.tls.write(data)
            self._flush()

    def record(self, content_type: int, payload: bytes) -> None:
        """One record of ours: `payload` of `content_type` (RFC 8446 section 5.2)."""
        self.own = True
        key = hkdf_expand_label(self.hash, self.secret, b"key", self.key_len)
        iv = hkdf_expand_label(self.hash, self.secret, b"iv", 12)
        nonce = bytes(a ^ b for a, b in zip(iv, self.seq.to_bytes(12, "big")))
        inner = payload + bytes([content_type])
        header = struct.pack("!BHH", 23, 0x0303, len(inner) + 16)
        self.sock.sendall(header + self.aead(key).encrypt(nonce, inner, header))
        self.seq += 1

    def next_keys(self) -> None:
        """The client's next traffic keys, as after its own KeyUpdate (RFC 8446 7.2)."""
        self.secret = hkdf_expand_label(self.hash, self.secret, b"traffic upd",
                                        self.hash().digest_size)
        self.seq = 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@turnrelay_only   # coturn 4.6 here refuses TLS 1.3 clients
def test_tls_write_waiting_for_the_rest_of_a_key_update_does_not_spin(server, tmp_path):
    """A TLS 1.3 client sends a KeyUpdate split over two records (RFC 8446 section 5.1 lets a
    handshake message span records) and holds the second back while a peer's datagram
    arrives for it. OpenSSL writes nothing before it has the whole message (SSL_write:
    SSL_ERROR_WANT_READ): the server must wait for the client's bytes, not for a writable
    socket. Before, it waited for EPOLLOUT, which came on every poll: 100 % of a core for as
    long as the client held back (1.3 s of CPU in 2 s on a busy 2-core host). Its CPU time
    over those 2 s stays under 0.4 s; once the second record comes, the Data indication
    arrives (after the server's own KeyUpdate), and a Binding under the client's new keys is
    answered."""
    c = Tls13RecordClient(server, tmp_path / "keys.log")
    with c, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        relayed = c.allocate()
        create_permission(c, peer.getsockname())
        c.record(22, bytes([24, 0, 0, 1]))   # KeyUpdate (24), length 1: the body follows
        time.sleep(0.2)
        peer.sendto(b"for a client in the middle of a KeyUpdate", relayed)
        time.sleep(0.2)
        before = cpu_seconds(server.proc.pid)
        time.sleep(2.0)
        used = cpu_seconds(server.proc.pid) - before
        c.record(22, bytes([1]))             # update_requested
        c.next_keys()
        kind, m = c.read_frame()
        assert kind == "stun" and m.type == DATA | INDICATION, m
        assert m.get(A_DATA) == b"for a client in the middle of a KeyUpdate"
        assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()
        assert used < 0.4, (f"the server used {used:.2f} s of CPU in 2 s while its write waited "
                            "for the rest of the client's KeyUpdate (busy loop)")


@pytest.mark.parametrize("offer,selected", [(["stun.turn"], "stun.turn"),
                                            (["h2", "stun.turn"], "stun.turn"),
                                            (["h2"], None)],
                         ids=["stun.turn", "h2+stun.turn", "h2-only"])
def test_tls_alpn(server, client_ctx, offer, selected):
    """RFC 7443 ALPN "stun.turn" is selected when offered; a client offering only other
    protocols is still served, without ALPN."""
    client_ctx.set_alpn_protocols(offer)
    with StreamClient(server, 4, True, ctx=client_ctx) as c:
        assert c.sock.selected_alpn_protocol() == selected, (
            f"offered {offer}: server selected {c.sock.selected_alpn_protocol()!r}")
        assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()


@pytest.mark.parametrize("family,tls", [(4, False), (6, False), (4, True)],
                         ids=["tcp-ipv4", "tcp-ipv6", "tls-ipv4"])
def test_binding_written_one_byte_at_a_time(server, family, tls):
    with StreamClient(server, family, tls) as c:
        tid = os.urandom(12)
        req = encode(BINDING, [], tid=tid)   # 28 bytes with FINGERPRINT
        for b in req:
            c.send(bytes([b]))               # TCP_NODELAY: one segment (TLS record) each
            time.sleep(0.005)
        kind, r = c.read_frame()
        assert kind == "stun" and r.tid == tid and r.type == BINDING | SUCCESS, r
        assert r.xor_addr(A_XOR_MAPPED) == c.local()


@pytest.mark.parametrize("family,tls", [(4, False), (4, True)], ids=["tcp", "tls"])
def test_pipelined_requests_in_one_write(server, family, tls):
    """Three Bindings in a single write, the last one split over two writes."""
    with StreamClient(server, family, tls) as c:
        tids = [os.urandom(12) for _ in range(3)]
        reqs = [encode(BINDING, [], tid=t, fingerprint=i != 1) for i, t in enumerate(tids)]
        blob = b"".join(reqs)
        c.send(blob[:-10])
        time.sleep(0.05)
        c.send(blob[-10:])
        got = [c.read_frame() for _ in tids]
        assert [(k, m.tid) for k, m in got] == [("stun", t) for t in tids], got
        assert all(m.xor_addr(A_XOR_MAPPED) == c.local() for _, m in got)


@pytest.mark.parametrize("family,tls", [(4, False), (6, True)], ids=["tcp-ipv4", "tls-ipv6"])
def test_allocate_then_close_deletes_allocation(server, family, tls):
    transport = transport_of(tls)
    is_relay = server.kind == "turnrelay"
    allocs0 = metric0(server, "turn_allocations")
    conns0 = metric0(server, "turn_connections", transport=transport)
    closed0 = closed(server, transport, "client")
    c = StreamClient(server, family, tls)
    try:
        r = c.transact(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)])
        assert r.type == ALLOCATE | ERROR and r.error_code == 401, f"unauthenticated: {r}"
        assert r.get(A_REALM) == server.realm.encode() and r.get(A_NONCE), r
        c.realm, c.nonce = r.get(A_REALM), r.get(A_NONCE)
        c.key = long_term_key(server.username, server.realm, server.password)
        r = c.transact(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)], auth=True)
        assert r.type == ALLOCATE | SUCCESS, f"authenticated Allocate failed: {r}"
        assert r.check_integrity(c.key), "bad MESSAGE-INTEGRITY on the Allocate response"
        relayed = r.xor_addr(A_XOR_RELAYED)
        assert relayed is not None and relayed[0] == "127.0.0.1", (
            f"relayed address {relayed}: the default family is IPv4 (RFC 8656 7.2)")
        assert server.relay_min <= relayed[1] <= server.relay_max, relayed
        assert r.xor_addr(A_XOR_MAPPED) == c.local()
        assert r.get(A_LIFETIME) is not None
        if is_relay:
            v = poll(lambda: metric0(server, "turn_allocations"), lambda v: v == allocs0 + 1)
            assert v == allocs0 + 1, f"turn_allocations {allocs0} -> {v} after Allocate"
            n = metric0(server, "turn_connections", transport=transport)
            assert n == conns0 + 1, f"turn_connections{{transport={transport}}} {conns0} -> {n}"
        # A second Allocate on the same 5-tuple: 437 Allocation Mismatch.
        r2 = c.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)])
        assert r2.error_code == 437, f"second Allocate on the connection: {r2}"
    finally:
        c.close()
    if is_relay:
        v = poll(lambda: metric0(server, "turn_allocations"), lambda v: v == allocs0, timeout=5)
        assert v == allocs0, (f"turn_allocations still {v} (was {allocs0} before the Allocate) "
                              "5 s after the client closed its connection")
        n = poll(lambda: metric0(server, "turn_connections", transport=transport),
                 lambda v: v == conns0)
        assert n == conns0, f"turn_connections{{transport={transport}}} {n}, expected {conns0}"
        cl = closed(server, transport, "client")
        assert cl >= closed0 + 1, (
            f"turn_connections_closed_total{{reason=client}} {closed0} -> {cl}")
    # The relayed transport address was released with the allocation.
    def bindable():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(relayed)
                return True
            except OSError:
                return False
    assert poll(bindable, bool, timeout=5), f"relayed address {relayed} still in use after close"


PAYLOAD_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 99, 1001, 1200]


@pytest.mark.parametrize("family,tls", [(4, False), (6, False), (4, True)],
                         ids=["tcp-ipv4", "tcp-ipv6", "tls-ipv4"])
def test_channeldata_padded_on_the_stream(server, echo_peer, family, tls):
    with StreamClient(server, family, tls) as c:
        c.allocate()
        peer = echo_peer.addr(4)  # the relayed address is IPv4 (no REQUESTED-ADDRESS-FAMILY)
        channel_bind(c, 0x4001, peer)
        payloads = [bytes([0x41 + i % 26]) * n for i, n in enumerate(PAYLOAD_SIZES)]
        for p in payloads:
            c.send(channel_data(0x4001, p))
            # Read exactly header + padded payload: without the padding the next frame
            # would not start where it is read (or this read would time out).
            try:
                wire = c.read_exact(4 + pad4(len(p)))
            except socket.timeout:
                pytest.fail(f"echo of {len(p)} bytes: got {c.buf.hex()} only, expected "
                            f"{4 + pad4(len(p))} bytes (ChannelData padded to 4)")
            assert wire[:4] == struct.pack("!HH", 0x4001, len(p)), (
                f"ChannelData header {wire[:4].hex()} for a {len(p)}-byte echo")
            assert wire[4:4 + len(p)] == p, f"payload of {len(p)} bytes differs"
        # The stream is still framed: a Binding's response comes next, nothing else.
        r = c.binding()
        assert r.xor_addr(A_XOR_MAPPED) == c.local()
        assert c.buf == b"", f"unexpected bytes after the Binding response: {c.buf.hex()}"
    # The peer got the bare payloads, the client's padding stripped.
    assert echo_peer.payloads() == payloads


def test_send_indication_and_data_indication(server, echo_peer):
    with StreamClient(server, 4, False) as c:
        relayed = c.allocate()
        peer = echo_peer.addr(4)
        create_permission(c, peer)
        for p in (b"x", b"hello over tcp", os.urandom(333)):
            c.send(send_indication(peer, p))
            kind, m = c.read_frame()
            assert kind == "stun" and m.type == DATA | INDICATION, (
                f"expected a Data indication: {m}")
            assert m.get(A_DATA) == p
            assert m.xor_addr(A_XOR_PEER) == peer
        assert echo_peer.sources() == {relayed}


# -------------------------------------------------------------------------------------
# 4. Hostile and misbehaving clients (turn-relay's [tcp] rules)

BAD_FRAMES = [
    ("0xff-x64", b"\xff" * 64),
    ("first-bits-10", b"\x80\x01\x00\x08" + MAGIC_BYTES + os.urandom(12) + b"\0" * 8),
    ("stun-length-not-multiple-of-4", struct.pack("!HHI", 0x0001, 6, MAGIC) + os.urandom(12)
     + b"\0" * 6),
]


@turnrelay_only
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("frame", [b[1] for b in BAD_FRAMES], ids=[b[0] for b in BAD_FRAMES])
def test_bad_frame_closes_connection(server, frame, tls):
    transport = transport_of(tls)
    before = closed(server, transport, "bad_frame")
    with StreamClient(server, 4, tls) as c:
        c.binding()   # a good message first: the connection is established and framed
        c.send(frame)
        how = c.wait_closed(2.0)
        assert how in ("eof", "reset"), (
            f"the server did not close the connection within 2 s after {frame[:8].hex()}...")
    v = poll(lambda: closed(server, transport, "bad_frame"), lambda v: v >= before + 1)
    assert v == before + 1, (
        f"turn_connections_closed_total{{transport={transport},reason=bad_frame}} "
        f"{before} -> {v}")
    # The server still serves new connections.
    with StreamClient(server, 4, tls) as c:
        assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()


@turnrelay_only
@pytest.mark.parametrize("payload", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                     encode(BINDING, [], fingerprint=False)],
                         ids=["http", "plain-stun"])
def test_tls_listener_garbage_closes(server, payload):
    before = closed(server, "tls", "tls_handshake")
    fam_addr = server.stream_addr(4, tls=True)
    with socket.create_connection(fam_addr, timeout=TIMEOUT_S) as s:
        s.sendall(payload)
        s.settimeout(2.0)
        got, how = b"", None
        deadline = time.monotonic() + 2.0
        try:
            while time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    how = "eof"
                    break
                got += chunk
        except ConnectionResetError:
            how = "reset"
        except socket.timeout:
            pass
        assert how is not None, f"TLS listener kept the connection open after {payload[:16]!r}"
        assert not got.startswith(b"\x01\x01"), "a STUN answer came back on the TLS port"
    v = poll(lambda: closed(server, "tls", "tls_handshake"), lambda v: v >= before + 1)
    assert v == before + 1, f"closed_total{{tls,tls_handshake}} {before} -> {v}"
    with StreamClient(server, 4, True) as c:
        assert c.binding()


@turnrelay_only
def test_idle_timeout(strict_server):
    """idle_timeout_s = 2: a connection with no allocation is closed 2 s after it was accepted
    (half a header; one byte every 0.4 s; a TLS session with nothing sent; a TCP connection to
    the TLS port that never starts the handshake; and one that sends an answered Binding every
    0.4 s: unauthenticated keepalives must not hold a slot), one that holds an allocation
    stays open."""
    srv = strict_server
    idle_tcp0, idle_tls0 = closed(srv, "tcp", "idle"), closed(srv, "tls", "idle")
    half = StreamClient(srv, 4)
    half.send(encode(BINDING, [])[:10])
    drip = StreamClient(srv, 6)
    drip_bytes = encode(BINDING, [], fingerprint=False)
    drip_sent = 0
    tls_silent = StreamClient(srv, 4, True)
    # TCP to the TLS port and not even a ClientHello: the handshake never finishes.
    pre_tls = socket.create_connection(srv.stream_addr(4, tls=True), timeout=TIMEOUT_S)
    chatty = StreamClient(srv, 4)
    holder = StreamClient(srv, 4)
    holder.allocate()
    t0 = time.monotonic()
    closed_at: Dict[str, float] = {}
    next_tick = t0
    while time.monotonic() - t0 < 2 * IDLE_TIMEOUT_S + 1.5:
        now = time.monotonic()
        if now >= next_tick:
            next_tick += 0.4
            if "drip" not in closed_at and drip_sent < len(drip_bytes):
                try:
                    drip.send(drip_bytes[drip_sent:drip_sent + 1])
                    drip_sent += 1
                except OSError:
                    closed_at["drip"] = now - t0
            if "chatty" not in closed_at:
                try:
                    chatty.binding(timeout=1.0)
                except (Closed, OSError):
                    closed_at["chatty"] = time.monotonic() - t0
        for name, c in (("half", half), ("drip", drip), ("tls", tls_silent), ("holder", holder)):
            if name not in closed_at and c.is_closed_now():
                closed_at[name] = time.monotonic() - t0
        if "pre-tls" not in closed_at and select.select([pre_tls], [], [], 0)[0]:
            try:
                eof = pre_tls.recv(4096) == b""
            except OSError:
                eof = True
            if eof:
                closed_at["pre-tls"] = time.monotonic() - t0
        time.sleep(0.05)
    problems = []   # every expectation checked, all reported together
    try:
        for name in ("half", "drip", "tls", "pre-tls", "chatty"):
            if name not in closed_at:
                problems.append(f"'{name}' still open {2 * IDLE_TIMEOUT_S + 1.5:.1f} s later")
            elif closed_at[name] < IDLE_TIMEOUT_S - 0.5:
                problems.append(f"'{name}' closed after {closed_at[name]:.2f} s, before the "
                                f"{IDLE_TIMEOUT_S} s idle timeout")
        if "holder" in closed_at:
            problems.append(f"'holder' (with an allocation) was closed after "
                            f"{closed_at['holder']:.2f} s")
        else:
            holder.binding()
    finally:
        for c in (half, drip, tls_silent, chatty, holder):
            c.close()
        pre_tls.close()
    for transport, want in (("tcp", 3), ("tls", 2)):
        grew = closed(srv, transport, "idle") - (idle_tcp0 if transport == "tcp" else idle_tls0)
        if grew != want:
            problems.append(f"closed_total{{{transport},idle}} grew by {grew}, expected {want}")
    assert not problems, (f"idle_timeout_s = {IDLE_TIMEOUT_S}: " + "; ".join(problems)
                          + f" (closed at: { {k: round(v, 2) for k, v in closed_at.items()} })")


@turnrelay_only
def test_connection_limit(strict_server):
    srv = strict_server
    limit0 = closed(srv, "tcp", "limit") + closed(srv, "tls", "limit")
    conns: List[StreamClient] = []
    try:
        for i in range(MAX_CONNECTIONS):
            c = StreamClient(srv, 4 if i % 2 else 6, tls=(i % 4 == 3))
            conns.append(c)
            c.binding()
        assert open_connections(srv) == MAX_CONNECTIONS
        extra = StreamClient(srv, 4)
        conns.append(extra)
        try:
            extra.send(encode(BINDING, []))
        except OSError:
            pass
        how = extra.wait_closed(2.0)
        assert how in ("eof", "reset"), (
            f"connection {MAX_CONNECTIONS + 1} (max_connections = {MAX_CONNECTIONS}) was kept "
            f"open; received {extra.buf[:40].hex()}")
        v = poll(lambda: closed(srv, "tcp", "limit") + closed(srv, "tls", "limit"),
                 lambda v: v >= limit0 + 1)
        assert v == limit0 + 1, f"closed_total{{reason=limit}} {limit0} -> {v}"
        assert open_connections(srv) == MAX_CONNECTIONS
        # The earlier connections are unaffected; after one closes there is room again.
        assert conns[0].binding()
        conns[0].close()
        wait_connections(srv, MAX_CONNECTIONS - 1)
        with StreamClient(srv, 4, True) as c:
            assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()
    finally:
        for c in conns:
            c.close()


@turnrelay_only
def test_backpressure_drops_whole_messages(strict_server):
    """A client that does not read while its peer floods the relayed address: with
    send_buffer_bytes = 70000 the server drops ChannelData messages (counted as
    stream_backpressure) but never corrupts the stream's framing, and the connection still
    answers requests once the client reads again."""
    srv = strict_server
    drops0 = metric0(srv, "turn_drops_total", reason="stream_backpressure")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", free_port(kinds=(socket.SOCK_DGRAM,))))
    c = StreamClient(srv, 4, rcvbuf=4096)
    try:
        relayed = c.allocate()
        channel_bind(c, 0x4000, peer.getsockname())
        n, size = 8000, 1000
        for i in range(n):
            peer.sendto(struct.pack("!I", i) + bytes(size - 4), relayed)
            if i % 200 == 199:
                time.sleep(0.002)   # let the relay's UDP receive queue drain
        drops = poll(lambda: metric0(srv, "turn_drops_total", reason="stream_backpressure"),
                     lambda v: v > drops0, timeout=3)
        assert drops > drops0, (
            f"no stream_backpressure drop after {n * size} bytes to a client that does not "
            f"read (send_buffer_bytes = {SEND_BUFFER_BYTES})")
        # Now read everything: whole ChannelData messages, in order, with gaps.
        seqs = []
        while True:
            try:
                kind, frame = c.read_frame(timeout=1.0)
            except socket.timeout:
                break
            assert kind == "channel", f"unexpected {frame} in the flood"
            number, payload, wire = frame
            assert number == 0x4000 and len(payload) == size and wire == 4 + size, (
                f"frame {len(seqs)} after the drops is broken: channel {number:#x}, "
                f"{len(payload)} bytes")
            seqs.append(struct.unpack("!I", payload[:4])[0])
        assert seqs and seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "reordered"
        assert len(seqs) < n
        dropped = metric0(srv, "turn_drops_total", reason="stream_backpressure") - drops0
        assert len(seqs) + dropped <= n, f"{len(seqs)} received + {dropped} dropped > {n} sent"
        assert c.binding().xor_addr(A_XOR_MAPPED) == c.local()
    finally:
        c.close()
        peer.close()


@turnrelay_only
def test_drain_ends_when_last_stream_allocation_closes(tmp_path, tls_certificate):
    """SIGTERM drains ([drain], docs/CONFIGURATION.md): on the stream listeners Allocate gets
    403 and existing connections are still served; the allocation whose TCP connection
    closes is deleted, so the drain ends and the process exits 0 without the 30 s deadline
    or a second signal."""
    srv = start_server(tmp_path, tcp=True, tls_files=tls_certificate)
    try:
        holder = StreamClient(srv, 4)
        holder.allocate()
        other = StreamClient(srv, 6, True)
        other.binding()
        srv.proc.send_signal(signal.SIGTERM)
        assert poll(lambda: "draining" in srv.log(), bool, timeout=5), "no drain in the log"
        assert other.binding().xor_addr(A_XOR_MAPPED) == other.local(), "Binding during drain"
        with StreamClient(srv, 4) as late:
            r = late.request(ALLOCATE, [(A_REQUESTED_TRANSPORT, UDP)])
            assert r.error_code == 403, f"Allocate during the drain: {r}"
        t0 = time.monotonic()
        holder.close()
        try:
            rc = srv.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("turn-relay still draining 5 s after the connection of its only "
                        "allocation closed:\n" + log_tail(srv.log_path, 20))
        assert rc == 0, f"exit code {rc} after the drain:\n{log_tail(srv.log_path, 20)}"
        assert time.monotonic() - t0 < 5
        other.close()
    finally:
        stop_process(srv.proc, grace=2)
        if (f"{srv.kind} server", srv.log_path) in _ACTIVE_LOGS:
            _ACTIVE_LOGS.remove((f"{srv.kind} server", srv.log_path))


@turnrelay_only
@pytest.mark.parametrize("case", ["no-tls-section", "key-of-another-certificate"])
def test_tls_configuration_errors_stop_startup(tmp_path, tls_certificate, case):
    """listen_tls without [tls] names `[tls].certificate`; a key that does not belong to
    the certificate names `[tls].private_key` (exit code 2, docs/CONFIGURATION.md)."""
    lo, hi = relay_port_window()
    srv = TurnServer(kind="turnrelay", port=free_port(), workdir=tmp_path, relay_min=lo,
                     relay_max=hi, metrics_port=free_port(kinds=(socket.SOCK_STREAM,)))
    srv.tls_port = free_port(kinds=(socket.SOCK_STREAM,))
    if case == "no-tls-section":
        want, want_rc = "[tls].certificate", None
    else:
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        _, other_key = make_self_signed_cert(other_dir)
        srv.tls_cert, srv.tls_key = str(tls_certificate[0]), str(other_key)
        want, want_rc = "[tls].private_key", 2
    cfg = write_turnrelay_config(srv)
    log = tmp_path / "turn-relay.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg)], cwd=tmp_path,
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        stop_process(proc, grace=2)
        pytest.fail(f"turn-relay kept running ({case}):\n" + log.read_text(errors="replace"))
    out = log.read_text(errors="replace")
    assert rc != 0, f"turn-relay exited 0 ({case}):\n{out}"
    if want_rc is not None:
        assert rc == want_rc, f"exit code {rc}, documented {want_rc} ({case}):\n{out}"
    assert want in out, f"start-up error does not name {want} ({case}):\n{out}"


# -------------------------------------------------------------------------------------
# 5. Chromium: TURN over TCP from a browser


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="chromium, chromedriver or selenium missing")
@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_chromium_datachannel_turn_tcp(server, browser, http_page, family):
    accepted = metric0(server, "turn_connections_accepted_total", transport="tcp")
    host = "127.0.0.1" if family == 4 else "[::1]"
    turn_url = f"turn:{host}:{server.tcp_port}?transport=tcp"
    r = _run_page(browser, http_page, server, turn_url, n=6)
    assert_relayed_call(r, server, "tcp", "over TURN/TCP")
    if server.kind == "turnrelay":
        after = metric0(server, "turn_connections_accepted_total", transport="tcp")
        assert after - accepted >= 2, f"{after - accepted} TCP connections for two peers"
