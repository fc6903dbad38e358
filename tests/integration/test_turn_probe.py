"""tools/probe's turn-probe against real TURN servers: turn-relay over UDP, TCP, TLS and
DTLS (IPv4 and IPv6, static and TURN REST credentials), and Debian's coturn over UDP, TCP and
DTLS, the way an operator's health check would run it. Every step (connect, Binding, Allocate,
CreatePermission, Send/Data round trips through the probe's own echo peer, ChannelBind,
ChannelData round trips, Refresh 0) must pass and report what it found; and each way the
probe is meant to fail does fail, at the right step, with a message that says why: wrong
password (Allocate, 401), an untrusted or misnamed TLS/DTLS certificate (connect), nothing
listening, a DTLS probe of a port that does not speak DTLS (connect, within --timeout-ms), a
usage error (exit 2). Over DTLS also: lost handshake flights and a lost answer are resent
(a lossy UDP proxy in between), and a 300 to the TLS alternates is followed over DTLS.

Self-contained: starts its own turn-relay (and coturn) on free loopback ports, with
certificates made by the openssl CLI, and stops them by PID.
"""

import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional, Tuple

import pytest

from tool_paths import find_tool
from conftest import find_turn_relay_bin, free_port, log_tail, make_self_signed_cert, relay_port_window, stop_process
from tls_ca import make_ca, make_server_cert

USER, PASSWORD, SECRET = "probe", "probe-pw", "probe-rest-secret"
STEPS = ["connect", "binding", "allocate", "permission", "send_data", "channel_bind", "channel_data", "refresh"]


PROBE = find_tool("TURN_PROBE_BIN", "tools/probe/turn-probe")
pytestmark = pytest.mark.skipif(PROBE is None, reason="turn-probe not built")


def wait_tcp(port, family=socket.AF_INET, host="127.0.0.1", timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.3)
                s.connect((host, port))
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Relay:
    """turn-relay with UDP, TCP and TLS listeners; `extra`: TOML sections appended; `san`: the
    certificate's subjectAltName. `dtls`: also TURN over DTLS on 127.0.0.1 and ::1, on the TLS
    port's number (UDP), as RFC 8656 has it (5349 for both); `tls_files`: (chain, key) to use
    instead of a self-signed certificate; `args`: more command-line options."""

    def __init__(self, workdir: Path, extra: str = "", san: str = "IP:127.0.0.1,IP:::1", dtls: bool = False,
                 tls_files: Optional[Tuple[Path, Path]] = None, args: Tuple[str, ...] = ()):
        self.dir = workdir
        self.port = free_port(span=1)
        self.tls_port = free_port() if dtls else free_port(kinds=(socket.SOCK_STREAM,))
        self.dtls_port = self.tls_port if dtls else None
        self.metrics = free_port(kinds=(socket.SOCK_STREAM,))
        self.lo, self.hi = relay_port_window()
        if tls_files is not None:
            self.cert, self.key = tls_files
        else:
            self.cert, self.key = workdir / "cert.pem", workdir / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-days", "2", "-subj", "/CN=probe.test", "-addext", f"subjectAltName={san}",
                            "-keyout", str(self.key), "-out", str(self.cert)], check=True, capture_output=True)
        listen_dtls = f'listen_dtls = ["127.0.0.1:{self.dtls_port}", "[::1]:{self.dtls_port}"]\n' if dtls else ""
        cfg = workdir / "relay.toml"
        cfg.write_text(f"""
[server]
listen = ["127.0.0.1:{self.port}", "[::1]:{self.port}"]
listen_tcp = ["127.0.0.1:{self.port}", "[::1]:{self.port}"]
listen_tls = ["127.0.0.1:{self.tls_port}"]
{listen_dtls}relay_ips = ["127.0.0.1", "::1"]
relay_port_min = {self.lo}
relay_port_max = {self.hi}
threads = 2
[tls]
certificate = "{self.cert}"
private_key = "{self.key}"
[auth]
users = ["{USER}:{PASSWORD}"]
rest_secrets = ["{SECRET}"]
[policy]
allow_peers = ["127.0.0.0/8", "::1/128"]
[metrics]
listen = "127.0.0.1:{self.metrics}"
""" + extra)
        self.log = workdir / "relay.log"
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg), *args], stdout=f,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert wait_tcp(self.tls_port), "turn-relay did not listen:\n" + log_tail(self.log)


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    r = Relay(tmp_path_factory.mktemp("probe-relay"), dtls=True)
    yield r
    alive = r.proc.poll() is None
    stop_process(r.proc, second_signal_after=1.0)
    assert alive, "turn-relay died during the probe tests:\n" + log_tail(r.log)


def probe(*args, timeout=60, timeout_ms=1500):
    p = subprocess.run([PROBE, "--json", "--timeout-ms", str(timeout_ms), *args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else None
    except ValueError:
        out = None
    return p.returncode, out, p.stderr


def assert_all_passed(rc, out, err, count=5):
    assert rc == 0 and out is not None and out["ok"] is True, f"rc={rc} out={json.dumps(out, indent=1)} err={err}"
    assert list(out["steps"].keys()) == sorted(STEPS) or set(out["steps"]) == set(STEPS), out["steps"].keys()
    for name in STEPS:
        assert out["steps"][name]["ok"] is True, (name, out["steps"][name])
    for name in ("send_data", "channel_data"):
        assert int(out["steps"][name]["echoed"]) == count, out["steps"][name]


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls", "dtls"])
def test_every_step_passes_on_each_transport(relay, transport):
    port = relay.tls_port if transport in ("tls", "dtls") else relay.port
    rc, out, err = probe("--transport", transport, "--ca", str(relay.cert), "-u", USER, "-w", PASSWORD,
                         "-n", "7", "-l", "333", f"127.0.0.1:{port}")
    assert_all_passed(rc, out, err, count=7)
    s = out["steps"]
    assert s["connect"]["transport"] == transport
    host, _, mport = s["binding"]["mapped"].rpartition(":")
    assert host == "127.0.0.1" and 0 < int(mport) < 65536
    rhost, _, rport = s["allocate"]["relayed"].rpartition(":")
    assert rhost == "127.0.0.1" and relay.lo <= int(rport) <= relay.hi, s["allocate"]
    assert s["allocate"]["realm"] == "turnrelay.local"
    if transport in ("tls", "dtls"):
        assert s["connect"]["tls_version"] in (("DTLSv1.2",) if transport == "dtls" else ("TLSv1.2", "TLSv1.3"))
        assert s["connect"]["alpn"] == "stun.turn"
        assert s["connect"]["cipher"] and float(s["connect"]["tls_ms"]) > 0, s["connect"]
        assert f'{s["connect"]["tls_version"]} {s["connect"]["cipher"]}' in s["connect"]["detail"]
    # Datagram transports have no TCP handshake to time.
    assert ("tcp_ms" in s["connect"]) == (transport in ("tcp", "tls")), s["connect"]


def test_dtls_ipv6_and_rest_credentials(relay):
    rc, out, err = probe("--transport", "dtls", "--ca", str(relay.cert), "--family", "6", "--rest-secret", SECRET,
                         "--rest-name", "monitor", f"[::1]:{relay.dtls_port}")
    assert_all_passed(rc, out, err)
    s = out["steps"]
    assert s["connect"]["tls_version"] == "DTLSv1.2" and s["connect"]["alpn"] == "stun.turn", s["connect"]
    assert s["allocate"]["relayed"].startswith("[::1]:"), s["allocate"]
    assert s["binding"]["mapped"].startswith("[::1]:")
    # An IPv4 relayed address from an IPv6 DTLS client, and payloads near the relay's datagram limit.
    rc, out, err = probe("--transport", "dtls", "--ca", str(relay.cert), "-u", USER, "-w", PASSWORD, "-l", "8000",
                         "--peer-bind", "127.0.0.1", f"[::1]:{relay.dtls_port}")
    assert_all_passed(rc, out, err)
    assert out["steps"]["allocate"]["relayed"].startswith("127.0.0.1:"), out["steps"]["allocate"]


def test_ipv6_and_rest_credentials(relay):
    rc, out, err = probe("--transport", "tcp", "--family", "6", "--rest-secret", SECRET, "--rest-name", "monitor",
                         f"[::1]:{relay.port}")
    assert_all_passed(rc, out, err)
    assert out["steps"]["allocate"]["relayed"].startswith("[::1]:"), out["steps"]["allocate"]
    assert out["steps"]["binding"]["mapped"].startswith("[::1]:")


def test_allocations_are_released(relay):
    """Refresh 0 at the end: the probe leaves nothing allocated behind."""
    import urllib.request

    def allocations():
        text = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=3).read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("turn_allocations{"))

    rc, out, err = probe("-u", USER, "-w", PASSWORD, f"127.0.0.1:{relay.port}")
    assert rc == 0, out
    deadline = time.monotonic() + 5
    while allocations() != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert allocations() == 0


def test_wrong_password_fails_at_allocate(relay):
    rc, out, err = probe("-u", USER, "-w", "not-the-password", f"127.0.0.1:{relay.port}")
    assert rc == 1 and out["ok"] is False
    s = out["steps"]
    assert s["binding"]["ok"] is True
    assert s["allocate"]["ok"] is False and "401" in s["allocate"]["detail"], s["allocate"]
    assert "channel_data" not in s, "steps after a failed Allocate must not run"


def test_untrusted_certificate_fails_at_connect(relay):
    rc, out, err = probe("--transport", "tls", "-u", USER, "-w", PASSWORD, f"127.0.0.1:{relay.tls_port}")
    assert rc == 1
    assert out["steps"]["connect"]["ok"] is False
    assert "certificate" in out["steps"]["connect"]["detail"], out["steps"]["connect"]
    # TLS on the plain TCP port: named as such.
    rc, out, err = probe("--transport", "tls", "--insecure", "-u", USER, "-w", PASSWORD, f"127.0.0.1:{relay.port}")
    assert rc == 1 and "TLS port" in out["steps"]["connect"]["detail"], out["steps"]["connect"]


def test_dtls_certificate_problems_fail_at_connect(relay, tmp_path):
    """An untrusted issuer (a self-signed certificate; a CA neither in the system store nor the
    one given with --ca) and a name or IP the certificate does not carry: refused during the
    handshake, said at connect with what to do, nothing after it. The right CA and name pass."""
    ca = make_ca(tmp_path / "ca", "probe-ca")
    other = make_ca(tmp_path / "other", "other-ca")
    leaf = make_server_cert(tmp_path / "ca", ca, "relay", "IP:127.0.0.1,IP:::1")
    (tmp_path / "signed").mkdir()
    signed = Relay(tmp_path / "signed", dtls=True, tls_files=(leaf.chain, leaf.key))
    try:
        for r, args, words in (
                (relay, ["127.0.0.1"], ["(self-signed certificate)", "--ca"]),
                # The relay sends its CA along (tls_ca's chains do): the chain ends in an untrusted root.
                (signed, ["127.0.0.1"], ["(self-signed certificate in certificate chain)", "--ca"]),
                (signed, ["--ca", str(other.cert), "[::1]"], ["(self-signed certificate in certificate chain)", "--ca"]),
                (signed, ["--ca", str(ca.cert), "--server-name", "wrong.example", "127.0.0.1"],
                 ["(hostname mismatch)", '"wrong.example"', "--server-name"]),
                (signed, ["--ca", str(ca.cert), "--server-name", "127.0.0.2", "127.0.0.1"],
                 ["(IP address mismatch)", '"127.0.0.2"', "--server-name"])):
            host = args.pop()
            rc, out, err = probe("--transport", "dtls", *args, "-u", USER, "-w", PASSWORD, f"{host}:{r.dtls_port}")
            assert rc == 1 and out is not None and out["ok"] is False, (args, rc, out, err)
            c = out["steps"]["connect"]
            assert c["ok"] is False and c["transport"] == "dtls", c
            assert c["detail"].startswith(f"DTLS handshake with {host}:{r.dtls_port} failed: certificate not accepted"), c
            for w in words:
                assert w in c["detail"], (w, c)
            assert list(out["steps"]) == ["connect"], out["steps"]
        # The issuer's CA: the chain and the IP check out, over IPv4 and IPv6.
        for host, family in (("127.0.0.1", "4"), ("[::1]", "6")):
            rc, out, err = probe("--transport", "dtls", "--ca", str(ca.cert), "--family", family, "-u", USER, "-w",
                                 PASSWORD, f"{host}:{signed.dtls_port}")
            assert_all_passed(rc, out, err)
    finally:
        alive = signed.proc.poll() is None
        stop_process(signed.proc, second_signal_after=1.0)
        assert alive, "turn-relay died during the test:\n" + log_tail(signed.log)
    # --insecure takes any certificate.
    rc, out, err = probe("--transport", "dtls", "--insecure", "-u", USER, "-w", PASSWORD,
                         f"127.0.0.1:{relay.dtls_port}")
    assert_all_passed(rc, out, err)


def test_dtls_where_nothing_speaks_it_fails_at_connect_within_the_timeout(relay):
    def timed(addr):
        t0 = time.monotonic()
        rc, out, err = probe("--transport", "dtls", "--insecure", "-u", USER, "-w", PASSWORD, addr)
        elapsed = time.monotonic() - t0
        assert rc == 1 and out is not None and list(out["steps"]) == ["connect"], (rc, out, err)
        assert out["steps"]["connect"]["ok"] is False, out["steps"]["connect"]
        return out["steps"]["connect"]["detail"], elapsed

    # Nothing bound: ICMP port unreachable ends the handshake at once.
    closed = free_port(kinds=(socket.SOCK_DGRAM,))
    detail, elapsed = timed(f"127.0.0.1:{closed}")
    assert "port unreachable" in detail and f"UDP 127.0.0.1:{closed}" in detail, detail
    assert elapsed < 1.5, elapsed
    # A socket that never answers: the handshake is resent, then given up at --timeout-ms.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        detail, elapsed = timed(f"127.0.0.1:{silent.getsockname()[1]}")
        hellos = 0
        silent.setblocking(False)
        try:
            while hellos < 10:
                d = silent.recv(4096)
                hellos += d[:1] == b"\x16"  # a DTLS handshake record
        except BlockingIOError:
            pass
    assert "no answer within 1500 ms" in detail, detail
    assert 1.4 < elapsed < 5, elapsed
    assert hellos >= 2, "the ClientHello was not resent on OpenSSL's timer"
    # The relay's plain TURN UDP port drops what is not STUN: named as the likely mistake.
    detail, elapsed = timed(f"127.0.0.1:{relay.port}")
    assert "no answer within 1500 ms" in detail and "DTLS port" in detail and "--transport udp" in detail, detail
    assert elapsed < 5, elapsed


class LossyUdpProxy:
    """Forwards UDP between one client (at 127.0.0.1:port) and `upstream`, dropping once each
    datagram that matches an entry of `drops`: (direction "up" to the server or "down" to the
    client, DTLS content type of its first record, handshake message type or None)."""

    def __init__(self, upstream: Tuple[str, int], drops):
        self.todo = list(drops)
        self.dropped = []
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(upstream)
        self.client = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for s in ready:
                try:
                    data, src = s.recvfrom(65535)
                except OSError:
                    continue
                up = s is self.front
                if up:
                    self.client = src
                key = ("up" if up else "down", data[0], data[13] if data[0] == 22 and len(data) > 13 else None)
                if key in self.todo:
                    self.todo.remove(key)
                    self.dropped.append(key)
                    continue
                try:
                    if up:
                        self.back.send(data)
                    elif self.client is not None:
                        self.front.sendto(data, self.client)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.front.close()
        self.back.close()


def test_dtls_lost_datagrams_are_resent(relay):
    """DTLS resends only its handshake flights, on its timer (1 s, doubling), which the probe must
    run; STUN requests over DTLS are resent by the probe, as over UDP (RFC 8489 6.2.1, 500 ms).
    Lost here: the first ClientHello, the relay's first ServerHello flight, the client's
    first Finished flight, and the answer to the first Binding request."""
    drops = [("up", 22, 1), ("down", 22, 2), ("up", 22, 16), ("down", 23, None)]
    proxy = LossyUdpProxy(("127.0.0.1", relay.dtls_port), drops)
    try:
        rc, out, err = probe("--transport", "dtls", "--insecure", "-u", USER, "-w", PASSWORD, "-n", "3",
                             f"127.0.0.1:{proxy.port}", timeout_ms=6000)
    finally:
        proxy.close()
    assert sorted(proxy.dropped) == sorted(drops), proxy.dropped
    assert_all_passed(rc, out, err, count=3)
    s = out["steps"]
    assert float(s["connect"]["tls_ms"]) >= 2900, s["connect"]  # three flights resent after 1 s each
    assert s["binding"]["ms"] >= 450, s["binding"]               # the Binding request resent after 500 ms


def test_dtls_follows_a_redirect_to_the_tls_alternates(tmp_path):
    """A 300 to a DTLS client names the relay's TLS alternates (RFC 8656: "turns:" over TCP and
    UDP share the port number) with ALTERNATE-DOMAIN; the probe follows it over DTLS and checks
    the alternate's CA-signed certificate, which names only "localhost", against that domain.
    IPv4 and IPv6 clients each get the alternate of their family."""
    ca = make_ca(tmp_path / "ca", "probe-dtls")
    b_cert = make_server_cert(tmp_path / "ca", ca, "b", "DNS:localhost")
    a_cert = make_server_cert(tmp_path / "ca", ca, "a", "IP:127.0.0.1,IP:::1")
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    b = Relay(tmp_path / "b", dtls=True, tls_files=(b_cert.chain, b_cert.key))
    relays = [b]
    try:
        a = Relay(tmp_path / "a", dtls=True, tls_files=(a_cert.chain, a_cert.key), extra=f"""
[redirect]
tls_servers = ["127.0.0.1:{b.tls_port}", "[::1]:{b.tls_port}"]
tls_domain = "localhost"
when = "always"
""")
        relays.append(a)
        for host, family in (("127.0.0.1", "4"), ("[::1]", "6")):
            rc, out, err = probe("--transport", "dtls", "--ca", str(ca.cert), "--family", family, "-u", USER, "-w",
                                 PASSWORD, f"{host}:{a.dtls_port}")
            r = out["steps"].get("redirect") if out else None
            assert r is not None and r["ok"] is True, (rc, out, err)
            assert (r["from"], r["to"], r["domain"]) == (f"{host}:{a.dtls_port}", f"{host}:{b.dtls_port}", "localhost"), r
            del out["steps"]["redirect"]  # the rest are the alternate's
            assert_all_passed(rc, out, err)
            c = out["steps"]["connect"]
            assert c["server"] == f"{host}:{b.dtls_port}" and c["transport"] == "dtls", c
            assert c["tls_version"] == "DTLSv1.2" and c["alpn"] == "stun.turn", c
    finally:
        for r in relays:
            alive = r.proc.poll() is None
            stop_process(r.proc, second_signal_after=1.0)
            assert alive, "turn-relay died during the test:\n" + log_tail(r.log)


def test_nothing_listening_and_usage_errors():
    closed = free_port(span=1)
    rc, out, err = probe("-u", USER, "-w", PASSWORD, f"127.0.0.1:{closed}")
    assert rc == 1 and out["steps"]["binding"]["ok"] is False
    assert "unreachable" in out["steps"]["binding"]["detail"], out["steps"]["binding"]
    rc, out, err = probe("--transport", "tcp", "-u", USER, "-w", PASSWORD, f"127.0.0.1:{closed}")
    assert rc == 1 and "refused" in out["steps"]["connect"]["detail"]
    rc, out, err = probe("127.0.0.1:3478")  # no credentials
    assert rc == 2 and "credentials" in err
    rc, out, err = probe("-u", "a", "-w", "b", "--transport", "sctp", "127.0.0.1")
    assert rc == 2
    # One message is one DTLS record (at most 16384 bytes).
    rc, out, err = probe("-u", "a", "-w", "b", "--transport", "dtls", "-l", "20000", "127.0.0.1")
    assert rc == 2 and "DTLS record" in err, err
    # DTLS's port is TLS's: 5349 unless given.
    rc, out, err = probe("-u", "a", "-w", "b", "--transport", "dtls", "127.0.0.1", timeout_ms=200)
    assert out is not None and out["steps"]["connect"]["server"] == "127.0.0.1:5349", (rc, out, err)


@pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn not installed")
@pytest.mark.parametrize("transport", ["udp", "tcp", "dtls"])
def test_against_coturn(tmp_path, transport):
    """The probe is a client of any TURN server, not just this one. coturn serves DTLS on its
    TLS listening port (UDP); over DTLS both address families are probed."""
    port = free_port(span=2)
    lo, hi = relay_port_window()
    log = tmp_path / "coturn.log"
    if transport == "dtls":
        cert, key = make_self_signed_cert(tmp_path)  # IP:127.0.0.1 and IP:::1
        tls_port = free_port(span=2)  # coturn takes the next one too (its RFC 5780 alternate)
        secure = ["--listening-ip=::1", "--relay-ip=::1", f"--tls-listening-port={tls_port}", f"--cert={cert}",
                  f"--pkey={key}", "--no-tls"]
    else:
        secure = ["--no-tls", "--no-dtls"]
    cmd = ["turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
           f"--min-port={lo}", f"--max-port={hi}", "--lt-cred-mech", f"--user={USER}:{PASSWORD}",
           "--realm=coturn.test", "--allow-loopback-peers", *secure, "--no-cli",
           "--log-file=stdout", "--simple-log", f"--pidfile={tmp_path / 'turnserver.pid'}",
           f"--userdb={tmp_path / 'turndb.sqlite'}"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert wait_tcp(port), "coturn did not listen:\n" + log_tail(log)
        if transport != "dtls":
            rc, out, err = probe("--transport", transport, "-u", USER, "-w", PASSWORD, f"127.0.0.1:{port}")
            assert_all_passed(rc, out, err)
            assert out["steps"]["allocate"]["realm"] == "coturn.test"
            return
        for host, family in (("127.0.0.1", "4"), ("[::1]", "6")):
            rc, out, err = probe("--transport", "dtls", "--ca", str(cert), "--family", family, "-u", USER, "-w",
                                 PASSWORD, f"{host}:{tls_port}", timeout=60)
            assert_all_passed(rc, out, err), log_tail(log)
            s = out["steps"]
            assert s["allocate"]["realm"] == "coturn.test"
            assert s["connect"]["tls_version"] == "DTLSv1.2", s["connect"]
            assert s["allocate"]["relayed"].startswith(host + ":"), s["allocate"]
    finally:
        stop_process(proc)
