"""SIGHUP reloads the configuration of a running turn-relay (docs/CONFIGURATION.md "Reloading"):
[auth] users and rest_secrets and [policy] allow_peers / deny_peers take effect for the next
request, checked with tools/probe's turn-probe (which allocates, permits its own echo peer on
loopback and relays through it); a key that needs a restart is named in the log and left as it
is; a file that does not load changes nothing. One real turn-relay process.
"""

import signal
import time
import urllib.request

import pytest

from conftest import log_tail, stop_process
from test_turn_probe import PROBE, PASSWORD, SECRET, USER, Relay, assert_all_passed, probe

pytestmark = pytest.mark.skipif(PROBE is None, reason="turn-probe not built")


def wait_log_count(relay, text, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.log.read_text(errors="replace").count(text) >= count:
            return True
        time.sleep(0.05)
    return False


def reload(relay, edit):
    """Rewrites relay.toml with `edit(text)` and sends SIGHUP; waits for the reload's log line."""
    cfg = relay.dir / "relay.toml"
    cfg.write_text(edit(cfg.read_text()))
    before = relay.log.read_text(errors="replace").count("event=config_re")
    relay.proc.send_signal(signal.SIGHUP)
    assert wait_log_count(relay, "event=config_re", before + 1), log_tail(relay.log)
    return relay.log.read_text(errors="replace").splitlines()


def test_sighup_applies_credentials_and_peer_policy(tmp_path):
    relay = Relay(tmp_path)
    try:
        assert_all_passed(*probe("-u", USER, "-w", PASSWORD, f"127.0.0.1:{relay.port}"))

        # New static user, the old one gone; the REST secret rotated.
        lines = reload(relay, lambda t: t.replace(f'users = ["{USER}:{PASSWORD}"]', 'users = ["carol:carol-pw"]')
                       .replace(f'rest_secrets = ["{SECRET}"]', 'rest_secrets = ["rotated-secret"]'))
        assert any("event=config_reloaded" in ln and "[auth].users" in ln and "[auth].rest_secrets" in ln
                   for ln in lines), lines[-5:]
        rc, out, err = probe("-u", USER, "-w", PASSWORD, f"127.0.0.1:{relay.port}")
        assert rc == 1 and "401" in out["steps"]["allocate"]["detail"], out["steps"]
        assert_all_passed(*probe("-u", "carol", "-w", "carol-pw", f"127.0.0.1:{relay.port}"))
        assert_all_passed(*probe("--rest-secret", "rotated-secret", f"127.0.0.1:{relay.port}"))
        rc, out, err = probe("--rest-secret", SECRET, f"127.0.0.1:{relay.port}")
        assert rc == 1 and "401" in out["steps"]["allocate"]["detail"]

        # Loopback peers denied: the probe's echo peer can no longer be permitted.
        lines = reload(relay, lambda t: t.replace('allow_peers = ["127.0.0.0/8", "::1/128"]', 'allow_peers = []'))
        assert any("event=config_reloaded" in ln and "[policy]" in ln for ln in lines), lines[-5:]
        rc, out, err = probe("-u", "carol", "-w", "carol-pw", f"127.0.0.1:{relay.port}")
        assert rc == 1 and out["steps"]["permission"]["ok"] is False and "403" in out["steps"]["permission"]["detail"]
        reload(relay, lambda t: t.replace("allow_peers = []", 'allow_peers = ["127.0.0.0/8", "::1/128"]'))
        assert_all_passed(*probe("-u", "carol", "-w", "carol-pw", f"127.0.0.1:{relay.port}"))

        # A key that needs a restart: named, not applied (the listener did not move).
        lines = reload(relay, lambda t: t.replace(f'"127.0.0.1:{relay.port}", "[::1]:{relay.port}"]\nlisten_tcp',
                                                  f'"127.0.0.1:{relay.port + 1}"]\nlisten_tcp'))
        assert any("event=config_reload_needs_restart" in ln and "[server].listen" in ln for ln in lines), lines[-5:]
        assert_all_passed(*probe("--family", "6", "-u", "carol", "-w", "carol-pw", f"[::1]:{relay.port}"))

        # A file that does not parse: nothing changes, the relay keeps running.
        lines = reload(relay, lambda t: t + "\n[auth\n")
        assert any("event=config_reload_failed" in ln for ln in lines), lines[-5:]
        assert_all_passed(*probe("-u", "carol", "-w", "carol-pw", f"127.0.0.1:{relay.port}"))
        assert relay.proc.poll() is None
    finally:
        alive = relay.proc.poll() is None
        stop_process(relay.proc, second_signal_after=1.0)
        assert alive, log_tail(relay.log)


def test_private_peers_denied_until_the_operator_allows_them(tmp_path):
    """With the default policy a client cannot reach private addresses (RFC 1918, RFC 6598,
    unique local IPv6) through the relay: CreatePermission and ChannelBind get 403, and at debug
    level the log names the peer and the rule. `[policy].allow_private_peers = true`, applied by
    SIGHUP, permits them. Only requests are made: nothing is sent to those addresses."""
    aioice_stun = pytest.importorskip("aioice.stun")
    aioice_turn = pytest.importorskip("aioice.turn")
    import asyncio

    relay = Relay(tmp_path, extra='[log]\nlevel = "debug"\n')

    async def answers(peers):
        loop = asyncio.get_event_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: aioice_turn.TurnClientUdpProtocol(("127.0.0.1", relay.port), USER, PASSWORD, 600, 300),
            remote_addr=("127.0.0.1", relay.port))
        try:
            await asyncio.wait_for(proto.connect(), 10)
            out = []
            for method, peer in peers:
                req = aioice_stun.Message(message_method=method, message_class=aioice_stun.Class.REQUEST)
                req.attributes["XOR-PEER-ADDRESS"] = peer
                if method == aioice_stun.Method.CHANNEL_BIND:
                    req.attributes["CHANNEL-NUMBER"] = 0x4000 + len(out)
                try:
                    await asyncio.wait_for(proto.request_with_retry(req), 10)
                    out.append(200)
                except aioice_stun.TransactionFailed as e:
                    out.append(e.response.attributes["ERROR-CODE"][0])
            return out
        finally:
            transport.close()

    perm, bind = aioice_stun.Method.CREATE_PERMISSION, aioice_stun.Method.CHANNEL_BIND
    peers = [(perm, ("10.1.2.3", 7000)), (perm, ("172.20.0.9", 7000)), (bind, ("192.168.1.1", 7000)),
             (perm, ("100.64.0.1", 7000)), (perm, ("198.18.77.1", 7000))]
    try:
        assert asyncio.run(answers(peers)) == [403, 403, 403, 403, 200]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=5).read().decode()
        assert 'turn_peer_denials_total{rule="private"} 4' in metrics, \
            [ln for ln in metrics.splitlines() if "peer_denials" in ln]
        text = relay.log.read_text(errors="replace")
        assert "event=peer_denied method=CreatePermission peer=10.1.2.3 rule=private " in text, log_tail(relay.log)
        assert "event=peer_denied method=ChannelBind peer=192.168.1.1:7000 rule=private " in text, log_tail(relay.log)
        # The first one also at info level, naming the key to set; only once.
        assert text.count("event=private_peer_denied") == 1, log_tail(relay.log)
        assert "info event=private_peer_denied peer=10.1.2.3 " in text and "allow_private_peers" in text

        lines = reload(relay, lambda t: t.replace("[policy]\n", "[policy]\nallow_private_peers = true\n"))
        assert any("event=config_reloaded" in ln and "[policy].allow_private_peers" in ln for ln in lines), lines[-5:]
        assert asyncio.run(answers(peers)) == [200, 200, 200, 200, 200]
        # Loopback stays a matter of allow_peers (the test's own rule), not of this switch.
        lines = reload(relay, lambda t: t.replace('allow_peers = ["127.0.0.0/8", "::1/128"]', 'allow_peers = []'))
        assert asyncio.run(answers([(perm, ("127.0.0.1", 7000)), (perm, ("10.1.2.3", 7000))])) == [403, 200]
    finally:
        alive = relay.proc.poll() is None
        stop_process(relay.proc, second_signal_after=1.0)
        assert alive, log_tail(relay.log)
