"""Credentials from files (docs/CONFIGURATION.md "[auth]") on the real turn-relay:

- `--rest-secret-file FILE`: a TURN REST credential made from the file's secret allocates;
  the file rewritten with a new secret and SIGHUP: the new secret allocates, the removed one
  gets 401; a file that cannot be read on a reload changes nothing (config_reload_failed).
- Warnings at start-up: `--user` on the command line (secrets_on_command_line, naming the
  option), a secrets file others may read (secrets_file_readable, path and mode); no secret
  value appears anywhere in the output.
- A secrets file that cannot be used stops start-up with exit code 2, naming the file.

One real turn-relay process per test, on a free loopback port; aioice is the client.
"""

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import find_turn_relay_bin, free_port, log_tail, relay_port_window, stop_process

aioice_stun = pytest.importorskip("aioice.stun")
aioice_turn = pytest.importorskip("aioice.turn")
from test_rest_api import Collector, rest_credentials  # noqa: E402 (after the skip)

# Values that cannot turn up in a log by chance.
SECRET_ONE = "s3cret-one-7f1c9e"
SECRET_TWO = "s3cret-two-c04a2b"
CLI_PASSWORD = "cli-pw-5d8e0a"
TIMEOUT_S = 10


def run_relay(*args, timeout=20):
    """turn-relay run to its exit (a start-up that fails); (returncode, output)."""
    p = subprocess.run([find_turn_relay_bin(), *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout + p.stderr


def write_config(path: Path, port: int) -> Path:
    lo, hi = relay_port_window()
    path.write_text(f'[server]\nlisten = ["127.0.0.1:{port}"]\nrelay_ips = ["127.0.0.1"]\n'
                    f'relay_port_min = {lo}\nrelay_port_max = {hi}\nthreads = 1\n'
                    '[metrics]\nlisten = ""\n')
    path.chmod(0o644)  # no credentials in it: never reported
    return path


def write_secrets(path: Path, text: str, mode: int) -> None:
    path.write_text(text)
    path.chmod(mode)


def allocate(port: int, username: str, password: str):
    """An Allocate with these credentials: None when it succeeds, else the error code."""
    async def run():
        try:
            transport, _ = await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                Collector, server_addr=("127.0.0.1", port), username=username, password=password), TIMEOUT_S)
        except aioice_stun.TransactionFailed as e:
            return e.response.attributes["ERROR-CODE"][0]
        transport.close()
        await asyncio.sleep(0.1)
        return None
    return asyncio.run(run())


def wait_for(log: Path, text: str, count: int = 1, proc=None, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = log.read_text(errors="replace")
        if out.count(text) >= count:
            return out
        assert proc is None or proc.poll() is None, "turn-relay exited:\n" + log_tail(log)
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n" + log_tail(log)
        time.sleep(0.05)


def test_rest_secret_file_rotated_by_sighup(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "relay.toml", port)
    secrets = tmp_path / "rest-secrets"
    write_secrets(secrets, f"# newest first\n{SECRET_ONE}\r\n", 0o640)
    log = tmp_path / "relay.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg), "--rest-secret-file", str(secrets),
                                 "--user", f"carol:{CLI_PASSWORD}"],
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        text = wait_for(log, "event=started", proc=proc)
        warnings = [ln for ln in text.splitlines() if " warning event=secrets_" in ln]
        assert any("event=secrets_on_command_line options=--user " in ln for ln in warnings), warnings
        assert any(f"event=secrets_file_readable path={secrets} mode=0640 " in ln for ln in warnings), warnings
        assert len(warnings) == 2, warnings  # not the configuration file: it holds no secret
        assert "credentials=\"static users (1) + TURN REST shared secrets (1)\"" in text, text

        username, password = rest_credentials(SECRET_ONE)
        assert allocate(port, username, password) is None
        assert allocate(port, "carol", CLI_PASSWORD) is None

        # Rotation: write the file, SIGHUP. The removed secret's credentials get 401.
        write_secrets(secrets, f"{SECRET_TWO}\n", 0o600)
        proc.send_signal(signal.SIGHUP)
        text = wait_for(log, "event=config_reloaded", proc=proc)
        assert "event=config_reloaded applied=[auth].rest_secrets" in text, log_tail(log)
        assert text.count("event=secrets_file_readable") == 1, log_tail(log)  # 0600 now
        username, password = rest_credentials(SECRET_TWO)
        assert allocate(port, username, password) is None
        username, password = rest_credentials(SECRET_ONE)
        assert allocate(port, username, password) == 401

        # A file that cannot be read on a reload: logged, the running secrets stay.
        secrets.unlink()
        secrets.mkdir()
        proc.send_signal(signal.SIGHUP)
        text = wait_for(log, "event=config_reload_failed", proc=proc)
        assert (f'--rest-secret-file \\"{secrets}\\": is not a regular file but a directory' in text), log_tail(log)
        username, password = rest_credentials(SECRET_TWO)
        assert allocate(port, username, password) is None
        assert proc.poll() is None
    finally:
        alive = proc.poll() is None
        stop_process(proc, second_signal_after=1.0)
    assert alive, log_tail(log)
    out = log.read_text(errors="replace")
    assert "event=stopped" in out, log_tail(log)
    for value in (SECRET_ONE, SECRET_TWO, CLI_PASSWORD):
        assert value not in out, f"{value} is in the log:\n{out}"


@pytest.mark.parametrize("case", ["missing", "directory", "too_big", "bad_line"])
def test_a_secrets_file_that_cannot_be_used_stops_start_up(tmp_path, case):
    cfg = write_config(tmp_path / "relay.toml", free_port())
    path = tmp_path / "secrets"
    option = "--rest-secret-file"
    if case == "missing":
        expect = f'--rest-secret-file "{path}": no such file'
    elif case == "directory":
        path.mkdir()
        expect = f'--rest-secret-file "{path}": is not a regular file but a directory'
    elif case == "too_big":
        write_secrets(path, "#" * (1 << 20) + f"\n{SECRET_ONE}\n", 0o600)
        expect = f'--rest-secret-file "{path}": is larger than 1 MiB'
    else:
        option = "--users-file"
        write_secrets(path, f"alice:{SECRET_ONE}\nbob\n", 0o600)
        expect = (f'--users-file "{path}": line 2: an entry has no ":"; write "user:password"')
    rc, out = run_relay("--config", str(cfg), option, str(path))
    assert rc == 2, out
    assert f"turn-relay: configuration error: {expect}" in out, out
    assert SECRET_ONE not in out, out


@pytest.mark.parametrize("case", ["demo_alone", "demo_beside_file_users", "demo_on_wildcard"])
def test_demo_credential_outside_the_demo_is_reported(tmp_path, case):
    """deploy/turnrelay.toml keeps users = ["demo:demo-password"]; an operator who adds a users
    file (or listens beyond loopback) and leaves it there runs a relay the README's password
    opens: demo_credential_enabled, at start-up. The demo itself (loopback, demo alone) is quiet."""
    port = free_port()
    lo, hi = relay_port_window()
    listen = "0.0.0.0" if case == "demo_on_wildcard" else "127.0.0.1"
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'[server]\nlisten = ["{listen}:{port}"]\nrelay_ips = ["127.0.0.1"]\n'
                   f'relay_port_min = {lo}\nrelay_port_max = {hi}\nthreads = 1\n'
                   '[auth]\nusers = ["demo:demo-password"]\n[metrics]\nlisten = ""\n')
    args = [find_turn_relay_bin(), "--config", str(cfg)]
    if case == "demo_beside_file_users":
        users = tmp_path / "users"
        write_secrets(users, f"alice:{SECRET_ONE}\n", 0o600)
        args += ["--users-file", str(users)]
    log = tmp_path / "relay.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        text = wait_for(log, "event=started", proc=proc)
    finally:
        stop_process(proc, second_signal_after=1.0)
    warned = [ln for ln in text.splitlines() if "event=demo_credential_enabled" in ln]
    if case == "demo_alone":
        assert not warned, text
    else:
        assert len(warned) == 1 and "remove" in warned[0], text
        assert ("reachable beyond this host" in warned[0]) == (case == "demo_on_wildcard"), warned[0]
    assert SECRET_ONE not in log.read_text(errors="replace")
