"""Shared fixtures for the integration suite.

The server under test is pluggable:

  TURN_SERVER=turnrelay  (default) the project's control plane, binary from
                         TURN_RELAY_BIN or the newest build*/controlplane/turn-relay
  TURN_SERVER=coturn     Debian's coturn (/usr/bin/turnserver), used as a reference
                         to validate the tests themselves

Everything runs on loopback only (127.0.0.1 and ::1). Every process the suite
starts is kept as a Popen handle and stopped by PID.
"""

from __future__ import annotations

import functools
import glob
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

USERNAME = "demo"
PASSWORD = "demo-password"
REALM = "turnrelay.local"

# Relayed ports and listener ports are chosen outside Linux's default ephemeral
# range (32768-60999) so that they cannot collide with sockets the clients open.
RELAY_WINDOW = 200
RELAY_RANGE = (61000, 65535)
LISTEN_RANGE = (20000, 32000)

STARTUP_TIMEOUT_S = 15.0

# -------------------------------------------------------------------------------------
# Ports


def _port_free(port: int, families=(socket.AF_INET, socket.AF_INET6),
               kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> bool:
    for fam in families:
        host = "127.0.0.1" if fam == socket.AF_INET else "::1"
        for kind in kinds:
            s = socket.socket(fam, kind)
            try:
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, port))
            except OSError:
                return False
            finally:
                s.close()
    return True


_handed_out: set = set()


def free_port(span: int = 1, lo: int = LISTEN_RANGE[0], hi: int = LISTEN_RANGE[1],
              kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> int:
    """A port P such that P..P+span-1 are free for UDP and TCP on 127.0.0.1 and ::1."""
    for _ in range(500):
        p = random.randrange(lo, hi - span)
        if any(q in _handed_out for q in range(p, p + span)):
            continue
        if all(_port_free(q, kinds=kinds) for q in range(p, p + span)):
            _handed_out.update(range(p, p + span))
            return p
    raise RuntimeError("no free port found")


def relay_port_window() -> Tuple[int, int]:
    lo = random.randrange(RELAY_RANGE[0], RELAY_RANGE[1] - RELAY_WINDOW)
    return lo, lo + RELAY_WINDOW - 1


# -------------------------------------------------------------------------------------
# Minimal STUN Binding (used to poll readiness; independent of the libraries under test)

MAGIC = 0x2112A442


def stun_binding(addr: Tuple[str, int], timeout: float = 0.5) -> Optional[Tuple[str, int]]:
    """Send one RFC 8489 Binding request; return XOR-MAPPED-ADDRESS or None."""
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    tid = os.urandom(12)
    req = struct.pack("!HHI", 0x0001, 0, MAGIC) + tid
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(req, addr)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data, _ = s.recvfrom(2048)
                if len(data) < 20 or data[8:20] != tid:
                    continue
                mtype, mlen = struct.unpack("!HH", data[:4])
                if mtype != 0x0101:
                    return None
                return _parse_xor_mapped(data[20:20 + mlen], tid)
        except (socket.timeout, ConnectionRefusedError, OSError):
            return None
    return None


def stun_binding_stream(addr: Tuple[str, int], tls: bool = False,
                        timeout: float = 0.5) -> Optional[Tuple[str, int]]:
    """One Binding request over a fresh TCP (or TLS, certificate not verified) connection;
    return XOR-MAPPED-ADDRESS or None."""
    tid = os.urandom(12)
    req = struct.pack("!HHI", 0x0001, 0, MAGIC) + tid
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(addr, timeout=timeout) as raw:
            s = raw
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s = ctx.wrap_socket(raw, server_hostname=None)
            s.sendall(req)
            buf = b""
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(2048)
                if not chunk:
                    return None
                buf += chunk
                if len(buf) >= 20:
                    mtype, mlen = struct.unpack("!HH", buf[:4])
                    if len(buf) < 20 + mlen:
                        continue
                    if mtype != 0x0101 or buf[8:20] != tid:
                        return None
                    return _parse_xor_mapped(buf[20:20 + mlen], tid)
    except (OSError, ssl.SSLError, socket.timeout):
        return None
    return None


# -------------------------------------------------------------------------------------
# Minimal DTLS 1.2 ClientHello (used to poll a DTLS listener's readiness: a server with
# cookies answers it with a HelloVerifyRequest and keeps no state)

DTLS_HANDSHAKE, DTLS_CLIENT_HELLO, DTLS_HELLO_VERIFY_REQUEST = 22, 1, 3


def dtls_client_hello(cookie: bytes = b"", client_random: Optional[bytes] = None,
                      record_seq: int = 0, message_seq: int = 0) -> bytes:
    """One datagram: a DTLS 1.2 ClientHello (RFC 6347 4.2.1, epoch 0) offering ECDHE with
    ECDSA and RSA, AES-GCM and ChaCha20-Poly1305, X25519 and P-256/384."""
    suites = bytes.fromhex("c02bc02cc02fc030cca9cca8")
    exts = b""
    for etype, data in ((0x000a, bytes.fromhex("0006001d00170018")),      # supported_groups
                        (0x000b, bytes.fromhex("0100")),                  # ec_point_formats
                        (0x000d, bytes.fromhex("000c040305030804080504010501")),  # sig algs
                        (0x0017, b""),                                    # extended_master_secret
                        (0xff01, b"\x00")):                               # renegotiation_info
        exts += struct.pack("!HH", etype, len(data)) + data
    body = (b"\xfe\xfd" + (client_random or os.urandom(32)) + b"\x00"
            + bytes([len(cookie)]) + cookie + struct.pack("!H", len(suites)) + suites
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    n = len(body).to_bytes(3, "big")
    hs = bytes([DTLS_CLIENT_HELLO]) + n + struct.pack("!H", message_seq) + b"\0\0\0" + n + body
    return (struct.pack("!BHH", DTLS_HANDSHAKE, 0xFEFD, 0) + record_seq.to_bytes(6, "big")
            + struct.pack("!H", len(hs)) + hs)


def dtls_hello_verify_cookie(datagram: bytes) -> Optional[bytes]:
    """The cookie of a HelloVerifyRequest datagram; None if it is not one."""
    if (len(datagram) < 13 + 12 + 3 or datagram[0] != DTLS_HANDSHAKE or datagram[1] != 0xFE
            or datagram[13] != DTLS_HELLO_VERIFY_REQUEST):
        return None
    n = datagram[13 + 12 + 2]
    cookie = datagram[13 + 12 + 3:13 + 12 + 3 + n]
    return cookie if len(cookie) == n else None


def dtls_hello_answered(addr: Tuple[str, int], timeout: float = 0.5) -> bool:
    """Does a DTLS ClientHello without cookie to `addr` get a DTLS handshake record back?"""
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(dtls_client_hello(), addr)
            data, _ = s.recvfrom(4096)
            return len(data) > 13 and data[0] == DTLS_HANDSHAKE
        except OSError:
            return False


def _parse_xor_mapped(body: bytes, tid: bytes) -> Optional[Tuple[str, int]]:
    i = 0
    while i + 4 <= len(body):
        atype, alen = struct.unpack("!HH", body[i:i + 4])
        val = body[i + 4:i + 4 + alen]
        if atype == 0x0020 and len(val) >= 8:
            fam = val[1]
            port = struct.unpack("!H", val[2:4])[0] ^ (MAGIC >> 16)
            if fam == 1:
                ip = bytes(a ^ b for a, b in zip(val[4:8], struct.pack("!I", MAGIC)))
                return socket.inet_ntop(socket.AF_INET, ip), port
            if fam == 2:
                key = struct.pack("!I", MAGIC) + tid
                ip = bytes(a ^ b for a, b in zip(val[4:20], key))
                return socket.inet_ntop(socket.AF_INET6, ip), port
        i += 4 + ((alen + 3) & ~3)
    return None


# -------------------------------------------------------------------------------------
# Process helpers


def stop_process(proc: subprocess.Popen, grace: float = 5.0, second_signal_after=None) -> bool:
    """SIGTERM (a second SIGTERM after `second_signal_after` s if given: turn-relay drains
    existing allocations on the first one and ends at once on the second), then SIGKILL
    after `grace` s. By PID, bounded. Returns True if the process ended without SIGKILL."""
    if proc.poll() is not None:
        return True
    try:
        os.kill(proc.pid, signal.SIGTERM)
        if second_signal_after is not None:
            try:
                proc.wait(timeout=second_signal_after)
                return True
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
        return True
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        return False
    except ProcessLookupError:
        return True


def log_tail(path: Path, lines: int = 200) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text[-lines:])


# Servers and helper processes alive right now; their logs are attached to failing tests.
_ACTIVE_LOGS: List[Tuple[str, Path]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for name, path in list(_ACTIVE_LOGS):
            rep.sections.append((f"{name} log ({path})", log_tail(path)))


# -------------------------------------------------------------------------------------
# Server under test


def sample_sum(text: str, name: str, **labels) -> Optional[float]:
    """Sum of the samples of metric `name` in Prometheus text whose labels include `labels`;
    None if there is none."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^([A-Za-z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
            found = True
    return total if found else None


@dataclass
class TurnServer:
    kind: str
    port: int
    workdir: Path
    relay_min: int
    relay_max: int
    metrics_port: Optional[int] = None
    proc: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None
    cmd: List[str] = field(default_factory=list)
    username: str = USERNAME
    password: str = PASSWORD
    realm: str = REALM
    # TURN REST API shared secrets, newest first (empty: static users only)
    rest_secrets: List[str] = field(default_factory=list)
    # The tests' echo peers live on loopback, which servers deny as a peer by default.
    allow_loopback_peers: bool = True
    # TURN over TCP / TLS (RFC 8656 3.1) listeners on 127.0.0.1 and ::1; None: none.
    tcp_port: Optional[int] = None
    tls_port: Optional[int] = None
    # PEM certificate chain and key for the TLS listener (turn-relay: as written to [tls],
    # relative to workdir, the server's working directory).
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    # turn-relay [tcp] section (max_connections, idle_timeout_s, send_buffer_bytes).
    tcp_settings: dict = field(default_factory=dict)
    # TURN over DTLS (RFC 7350) listeners on 127.0.0.1 and ::1 (UDP); None: none. coturn
    # serves DTLS on its TLS listening port, so there it is tls_port.
    dtls_port: Optional[int] = None
    # turn-relay [dtls] section (max_sessions, max_sessions_per_ip, idle_timeout_s,
    # handshakes_per_ip_per_s, mtu).
    dtls_settings: dict = field(default_factory=dict)

    def addr(self, family: int = 4) -> Tuple[str, int]:
        return ("127.0.0.1" if family == 4 else "::1", self.port)

    def url(self, family: int = 4) -> str:
        host = "127.0.0.1" if family == 4 else "[::1]"
        return f"turn:{host}:{self.port}?transport=udp"

    def stream_addr(self, family: int = 4, tls: bool = False) -> Tuple[str, int]:
        """The TURN-over-TCP (or TLS) listener of `family`."""
        port = self.tls_port if tls else self.tcp_port
        assert port is not None, f"server started without a {'TLS' if tls else 'TCP'} listener"
        return ("127.0.0.1" if family == 4 else "::1", port)

    def dtls_addr(self, family: int = 4) -> Tuple[str, int]:
        """The TURN-over-DTLS listener of `family`."""
        assert self.dtls_port is not None, "server started without a DTLS listener"
        return ("127.0.0.1" if family == 4 else "::1", self.dtls_port)

    def metrics(self) -> Optional[str]:
        """Prometheus text from the server's /metrics (turnrelay only)."""
        if self.metrics_port is None:
            return None
        import urllib.request
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as r:
                return r.read().decode(errors="replace")
        except OSError:
            return None

    def metric(self, name: str, **labels) -> Optional[float]:
        """Sum of the samples of metric `name` whose labels include `labels`; None if the
        server has no metrics endpoint or does not export the metric."""
        text = self.metrics()
        return None if text is None else sample_sum(text, name, **labels)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"{self.kind} exited with {self.proc.returncode if self.proc else None}:\n"
            + (log_tail(self.log_path) if self.log_path else ""))


def find_turn_relay_bin() -> Optional[str]:
    env = os.environ.get("TURN_RELAY_BIN")
    if env:
        # Absolute: servers run with their temporary directory as working directory.
        return os.path.abspath(env)
    cands = [p for p in glob.glob(str(REPO / "build*" / "**" / "controlplane" / "turn-relay"),
                                  recursive=True)
             if os.path.isfile(p) and os.access(p, os.X_OK)]
    if not cands:
        return None
    return max(cands, key=os.path.getmtime)


def server_kind() -> str:
    return os.environ.get("TURN_SERVER", "turnrelay").strip().lower()


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _loopback_listeners(port: Optional[int]) -> List[str]:
    return [f"127.0.0.1:{port}", f"[::1]:{port}"] if port is not None else []


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return _toml_list(v)
    return f'"{v}"'


def _stream_config(srv: TurnServer) -> Tuple[str, str]:
    """turn-relay's stream and DTLS listener keys for [server] and the [tls]/[tcp]/[dtls]
    sections; empty when the server has no TCP/TLS/DTLS listener, so the default
    configuration is unchanged."""
    keys, sections = "", ""
    if srv.tcp_port is not None:
        keys += f"listen_tcp = {_toml_list(_loopback_listeners(srv.tcp_port))}\n"
    if srv.tls_port is not None:
        keys += f"listen_tls = {_toml_list(_loopback_listeners(srv.tls_port))}\n"
    if srv.dtls_port is not None:
        keys += f"listen_dtls = {_toml_list(_loopback_listeners(srv.dtls_port))}\n"
    if srv.tls_cert is not None or srv.tls_key is not None:
        sections += "\n[tls]\n"
        if srv.tls_cert is not None:
            sections += f'certificate = "{srv.tls_cert}"\n'
        if srv.tls_key is not None:
            sections += f'private_key = "{srv.tls_key}"\n'
    if srv.tcp_settings:
        sections += "\n[tcp]\n" + "".join(f"{k} = {_toml_value(v)}\n"
                                         for k, v in srv.tcp_settings.items())
    if srv.dtls_settings:
        sections += "\n[dtls]\n" + "".join(f"{k} = {_toml_value(v)}\n"
                                          for k, v in srv.dtls_settings.items())
    return keys, sections


def write_turnrelay_config(srv: TurnServer) -> Path:
    stream_keys, stream_sections = _stream_config(srv)
    cfg = f"""\
# Written by tests/integration/conftest.py
[server]
listen = {_toml_list(_loopback_listeners(srv.port))}
{stream_keys}relay_ips = ["127.0.0.1", "::1"]
relay_port_min = {srv.relay_min}
relay_port_max = {srv.relay_max}
realm = "{srv.realm}"
software = "turnrelay"
threads = {int(os.environ.get("TURN_RELAY_THREADS", "0"))}

[auth]
users = ["{srv.username}:{srv.password}"]
rest_secrets = {_toml_list(srv.rest_secrets)}
nonce_lifetime_s = 3600

[allocation]
default_lifetime_s = 600
max_lifetime_s = 3600
max_per_user = 100
max_total = 10000
bandwidth_bps = 0

[policy]
# Loopback peers are denied by default; the tests' echo peers live on loopback.
allow_peers = {_toml_list(["127.0.0.0/8", "::1/128"] if srv.allow_loopback_peers else [])}
deny_peers = []
unauth_per_ip_per_s = 1000

[metrics]
listen = "127.0.0.1:{srv.metrics_port}"

[log]
level = "{os.environ.get("TURN_LOG_LEVEL", "info")}"
format = "text"
{stream_sections}"""
    path = srv.workdir / "turn-relay.toml"
    path.write_text(cfg)
    return path


def start_server(workdir: Path, rest_secrets: Optional[List[str]] = None,
                 allow_loopback_peers: bool = True, tcp: bool = False,
                 tls_files: Optional[Tuple[Path, Path]] = None,
                 tcp_settings: Optional[dict] = None, dtls: bool = False,
                 dtls_settings: Optional[dict] = None) -> TurnServer:
    """Start the server under test. `tcp`: also a TURN-over-TCP listener on the UDP port's
    number; `tls_files` (certificate chain, key): also a TURN-over-TLS listener on a port of
    its own; `tcp_settings`: turn-relay's [tcp] section; `dtls` (needs `tls_files`, the same
    certificate): also a TURN-over-DTLS listener, turn-relay on a UDP port of its own, coturn
    on its TLS port (where it serves DTLS); `dtls_settings`: turn-relay's [dtls] section.
    Without these the configuration is exactly the UDP-only one."""
    kind = server_kind()
    lo, hi = relay_port_window()
    # coturn also listens on P+1 (RFC 5780 alternate port), so reserve two.
    port = free_port(span=2)
    srv = TurnServer(kind=kind, port=port, workdir=workdir, relay_min=lo, relay_max=hi,
                     rest_secrets=list(rest_secrets or []),
                     allow_loopback_peers=allow_loopback_peers,
                     tcp_settings=dict(tcp_settings or {}),
                     dtls_settings=dict(dtls_settings or {}))
    if dtls and tls_files is None:
        raise ValueError("start_server(dtls=True) needs tls_files (the DTLS certificate)")
    if tcp:
        srv.tcp_port = port       # the same number as UDP, as RFC 8656 suggests
    if tls_files is not None:
        # coturn: +1 too; and DTLS on the same numbers (UDP) when asked for.
        srv.tls_port = free_port(span=2, kinds=(socket.SOCK_STREAM,) if not dtls else
                                 (socket.SOCK_STREAM, socket.SOCK_DGRAM))
    if dtls:
        srv.dtls_port = (srv.tls_port if kind == "coturn"
                         else free_port(kinds=(socket.SOCK_DGRAM,)))
    srv.log_path = workdir / f"{kind}.log"

    if kind == "coturn":
        binary = shutil.which("turnserver") or "/usr/bin/turnserver"
        tls_args = ["--no-tls"]
        if tls_files is not None:
            tls_args = [f"--tls-listening-port={srv.tls_port}", f"--cert={tls_files[0]}",
                        f"--pkey={tls_files[1]}"]
        srv.cmd = [
            binary, "-n",
            "--listening-ip=127.0.0.1", "--listening-ip=::1",
            f"--listening-port={port}",
            "--relay-ip=127.0.0.1", "--relay-ip=::1",
            f"--min-port={lo}", f"--max-port={hi}",
            "--lt-cred-mech", f"--user={srv.username}:{srv.password}",
        ] + ([
            # coturn: REST API mode (static users are then not consulted)
            "--use-auth-secret",
        ] + [f"--static-auth-secret={s}" for s in srv.rest_secrets] if srv.rest_secrets else []) + [
            f"--realm={srv.realm}",
        ] + (["--allow-loopback-peers"] if srv.allow_loopback_peers else []) + tls_args + (
            [] if dtls else ["--no-dtls"]) + [
            "--no-cli", "--no-tcp-relay",
            "--no-multicast-peers", "--mobility",  # RFC 8016 for clients that ask (test_mobility.py)
            "--log-file=stdout", "--simple-log",
            f"--pidfile={workdir / 'turnserver.pid'}",
            f"--userdb={workdir / 'turndb.sqlite'}",
            "--verbose",
        ]
    elif kind == "turnrelay":
        binary = find_turn_relay_bin()
        if not binary:
            pytest.fail("TURN_SERVER=turnrelay but no turn-relay binary: set TURN_RELAY_BIN or "
                        "build build*/controlplane/turn-relay (or use TURN_SERVER=coturn)")
        srv.metrics_port = free_port(kinds=(socket.SOCK_STREAM,))
        if tls_files is not None:
            # Relative paths: turn-relay resolves them against its working directory.
            shutil.copyfile(tls_files[0], workdir / "tls-chain.pem")
            shutil.copyfile(tls_files[1], workdir / "tls-key.pem")
            srv.tls_cert, srv.tls_key = "tls-chain.pem", "tls-key.pem"
        cfg = write_turnrelay_config(srv)
        srv.cmd = [binary, "--config", str(cfg)]
    else:
        pytest.fail(f"unknown TURN_SERVER={kind!r} (turnrelay|coturn)")

    logf = open(srv.log_path, "wb")
    srv.proc = subprocess.Popen(srv.cmd, cwd=workdir, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    logf.close()
    _ACTIVE_LOGS.append((f"{kind} server", srv.log_path))

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    checks = {("udp", 4): lambda: stun_binding(srv.addr(4), timeout=0.3),
              ("udp", 6): lambda: stun_binding(srv.addr(6), timeout=0.3)}
    for fam in (4, 6):
        if srv.tcp_port is not None:
            checks[("tcp", fam)] = functools.partial(
                stun_binding_stream, srv.stream_addr(fam), timeout=0.5)
        if srv.tls_port is not None:
            checks[("tls", fam)] = functools.partial(
                stun_binding_stream, srv.stream_addr(fam, tls=True), tls=True, timeout=0.5)
        if srv.dtls_port is not None:
            checks[("dtls", fam)] = functools.partial(
                dtls_hello_answered, srv.dtls_addr(fam), timeout=0.3)
    ready = {k: False for k in checks}
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            break
        for k, check in checks.items():
            if not ready[k] and check():
                ready[k] = True
        if all(ready.values()):
            return srv
        time.sleep(0.1)
    rc = srv.proc.poll()
    stop_process(srv.proc)
    _ACTIVE_LOGS.remove((f"{kind} server", srv.log_path))
    listeners = ", ".join(f"{t}/{'127.0.0.1' if f == 4 else '[::1]'}" for t, f in checks)
    pytest.fail(f"{kind} did not answer a STUN Binding (DTLS: a ClientHello) on every listener "
                f"({listeners}; UDP/TCP port {port}, TLS port {srv.tls_port}, DTLS port "
                f"{srv.dtls_port}) within {STARTUP_TIMEOUT_S}s "
                f"(exit code {rc}, ready={ready})\n"
                f"command: {' '.join(srv.cmd)}\n--- log ---\n{log_tail(srv.log_path)}")


def stop_server(srv: TurnServer) -> None:
    """Stop a server from start_server by PID; fail if it died early or did not exit
    cleanly (turn-relay: exit 0 on SIGTERM twice)."""
    alive = srv.proc.poll() is None
    clean = stop_process(srv.proc, second_signal_after=1.0 if srv.kind == "turnrelay" else None)
    _ACTIVE_LOGS.remove((f"{srv.kind} server", srv.log_path))
    if not alive:
        pytest.fail(f"{srv.kind} died during the tests (exit {srv.proc.returncode}):\n"
                    + log_tail(srv.log_path))
    if srv.kind == "turnrelay" and not (clean and srv.proc.returncode == 0):
        pytest.fail(f"turn-relay did not exit cleanly on SIGTERM (twice) within 6 s "
                    f"(exit {srv.proc.returncode}, killed={not clean}):\n" + log_tail(srv.log_path))


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory):
    """A fresh server under test per test module."""
    workdir = tmp_path_factory.mktemp("turnserver")
    srv = start_server(workdir)
    yield srv
    stop_server(srv)


@pytest.fixture
def server(turn_server):
    """Per-test view of the module's server that checks it is still running."""
    turn_server.assert_alive()
    yield turn_server
    turn_server.assert_alive()


# -------------------------------------------------------------------------------------
# TLS certificate for TURN over TLS


def make_self_signed_cert(directory: Path, days: int = 2, name: str = "") -> Tuple[Path, Path]:
    """A self-signed P-256 certificate valid for `days` for IP SANs 127.0.0.1 and ::1 (CN
    turnrelay.test), made with the openssl CLI; it is its own CA for clients that verify.
    Returns (certificate PEM, private key PEM): cert{name}.pem and key{name}.pem."""
    cert, key = directory / f"cert{name}.pem", directory / f"key{name}.pem"
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-days", str(days), "-subj", "/CN=turnrelay.test",
           "-addext", "subjectAltName=IP:127.0.0.1,IP:::1",
           "-addext", "basicConstraints=critical,CA:TRUE",
           "-keyout", str(key), "-out", str(cert)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail("openssl req failed:\n" + proc.stdout.decode(errors="replace"))
    return cert, key


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory) -> Tuple[Path, Path]:
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


# -------------------------------------------------------------------------------------
# Echo peers


class EchoPeer:
    """UDP echo on 127.0.0.1:port and [::1]:port; records (payload, source) it received."""

    def __init__(self, port: int):
        self.port = port
        self.received: List[Tuple[bytes, Tuple[str, int]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.socks = []
        s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s4.bind(("127.0.0.1", port))
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s6.bind(("::1", port))
        self.socks = [s4, s6]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def addr(self, family: int = 4) -> Tuple[str, int]:
        return ("127.0.0.1" if family == 4 else "::1", self.port)

    def _run(self):
        while not self._stop.is_set():
            r, _, _ = select.select(self.socks, [], [], 0.2)
            for s in r:
                try:
                    data, src = s.recvfrom(65535)
                except OSError:
                    continue
                with self._lock:
                    self.received.append((data, src[:2]))
                try:
                    s.sendto(data, src)
                except OSError:
                    pass

    def sources(self) -> set:
        with self._lock:
            return {src for _, src in self.received}

    def payloads(self) -> List[bytes]:
        with self._lock:
            return [d for d, _ in self.received]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        for s in self.socks:
            s.close()


@pytest.fixture
def echo_peer():
    peer = EchoPeer(free_port(kinds=(socket.SOCK_DGRAM,)))
    yield peer
    peer.close()


class TurnutilsPeer:
    """coturn's turnutils_peer: UDP echo on port and port+1 (uclient sends RTCP to +1)."""

    def __init__(self, workdir: Path):
        self.port = free_port(span=2, kinds=(socket.SOCK_DGRAM,))
        self.log_path = workdir / "turnutils_peer.log"
        logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["turnutils_peer", "-p", str(self.port), "-L", "127.0.0.1", "-L", "::1"],
            cwd=workdir, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("turnutils_peer exited:\n" + log_tail(self.log_path))
            if self._echoes(("127.0.0.1", self.port)) and self._echoes(("::1", self.port)):
                return
            time.sleep(0.1)
        stop_process(self.proc)
        raise RuntimeError("turnutils_peer did not echo within 10 s")

    @staticmethod
    def _echoes(addr) -> bool:
        fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            try:
                s.sendto(b"ping", addr)
                return s.recvfrom(100)[0] == b"ping"
            except OSError:
                return False

    def close(self):
        stop_process(self.proc)


@pytest.fixture(scope="module")
def turnutils_peer(tmp_path_factory):
    peer = TurnutilsPeer(tmp_path_factory.mktemp("peer"))
    _ACTIVE_LOGS.append(("turnutils_peer", peer.log_path))
    yield peer
    _ACTIVE_LOGS.remove(("turnutils_peer", peer.log_path))
    peer.close()


def pytest_report_header(config):
    kind = server_kind()
    extra = ""
    if kind == "turnrelay":
        extra = f" binary={find_turn_relay_bin()}"
    return f"TURN server under test: {kind}{extra}"
