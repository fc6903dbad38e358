"""RFC 5780 NAT behaviour discovery against turn-relay on loopback (no NAT in between):
turn-relay listens on 127.0.0.1 with the alternate IP 127.0.0.2 and an alternate port, and
  * coturn's turnutils_natdiscovery (a third-party RFC 5780 client) finds endpoint-independent
    mapping and filtering, with and without its 1500-byte PADDING;
  * tools/natcheck's turn-natcheck reports no NAT, the server's OTHER-ADDRESS, and
    endpoint-independent mapping and filtering;
  * against a turn-relay without alternates turn-natcheck stops with exit 1 and says the server
    lacks RFC 5780 (OTHER-ADDRESS missing), and CHANGE-REQUEST there gets 420.
Through a real NAT: tests/controlplane/netns_nat_discovery.py.
"""

import json
import os
import shutil
import socket
import subprocess

import pytest

from tool_paths import find_tool
from conftest import find_turn_relay_bin, free_port, log_tail, stop_process, stun_binding



NATCHECK = find_tool("TURN_NATCHECK_BIN", "tools/natcheck/turn-natcheck")


def start_relay(tmp_path, alternates):
    port = free_port(span=2)
    cfg = tmp_path / "relay.toml"
    alt = f'alternate_ips = ["127.0.0.2"]\nalternate_port = {port + 1}\n' if alternates else ""
    cfg.write_text(f'[server]\nlisten = ["127.0.0.1:{port}"]\n{alt}relay_ips = ["127.0.0.1"]\n'
                   '[auth]\nusers = ["a:b"]\n[metrics]\nlisten = ""\n[drain]\ndeadline_s = 1\n')
    log = tmp_path / "relay.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg)], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    for _ in range(50):
        if stun_binding(("127.0.0.1", port), timeout=0.2):
            return proc, port, log
    stop_process(proc)
    pytest.fail("turn-relay did not start:\n" + log_tail(log))


@pytest.fixture
def relay_5780(tmp_path):
    proc, port, log = start_relay(tmp_path, True)
    yield port
    alive = proc.poll() is None
    stop_process(proc, second_signal_after=0.5)
    assert alive, log_tail(log)


@pytest.mark.skipif(shutil.which("turnutils_natdiscovery") is None, reason="coturn not installed")
@pytest.mark.parametrize("padding", [False, True])
def test_coturn_natdiscovery_finds_no_nat(relay_5780, padding):
    cmd = ["turnutils_natdiscovery", "-m", "-f", "-p", str(relay_5780)] + (["-P"] if padding else []) + ["127.0.0.1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    verdicts = [line.strip() for line in out.splitlines() if line.startswith("NAT with")]
    assert verdicts == ["NAT with Endpoint Independent Mapping!", "NAT with Endpoint Independent Filtering!"], out[-3000:]
    assert f"Other addr: : 127.0.0.2:{relay_5780 + 1}" in out, out[-3000:]


@pytest.mark.skipif(NATCHECK is None, reason="turn-natcheck not built")
def test_natcheck_finds_no_nat(relay_5780):
    p = subprocess.run([NATCHECK, "--json", f"127.0.0.1:{relay_5780}"], capture_output=True, text=True, timeout=60)
    r = json.loads(p.stdout)
    assert p.returncode == 0 and r["ok"], r
    assert r["nat"] is False
    assert r["other_address"] == f"127.0.0.2:{relay_5780 + 1}"
    assert r["mapping"] == "endpoint-independent" and r["filtering"] == "endpoint-independent", r


@pytest.mark.skipif(NATCHECK is None, reason="turn-natcheck not built")
def test_without_alternates_the_server_says_it_cannot(tmp_path):
    proc, port, log = start_relay(tmp_path, False)
    try:
        p = subprocess.run([NATCHECK, "--json", "--timeout-ms", "500", f"127.0.0.1:{port}"], capture_output=True,
                           text=True, timeout=60)
        r = json.loads(p.stdout)
        assert p.returncode == 1 and r["ok"] is False
        assert "OTHER-ADDRESS" in r["error"] and "alternate_ips" in r["error"], r
        # CHANGE-REQUEST itself: 420 Unknown Attribute naming 0x0003.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            tid = os.urandom(12)
            req = bytes.fromhex("0001 0008 2112a442".replace(" ", "")) + tid + bytes.fromhex("0003 0004 00000006")
            s.sendto(req, ("127.0.0.1", port))
            resp = s.recv(2048)
        assert resp[0:2] == b"\x01\x11" and resp[8:20] == tid
        body = resp[20:]
        attrs = {}
        while len(body) >= 4:
            t, n = int.from_bytes(body[0:2], "big"), int.from_bytes(body[2:4], "big")
            attrs[t] = body[4:4 + n]
            body = body[4 + ((n + 3) & ~3):]
        assert attrs[0x0009][2] * 100 + attrs[0x0009][3] == 420
        assert attrs[0x000A][0:2] == b"\x00\x03"
    finally:
        stop_process(proc, second_signal_after=0.5)
