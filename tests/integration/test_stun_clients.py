"""Binding requests from two third-party STUN clients.

- `stun` (stun-client 0.97, Vovida) speaks RFC 3489: 16-byte transaction IDs without the
  magic cookie and a CHANGE-REQUEST attribute (flags 0) even in its plain test 1. It only
  understands MAPPED-ADDRESS, so the server must include it for such clients. `-p` fixes the
  client's source port, so the mapped port can be checked exactly. It is IPv4-only.
- `turnutils_stunclient` (coturn) speaks RFC 5389 and reads XOR-MAPPED-ADDRESS; it cannot
  choose its source port, so only the address and a plausible port are checked.

Neither client has a timeout of its own (both wait forever without an answer), so each run
is bounded here.
"""

import re
import shutil
import socket
import subprocess

import pytest

from conftest import free_port

STUN = shutil.which("stun") or "/usr/bin/stun"
TURNUTILS_STUNCLIENT = shutil.which("turnutils_stunclient") or "/usr/bin/turnutils_stunclient"
TIMEOUT_S = 15


def run(cmd):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        pytest.fail(f"{' '.join(cmd)}: no answer within {TIMEOUT_S}s\n{out}")
    return p.returncode, p.stdout.decode(errors="replace")


def test_stun_client_rfc3489_binding(server):
    src = free_port(kinds=(socket.SOCK_DGRAM,))
    cmd = [STUN, f"127.0.0.1:{server.port}", "1", "-v", "-p", str(src)]
    rc, out = run(cmd)
    ctx = f"\ncommand: {' '.join(cmd)}\n{out}"
    assert "Got a response" in out, "no Binding response" + ctx
    m = re.search(r"^MappedAddress = (\S+):(\d+)$", out, re.M)
    assert m, "response without MAPPED-ADDRESS" + ctx
    assert (m.group(1), int(m.group(2))) == ("127.0.0.1", src), ctx
    m = re.search(r"mappedAddr=(\S+):(\d+)", out)
    assert m and (m.group(1), int(m.group(2))) == ("127.0.0.1", src), ctx
    # ok=0 means the client rejected the response as a whole (e.g. an attribute whose length
    # is not a multiple of 4, which RFC 3489 parsers refuse).
    assert re.search(r"^\s*ok=1\s*$", out, re.M), "client rejected the response (ok=0)" + ctx


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_turnutils_stunclient_binding(server, family):
    host = "127.0.0.1" if family == 4 else "::1"
    cmd = [TURNUTILS_STUNCLIENT, "-p", str(server.port), "-L", host, host]
    rc, out = run(cmd)
    ctx = f"\ncommand: {' '.join(cmd)}\n{out}"
    assert rc == 0, f"exit code {rc}" + ctx
    fam = "IPv4" if family == 4 else "IPv6"
    found = re.findall(rf"{fam}\. UDP reflexive addr: (\S+):(\d+)", out)
    assert found, "no reflexive (XOR-MAPPED) address printed" + ctx
    ip, port = found[0][0], int(found[0][1])
    assert ip == host, ctx
    assert 1024 <= port <= 65535 and port != server.port, ctx
