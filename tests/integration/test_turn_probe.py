"""tools/probe's turn-probe against real TURN servers: turn-relay over UDP, TCP and TLS
(IPv4 and IPv6, static and TURN REST credentials), and Debian's coturn over UDP and TCP,
the way an operator's health check would run it. Every step (connect, Binding, Allocate,
CreatePermission, Send/Data round trips through the probe's own echo peer, ChannelBind,
ChannelData round trips, Refresh 0) must pass and report what it found; and each way the
probe is meant to fail does fail, at the right step, with a message that says why: wrong
password (Allocate, 401), an untrusted TLS certificate (connect), nothing listening, a usage
error (exit 2).

Self-contained: starts its own turn-relay (and coturn) on free loopback ports, with a
certificate made by the openssl CLI, and stops them by PID.
"""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tool_paths import find_tool
from conftest import find_turn_relay_bin, free_port, log_tail, relay_port_window, stop_process

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
    certificate's subjectAltName."""

    def __init__(self, workdir: Path, extra: str = "", san: str = "IP:127.0.0.1,IP:::1"):
        self.dir = workdir
        self.port = free_port(span=1)
        self.tls_port = free_port(kinds=(socket.SOCK_STREAM,))
        self.metrics = free_port(kinds=(socket.SOCK_STREAM,))
        self.lo, self.hi = relay_port_window()
        self.cert, self.key = workdir / "cert.pem", workdir / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-subj", "/CN=probe.test", "-addext", f"subjectAltName={san}",
                        "-keyout", str(self.key), "-out", str(self.cert)], check=True, capture_output=True)
        cfg = workdir / "relay.toml"
        cfg.write_text(f"""
[server]
listen = ["127.0.0.1:{self.port}", "[::1]:{self.port}"]
listen_tcp = ["127.0.0.1:{self.port}", "[::1]:{self.port}"]
listen_tls = ["127.0.0.1:{self.tls_port}"]
relay_ips = ["127.0.0.1", "::1"]
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
            self.proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg)], stdout=f,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert wait_tcp(self.tls_port), "turn-relay did not listen:\n" + log_tail(self.log)


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    r = Relay(tmp_path_factory.mktemp("probe-relay"))
    yield r
    alive = r.proc.poll() is None
    stop_process(r.proc, second_signal_after=1.0)
    assert alive, "turn-relay died during the probe tests:\n" + log_tail(r.log)


def probe(*args, timeout=60):
    p = subprocess.run([PROBE, "--json", "--timeout-ms", "1500", *args], capture_output=True, text=True,
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


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_every_step_passes_on_each_transport(relay, transport):
    port = relay.tls_port if transport == "tls" else relay.port
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
    if transport == "tls":
        assert s["connect"]["tls_version"] in ("TLSv1.2", "TLSv1.3")
        assert s["connect"]["alpn"] == "stun.turn"


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


@pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn not installed")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_against_coturn(tmp_path, transport):
    """The probe is a client of any TURN server, not just this one."""
    port = free_port(span=2)
    lo, hi = relay_port_window()
    log = tmp_path / "coturn.log"
    cmd = ["turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
           f"--min-port={lo}", f"--max-port={hi}", "--lt-cred-mech", f"--user={USER}:{PASSWORD}",
           "--realm=coturn.test", "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli",
           "--log-file=stdout", "--simple-log", f"--pidfile={tmp_path / 'turnserver.pid'}",
           f"--userdb={tmp_path / 'turndb.sqlite'}"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert wait_tcp(port), "coturn did not listen:\n" + log_tail(log)
        rc, out, err = probe("--transport", transport, "-u", USER, "-w", PASSWORD, f"127.0.0.1:{port}")
        assert_all_passed(rc, out, err)
        assert out["steps"]["allocate"]["realm"] == "coturn.test"
    finally:
        stop_process(proc)
