"""Dual-stack allocations (RFC 8656 ADDITIONAL-ADDRESS-FAMILY) against the real turn-relay, over
UDP with hand-made STUN: each relayed address has its own lifetime (section 7.3). A Refresh
with REQUESTED-ADDRESS-FAMILY renews that family's address only; the other one, left to run out,
ends alone: its socket is closed (its port can be bound again), its family's permissions go
with it (Send to such a peer relays nothing, CreatePermission is 443), the log says
`relayed_address_expired`, turn-ctl lists the one left with its own time to expiry, the
per-family gauge drops, and the address that lives on still relays both ways."""

import hashlib
import os
import re
import socket
import struct
import time
import urllib.request

import pytest

from conftest import log_tail, sample_sum, stop_process
from test_admin import CTL, ctl_json
from test_tcp_allocations import (A_LIFETIME, A_NONCE, A_PEER, A_REALM, A_RELAYED, A_TRANSPORT, A_USERNAME, ALLOCATE,
                                  CREATE_PERMISSION, MAGIC, REFRESH, encode, error_code, unxor_addr)
from test_turn_probe import PASSWORD, USER, Relay

pytestmark = pytest.mark.skipif(CTL is None, reason="turn-ctl not built")

A_REQUESTED_FAMILY, A_ADDITIONAL_FAMILY, A_DATA = 0x0017, 0x8000, 0x0013
SEND, DATA = 0x006, 0x007
IPV4, IPV6 = b"\x01\0\0\0", b"\x02\0\0\0"


def xor_addr(host, port, tid):
    """XOR-PEER-ADDRESS value (RFC 8489 14.2: an IPv6 address is XORed with the transaction id too)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.inet_pton(fam, host)
    key = struct.pack("!I", MAGIC) + tid
    x = bytes(a ^ b for a, b in zip(raw, key))
    return struct.pack("!BBH", 0, 1 if fam == socket.AF_INET else 2, port ^ (MAGIC >> 16)) + x


def decode_all(msg):
    """(method, class, transaction id, {attribute: [values in order]})."""
    t, length = struct.unpack("!HH", msg[:4])
    method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    cls = ((t >> 4) & 1) | ((t >> 7) & 2)
    attrs, body = {}, msg[20:20 + length]
    while len(body) >= 4:
        at, n = struct.unpack("!HH", body[:4])
        attrs.setdefault(at, []).append(body[4:4 + n])
        body = body[4 + n + (-n % 4):]
    return method, cls, msg[8:20], attrs


class UdpClient:
    """A TURN client on 127.0.0.1 over UDP, long-term credentials."""

    def __init__(self, server):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.server = server
        self.key = self.nonce = self.realm = None

    def recv(self, timeout=3.0):
        self.s.settimeout(timeout)
        return self.s.recv(65536)

    def request(self, method, attrs=(), peers=()):
        """`peers`: (host, port) for XOR-PEER-ADDRESS attributes, XORed with each attempt's id."""
        for _ in range(3):
            extra = [(A_USERNAME, USER.encode()), (A_REALM, self.realm), (A_NONCE, self.nonce)] if self.key else []
            tid = os.urandom(12)
            xor = [(A_PEER, xor_addr(h, p, tid)) for h, p in peers]
            msg, tid = encode(method, 0, list(attrs) + xor + extra, self.key, tid)
            self.s.sendto(msg, self.server)
            while True:
                m, c, rtid, a = decode_all(self.recv())
                if rtid == tid:
                    break
            first = {k: v[0] for k, v in a.items()}
            if c == 3 and error_code(first) in (401, 438) and A_NONCE in a:
                self.realm, self.nonce = first[A_REALM], first[A_NONCE]
                self.key = hashlib.md5(f"{USER}:{self.realm.decode()}:{PASSWORD}".encode()).digest()
                continue
            return error_code(first), a, rtid
        raise AssertionError("challenged forever")

    def send(self, peer, payload):
        tid = os.urandom(12)
        msg, _ = encode(SEND, 1, [(A_PEER, xor_addr(*peer, tid)), (A_DATA, payload)], None, tid)
        self.s.sendto(msg, self.server)


def peer_socket(family, host):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2)
    return s


def bindable(family, host, port):
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def gauge(relay, family):
    text = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=5).read().decode()
    return sample_sum(text, "turn_allocations", family=family)


def test_a_relayed_address_not_refreshed_ends_alone(tmp_path):
    sock = tmp_path / "admin.sock"
    # Short lifetimes so that one runs out during the test: 2 s unless a Refresh asks for more.
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n[allocation]\ndefault_lifetime_s = 2\n')
    p4 = peer_socket(socket.AF_INET, "127.0.0.1")
    p6 = peer_socket(socket.AF_INET6, "::1")
    c = UdpClient(("127.0.0.1", relay.port))
    try:
        code, a, tid = c.request(ALLOCATE, [(A_TRANSPORT, b"\x11\0\0\0"), (A_ADDITIONAL_FAMILY, IPV6)])
        assert code == 200, a
        relayed = [unxor_addr(v, tid) for v in a[A_RELAYED]]
        assert len(relayed) == 2 and ":" not in relayed[0][0] and relayed[1][0] == "::1", relayed
        v4_peer, v6_peer = p4.getsockname()[:2], p6.getsockname()[:2]
        code, a, _ = c.request(CREATE_PERMISSION, peers=[v4_peer, v6_peer])
        assert code == 200, a
        assert gauge(relay, "ipv4") == 1 and gauge(relay, "ipv6") == 1
        # IPv6's address renewed for 30 s; IPv4's keeps its 2 s.
        code, a, _ = c.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 30)), (A_REQUESTED_FAMILY, IPV6)])
        assert code == 200 and struct.unpack("!I", a[A_LIFETIME][0])[0] == 30, a
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rc, listing = ctl_json(sock, "allocations")
            assert rc == 0
            if listing["allocations"] and len(listing["allocations"][0]["relayed"]) == 1:
                break
            time.sleep(0.2)
        (alloc,) = listing["allocations"]
        assert alloc["relayed"] == [f"[::1]:{relayed[1][1]}"], alloc
        assert 20 <= alloc["relayed_expires_in_s"][0] <= 30 and alloc["expires_in_s"] == alloc["relayed_expires_in_s"][0]
        assert [p["peer"] for p in alloc["permissions"]] == ["::1"], alloc
        log = relay.log.read_text()
        assert re.search(rf"event=relayed_address_expired .*relayed=\[::1\]:{relayed[1][1]} "
                         rf"address=127\.0\.0\.1:{relayed[0][1]} ", log), log_tail(relay.log)
        assert gauge(relay, "ipv4") == 0 and gauge(relay, "ipv6") == 1
        # Its socket is closed: the port is free again.
        assert bindable(socket.AF_INET, "127.0.0.1", relayed[0][1])
        assert not bindable(socket.AF_INET6, "::1", relayed[1][1])
        # The allocation is IPv6-only now.
        code, a, _ = c.request(CREATE_PERMISSION, peers=[v4_peer])
        assert code == 443, a
        code, a, _ = c.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 30)), (A_REQUESTED_FAMILY, IPV4)])
        assert code == 443, a
        c.send(v4_peer, b"to v4")
        with pytest.raises(socket.timeout):
            p4.recvfrom(100)
        # IPv6 relays both ways.
        c.send(v6_peer, b"to v6")
        data, src = p6.recvfrom(100)
        assert data == b"to v6" and src[:2] == ("::1", relayed[1][1])
        p6.sendto(b"back", src)
        m, cls, _, a = decode_all(c.recv())
        assert (m, cls) == (DATA, 1) and a[A_DATA][0] == b"back"
        # Refresh 0 ends the rest.
        code, a, _ = c.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 0))])
        assert code == 200
        rc, listing = ctl_json(sock, "allocations")
        assert rc == 0 and listing["allocations"] == []
        assert gauge(relay, "ipv6") == 0
        assert relay.proc.poll() is None, log_tail(relay.log)
    finally:
        for s in (p4, p6, c.s):
            s.close()
        stop_process(relay.proc, second_signal_after=1.0)
