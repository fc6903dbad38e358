"""Clients that misbehave on purpose, against the real turn-relay (the review of hostile input):
the metrics endpoint is not held by half-sent requests. (RFC 6062 peer-connection limits:
test_tcp_allocations.py; DTLS junk records: test_dtls.py; unauthenticated 400 answers:
tests/controlplane/auth_test.cc; the relay's own listeners as peers: peer_policy_test.cc.)"""

import socket
import time
import urllib.request

from conftest import log_tail, stop_process
from test_turn_probe import Relay


def test_half_sent_requests_do_not_block_the_metrics_endpoint(tmp_path):
    """Six connections that send half a request line and then nothing (more than the
    endpoint's threads): a scrape still gets its answer, and the stalled connections are closed
    by the request timeout (before: one such connection blocked every scrape for as long as
    it stayed open)."""
    relay = Relay(tmp_path)
    stalled = []
    try:
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", relay.metrics), timeout=5)
            s.sendall(b"GET /met")
            stalled.append(s)
        time.sleep(0.2)
        t0 = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=20).read().decode()
        assert "turn_allocations" in body
        took = time.monotonic() - t0
        for s in stalled:
            s.settimeout(15)
            try:
                rest = s.recv(4096)
            except ConnectionResetError:
                rest = b""
            # Closed, perhaps after an error status; never a metrics page.
            assert b"turn_allocations" not in rest
            if rest:
                while s.recv(4096):
                    pass
        assert relay.proc.poll() is None, log_tail(relay.log)
        print(f"scrape answered after {took:.2f} s with 6 stalled connections")
    finally:
        for s in stalled:
            s.close()
        stop_process(relay.proc, second_signal_after=1.0)
