"""[redirect]: turn-relay answers Allocate with 300 Try Alternate and ALTERNATE-SERVER (RFC
8489 section 10, RFC 8656 section 7.2) naming another relay, while it drains or always, and the
project's turn-probe follows it. Two real turn-relay processes on
loopback, each with UDP, TCP and TLS listeners:

- draining: a relay that drains after SIGTERM sends new allocations to the alternate of the
  client's address family (IPv4 and IPv6 clients each get their own), while the
  allocation it already has keeps relaying; once that ends the relay exits by itself;
- always: every new allocation goes to the alternate of its transport, TLS clients to the
  TLS alternate with ALTERNATE-DOMAIN, which is the only name the alternate's certificate
  carries; without ALTERNATE-DOMAIN the probe checks the alternate against the first server's
  name and refuses it, so the test shows the domain is what made it pass.

Needs turn-probe (tools/probe) and Debian's python3-aioice (the allocation held during the
drain).
"""

import asyncio
import signal
import socket
import urllib.request

import pytest

from conftest import log_tail, sample_sum, stop_process
from test_tls_reload import wait_log
from test_turn_probe import PROBE, PASSWORD, USER, Relay, assert_all_passed, probe

aioice_turn = pytest.importorskip("aioice.turn")
pytestmark = pytest.mark.skipif(PROBE is None, reason="turn-probe not built")


def metric(relay, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=3).read().decode()
    return sample_sum(text, name, **labels) or 0.0


def stop(relay):
    alive = relay.proc.poll() is None
    stop_process(relay.proc, second_signal_after=1.0)
    assert alive, "turn-relay died during the test:\n" + log_tail(relay.log)


def assert_redirected(out, frm, to, domain=""):
    r = out["steps"].get("redirect")
    assert r is not None and r["ok"] is True, out["steps"]
    # The probe's first Allocate carries no credentials: the relay redirects it at once, unsigned
    # (what browsers follow); the signed 300 to an authenticated Allocate is covered by the unit tests.
    assert (r["from"], r["to"], r["domain"], r["signed"]) == (frm, to, domain, "no"), r
    del out["steps"]["redirect"]  # the rest are the alternate's steps


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


@pytest.fixture
def alternate(tmp_path):
    (tmp_path / "alternate").mkdir()
    b = Relay(tmp_path / "alternate")
    yield b
    stop(b)


def test_draining_relay_redirects_new_allocations_and_keeps_its_own(tmp_path, alternate):
    b = alternate
    (tmp_path / "a").mkdir()
    a = Relay(tmp_path / "a", extra=f"""
[redirect]
servers = ["127.0.0.1:{b.port}", "[::1]:{b.port}"]
[drain]
deadline_s = 60
""")
    try:
        # Not draining: the relay serves the allocation itself.
        rc, out, err = probe("-u", USER, "-w", PASSWORD, f"127.0.0.1:{a.port}")
        assert_all_passed(rc, out, err)
        assert "redirect" not in out["steps"]

        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        echo.bind(("127.0.0.1", 0))
        echo.settimeout(5)

        async def scenario():
            transport, proto = await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                Collector, server_addr=("127.0.0.1", a.port), username=USER, password=PASSWORD), 10)
            try:
                a.proc.send_signal(signal.SIGTERM)
                assert wait_log(a, "event=draining"), log_tail(a.log)
                results = {}
                for family, frm, alt in (("4", f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"),
                                         ("6", f"[::1]:{a.port}", f"[::1]:{b.port}")):
                    results[frm] = (alt, await asyncio.to_thread(probe, "--family", family, "-u", USER, "-w",
                                                                 PASSWORD, frm))
                # The allocation made before the drain still relays both ways.
                transport.sendto(b"still here", echo.getsockname())
                data, src = await asyncio.to_thread(echo.recvfrom, 100)
                echo.sendto(b"echo:" + data, src)
                back, _ = await asyncio.wait_for(proto.queue.get(), 5)
                redirected = metric(a, "turn_requests_total", method="allocate", code="300")
                live = metric(a, "turn_allocations")
                return results, data, back, redirected, live
            finally:
                transport.close()  # Refresh 0: the drain has nothing left to wait for

        results, data, back, redirected, live = asyncio.run(scenario())
        for frm, (alt, (rc, out, err)) in results.items():
            assert_redirected(out, frm, alt)
            assert_all_passed(rc, out, err)  # every step ran on the alternate
            assert out["steps"]["connect"]["server"] == alt, out["steps"]["connect"]
        assert (data, back) == (b"still here", b"echo:still here")
        assert redirected == 2 and live == 1, (redirected, live)
        assert "event=allocation_redirected" in a.log.read_text() and "reason=draining" in a.log.read_text()
        # The last allocation gone, the drain ends before its deadline.
        assert a.proc.wait(timeout=10) == 0, log_tail(a.log)
        assert metric(b, "turn_requests_total", method="allocate", code="200") >= 2
    finally:
        if a.proc.poll() is None:
            stop_process(a.proc, second_signal_after=1.0)


def test_always_redirects_each_transport_and_tls_checks_the_alternate_domain(tmp_path):
    (tmp_path / "b").mkdir()
    # The alternate's certificate names only "localhost": the probe reaches it by IP, so it can
    # verify it only against the ALTERNATE-DOMAIN the first relay gives.
    b = Relay(tmp_path / "b", san="DNS:localhost")
    relays = [b]
    try:
        redirect = f"""
[redirect]
servers = ["127.0.0.1:{b.port}"]
tls_servers = ["127.0.0.1:{b.tls_port}"]
when = "always"
"""
        (tmp_path / "a").mkdir()
        a = Relay(tmp_path / "a", extra=redirect + 'tls_domain = "localhost"\n')
        relays.append(a)
        bundle = tmp_path / "ca-bundle.pem"
        bundle.write_text(a.cert.read_text() + b.cert.read_text())
        for transport, port, alt in (("udp", a.port, b.port), ("tcp", a.port, b.port),
                                     ("tls", a.tls_port, b.tls_port)):
            rc, out, err = probe("--transport", transport, "--ca", str(bundle), "-u", USER, "-w", PASSWORD,
                                 f"127.0.0.1:{port}")
            assert_redirected(out, f"127.0.0.1:{port}", f"127.0.0.1:{alt}", "localhost" if transport == "tls" else "")
            assert_all_passed(rc, out, err)
            if transport == "tls":
                assert out["steps"]["connect"]["alpn"] == "stun.turn"
        assert metric(a, "turn_requests_total", method="allocate", code="300") == 3
        assert metric(a, "turn_requests_total", method="allocate", code="200") == 0
        assert metric(a, "turn_allocations") == 0

        # Without ALTERNATE-DOMAIN the probe checks the alternate against the IP it was sent to,
        # which the alternate's certificate does not name: redirected, then refused at connect.
        (tmp_path / "c").mkdir()
        c = Relay(tmp_path / "c", extra=redirect)
        relays.append(c)
        bundle.write_text(c.cert.read_text() + b.cert.read_text())
        rc, out, err = probe("--transport", "tls", "--ca", str(bundle), "-u", USER, "-w", PASSWORD,
                             f"127.0.0.1:{c.tls_port}")
        assert rc == 1
        assert_redirected(out, f"127.0.0.1:{c.tls_port}", f"127.0.0.1:{b.tls_port}")
        assert out["steps"]["connect"]["ok"] is False and "certificate" in out["steps"]["connect"]["detail"], out
    finally:
        for r in relays:
            stop(r)


def test_redirect_to_an_unreachable_alternate_is_reported(tmp_path):
    """The probe says where it was sent and that nothing answers there."""
    (tmp_path / "a").mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # free again once closed: nothing listens there
    a = Relay(tmp_path / "a", extra=f'[redirect]\nservers = ["127.0.0.1:{closed}"]\nwhen = "always"\n')
    try:
        rc, out, err = probe("-u", USER, "-w", PASSWORD, f"127.0.0.1:{a.port}")
        assert rc == 1
        assert_redirected(out, f"127.0.0.1:{a.port}", f"127.0.0.1:{closed}")
        assert out["steps"]["binding"]["ok"] is False and "unreachable" in out["steps"]["binding"]["detail"]
        assert "allocate" not in out["steps"]
    finally:
        stop(a)
