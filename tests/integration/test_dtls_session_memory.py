"""A client that passed the cookie exchange cannot make its DTLS session hold much more memory
than the ~52 KiB per session the relay documents by feeding junk to the unfinished handshake:
OpenSSL keeps every record of the next epoch (epoch 1 before the ChangeCipherSpec) with a whole
read buffer of ~17.7 KiB, however small the datagram (29 bytes here), up to 100 per session,
until the session ends ([dtls].idle_timeout_s). With the default limits one IPv4 address holds
1000 sessions (max_sessions_per_ip) and the process 10000 (max_sessions), so that grew the
relay by gigabytes for a handful of clients (~475 KiB per session, found by a review). The
relay now drops a handshake's datagrams past 4 such records (a real client sends one with its
last flight), counted as turn_drops_total{reason="dtls_early_records"}, so junk adds at most
4 buffers (~71 KiB) to a session. Resident memory depends on the allocator and on how sessions
spread over event loops (a CI run measured 76 KiB for a plain session, this host 52), so the
bound is the plain sessions' cost plus 100 KiB.
"""
import os
import socket
import time

import pytest

from conftest import dtls_client_hello, server_kind, start_server, stop_server
from test_dtls import dtls_cert, start_handshake, record, HANDSHAKE  # noqa: F401 (fixture)
from test_tcp_tls import metric0

SESSIONS = 100
EXTRA_LIMIT = 100 * 1024  # per session, over a plain session's cost


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_sessions(srv, n, junk):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        flight = start_handshake(s, srv.dtls_addr(4), quiet=0.05)
        assert flight, "no ServerHello flight"
        if junk == "records":
            # Epoch-1 handshake records (the next epoch) with distinct sequence numbers.
            for seq in range(1, 101):
                s.sendto(record(HANDSHAKE, 1, seq, b"\x00" * 16), srv.dtls_addr(4))
        socks.append(s)
        time.sleep(0.005)
    return socks


@pytest.mark.skipif(server_kind() != "turnrelay", reason="turn-relay's [dtls]")
def test_dtls_session_memory_bounded(tmp_path, dtls_cert):
    junk = "records"
    srv = start_server(tmp_path, tls_files=(dtls_cert.chain, dtls_cert.key), dtls=True,
                       dtls_settings={"idle_timeout_s": 120})
    socks = []
    try:
        pid = srv.proc.pid
        # Warm-up: sessions without junk, so allocator and OpenSSL caches are in place.
        socks += open_sessions(srv, SESSIONS, None)
        time.sleep(0.5)
        base = rss(pid)
        socks += open_sessions(srv, SESSIONS, None)
        time.sleep(0.5)
        plain = rss(pid) - base
        base2 = rss(pid)
        drops = metric0(srv, "turn_drops_total", reason="dtls_early_records")
        socks += open_sessions(srv, SESSIONS, junk)
        time.sleep(1.0)
        grown = rss(pid) - base2
        print(f"{junk}: plain sessions {plain / SESSIONS / 1024:.1f} KiB each, "
              f"with junk {grown / SESSIONS / 1024:.1f} KiB each")
        assert grown / SESSIONS <= plain / SESSIONS + EXTRA_LIMIT, (
            f"{SESSIONS} DTLS sessions fed {junk} junk grew the relay by {grown >> 20} MiB "
            f"({grown / SESSIONS / 1024:.0f} KiB per session; plain ones "
            f"{plain / SESSIONS / 1024:.0f} KiB)")
        # Each session took 4 of its 100 junk records; the other 96 were dropped and counted.
        assert metric0(srv, "turn_drops_total", reason="dtls_early_records") - drops == SESSIONS * 96
    finally:
        for s in socks:
            s.close()
        stop_server(srv)
