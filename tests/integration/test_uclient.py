"""coturn's turnutils_uclient against the server under test, turnutils_peer as echo peer.

uclient allocates (with EVEN-PORT + RESERVATION-TOKEN for its RTP/RTCP pair), refreshes,
creates permissions, binds channels (or uses Send indications with -s), sends -n messages of
-l bytes per session at one every -z ms, and counts what comes back from the echo peer. Its
summary lines are parsed and must show zero loss and received == sent > 0.
"""

import re
import shutil
import subprocess

import pytest

UCLIENT = shutil.which("turnutils_uclient") or "/usr/bin/turnutils_uclient"

MESSAGES = 40          # per session
LENGTH = 300           # bytes per message
INTERVAL_MS = 5        # moderate rate: 200 pkt/s per session
CLIENTS = 4            # -m


def parse_summary(out: str) -> dict:
    """The last totals uclient prints, e.g.
    start_mclient: tot_send_msgs=200, tot_recv_msgs=200
    start_mclient: tot_send_bytes ~ 40000, tot_recv_bytes ~ 40000
    Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
    """
    msgs = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M)
    byts = re.findall(r"tot_send_bytes ~ (\d+), tot_recv_bytes ~ (\d+)\s*$", out, re.M)
    lost = re.findall(r"Total lost packets (\d+) \(([\d.]+)%\), total send dropped (\d+)", out)
    assert msgs and byts and lost, "uclient printed no summary:\n" + out[-4000:]
    return {
        "sent": int(msgs[-1][0]), "recv": int(msgs[-1][1]),
        "sent_bytes": int(byts[-1][0]), "recv_bytes": int(byts[-1][1]),
        "lost": int(lost[-1][0]), "send_dropped": int(lost[-1][2]),
    }


def run_uclient(server, args, family, timeout=60):
    host = "127.0.0.1" if family == 4 else "::1"
    cmd = [UCLIENT, "-v", "-u", server.username, "-w", server.password,
           "-p", str(server.port), "-n", str(MESSAGES), "-l", str(LENGTH),
           "-z", str(INTERVAL_MS), "-m", str(CLIENTS)] + args + [host]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    out = proc.stdout.decode(errors="replace")
    return proc.returncode, out, " ".join(cmd)


def assert_no_loss(rc, out, cmd):
    tail = f"\ncommand: {cmd}\n--- uclient output (tail) ---\n" + "\n".join(out.splitlines()[-60:])
    assert "ERROR" not in out, "uclient reported an error" + tail
    assert rc == 0, f"uclient exit code {rc}" + tail
    s = parse_summary(out)
    assert s["sent"] > 0, f"nothing sent: {s}" + tail
    assert s["recv"] == s["sent"], f"received {s['recv']} of {s['sent']} messages" + tail
    assert s["lost"] == 0 and s["send_dropped"] == 0, f"loss: {s}" + tail
    assert s["recv_bytes"] == s["sent_bytes"] >= s["sent"] * LENGTH, f"bytes: {s}" + tail
    # uclient prints the relayed address of every allocation it made.
    relays = re.findall(r"(?:Received|Local) relay addr: (\S+)", out)
    assert relays, "no allocation reported" + tail
    return s, relays


def relay_port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# (id, server family, extra uclient flags, peer family or None for client-to-client)
CASES = [
    ("v4-channels", 4, [], 4),
    ("v4-send-indications", 4, ["-s"], 4),
    ("v6-channels", 6, ["-x"], 6),
    ("v6-send-indications", 6, ["-x", "-s"], 6),
    ("v6-client-v4-relay", 6, ["-X"], 4),
    ("v4-dont-fragment", 4, ["-g"], 4),
    # -c: no RTCP session, hence no EVEN-PORT/RESERVATION-TOKEN pair: plain allocations.
    ("v4-channels-no-rtcp", 4, ["-c"], 4),
    ("v6-channels-no-rtcp", 6, ["-x", "-c"], 6),
    # -Z: uclient's dual-stack allocation. coturn 4.6.1 (server and uclient) encode
    # ADDITIONAL-ADDRESS-FAMILY with the pre-RFC code point 0x8032, not RFC 8656's 0x8000;
    # turn-relay honours both. uclient then refreshes with REQUESTED-ADDRESS-FAMILY set at
    # random to IPv4 or IPv6, which gets 443 unless both relayed addresses exist.
    # test_aioice.py covers the RFC 8656 code point.
    ("v4-dual-allocation", 4, ["-Z"], 4),
    ("v4-client-to-client-channels", 4, ["-y"], None),
    ("v4-client-to-client-send", 4, ["-y", "-s"], None),
    ("v6-client-to-client", 6, ["-y", "-x"], None),
]


@pytest.mark.parametrize("family,flags,peer_family", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_uclient(server, turnutils_peer, family, flags, peer_family):
    args = list(flags)
    if peer_family is not None:
        peer_ip = "127.0.0.1" if peer_family == 4 else "::1"
        args += ["-e", peer_ip, "-r", str(turnutils_peer.port)]
    rc, out, cmd = run_uclient(server, args, family)
    s, relays = assert_no_loss(rc, out, cmd)
    for r in relays:
        assert server.relay_min <= relay_port(r) <= server.relay_max, (
            f"relayed port of {r} outside the configured range "
            f"{server.relay_min}-{server.relay_max}")
        want_v6 = ("-x" in flags) or (peer_family == 6 and "-X" not in flags)
        if "-x" in flags or "-X" in flags:
            assert (r.count(":") > 1) == want_v6, f"relayed address family wrong: {r}"


def test_uclient_wrong_password_fails(server, turnutils_peer):
    cmd = [UCLIENT, "-u", server.username, "-w", "not-the-password", "-p", str(server.port),
           "-n", "3", "-e", "127.0.0.1", "-r", str(turnutils_peer.port), "127.0.0.1"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode != 0, "uclient succeeded with a wrong password:\n" + out
    assert "Cannot complete Allocation" in out, out
