#!/usr/bin/python3
"""Generates the seed corpora in tests/fuzz/corpus/{stun,channel_data,proxy_header}/.

Run with Debian's interpreter (it only needs the standard library):

    /usr/bin/python3 tests/fuzz/make_corpus.py

The output is deterministic (fixed transaction IDs, no randomness), so
re-running it on an unchanged script leaves `git status` clean. The generated
files are committed; this script documents what each one is.

Keys: every MESSAGE-INTEGRITY here uses one of the three keys that
stun_fuzz.cc verifies with, so the fuzzer starts from inputs whose HMACs
pass and reaches the code after a successful check:
  - the RFC 5769 short-term password "VOkJxbRl1RmTxUk/WvJxBt";
  - the RFC 5769 section 2.4 long-term key MD5("<user>:example.org:TheMatrIX");
  - the same credentials hashed with SHA-256 (RFC 8489 section 9.2.2).
The RFC 5769 vectors are rebuilt from their field values and checked against
the HMAC and CRC bytes printed in the RFC before they are written.
"""

import hashlib
import hmac
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = 0x2112A442

SHORT_TERM_KEY = b"VOkJxbRl1RmTxUk/WvJxBt"
LT_USER = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # "matrix" in katakana, RFC 5769 2.4
LT_REALM = "example.org"
LT_PASSWORD = "TheMatrIX"  # the RFC's password after SASLprep / OpaqueString
LT_MD5_KEY = hashlib.md5(f"{LT_USER}:{LT_REALM}:{LT_PASSWORD}".encode()).digest()
LT_SHA256_KEY = hashlib.sha256(f"{LT_USER}:{LT_REALM}:{LT_PASSWORD}".encode()).digest()

# Methods and classes (RFC 8489 section 5, RFC 8656, RFC 6062).
BINDING, ALLOCATE, REFRESH, SEND, DATA = 0x001, 0x003, 0x004, 0x006, 0x007
CREATE_PERMISSION, CHANNEL_BIND = 0x008, 0x009
CONNECT, CONNECTION_BIND, CONNECTION_ATTEMPT = 0x00A, 0x00B, 0x00C
REQUEST, INDICATION, SUCCESS, ERROR = 0, 1, 2, 3

# Attribute types.
MAPPED_ADDRESS = 0x0001
CHANGE_REQUEST = 0x0003
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
MESSAGE_INTEGRITY_SHA256 = 0x001C
PASSWORD_ALGORITHM = 0x001D
USERHASH = 0x001E
XOR_MAPPED_ADDRESS = 0x0020
RESERVATION_TOKEN = 0x0022
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
PADDING = 0x0026
RESPONSE_PORT = 0x0027
CONNECTION_ID = 0x002A
ADDITIONAL_ADDRESS_FAMILY = 0x8000
ADDRESS_ERROR_CODE = 0x8001
PASSWORD_ALGORITHMS = 0x8002
ALTERNATE_DOMAIN = 0x8003
ICMP = 0x8004
SOFTWARE = 0x8022
ALTERNATE_SERVER = 0x8023
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C

NONCE_VALUE = b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"


def msg_type(method, cls):
    return ((method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2)
            | ((cls & 1) << 4) | ((cls & 2) << 7))


def txid(n):
    """A fixed, distinct transaction ID per message."""
    return hashlib.sha256(b"turnrelay-corpus-%d" % n).digest()[:12]


def attr(t, value, pad=b"\0"):
    return struct.pack("!HH", t, len(value)) + value + pad * ((4 - len(value) % 4) % 4)


def header(mtype, length, tid):
    return struct.pack("!HHI", mtype, length, MAGIC) + tid


def ip_bytes(ip):
    if ":" in ip:
        import ipaddress
        return 2, ipaddress.IPv6Address(ip).packed
    return 1, bytes(int(x) for x in ip.split("."))


def addr_value(ip, port):
    fam, raw = ip_bytes(ip)
    return struct.pack("!BBH", 0, fam, port) + raw


def xor_addr_value(ip, port, tid):
    fam, raw = ip_bytes(ip)
    mask = struct.pack("!I", MAGIC) + tid
    xraw = bytes(a ^ b for a, b in zip(raw, mask))
    return struct.pack("!BBH", 0, fam, port ^ (MAGIC >> 16)) + xraw


def error_value(code, reason):
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


class Msg:
    """Accumulates attributes; integrity and fingerprint are computed over
    the bytes so far with the header length adjusted (RFC 8489 14.5-14.7)."""

    def __init__(self, method, cls, n, mtype=None):
        self.type = msg_type(method, cls) if mtype is None else mtype
        self.tid = txid(n)
        self.body = b""

    def add(self, t, value, pad=b"\0"):
        self.body += attr(t, value, pad)
        return self

    def xor(self, t, ip, port):
        return self.add(t, xor_addr_value(ip, port, self.tid))

    def integrity(self, key):
        h = header(self.type, len(self.body) + 24, self.tid) + self.body
        return self.add(MESSAGE_INTEGRITY, hmac.new(key, h, hashlib.sha1).digest())

    def integrity_sha256(self, key, length=32):
        h = header(self.type, len(self.body) + 4 + length, self.tid) + self.body
        return self.add(MESSAGE_INTEGRITY_SHA256,
                        hmac.new(key, h, hashlib.sha256).digest()[:length])

    def fingerprint(self):
        h = header(self.type, len(self.body) + 8, self.tid) + self.body
        return self.add(FINGERPRINT, struct.pack("!I", (zlib.crc32(h) ^ 0x5354554E) & 0xFFFFFFFF))

    def bytes(self):
        return header(self.type, len(self.body), self.tid) + self.body


def long_term(m):
    """USERNAME, REALM, NONCE of the RFC 5769 2.4 credentials."""
    return (m.add(USERNAME, LT_USER.encode()).add(REALM, LT_REALM.encode())
            .add(NONCE, NONCE_VALUE))


def rfc5769():
    """RFC 5769 sections 2.1-2.4, checked against the RFC's bytes."""
    out = {}
    tid = bytes.fromhex("b7e7a701bc34d686fa87dfae")

    m = Msg(BINDING, REQUEST, 0)
    m.tid = tid
    m.add(SOFTWARE, b"STUN test client")
    m.add(PRIORITY, bytes.fromhex("6e0001ff"))
    m.add(ICE_CONTROLLED, bytes.fromhex("932ff9b151263b36"))
    m.add(USERNAME, b"evtj:h6vY", pad=b" ")  # the RFC pads with spaces
    m.integrity(SHORT_TERM_KEY).fingerprint()
    b = m.bytes()
    assert b[-32:-8].hex().endswith("9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"), b.hex()
    assert b[-4:].hex() == "e57a3bcf", b.hex()
    assert len(b) == 20 + 0x58
    out["rfc5769-2.1-request.bin"] = b

    for name, ip, mi, fp in [
        ("rfc5769-2.2-response-ipv4.bin", "192.0.2.1",
         "2b91f599fd9e90c38c7489f92af9ba53f06be7d7", "c07d4c96"),
        ("rfc5769-2.3-response-ipv6.bin", "2001:db8:1234:5678:11:2233:4455:6677",
         "a382954e4be67bf11784c97c8292c275bfe3ed41", "c8fb0b4c"),
    ]:
        m = Msg(BINDING, SUCCESS, 0)
        m.tid = tid
        m.add(SOFTWARE, b"test vector", pad=b" ")
        m.xor(XOR_MAPPED_ADDRESS, ip, 32853)
        m.integrity(SHORT_TERM_KEY).fingerprint()
        b = m.bytes()
        assert b[-28:-8].hex() == mi, (name, b.hex())
        assert b[-4:].hex() == fp, (name, b.hex())
        out[name] = b

    m = Msg(BINDING, REQUEST, 0)
    m.tid = bytes.fromhex("78ad3433c6ad72c029da412e")
    m.add(USERNAME, LT_USER.encode())
    m.add(NONCE, b"f//499k954d6OL34oL9FSTvy64sA")
    m.add(REALM, LT_REALM.encode())
    m.integrity(LT_MD5_KEY)
    b = m.bytes()
    assert b[-20:].hex() == "f67024656dd64a3e02b8e0712e85c9a28ca89666", b.hex()
    out["rfc5769-2.4-request-long-term.bin"] = b
    return out


def turn_messages():
    """One message per TURN method and class the server handles, with the
    attributes real clients (browsers, coturn's tools) send."""
    out = {}
    sw = b"turnrelay corpus"
    n = iter(range(100, 1000))

    def put(name, m):
        out[name] = m.bytes()

    # Binding (RFC 8489), plain and ICE (RFC 8445) and RFC 5780.
    put("binding-request.bin", Msg(BINDING, REQUEST, next(n)).add(SOFTWARE, sw).fingerprint())
    put("binding-request-empty.bin", Msg(BINDING, REQUEST, next(n)))
    put("binding-success-ipv4.bin", Msg(BINDING, SUCCESS, next(n))
        .xor(XOR_MAPPED_ADDRESS, "198.18.0.10", 54321).add(SOFTWARE, sw).fingerprint())
    m = Msg(BINDING, REQUEST, next(n))
    m.add(USERNAME, b"abcd:efgh").add(PRIORITY, struct.pack("!I", 0x6E7F1EFF))
    m.add(ICE_CONTROLLING, bytes(range(8))).add(USE_CANDIDATE, b"")
    put("binding-request-ice.bin", m.integrity(SHORT_TERM_KEY).fingerprint())
    m = Msg(BINDING, REQUEST, next(n))
    m.add(CHANGE_REQUEST, struct.pack("!I", 0x6)).add(RESPONSE_PORT, struct.pack("!HH", 40000, 0))
    put("binding-request-rfc5780.bin", m.add(PADDING, bytes(36)).fingerprint())
    m = Msg(BINDING, SUCCESS, next(n))
    m.xor(XOR_MAPPED_ADDRESS, "fd00::10", 3478).add(MAPPED_ADDRESS, addr_value("fd00::10", 3478))
    m.add(RESPONSE_ORIGIN, addr_value("198.18.0.1", 3478))
    m.add(OTHER_ADDRESS, addr_value("198.18.0.2", 3479))
    put("binding-success-rfc5780.bin", m.fingerprint())

    # Allocate (RFC 8656 section 7).
    m = Msg(ALLOCATE, REQUEST, next(n))
    m.add(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])).add(SOFTWARE, sw)
    put("allocate-request-unauth.bin", m.fingerprint())
    m = Msg(ALLOCATE, ERROR, next(n))
    m.add(ERROR_CODE, error_value(401, "Unauthorized")).add(REALM, LT_REALM.encode())
    m.add(NONCE, NONCE_VALUE)
    m.add(PASSWORD_ALGORITHMS, struct.pack("!HHHH", 2, 0, 1, 0)).add(SOFTWARE, sw)
    put("allocate-error-401.bin", m.fingerprint())
    m = Msg(ALLOCATE, REQUEST, next(n))
    m.add(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])).add(DONT_FRAGMENT, b"")
    m.add(EVEN_PORT, b"\x80").add(LIFETIME, struct.pack("!I", 600))
    put("allocate-request-auth-md5.bin", long_term(m).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(ALLOCATE, REQUEST, next(n))
    m.add(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
    m.add(USERHASH, hashlib.sha256(f"{LT_USER}:{LT_REALM}".encode()).digest())
    m.add(REALM, LT_REALM.encode()).add(NONCE, NONCE_VALUE)
    m.add(PASSWORD_ALGORITHM, struct.pack("!HH", 2, 0))
    m.add(PASSWORD_ALGORITHMS, struct.pack("!HHHH", 2, 0, 1, 0))
    put("allocate-request-auth-sha256-userhash.bin",
        m.integrity_sha256(LT_SHA256_KEY).fingerprint())
    m = Msg(ALLOCATE, REQUEST, next(n))
    m.add(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
    m.add(RESERVATION_TOKEN, bytes.fromhex("0123456789abcdef"))
    put("allocate-request-reservation-token.bin",
        long_term(m).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(ALLOCATE, REQUEST, next(n))
    m.add(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
    m.add(ADDITIONAL_ADDRESS_FAMILY, bytes([2, 0, 0, 0]))
    put("allocate-request-dual-stack.bin", long_term(m).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(ALLOCATE, REQUEST, next(n))
    m.add(REQUESTED_TRANSPORT, bytes([6, 0, 0, 0]))
    m.add(REQUESTED_ADDRESS_FAMILY, bytes([2, 0, 0, 0]))
    put("allocate-request-tcp-ipv6.bin", long_term(m).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(ALLOCATE, SUCCESS, next(n))
    m.xor(XOR_RELAYED_ADDRESS, "198.18.0.1", 49152).xor(XOR_RELAYED_ADDRESS, "fd00::1", 49153)
    m.xor(XOR_MAPPED_ADDRESS, "198.18.1.20", 61000).add(LIFETIME, struct.pack("!I", 600))
    m.add(RESERVATION_TOKEN, bytes.fromhex("fedcba9876543210")).add(SOFTWARE, sw)
    put("allocate-success.bin", m.integrity(LT_MD5_KEY).fingerprint())
    m = Msg(ALLOCATE, ERROR, next(n))
    m.add(ERROR_CODE, error_value(438, "Stale Nonce")).add(REALM, LT_REALM.encode())
    put("allocate-error-438.bin", m.add(NONCE, NONCE_VALUE).fingerprint())
    m = Msg(ALLOCATE, SUCCESS, next(n))
    m.xor(XOR_RELAYED_ADDRESS, "198.18.0.1", 49154)
    m.add(ADDRESS_ERROR_CODE, bytes([2, 0, 4, 40]) + b"Address Family not Supported")
    m.add(LIFETIME, struct.pack("!I", 600))
    put("allocate-success-address-error.bin", m.integrity(LT_MD5_KEY).fingerprint())
    m = Msg(ALLOCATE, ERROR, next(n))
    m.add(ERROR_CODE, error_value(300, "Try Alternate"))
    m.add(ALTERNATE_SERVER, addr_value("198.18.0.3", 3478))
    put("allocate-error-300.bin", m.add(ALTERNATE_DOMAIN, b"turn2.example.org").fingerprint())

    # Refresh, CreatePermission, ChannelBind.
    m = Msg(REFRESH, REQUEST, next(n)).add(LIFETIME, struct.pack("!I", 0))
    put("refresh-request-delete.bin", long_term(m).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(REFRESH, SUCCESS, next(n)).add(LIFETIME, struct.pack("!I", 600))
    put("refresh-success.bin", m.integrity(LT_MD5_KEY).fingerprint())
    m = Msg(CREATE_PERMISSION, REQUEST, next(n))
    m.xor(XOR_PEER_ADDRESS, "198.18.2.1", 0).xor(XOR_PEER_ADDRESS, "198.18.2.2", 0)
    m.xor(XOR_PEER_ADDRESS, "fd00::2:1", 0)
    put("createpermission-request.bin", long_term(m).integrity(LT_MD5_KEY).fingerprint())
    put("createpermission-success.bin",
        Msg(CREATE_PERMISSION, SUCCESS, next(n)).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(CHANNEL_BIND, REQUEST, next(n))
    m.add(CHANNEL_NUMBER, struct.pack("!HH", 0x4000, 0)).xor(XOR_PEER_ADDRESS, "198.18.2.1", 5000)
    put("channelbind-request.bin", long_term(m).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(CHANNEL_BIND, REQUEST, next(n))
    m.add(CHANNEL_NUMBER, struct.pack("!HH", 0x4FFF, 0)).xor(XOR_PEER_ADDRESS, "fd00::2:1", 5000)
    long_term(m).integrity(LT_MD5_KEY).integrity_sha256(LT_SHA256_KEY)
    put("channelbind-request-both-integrity.bin", m.fingerprint())
    put("channelbind-success.bin",
        Msg(CHANNEL_BIND, SUCCESS, next(n)).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(CHANNEL_BIND, ERROR, next(n)).add(ERROR_CODE, error_value(400, "Bad Request"))
    put("channelbind-error-400.bin", m.integrity(LT_MD5_KEY).fingerprint())

    # Send and Data indications.
    m = Msg(SEND, INDICATION, next(n)).xor(XOR_PEER_ADDRESS, "198.18.2.1", 5000)
    m.add(DONT_FRAGMENT, b"").add(DATA_ATTR, bytes(range(160)))
    put("send-indication.bin", m)
    m = Msg(DATA, INDICATION, next(n)).xor(XOR_PEER_ADDRESS, "fd00::2:1", 5000)
    put("data-indication.bin", m.add(DATA_ATTR, b"hello, peer\n"))
    m = Msg(DATA, INDICATION, next(n)).xor(XOR_PEER_ADDRESS, "198.18.2.1", 5000)
    put("data-indication-icmp.bin", m.add(ICMP, struct.pack("!HBBI", 0, 3, 4, 1400)))

    # RFC 6062 TCP relaying.
    m = Msg(CONNECT, REQUEST, next(n)).xor(XOR_PEER_ADDRESS, "198.18.2.1", 80)
    put("connect-request.bin", long_term(m).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(CONNECT, SUCCESS, next(n)).add(CONNECTION_ID, struct.pack("!I", 0xC0FFEE))
    put("connect-success.bin", m.integrity(LT_MD5_KEY).fingerprint())
    m = Msg(CONNECTION_BIND, REQUEST, next(n)).add(CONNECTION_ID, struct.pack("!I", 0xC0FFEE))
    put("connectionbind-request.bin", long_term(m).integrity(LT_MD5_KEY).fingerprint())
    m = Msg(CONNECTION_ATTEMPT, INDICATION, next(n))
    m.add(CONNECTION_ID, struct.pack("!I", 7)).xor(XOR_PEER_ADDRESS, "198.18.2.9", 40000)
    put("connectionattempt-indication.bin", m)

    # 420 with UNKNOWN-ATTRIBUTES (odd count: padded), and a request carrying
    # an unknown comprehension-required attribute.
    m = Msg(ALLOCATE, ERROR, next(n)).add(ERROR_CODE, error_value(420, "Unknown Attribute"))
    put("allocate-error-420.bin", m.add(UNKNOWN_ATTRIBUTES, struct.pack("!HHH", 0x7F00, 0x0031, 0x0002)))
    m = Msg(ALLOCATE, REQUEST, next(n)).add(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
    put("allocate-request-unknown-required.bin", m.add(0x7F00, b"xyz").add(0xC001, b"opt"))
    return out


def malformed():
    """Inputs each parser and decoder must reject without reading past them."""
    out = {}
    n = iter(range(1000, 2000))
    good = Msg(BINDING, REQUEST, next(n)).add(SOFTWARE, b"x").fingerprint().bytes()

    out["bad-truncated-header.bin"] = good[:10]
    out["bad-magic-cookie.bin"] = good[:4] + b"\x21\x12\xa4\x43" + good[8:]
    out["bad-leading-bits.bin"] = b"\x40" + good[1:]
    b = bytearray(good)
    struct.pack_into("!H", b, 2, len(good) - 20 + 2)
    out["bad-length-not-multiple-of-4.bin"] = bytes(b)
    struct.pack_into("!H", b, 2, len(good) - 20 + 4)
    out["bad-length-mismatch.bin"] = bytes(b)
    m = Msg(BINDING, REQUEST, next(n))
    m.body = struct.pack("!HH", SOFTWARE, 200) + b"abcd"
    out["bad-attribute-overrun.bin"] = m.bytes()
    m = Msg(BINDING, REQUEST, next(n)).integrity(SHORT_TERM_KEY).integrity(SHORT_TERM_KEY)
    out["bad-duplicate-integrity.bin"] = m.bytes()
    m = Msg(BINDING, REQUEST, next(n)).integrity_sha256(SHORT_TERM_KEY).integrity(SHORT_TERM_KEY)
    out["bad-integrity-after-sha256.bin"] = m.bytes()
    m = Msg(BINDING, REQUEST, next(n)).add(MESSAGE_INTEGRITY, bytes(16))
    out["bad-integrity-length.bin"] = m.bytes()
    m = Msg(BINDING, REQUEST, next(n)).add(MESSAGE_INTEGRITY_SHA256, bytes(18))
    out["bad-integrity-sha256-length.bin"] = m.bytes()
    m = Msg(BINDING, REQUEST, next(n)).fingerprint().add(SOFTWARE, b"late")
    out["bad-fingerprint-not-last.bin"] = m.bytes()
    b = bytearray(Msg(BINDING, REQUEST, next(n)).add(SOFTWARE, b"x").fingerprint().bytes())
    b[-1] ^= 1
    out["bad-fingerprint-value.bin"] = bytes(b)
    m = Msg(BINDING, REQUEST, next(n)).add(FINGERPRINT, b"\0\0\0\0\0")
    out["bad-fingerprint-length.bin"] = m.bytes()
    m = Msg(BINDING, REQUEST, next(n))
    for i in range(60):
        m.add(SOFTWARE, b"%d" % i)
    out["bad-too-many-attributes.bin"] = m.bytes()
    m = Msg(ALLOCATE, REQUEST, next(n)).add(USERNAME, b"u" * 600)
    out["bad-username-too-long.bin"] = long_term(m).integrity(LT_MD5_KEY).bytes()
    m = Msg(ALLOCATE, REQUEST, next(n)).add(USERNAME, b"\xc3\x28\xff\xfe").add(REALM, b"\xe2\x82")
    out["bad-text-utf8.bin"] = m.bytes()
    m = Msg(CHANNEL_BIND, REQUEST, next(n)).add(CHANNEL_NUMBER, struct.pack("!HH", 0x3FFF, 1))
    m.add(XOR_PEER_ADDRESS, struct.pack("!BBH", 0, 3, 1) + bytes(4))
    m.add(XOR_RELAYED_ADDRESS, struct.pack("!BBH", 0, 2, 1) + bytes(4))
    m.add(MAPPED_ADDRESS, struct.pack("!BBH", 0, 1, 1) + bytes(16))
    out["bad-address-family-and-length.bin"] = m.bytes()
    m = Msg(ALLOCATE, ERROR, next(n)).add(ERROR_CODE, struct.pack("!HBB", 0, 7, 120) + b"x")
    m.add(LIFETIME, b"\0\0\x02").add(REQUESTED_TRANSPORT, b"\x11").add(EVEN_PORT, b"\0\0")
    m.add(DONT_FRAGMENT, b"x").add(PASSWORD_ALGORITHMS, struct.pack("!HHH", 1, 8, 0))
    m.add(ICMP, b"\0\0\3").add(ADDRESS_ERROR_CODE, bytes([9, 0, 4, 40]))
    m.add(USERHASH, bytes(31)).add(RESERVATION_TOKEN, bytes(7))
    out["bad-attribute-values.bin"] = m.bytes()
    # Attributes after MESSAGE-INTEGRITY are ignored (RFC 8489 section 14.5).
    m = Msg(BINDING, REQUEST, next(n)).integrity(SHORT_TERM_KEY).add(0x7F00, b"ignored")
    out["attributes-after-integrity.bin"] = m.fingerprint().bytes()
    return out


def channel_data():
    """ChannelData frames (RFC 8656 section 12.4)."""
    def frame(ch, payload, pad=False, length=None):
        ln = len(payload) if length is None else length
        b = struct.pack("!HH", ch, ln) + payload
        return b + bytes((4 - len(b) % 4) % 4) if pad else b

    audio = bytes((i * 7) & 0xFF for i in range(160))
    video = bytes((i * 13) & 0xFF for i in range(1200))
    return {
        "cd-4000-empty.bin": frame(0x4000, b""),
        "cd-4000-audio-160.bin": frame(0x4000, audio),
        "cd-4fff-video-1200.bin": frame(0x4FFF, video),
        "cd-4001-3-bytes-padded.bin": frame(0x4001, b"abc", pad=True),
        "cd-4001-3-bytes-unpadded.bin": frame(0x4001, b"abc"),
        "cd-4002-trailing-bytes.bin": frame(0x4002, b"abcdef") + b"\0\0junk",
        "cd-4003-stun-inside.bin": frame(0x4003, Msg(BINDING, REQUEST, 3000).bytes()),
        "bad-cd-reserved-5000.bin": frame(0x5000, b"data"),
        "bad-cd-reserved-7fff.bin": frame(0x7FFF, b"data"),
        "bad-cd-length-overrun.bin": frame(0x4000, b"abcd", length=200),
        "bad-cd-length-ffff.bin": frame(0x4000, b"", length=0xFFFF),
        "bad-cd-too-short.bin": b"\x40\x00\x00",
        "bad-cd-empty.bin": b"",
        "bad-cd-stun-message.bin": Msg(BINDING, REQUEST, 3001).bytes(),
        "bad-cd-leading-bits-11.bin": frame(0xC000, b"data"),
        # TCP streams (RFC 8656 section 3.1): messages back to back, ChannelData
        # padded to 4; the last one cut short or the framing lost.
        "stream-stun-cd-stun.bin": Msg(BINDING, REQUEST, 3002).add(SOFTWARE, b"turnrelay corpus").bytes()
        + frame(0x4000, b"abcde", pad=True)
        + Msg(BINDING, REQUEST, 3003).bytes(),
        "stream-cd-cut-short.bin": frame(0x4001, audio, pad=True) + frame(0x4002, video)[:100],
        "stream-then-bad-type.bin": frame(0x4001, b"abc", pad=True) + b"\x80\x00\x00\x04data",
        "stream-then-bad-stun-length.bin": frame(0x4001, b"abcd") + b"\x00\x01\x00\x05" + bytes(21),
    }


def proxy_header():
    """PROXY protocol headers (HAProxy's "The PROXY protocol", v1 and v2), each
    followed by what a proxied connection carries next, cut short, or refused."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    local, proxy = 0x20, 0x21
    unspec, inet, inet_dgram, inet6, unix = 0x00, 0x11, 0x12, 0x21, 0x31

    def v2(ver_cmd, fam_proto, block, length=None):
        ln = len(block) if length is None else length
        return sig + struct.pack("!BBH", ver_cmd, fam_proto, ln) + block

    def block(src, dst, sport, dport):
        """The INET (12 bytes) or INET6 (36 bytes) address block."""
        return ip_bytes(src)[1] + ip_bytes(dst)[1] + struct.pack("!HH", sport, dport)

    def tlv(t, value):
        return struct.pack("!BH", t, len(value)) + value

    stun = Msg(BINDING, REQUEST, 4000).add(SOFTWARE, b"turnrelay corpus").fingerprint().bytes()
    # The first bytes of a TLS 1.2 ClientHello record.
    tls = bytes.fromhex("160301020001 0001fc0303".replace(" ", "")) + bytes(range(32))
    tcp4 = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 3478\r\n"
    tcp6 = b"PROXY TCP6 2001:db8::1 2001:db8:0:1::35 443 5349\r\n"
    tcp6_107 = (b"PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 "
                b"2001:0db8:0000:0000:0000:0000:0000:0001 443 3478\r\n")
    unknown_107 = b"PROXY UNKNOWN " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n"
    assert len(tcp6_107) == 107 and len(unknown_107) == 107
    b4 = block("192.0.2.1", "198.51.100.7", 56324, 3478)
    b6 = block("2001:db8::1", "2001:db8::35", 443, 5349)
    tlvs = (tlv(0x01, b"h2") + tlv(0x02, b"turn.example.org") + tlv(0x03, bytes.fromhex("12345678"))
            + tlv(0x05, b"0123456789abcdef") + tlv(0xEA, b"\x01vpce-0123456789abcdef") + tlv(0x04, bytes(3)))
    unix_block = b"/run/haproxy/client.sock".ljust(108, b"\0") + b"/run/turn/relay.sock".ljust(108, b"\0")
    v2_4096 = v2(proxy, inet, b4 + tlv(0x04, bytes(4065)))
    assert len(v2_4096) == 4096
    return {
        # v1, the text line.
        "v1-tcp4-then-stun.bin": tcp4 + stun,
        "v1-tcp6-then-tls.bin": tcp6 + tls,
        "v1-tcp6-mapped-ipv4.bin": b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.7 56324 3478\r\n" + stun,
        "v1-tcp6-107-bytes.bin": tcp6_107 + tls,
        "v1-unknown.bin": b"PROXY UNKNOWN\r\n" + stun,
        "v1-unknown-107-bytes.bin": unknown_107,
        "v1-ports-max.bin": b"PROXY TCP4 192.0.2.1 198.51.100.7 65535 0\r\n",
        "v1-two-headers.bin": tcp4 + tcp6,
        "cut-v1-tcp4.bin": tcp4[:30],
        "cut-v1-before-lf.bin": tcp6[:-1],
        "bad-v1-108-bytes.bin": tcp6_107[:-6] + b"34780\r\n",
        "bad-v1-lf-without-cr.bin": tcp4[:-2] + b"\n" + stun,
        "bad-v1-protocol-udp4.bin": tcp4.replace(b"TCP4", b"UDP4"),
        "bad-v1-three-addresses.bin": b"PROXY TCP4 192.0.2.1 198.51.100.7 3478\r\n",
        "bad-v1-extra-field.bin": tcp4[:-2] + b" 80\r\n",
        "bad-v1-ipv6-under-tcp4.bin": b"PROXY TCP4 2001:db8::1 198.51.100.7 56324 3478\r\n",
        "bad-v1-ipv4-under-tcp6.bin": b"PROXY TCP6 192.0.2.1 2001:db8::2 443 5349\r\n",
        # Found by the fuzzer: an address field reaches inet_pton as a C string,
        # which stops at the NUL (accepted as 192.0.2.1 until refused).
        "bad-v1-nul-in-address.bin": b"PROXY TCP4 192.0.2.1\0evil 198.51.100.7 56324 3478\r\n",
        "bad-v1-port-65536.bin": b"PROXY TCP4 192.0.2.1 198.51.100.7 65536 3478\r\n",
        "bad-v1-double-space.bin": b"PROXY TCP4 192.0.2.1  198.51.100.7 56324 3478\r\n",
        "bad-v1-misspelt.bin": b"PROXX TCP4 192.0.2.1 198.51.100.7 56324 3478\r\n",
        # v2, binary.
        "v2-inet-then-stun.bin": v2(proxy, inet, b4) + stun,
        "v2-inet6-then-tls.bin": v2(proxy, inet6, b6) + tls,
        "v2-inet-tlvs.bin": v2(proxy, inet, b4 + tlvs) + stun,
        "v2-inet6-tlvs.bin": v2(proxy, inet6, b6 + tlvs) + tls,
        "v2-local.bin": v2(local, unspec, b"") + stun,
        "v2-local-inet.bin": v2(local, inet, block("127.0.0.1", "127.0.0.1", 40000, 3478)),
        "v2-unspec.bin": v2(proxy, unspec, b"") + tls,
        "v2-unix.bin": v2(proxy, unix, unix_block) + stun,
        "v2-4096-bytes.bin": v2_4096 + tls[:3],
        "cut-v2-signature.bin": sig[:7],
        "cut-v1-signature.bin": b"PROX",
        "cut-v2-fixed-part.bin": v2(proxy, inet6, b6)[:16],
        "cut-v2-inet6.bin": v2(proxy, inet6, b6)[:40],
        "bad-v2-dgram.bin": v2(proxy, inet_dgram, b4),
        "bad-v2-version-1.bin": v2(0x11, inet, b4),
        "bad-v2-command-2.bin": v2(0x22, inet, b4),
        "bad-v2-family-4.bin": v2(proxy, 0x41, b4),
        "bad-v2-inet-length-11.bin": v2(proxy, inet, b4[:11]) + stun,
        "bad-v2-inet6-length-35.bin": v2(proxy, inet6, b6[:35]),
        "bad-v2-unix-length-215.bin": v2(proxy, unix, unix_block[:215]),
        "bad-v2-length-4097.bin": v2(proxy, inet, b4, length=4081),
        "bad-v2-signature-byte-7.bin": sig[:7] + b"q" + v2(proxy, inet, b4)[8:],
        # Not a header: a client that reached the proxied listener directly.
        "bad-stun-binding.bin": stun,
        "bad-tls-clienthello.bin": tls,
        "bad-http-get.bin": b"GET / HTTP/1.1\r\nHost: turn.example.org\r\n\r\n",
        "cut-empty.bin": b"",
    }


def write(dirname, files):
    d = os.path.join(HERE, "corpus", dirname)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        if old.endswith(".bin") and old not in files:
            os.remove(os.path.join(d, old))
    for name, data in sorted(files.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{d}: {len(files)} files")


def main():
    stun = {}
    for part in (rfc5769(), turn_messages(), malformed()):
        assert not set(part) & set(stun)
        stun.update(part)
    write("stun", stun)
    write("channel_data", channel_data())
    write("proxy_header", proxy_header())
    return 0


if __name__ == "__main__":
    sys.exit(main())
