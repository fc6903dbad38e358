"""Start-up guards of the real turn-relay: what an operator's mistake does before anything is served.

- A second turn-relay started by hand while the service runs (same [state].dir, or the same
  ports) stops at once, naming what is in use, and leaves the first one's saved state and
  clients alone (before: it overwrote the first one's snapshot and took a share of its clients
  through SO_REUSEPORT).
- A [server].relay_ips address that is not this host's stops start-up (before: every Allocate
  got 508, counted as a full port range).
- A [tls] path that is a directory stops start-up with exit 2, and on SIGHUP is refused while
  the relay keeps serving (before: an uncaught exception aborted the process in both cases).
- `--config DIR`, `--threads 300`, a UDP listener or a user listed twice: exit 2 with the key.
- A listening port inside the relayed port range is reported at start-up (it is never relayed).
- Many event loops stop together (before: one after another, 100 ms each), and `threads = 0`
  counts the CPUs the process may run on (taskset), not the machine's.
- With [metrics] on, SIGTERM ends the process in well under a second, scraped or not (before:
  1.2-1.8 s, waiting out the HTTP server's 2 s listening poll). Not covered: a client holding a
  half-sent request keeps one of civetweb's workers in its own 2 s poll, which nothing can wake;
  such a stop takes up to ~2 s.
"""

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import find_turn_relay_bin, free_port, log_tail, stop_process
from test_admin import Collector, echo_socket
from test_turn_probe import PASSWORD, USER, Relay, wait_tcp

aioice_turn = pytest.importorskip("aioice.turn")


def run_relay(*args, timeout=20):
    """turn-relay run to its exit (a start-up that fails); (returncode, output)."""
    p = subprocess.run([find_turn_relay_bin(), *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout + p.stderr


def minimal_config(path: Path, body: str = "", port: int = 0) -> Path:
    """A configuration on loopback (`port`, or a free one) with one user; `body` is added to [server]."""
    port = port or free_port()
    path.write_text(f'[server]\nlisten = ["127.0.0.1:{port}"]\n{body}\n[auth]\nusers = ["a:one"]\n'
                    '[metrics]\nlisten = ""\n')
    return path


def start_until_started(cfg: Path, log: Path, prefix=(), timeout=30):
    """turn-relay on `cfg` (run under `prefix`, e.g. taskset), returned once it logged `started`."""
    with open(log, "wb") as f:
        proc = subprocess.Popen([*prefix, find_turn_relay_bin(), "--config", str(cfg)], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while "event=started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError("turn-relay did not start:\n" + log_tail(log))
        time.sleep(0.05)
    return proc


async def allocate_and_relay(port, echo, payload=b"hello"):
    """An aioice allocation on the relay at 127.0.0.1:port that relays `payload` to the UDP socket
    `echo`, which must get it; the client's transport."""
    t, _ = await asyncio.wait_for(aioice_turn.create_turn_endpoint(
        Collector, server_addr=("127.0.0.1", port), username=USER, password=PASSWORD), 10)
    await relay_again(t, echo, payload)
    return t


async def relay_again(client, echo, payload):
    client.sendto(payload, echo.getsockname())
    data, _ = await asyncio.to_thread(echo.recvfrom, 100)
    assert data == payload


class RelayWithSavedClient:
    """A Relay saving to `tmp_path`/state every 100 ms, one aioice client whose allocation relays
    to `echo`, and its snapshot on disk, after which nothing changes there (past the next save)."""

    def __init__(self, tmp_path):
        self.state = tmp_path / "state"
        self.relay = Relay(tmp_path, extra=f'[state]\ndir = "{self.state}"\nsave_interval_ms = 100\n')
        self.echo = echo_socket()
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(allocate_and_relay(self.relay.port, self.echo))
        deadline = time.monotonic() + 5
        while not any(p.stat().st_size > 64 for p in self.state.glob("loop-*.state")):
            assert time.monotonic() < deadline, "the allocation was not saved:\n" + log_tail(self.relay.log)
            time.sleep(0.05)
        time.sleep(0.3)

    def relays_again(self):
        async def again_and_close():
            await relay_again(self.client, self.echo, b"again")
            self.client.close()  # aioice's close schedules its Refresh 0 on the running loop
            await asyncio.sleep(0.2)

        self.loop.run_until_complete(again_and_close())
        self.loop.close()

    def stop(self):
        self.echo.close()
        stop_process(self.relay.proc, second_signal_after=1.0)


def test_a_second_relay_stops_before_touching_the_first_ones_state_or_clients(tmp_path):
    r = RelayWithSavedClient(tmp_path)
    relay, state = r.relay, r.state
    try:
        saved = {p.name: p.read_bytes() for p in state.glob("loop-*.state")}
        lock = (state / "lock").read_text().strip()
        assert lock == str(relay.proc.pid), lock

        # The same configuration again: the state directory is taken.
        rc, out = run_relay("--config", str(relay.dir / "relay.toml"))
        assert rc == 2, out
        assert f'is in use by another turn-relay (PID {relay.proc.pid})' in out, out
        assert "allocation_not_restored" not in out and "state_restored" not in out, out
        # Another state directory but the same ports: the listeners are taken.
        other = relay.dir / "other.toml"
        other.write_text((relay.dir / "relay.toml").read_text().replace(str(state), str(tmp_path / "state2")))
        rc, out = run_relay("--config", str(other))
        assert rc == 1, out
        assert re.search(rf"UDP listener 127\.0\.0\.1:{relay.port}: the port is in use by another process", out), out
        assert not (tmp_path / "state2" / "loop-0.state").exists()

        # The first relay's snapshot is as it was, and it still serves its client.
        assert {p.name: p.read_bytes() for p in state.glob("loop-*.state")} == saved
        assert relay.proc.poll() is None
        r.relays_again()
    finally:
        r.stop()
    # Its lock went with it: the same directory is usable again.
    again = tmp_path / "again"
    again.mkdir()
    second = Relay(again, extra=f'[state]\ndir = "{state}"\n')
    try:
        assert second.proc.poll() is None, log_tail(second.log)
    finally:
        stop_process(second.proc, second_signal_after=1.0)


def test_a_relay_ip_that_is_not_this_hosts_stops_start_up(tmp_path):
    # 198.18.0.0/15 (benchmarking) is on no interface of the test host.
    cfg = minimal_config(tmp_path / "relay.toml", 'relay_ips = ["198.18.255.254"]')
    rc, out = run_relay("--config", str(cfg))
    assert rc == 1, out
    assert "[server].relay_ips: cannot bind 198.18.255.254: Cannot assign requested address" in out, out
    assert "ip_nonlocal_bind" in out, out


def test_a_tls_path_that_is_a_directory_stops_start_up_and_is_refused_on_reload(tmp_path):
    relay = Relay(tmp_path)
    try:
        cfg = relay.dir / "relay.toml"
        good = cfg.read_text()
        bad = good.replace(f'certificate = "{relay.cert}"', f'certificate = "{tmp_path}"')
        assert bad != good
        bad_cfg = tmp_path / "bad.toml"
        bad_cfg.write_text(bad)
        rc, out = run_relay("--config", str(bad_cfg))
        assert rc == 2, out
        assert f'[tls].certificate: "{tmp_path}" is not a regular file but a directory' in out, out

        # The running relay, told to reload the same mistake, keeps its certificate and serves on.
        cfg.write_text(bad)
        relay.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "event=tls_reload_failed" not in relay.log.read_text():
            assert relay.proc.poll() is None, "turn-relay died on the reload:\n" + log_tail(relay.log)
            assert time.monotonic() < deadline, log_tail(relay.log)
            time.sleep(0.05)
        assert "is not a regular file but a directory" in relay.log.read_text()
        time.sleep(0.2)
        assert relay.proc.poll() is None, log_tail(relay.log)
        assert wait_tcp(relay.tls_port)
    finally:
        stop_process(relay.proc, second_signal_after=1.0)


@pytest.mark.parametrize("case", ["config_dir", "threads", "udp_listener_twice", "user_twice"])
def test_operator_mistakes_stop_start_up_with_the_key_to_fix(tmp_path, case):
    if case == "config_dir":
        rc, out = run_relay("--config", str(tmp_path))
        expect = f'--config: "{tmp_path}" is not a regular file'
    elif case == "threads":
        rc, out = run_relay("--config", str(minimal_config(tmp_path / "r.toml")), "--threads", "300")
        expect = "--threads: 300 is out of range 0..256"
    elif case == "udp_listener_twice":
        port = free_port()
        cfg = tmp_path / "r.toml"
        cfg.write_text(f'[server]\nlisten = ["127.0.0.1:{port}", "127.0.0.1:{port}"]\n[auth]\nusers = ["a:one"]\n')
        rc, out = run_relay("--config", str(cfg))
        expect = f"[server].listen: 127.0.0.1:{port} is listed twice"
    else:
        cfg = minimal_config(tmp_path / "r.toml")
        cfg.write_text(cfg.read_text().replace('users = ["a:one"]', 'users = ["a:one", "a:two"]'))
        rc, out = run_relay("--config", str(cfg))
        expect = '[auth].users: user "a" is listed twice'
    assert rc == 2, out
    assert expect in out, out


def test_many_loops_stop_together_and_threads_0_follows_the_cpu_affinity(tmp_path):
    log = tmp_path / "relay.log"
    proc = start_until_started(minimal_config(tmp_path / "r.toml", "threads = 128"), log)
    try:
        assert "loops=128 " in log.read_text()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            stop_process(proc)
    assert proc.returncode == 0, log_tail(log)
    # One after another this took 128 x 100 ms; together, about one poll.
    assert took < 6, f"128 loops took {took:.1f} s to stop"

    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs taskset and 2 CPUs for the affinity half")
    log0 = tmp_path / "relay0.log"
    cpu = sorted(os.sched_getaffinity(0))[0]
    proc = start_until_started(minimal_config(tmp_path / "r0.toml", "threads = 0"), log0,
                               prefix=("taskset", "-c", str(cpu)))
    try:
        assert "loops=1 " in log0.read_text(), log_tail(log0)
    finally:
        stop_process(proc)


def test_a_listener_inside_the_relay_port_range_is_reported(tmp_path):
    port = free_port()
    cfg = minimal_config(tmp_path / "r.toml", f"relay_port_min = {port - 5}\nrelay_port_max = {port + 5}", port)
    log = tmp_path / "relay.log"
    proc = start_until_started(cfg, log)
    try:
        text = log.read_text()
        assert (f"event=listener_in_relay_range listener=127.0.0.1:{port} range={port - 5}-{port + 5} "
                in text), text
    finally:
        stop_process(proc)


def test_sigterm_with_metrics_on_ends_at_once(tmp_path):
    # Stopped twice: once right after start-up, once after two scrapes, the second on a
    # connection the test keeps open (civetweb's keep-alive is off, so the server has closed
    # its end by then). The HTTP server's listening thread sits in a 2 s poll from its start,
    # and stopping it used to wait that poll out.
    for scrape in (False, True):
        port = free_port()
        cfg = tmp_path / f"m{int(scrape)}.toml"
        cfg.write_text(minimal_config(tmp_path / "base.toml").read_text().replace(
            '[metrics]\nlisten = ""', f'[metrics]\nlisten = "127.0.0.1:{port}"'))
        log = tmp_path / f"relay{int(scrape)}.log"
        proc = start_until_started(cfg, log)
        kept = None
        try:
            if scrape:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
                assert b"turn_allocations" in body
                kept = socket.create_connection(("127.0.0.1", port), timeout=5)
                kept.sendall(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: keep-alive\r\n\r\n")
                assert kept.recv(4096).startswith(b"HTTP/1.1 200")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            if kept is not None:
                kept.close()
            if proc.poll() is None:
                stop_process(proc)
        assert proc.returncode == 0, log_tail(log)
        assert "event=stopped" in log.read_text(), log_tail(log)
        assert took < 1.0, f"SIGTERM took {took:.2f} s to end turn-relay (scraped: {scrape})"
