"""Runs turn-relay.service's own command lines, the way systemd would, against
the build tree's turn-relay: ExecStart (as the unit's unprivileged user with
only its ambient capability, NoNewPrivileges, LimitNOFILE and UMask, on a port
below 1024 on loopback, with private state and runtime directories), then
ExecReload, then KillSignal, which must end the process with exit 0 within
TimeoutStopSec while an allocation drains. Needs root (to drop to the user).

systemd itself is not running on these machines, so the sandbox settings
(ProtectSystem=, PrivateTmp=, SystemCallFilter=, ...) are not applied here:
test_units.py checks them offline with systemd-analyze."""
import grp
import hashlib
import hmac
import os
import pathlib
import pwd
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from unitfile import DEPLOY, INSTALLED_RELAY, SYSTEMD, free_port, get, get_all, parse_unit, require_root, seconds

UNIT = parse_unit(SYSTEMD / "turn-relay.service")
# The unit's user does not exist on a build machine; "nobody" stands in for it
# (also unprivileged, also without a login).
TEST_USER = "nobody"
CAPS = {"CAP_NET_BIND_SERVICE": 10}

COOKIE = 0x2112A442


def stun(msg_type, attrs, txid):
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4) for t, v in attrs)
    return struct.pack("!HHI", msg_type, len(body), COOKIE) + txid + body


def with_integrity(msg_type, attrs, txid, key):
    partial = stun(msg_type, attrs, txid)
    # The length covers MESSAGE-INTEGRITY (24 bytes) when the HMAC is computed (RFC 8489 14.5).
    head = struct.pack("!HHI", msg_type, len(partial) - 20 + 24, COOKIE) + txid
    mac = hmac.new(key, head + partial[20:], hashlib.sha1).digest()
    return stun(msg_type, attrs + [(0x0008, mac)], txid)


def parse(data):
    msg_type, length, cookie = struct.unpack_from("!HHI", data)
    assert cookie == COOKIE
    attrs = {}
    off = 20
    while off + 4 <= 20 + length:
        t, n = struct.unpack_from("!HH", data, off)
        attrs.setdefault(t, data[off + 4:off + 4 + n])
        off += 4 + n + (-n % 4)
    return msg_type, data[8:20], attrs


def request(sock, addr, msg):
    for _ in range(5):
        sock.sendto(msg, addr)
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            continue
        if data[8:20] == msg[8:20]:
            return parse(data)
    raise AssertionError(f"no answer from {addr}")


def allocate(sock, addr, user, password):
    txid = os.urandom(12)
    transport = (0x0019, bytes([17, 0, 0, 0]))
    t, _, a = request(sock, addr, stun(0x0003, [transport], txid))
    assert t == 0x0113 and 0x0014 in a and 0x0015 in a, f"expected 401 with REALM and NONCE, got {t:#x}"
    realm, nonce = a[0x0014], a[0x0015]
    key = hashlib.md5(user.encode() + b":" + realm + b":" + password.encode()).digest()
    msg = with_integrity(0x0003, [(0x0006, user.encode()), (0x0014, realm), (0x0015, nonce), transport],
                         os.urandom(12), key)
    t, _, a = request(sock, addr, msg)
    return t


def caps_of(pid):
    status = open(f"/proc/{pid}/status").read()
    return {k: v for k, v in re.findall(r"^(\w+):\s*(.*)$", status, re.M)}


@pytest.fixture
def relay_env():
    require_root()
    # Not pytest's tmp_path: its parents are root-only (0700), which the
    # service's user cannot traverse.
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="turn-relay-unit-", dir="/tmp"))
    try:
        yield make_env(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def make_env(tmp_path):
    binary = os.environ.get("TURN_RELAY_BIN")
    if not binary:
        pytest.skip("TURN_RELAY_BIN not set (run through meson test)")
    for tool in ["setpriv", "prlimit"]:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (util-linux)")
    uid = pwd.getpwnam(TEST_USER).pw_uid
    gid = grp.getgrnam("nogroup").gr_gid
    tmp_path.chmod(0o755)
    # /etc/turn-relay: root-owned, readable by the service's group.
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    # StateDirectory=turn-relay / StateDirectoryMode=0700: owned by the user.
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, uid, gid)
    # RuntimeDirectory=turnrelay / RuntimeDirectoryMode=0750.
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    os.chown(run, uid, gid)
    low_port = free_port(socket.SOCK_DGRAM, 900, 1000)
    metrics_port = free_port(socket.SOCK_STREAM, 20000, 40000)
    # The example configuration, with only addresses and paths changed.
    conf = (DEPLOY / "turnrelay.toml").read_text()
    swaps = [
        (r'(?m)^listen = \[.*$', f'listen = ["127.0.0.1:{low_port}"]'),
        (r'(?m)^listen_tcp = \[.*$', 'listen_tcp = []'),
        (r'(?m)^relay_ips = \[.*$', 'relay_ips = ["127.0.0.1"]'),
        (r'(?m)^threads = 0', 'threads = 1'),
        (r'(?m)^listen = "127.0.0.1:9641"', f'listen = "127.0.0.1:{metrics_port}"'),
        (r'(?m)^dir = "/var/lib/turn-relay"', f'dir = "{state}"'),
        (r'(?m)^socket = ""', f'socket = "{run}/dataplane.sock"'),  # [dataplane].socket
        (r'(?m)^socket = "/run/turnrelay/admin.sock"', f'socket = "{run}/admin.sock"'),
    ]
    for pattern, repl in swaps:
        conf, n = re.subn(pattern, repl, conf, count=1)
        assert n == 1, f"deploy/turnrelay.toml no longer has {pattern}"
    config = etc / "turnrelay.toml"
    config.write_text(conf)
    os.chown(config, 0, gid)
    config.chmod(0o640)
    deadline = int(re.search(r"(?m)^deadline_s = (\d+)", conf).group(1))
    return dict(binary=binary, config=config, state=state, run=run, port=low_port, uid=uid, gid=gid,
                deadline=deadline, log=tmp_path / "relay.log")


def unit_command(env, caps=True, line=None):
    """ExecStart of the unit (or another of its command lines that runs turn-relay),
    with paths swapped, wrapped in what systemd applies: User=/Group=,
    AmbientCapabilities=, CapabilityBoundingSet=, NoNewPrivileges=, LimitNOFILE=."""
    argv = shlex.split(line or get(UNIT, "Service", "ExecStart"))
    assert argv[0] == INSTALLED_RELAY
    assert argv[-2:] == ["--config", "/etc/turn-relay/turnrelay.toml"]
    argv = [env["binary"], *argv[1:-2], "--config", str(env["config"])]
    nofile = nofile_limit()
    capset = ",".join(["-all"] + ["+" + c[4:].lower() for c in get(UNIT, "Service", "AmbientCapabilities").split()])
    if not caps:
        capset = "-all"
    wrap = ["prlimit", f"--nofile={nofile}:{nofile}", "--",
            "setpriv", f"--reuid={env['uid']}", f"--regid={env['gid']}", "--clear-groups",
            f"--inh-caps={capset}", f"--ambient-caps={capset}", f"--bounding-set={capset}"]
    if get(UNIT, "Service", "NoNewPrivileges") == "yes":
        wrap.append("--no-new-privs")
    return wrap + argv


def reload_lines(env, pid):
    """ExecReload='s lines in order, as systemd runs them: the first that fails ends
    the reload. The CompletedProcess of each line that ran."""
    done = []
    for line in get_all(UNIT, "Service", "ExecReload"):
        if line.startswith(INSTALLED_RELAY + " "):
            argv = unit_command(env, line=line)
        else:
            argv = shlex.split(line.replace("$MAINPID", str(pid)))
        done.append(subprocess.run(argv, capture_output=True, text=True, timeout=20,
                                   umask=int(get(UNIT, "Service", "UMask"), 8)))
        if done[-1].returncode != 0:
            break
    return done


def nofile_limit():
    """LimitNOFILE=, or this machine's hard limit if that is lower and root may not
    raise it (no CAP_SYS_RESOURCE, as in these VMs)."""
    want = int(get(UNIT, "Service", "LimitNOFILE"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if want > hard and subprocess.run(["prlimit", f"--nofile={want}:{want}", "--", "true"],
                                      capture_output=True).returncode != 0:
        print(f"LimitNOFILE={want} is above this machine's hard limit {hard}, which root may not raise here: "
              f"testing with {hard}")
        return hard
    return want


def start(env, caps=True):
    umask = int(get(UNIT, "Service", "UMask"), 8)
    log = open(env["log"], "w")
    return subprocess.Popen(unit_command(env, caps), stdout=log, stderr=subprocess.STDOUT, umask=umask)


def wait_log(env, pattern, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = env["log"].read_text()
        m = re.search(pattern, text)
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in the log within {timeout} s:\n{env['log'].read_text()}")


def test_without_the_capability_a_low_port_fails(relay_env):
    # The control for the test below: the port is below 1024, so it is the
    # unit's ambient capability that lets the unprivileged user bind it.
    proc = start(relay_env, caps=False)
    try:
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 1, relay_env["log"].read_text()
    assert str(relay_env["port"]) in relay_env["log"].read_text()


def test_unit_start_reload_stop(relay_env):
    env = relay_env
    proc = start(env)
    try:
        wait_log(env, r"event=started")
        # What systemd would have set up is what the process runs with.
        st = caps_of(proc.pid)
        assert st["Uid"].split() == [str(env["uid"])] * 4
        assert st["Gid"].split() == [str(env["gid"])] * 4
        assert int(st["CapEff"], 16) == 1 << CAPS["CAP_NET_BIND_SERVICE"]
        assert int(st["CapBnd"], 16) == 1 << CAPS["CAP_NET_BIND_SERVICE"]
        assert st["NoNewPrivs"] == "1"
        limits = open(f"/proc/{proc.pid}/limits").read()
        nofile = nofile_limit()
        assert re.search(rf"Max open files\s+{nofile}\s+{nofile}", limits), limits

        # STUN Binding on the low port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        sock.bind(("127.0.0.1", 0))
        addr = ("127.0.0.1", env["port"])
        t, _, attrs = request(sock, addr, stun(0x0001, [], os.urandom(12)))
        assert t == 0x0101, f"Binding answered {t:#x}"
        xma = attrs[0x0020]
        port = struct.unpack("!H", xma[2:4])[0] ^ (COOKIE >> 16)
        ip = socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", xma[4:8])[0] ^ COOKIE))
        assert (ip, port) == sock.getsockname()

        # An allocation (it will be draining when the stop signal comes).
        assert allocate(sock, addr, "demo", "demo-password") == 0x0103
        # The state directory and the dataplane socket, written as the unit's user.
        wait_log(env, r"event=allocation_created")
        key = env["state"] / "nonce.key"
        assert key.stat().st_uid == env["uid"] and key.stat().st_mode & 0o777 == 0o600
        sockfile = env["run"] / "dataplane.sock"
        assert sockfile.is_socket() and sockfile.stat().st_uid == env["uid"]

        # ExecReload: a second user, added to the file, works after the signal. A mistake
        # in the file first: the check line fails (exit 2, the key named) and systemd would
        # run no further line, so no signal reaches the relay.
        assert allocate(sock, addr, "second", "second-password") == 0x0113  # 401: unknown yet
        good = env["config"].read_text()
        conf = good.replace('users = ["demo:demo-password"]',
                            'users = ["demo:demo-password", "second:second-password"]')
        assert "second:" in conf
        env["config"].write_text(conf.replace("[auth]\n", "[auth]\nusers_flie = \"x\"\n", 1))
        assert "users_flie" in env["config"].read_text()
        ran = reload_lines(env, proc.pid)
        assert len(ran) == 1, "a line after the failed check ran"
        assert ran[0].returncode == 2, ran[0].stdout + ran[0].stderr
        assert "[auth].users_flie: unknown key" in ran[0].stderr, ran[0].stderr
        time.sleep(0.3)
        assert "config_reload" not in env["log"].read_text()
        assert allocate(sock, addr, "second", "second-password") == 0x0113
        env["config"].write_text(conf)
        ran = reload_lines(env, proc.pid)
        assert [r.returncode for r in ran] == [0, 0], [r.stdout + r.stderr for r in ran]
        assert "configuration OK" in ran[0].stdout, ran[0].stdout
        m = wait_log(env, r"event=config_reloaded applied=\"?([^\n\"]*)")
        assert "[auth].users" in m.group(1)
        sock2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock2.settimeout(1.0)
        sock2.bind(("127.0.0.1", 0))
        assert allocate(sock2, addr, "second", "second-password") == 0x0103

        # KillSignal: drains (the allocations stay until [drain].deadline_s),
        # then exit 0 before systemd's TimeoutStopSec would SIGKILL it.
        sig = getattr(signal, get(UNIT, "Service", "KillSignal"))
        timeout = seconds(get(UNIT, "Service", "TimeoutStopSec"))
        t0 = time.monotonic()
        proc.send_signal(sig)
        wait_log(env, r"event=draining")
        rc = proc.wait(timeout=timeout)
        took = time.monotonic() - t0
        assert rc == 0, env["log"].read_text()
        assert took < timeout
        # It did drain: it waited for the deadline, as the allocations were live.
        assert took >= env["deadline"] - 1, f"stopped after {took:.1f} s, before the drain deadline"
        assert re.search(r"event=stopped allocations_left=\"?2", env["log"].read_text())
        assert (env["state"] / "loop-0.state").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
