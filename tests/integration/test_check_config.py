"""`turn-relay --check-config`: what start-up would refuse, told without starting.

- Beside a running relay on the same file (its listeners, metrics port and state directory taken,
  as when the service is reloaded), a good file passes: exit 0, one "configuration OK" line; the
  running relay's state directory, lock and clients are untouched, and a state directory that
  does not exist yet is not created.
- Each mistake start-up refuses is refused by the check with the same exit status and the same
  message (or, for a state directory that cannot be made, one that names the path in the way):
  unknown keys, bad values, a TLS key that is not the certificate's, a TLS path that is a
  directory, a bad users file, a relay IP or a TCP listener IP that is not this host's, a state
  directory that cannot be made or holds a cut nonce secret, metrics on IPv6 (which Debian's
  civetweb cannot serve), a dataplane socket path that holds a file; with two mistakes, the one
  start-up meets first.
"""

import subprocess
from pathlib import Path

import pytest

from conftest import free_port, log_tail, make_self_signed_cert
from test_startup import RelayWithSavedClient, minimal_config, run_relay
from test_turn_probe import PASSWORD, wait_tcp

pytest.importorskip("aioice.turn")


def check(*args):
    """turn-relay --check-config ARGS: (returncode, stdout, stderr)."""
    from conftest import find_turn_relay_bin
    p = subprocess.run([find_turn_relay_bin(), "--check-config", *args], capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def error_line(out: str) -> str:
    """The line start-up (or the check) names its error on."""
    lines = [l for l in out.splitlines() if l.startswith("turn-relay: ")]
    assert lines, out
    return lines[-1]


def test_a_good_file_passes_beside_its_running_relay_and_touches_nothing(tmp_path):
    r = RelayWithSavedClient(tmp_path)
    relay, state = r.relay, r.state
    try:
        cfg = relay.dir / "relay.toml"
        before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in state.iterdir()}
        rc, out, err = check("--config", str(cfg))
        assert rc == 0, out + err
        assert out.startswith(f"turn-relay: configuration OK ({cfg}): "), out
        assert f"turn:127.0.0.1:{relay.port}?transport=udp" in out, out
        assert f"turns:127.0.0.1:{relay.tls_port}?transport=tcp" in out, out
        assert f"state={state}" in out and "credentials=static users (1) + TURN REST shared secrets (1)" in out, out
        assert PASSWORD not in out + err
        # Nothing of the running relay's was touched: its lock, its files, its listeners and client.
        assert (state / "lock").read_text().strip() == str(relay.proc.pid)
        assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in state.iterdir()} == before
        assert relay.proc.poll() is None, log_tail(relay.log)
        assert wait_tcp(relay.tls_port)
        r.relays_again()
    finally:
        r.stop()

    # A state directory that does not exist yet passes (start-up would create it), and the
    # check does not create it.
    fresh = tmp_path / "not" / "yet"
    m = minimal_config(tmp_path / "m.toml")
    m.write_text(m.read_text() + f'[state]\ndir = "{fresh}"\n')
    rc, out, err = check("--config", str(m))
    assert rc == 0, out + err
    assert not (tmp_path / "not").exists()


def cases(tmp_path: Path):
    """name -> the arguments that start turn-relay with one mistake."""
    port = free_port()
    base = minimal_config(tmp_path / "base.toml", port=port).read_text()

    def cfg(name, text):
        p = tmp_path / f"{name}.toml"
        p.write_text(text)
        return ["--config", str(p)]

    cert, key = make_self_signed_cert(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = make_self_signed_cert(other)
    tls = f'listen_tls = ["127.0.0.1:{free_port()}"]\n'
    users = tmp_path / "users.txt"
    users.write_text("alice:one\nbob\n")
    users.chmod(0o600)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    short_key = tmp_path / "state-shortkey"
    short_key.mkdir()
    (short_key / "nonce.key").write_bytes(b"12345")
    return {
        "unknown_key": cfg("unknown", base.replace("[server]\n", "[server]\nlisten_udp = []\n")),
        "threads": ["--config", str(tmp_path / "base.toml"), "--threads", "300"],
        "user_twice": cfg("twice", base.replace('users = ["a:one"]', 'users = ["a:one", "a:two"]')),
        "tls_key_not_the_certificates": cfg("tlskey", base.replace("[server]\n", "[server]\n" + tls) +
                                            f'[tls]\ncertificate = "{cert}"\nprivate_key = "{other_key}"\n'),
        "tls_path_a_directory": cfg("tlsdir", base.replace("[server]\n", "[server]\n" + tls) +
                                    f'[tls]\ncertificate = "{tmp_path}"\nprivate_key = "{key}"\n'),
        "users_file_line": cfg("usersfile", base.replace("[auth]\n", f'[auth]\nusers_file = "{users}"\n')),
        "relay_ip_not_this_hosts": cfg("relayip", base.replace("[server]\n",
                                                               '[server]\nrelay_ips = ["198.18.255.254"]\n')),
        "state_dir_under_a_file": cfg("state", base + f'[state]\ndir = "{a_file}/state"\n'),
        "nonce_key_cut_short": cfg("nonce", base + f'[state]\ndir = "{short_key}"\n'),
        # 198.18.0.0/15 (benchmarking) is on no interface of the test host; nothing is sent there.
        "tcp_listener_ip_not_this_hosts": cfg("tcpip", base.replace(
            "[server]\n", f'[server]\nlisten_tcp = ["198.18.255.254:{free_port()}"]\nrelay_ips = ["127.0.0.1"]\n')),
        "dataplane_socket_a_file": cfg("dpsock", base +
                                       f'[dataplane]\nsocket = "{a_file}"\n'),
        "metrics_on_ipv6": cfg("metrics6", base.replace('[metrics]\nlisten = ""',
                                                        f'[metrics]\nlisten = "[::1]:{free_port()}"')),
        # Several mistakes: the first start-up meets decides the status (state directory: 2).
        "state_dir_and_relay_ip": cfg("both", base.replace("[server]\n",
                                                           '[server]\nrelay_ips = ["198.18.255.254"]\n') +
                                      f'[state]\ndir = "{a_file}/state"\n'),
    }


@pytest.mark.parametrize("case", ["unknown_key", "threads", "user_twice", "tls_key_not_the_certificates",
                                  "tls_path_a_directory", "users_file_line", "relay_ip_not_this_hosts",
                                  "state_dir_under_a_file", "nonce_key_cut_short", "tcp_listener_ip_not_this_hosts",
                                  "metrics_on_ipv6", "state_dir_and_relay_ip", "dataplane_socket_a_file"])
def test_the_check_refuses_what_start_up_refuses(tmp_path, case):
    args = cases(tmp_path)[case]
    rc, out, err = check(*args)
    start_rc, start_out = run_relay(*args)
    assert start_rc != 0, f"start-up accepted the {case} mistake:\n{start_out}"
    assert rc == start_rc, f"check: {rc} ({out}{err}); start-up: {start_rc} ({start_out})"
    assert "configuration OK" not in out, out
    if case in ("state_dir_under_a_file", "state_dir_and_relay_ip"):
        # Start-up tries to create it ("Not a directory"); the check says which path is in the way.
        assert "[state].dir" in error_line(start_out), start_out
        assert f'[state].dir: "{tmp_path}/a-file" (where ' in error_line(err), err
        assert "is not a directory" in error_line(err), err
    else:
        assert error_line(err) == error_line(start_out), f"check:\n{err}\nstart-up:\n{start_out}"
