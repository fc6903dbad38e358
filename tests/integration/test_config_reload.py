"""SIGHUP reloads the configuration of a running turn-relay (docs/CONFIGURATION.md "Reloading"):
[auth] users and rest_secrets and [policy] allow_peers / deny_peers take effect for the next
request, checked with tools/probe's turn-probe (which allocates, permits its own echo peer on
loopback and relays through it); a key that needs a restart is named in the log and left as it
is; a file that does not load changes nothing. One real turn-relay process.
"""

import signal
import time

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
