"""RFC 5780's RESPONSE-PORT and PADDING on a relay without RFC 5780 alternates (the default):
unknown, 420 with UNKNOWN-ATTRIBUTES, answered to the port the request came from, as
docs/CONTROLPLANE.md ("Decisions", NAT behaviour discovery) says for what the server does not
serve. Until a review found it, handle_binding honoured both on any UDP listener, so an
unauthenticated (spoofable, not rate-limited) Binding could steer its answer to another port or
pad it on a relay whose operator never turned discovery on.
"""

import os
import socket
import struct

import pytest

from test_nat_discovery import start_relay
from conftest import stop_process

MAGIC = 0x2112A442


def binding(attrs: bytes) -> tuple:
    tid = os.urandom(12)
    return struct.pack("!HHI", 0x0001, len(attrs), MAGIC) + tid + attrs, tid


def attr(t: int, v: bytes) -> bytes:
    pad = (4 - len(v) % 4) % 4
    return struct.pack("!HH", t, len(v)) + v + b"\0" * pad


def parse(msg: bytes):
    typ, length = struct.unpack("!HH", msg[:4])
    out = {}
    pos = 20
    while pos + 4 <= 20 + length:
        t, l = struct.unpack("!HH", msg[pos:pos + 4])
        out.setdefault(t, msg[pos + 4:pos + 4 + l])
        pos += 4 + l + (4 - l % 4) % 4
    return typ, out


@pytest.fixture
def relay_plain(tmp_path):
    proc, port, log = start_relay(tmp_path, False)  # no alternate_ips / alternate_port
    yield port
    stop_process(proc, second_signal_after=0.5)


def test_response_port_without_alternates_is_420_not_redirected(relay_plain):
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src.bind(("127.0.0.1", 0))
    other.bind(("127.0.0.1", 0))
    src.settimeout(1.0)
    other.settimeout(1.0)
    try:
        other_port = other.getsockname()[1]
        msg, tid = binding(attr(0x0027, struct.pack("!HH", other_port, 0)))  # RESPONSE-PORT
        src.sendto(msg, ("127.0.0.1", relay_plain))
        redirected = None
        try:
            redirected, _ = other.recvfrom(2048)
        except socket.timeout:
            pass
        assert redirected is None, (
            "relay without RFC 5780 alternates sent its Binding answer to RESPONSE-PORT "
            f"{other_port} instead of the request's source port ({len(redirected)} bytes)")
        data, _ = src.recvfrom(2048)
        typ, attrs = parse(data)
        assert typ == 0x0111, hex(typ)
        assert (attrs[0x0009][2] & 7) * 100 + attrs[0x0009][3] == 420
        assert 0x0027 in struct.unpack(f"!{len(attrs[0x000A]) // 2}H", attrs[0x000A])
    finally:
        src.close()
        other.close()


def test_padding_without_alternates_is_420(relay_plain):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    try:
        msg, tid = binding(attr(0x0026, b"\0" * 1200))  # PADDING
        s.sendto(msg, ("127.0.0.1", relay_plain))
        data, _ = s.recvfrom(4096)
        typ, attrs = parse(data)
        assert typ == 0x0111, f"PADDING honoured without RFC 5780 enabled: {hex(typ)}, {len(data)} bytes " \
                              f"answered to a {len(msg)}-byte request"
    finally:
        s.close()
