"""The PROXY protocol (HAProxy's "The PROXY protocol", versions 1 and 2) on turn-relay's TCP
and TLS listeners: `[tcp].proxy_protocol` names listeners whose connections start with a
header naming the client, `[tcp].proxy_protocol_from` the proxies allowed to send it.

A real HAProxy 2.6 (Debian's /usr/sbin/haproxy, `mode tcp`, one process per fixture in the
foreground with `-db`, its configuration accepted by `haproxy -c` first, stopped by PID with
a soft stop) sits between Python clients bound to the source 127.0.0.2 (or ::1) and the
relay, which trusts only 127.0.0.1 (where HAProxy connects from: `source 127.0.0.1`). The
module's relay listens on 127.0.0.1 only: P (TCP, proxied), T (TLS, proxied) and D (TCP, not
proxied). What must hold:

- Through HAProxy `send-proxy` (v1), `send-proxy-v2`, and `send-proxy-v2` with TLVs (CRC32C,
  UNIQUE_ID) to P, from 127.0.0.2 and from ::1 (a v2 INET6 / v1 TCP6 header on an IPv4
  connection): Binding's XOR-MAPPED-ADDRESS is the client socket's own address and port,
  twice on one connection; no connection is counted `proxy_header`.
- coturn's `turnutils_uclient -t -L 127.0.0.2` through HAProxy (v2) allocates and relays to
  turnutils_peer with no loss; every `allocation_created` log line names the client as
  127.0.0.2 and the server as HAProxy's frontend (the header's destination), not 127.0.0.1
  (HAProxy's source) and the relay's own listener, and these are uclient's relayed
  addresses. A raw client (test_tcp_tls's StreamClient) through HAProxy
  allocates, binds a channel and gets its ChannelData echoed by a UDP peer; `turn-ctl
  allocations` shows its 5-tuple as (127.0.0.2:its port, HAProxy's frontend, tcp).
- TLS terminated by HAProxy (`bind ... ssl crt`, `send-proxy` and `send-proxy-v2-ssl-cn`,
  which adds SSL TLVs) to P, and TLS passed through (`send-proxy-v2` and `send-proxy`) to T,
  where the header precedes the ClientHello: the Binding over TLS (certificate verified)
  answers the client's address; the relay counted a TCP connection for the first and a TLS
  one for the second.
- Straight to P or T from 127.0.0.2 (not in proxy_protocol_from): closed at accept with
  nothing sent (within 2 s, while the idle timeout is 30 s), no answer to a Binding or to a
  valid header naming someone else; `reason="proxy_untrusted"` per transport rises by the
  number of connections. D answers 127.0.0.2 with its own address, and a header sent to D is
  no header there (closed as a bad frame, no answer naming the header's client).
- From 127.0.0.1 to P without a valid header (plain STUN, HTTP, v1 with a field missing, a
  bad address, a family mismatch, a port out of range, no CRLF within 107 bytes, v2 of
  version 1, with an unknown command, over UDP, with addresses cut short, and v1 and v2
  headers truncated then half-closed): each closed within 3 s with nothing sent back,
  `reason="proxy_header"` rises by exactly their number, a connection opened before is still
  served, new ones too.
- v2 LOCAL (with and without an address block), v2 PROXY UNSPEC, v1 UNKNOWN (bare and with
  addresses after it): the answer is the connection's own 127.0.0.1:port. v2 INET, INET6,
  INET with TLVs, v1 TCP4, TCP6 naming 198.18.0.0/15 and 2001:db8::/32 addresses (nothing is
  ever sent to them): the answer is the named address. Headers split over two writes (inside
  the v2 signature, inside the v1 line, header then Binding) with a pause work the same.
- HAProxy health checks (`check` with `option tcp-check` sending a Binding and expecting a
  success whose XOR-MAPPED-ADDRESS is 127.0.0.1): with `send-proxy-v2` (HAProxy 2.6's checks
  send v2 LOCAL) and `send-proxy` (checks send v1 TCP4 with the check connection's own
  addresses) the server is UP with no failed check; without a header it is DOWN and the
  relay counted `proxy_header`.
- `max_connections_per_ip = 2`: a third connection naming the same source IP is closed
  (`reason="limit"`) while 127.0.0.1 holds five connections naming three IPs; after one of
  the two closes there is room again. `accepts_per_ip_per_s = 3`: of 8 connections naming
  one IP opened at once, at least three are served and at least one is closed, each counted
  `reason="rate"`, while another named IP (from the same proxy, in the same second) is
  served.
- `--check-config` and start-up both refuse (exit 2, the same `turn-relay: ` line naming the
  key): a proxy_protocol entry that is the UDP listener, no listener at all, the IPv6 form of
  an IPv4 listener, or no port; proxy_protocol without (or with an empty) proxy_protocol_from;
  proxy_protocol_from without proxy_protocol; a bad CIDR (prefix too long, not an address).
  The same file with the keys right passes the check (so the refusal is not, say, an
  unknown key).

turn-relay only (the keys and metrics are its own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import (_ACTIVE_LOGS, PASSWORD, REALM, USERNAME, TurnServer, find_turn_relay_bin,
                      free_port, log_tail, make_self_signed_cert, relay_port_window, server_kind,
                      stop_process, stop_server, stun_binding, stun_binding_stream)
from test_check_config import check, error_line
from test_startup import run_relay
from test_tcp_tls import (A_XOR_MAPPED, BINDING, Closed, StreamClient, channel_bind,
                          channel_data, closed, encode, metric0, poll)
from test_uclient import INTERVAL_MS, LENGTH, MESSAGES, UCLIENT, assert_no_loss
from tool_paths import find_tool

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CTL = find_tool("TURN_CTL_BIN", "tools/ctl/turn-ctl")

pytestmark = [
    pytest.mark.skipif(server_kind() != "turnrelay", reason="turn-relay's [tcp] PROXY protocol keys"),
    pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="haproxy not installed"),
]

TIMEOUT_S = 5
PROXY_IP = "127.0.0.1"     # where HAProxy (and the hand-written headers) come from: trusted
CLIENT_IP = "127.0.0.2"    # the clients' own source: not trusted to connect directly
# Addresses a header names but nothing ever sends to: 198.18.0.0/15 (benchmarking, RFC 2544)
# and 2001:db8::/32 (documentation, RFC 3849).
NAMED4 = ("198.18.0.7", 4242)
NAMED6 = ("2001:db8::7", 4243)


# -------------------------------------------------------------------------------------
# PROXY protocol headers, written by hand (HAProxy's proxy-protocol.txt, sections 2.1, 2.2)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_LOCAL, V2_PROXY = 0x0, 0x1
AF_UNSPEC, AF_INET, AF_INET6 = 0x0, 0x1, 0x2
STREAM, DGRAM = 0x1, 0x2
PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP = 0x01, 0x02, 0x04


def v2_addresses(src: Tuple[str, int], dst: Tuple[str, int]) -> Tuple[int, bytes]:
    """(address family, address block) of a v2 header for src -> dst."""
    fam = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
    block = (socket.inet_pton(fam, src[0]) + socket.inet_pton(fam, dst[0])
             + struct.pack("!HH", src[1], dst[1]))
    return (AF_INET6 if fam == socket.AF_INET6 else AF_INET), block


def proxy_v2(src: Optional[Tuple[str, int]] = None, dst: Optional[Tuple[str, int]] = None,
             command: int = V2_PROXY, version: int = 2, family: Optional[int] = None,
             transport: int = STREAM, block: Optional[bytes] = None, tlvs: bytes = b"") -> bytes:
    """A v2 header: the signature, version/command, family/transport, length, the address
    block (src -> dst, or `block` as given) and TLVs."""
    fam, addrs = (AF_UNSPEC, b"") if src is None else v2_addresses(src, dst)
    if family is not None:
        fam = family
    if block is not None:
        addrs = block
    body = addrs + tlvs
    return (V2_SIGNATURE + bytes([(version << 4) | command, (fam << 4) | transport])
            + struct.pack("!H", len(body)) + body)


def tlv(t: int, value: bytes) -> bytes:
    return struct.pack("!BH", t, len(value)) + value


def proxy_v1(src: Tuple[str, int], dst: Tuple[str, int]) -> bytes:
    proto = "TCP6" if ":" in src[0] else "TCP4"
    return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


def binding_request() -> bytes:
    return encode(BINDING, [], fingerprint=False)


# -------------------------------------------------------------------------------------
# Clients


def raw_connection(addr: Tuple[str, int], source: Optional[str] = None) -> socket.socket:
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(TIMEOUT_S)
        if source is not None:
            s.bind((source, 0))
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


class Client(StreamClient):
    """test_tcp_tls's StreamClient on a connection this module makes: from `source` (any
    port) to `addr` (HAProxy or a relay listener), `preamble` (a PROXY header) written
    first, then TLS if `ctx` is given (the certificate checked for the IP `addr`)."""

    def __init__(self, server: TurnServer, addr: Tuple[str, int], source: Optional[str] = None,
                 preamble: bytes = b"", ctx: Optional[ssl.SSLContext] = None):
        raw = raw_connection(addr, source)
        try:
            if preamble:
                raw.sendall(preamble)
            self.sock = raw if ctx is None else ctx.wrap_socket(raw, server_hostname=addr[0])
        except BaseException:
            raw.close()
            raise
        self.server = server
        self.buf = b""
        self.key = self.realm = self.nonce = None

    def mapped(self) -> Optional[Tuple[str, int]]:
        """XOR-MAPPED-ADDRESS of a Binding on this connection."""
        return self.binding(timeout=TIMEOUT_S).xor_addr(A_XOR_MAPPED)


def send_ignoring_close(s: socket.socket, data: bytes) -> None:
    """Write `data`; a connection the relay already closed is what some tests expect."""
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def wait_closed(s: socket.socket, timeout: float) -> Tuple[Optional[str], bytes]:
    """('eof' or 'reset', bytes received before) once the peer closed; (None, bytes) if it
    was still open after `timeout` s."""
    deadline, got = time.monotonic() + timeout, b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, got
        s.settimeout(remaining)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return None, got
        except (ConnectionResetError, BrokenPipeError):
            return "reset", got
        if not chunk:
            return "eof", got
        got += chunk


def turn_ctl_allocations(sock: Path) -> List[dict]:
    p = subprocess.run([CTL, "--socket", str(sock), "--json", "allocations"], capture_output=True,
                       text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"turn-ctl allocations: exit {p.returncode}: {p.stdout}{p.stderr}"
    return json.loads(p.stdout)["allocations"]


def log_events(text: str, event: str) -> List[Dict[str, str]]:
    """The key=value fields of every `event=<event>` line of a turn-relay text log."""
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in text.splitlines()
            if re.search(rf"\bevent={event}\b", line)]


def hostport(addr: Tuple[str, int]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


# -------------------------------------------------------------------------------------
# The relay


@dataclass
class ProxiedRelay(TurnServer):
    """turn-relay on 127.0.0.1: UDP `port`, TCP `tcp_port` (proxied), TLS `tls_port`
    (proxied), TCP `direct_port` (not proxied); admin socket `admin_socket`."""
    direct_port: int = 0
    admin_socket: Optional[Path] = None

    def proxied(self, tls: bool = False) -> Tuple[str, int]:
        return ("127.0.0.1", self.tls_port if tls else self.tcp_port)

    def direct(self) -> Tuple[str, int]:
        return ("127.0.0.1", self.direct_port)


def relay_config(r: ProxiedRelay, tcp: Dict[str, object], threads: Optional[int] = None) -> str:
    def value(v):
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(f'"{x}"' for x in v) + "]"
        return str(v)

    return f"""\
# Written by tests/integration/test_proxy_protocol.py
[server]
listen = ["127.0.0.1:{r.port}"]
listen_tcp = ["127.0.0.1:{r.tcp_port}", "127.0.0.1:{r.direct_port}"]
listen_tls = ["127.0.0.1:{r.tls_port}"]
relay_ips = ["127.0.0.1"]
relay_port_min = {r.relay_min}
relay_port_max = {r.relay_max}
realm = "{r.realm}"
software = "turnrelay"
threads = {threads if threads is not None else int(os.environ.get("TURN_RELAY_THREADS", "0"))}

[auth]
users = ["{r.username}:{r.password}"]

[policy]
allow_peers = ["127.0.0.0/8"]

[tls]
certificate = "{r.tls_cert}"
private_key = "{r.tls_key}"

[tcp]
{"".join(f"{k} = {value(v)}{chr(10)}" for k, v in tcp.items())}
[metrics]
listen = "127.0.0.1:{r.metrics_port}"

[admin]
socket = "{r.admin_socket}"

[log]
level = "{os.environ.get("TURN_LOG_LEVEL", "info")}"
format = "text"
"""


def start_proxied_relay(workdir: Path, cert: Path, key: Path, threads: Optional[int] = None,
                        **tcp) -> ProxiedRelay:
    """turn-relay whose P and T trust 127.0.0.1 only; `tcp`: more [tcp] keys; `threads`: its
    event loops (default: TURN_RELAY_THREADS, else one per CPU). Ready once UDP and D answer a
    Binding and P and T accept connections."""
    lo, hi = relay_port_window()
    r = ProxiedRelay(kind="turnrelay", port=free_port(), workdir=workdir, relay_min=lo,
                     relay_max=hi, metrics_port=free_port(kinds=(socket.SOCK_STREAM,)),
                     tcp_port=free_port(kinds=(socket.SOCK_STREAM,)),
                     tls_port=free_port(kinds=(socket.SOCK_STREAM,)),
                     direct_port=free_port(kinds=(socket.SOCK_STREAM,)),
                     admin_socket=workdir / "admin.sock",
                     tls_cert=str(cert), tls_key=str(key), username=USERNAME, password=PASSWORD,
                     realm=REALM)
    settings = {"proxy_protocol": [f"127.0.0.1:{r.tcp_port}", f"127.0.0.1:{r.tls_port}"],
                "proxy_protocol_from": [f"{PROXY_IP}/32"]}
    settings.update(tcp)
    cfg = workdir / "turn-relay.toml"
    cfg.write_text(relay_config(r, settings, threads))
    r.log_path = workdir / "turnrelay.log"
    r.cmd = [find_turn_relay_bin(), "--config", str(cfg)]
    with open(r.log_path, "wb") as logf:
        r.proc = subprocess.Popen(r.cmd, cwd=workdir, stdout=logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    _ACTIVE_LOGS.append((f"{r.kind} server", r.log_path))

    def accepts(addr) -> bool:
        try:
            socket.create_connection(addr, timeout=0.5).close()
            return True
        except OSError:
            return False

    checks = [lambda: stun_binding(r.addr(4), timeout=0.3),
              lambda: stun_binding_stream(r.direct(), timeout=0.5),
              lambda: accepts(r.proxied()), lambda: accepts(r.proxied(tls=True))]
    ready = [False] * len(checks)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and r.proc.poll() is None:
        ready = [ok or bool(c()) for ok, c in zip(ready, checks)]
        if all(ready):
            return r
        time.sleep(0.1)
    rc = r.proc.poll()
    stop_process(r.proc)
    _ACTIVE_LOGS.remove((f"{r.kind} server", r.log_path))
    pytest.fail(f"turn-relay did not get ready within 15 s (exit {rc}; UDP, D, P, T: {ready})\n"
                f"{cfg.read_text()}\n--- log ---\n{log_tail(r.log_path)}")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Tuple[Path, Path, Path]:
    """(certificate, key, both in one PEM for HAProxy's `crt`): IP SANs 127.0.0.1 and ::1."""
    d = tmp_path_factory.mktemp("pp-tls")
    cert, key = make_self_signed_cert(d)
    both = d / "haproxy.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert, key, both


@pytest.fixture
def client_ctx(certs) -> ssl.SSLContext:
    """Trusts (only) the test certificate, checks the IP SAN."""
    return ssl.create_default_context(cafile=str(certs[0]))


@pytest.fixture(scope="module")
def relay_module(tmp_path_factory, certs):
    r = start_proxied_relay(tmp_path_factory.mktemp("pp-relay"), certs[0], certs[1])
    yield r
    stop_server(r)


@pytest.fixture
def relay(relay_module):
    relay_module.assert_alive()
    yield relay_module
    relay_module.assert_alive()


# -------------------------------------------------------------------------------------
# HAProxy


HAPROXY_GLOBAL = """\
# Written by tests/integration/test_proxy_protocol.py
global
    log stderr format raw local0 info
    stats socket {stats} mode 600 level admin
    maxconn 200

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 2s

"""


class HAProxy:
    """One HAProxy in the foreground (-db) on `sections` (frontends and backends), its
    configuration checked by `haproxy -c` first; ready once its stats socket answers."""

    def __init__(self, workdir: Path, sections: str, name: str = "haproxy"):
        self.cfg = workdir / f"{name}.cfg"
        self.stats = workdir / f"{name}.sock"
        self.log_path = workdir / f"{name}.log"
        self.cfg.write_text(HAPROXY_GLOBAL.format(stats=self.stats) + sections)
        p = subprocess.run([HAPROXY, "-c", "-f", str(self.cfg)], capture_output=True, text=True,
                           timeout=20, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            pytest.fail(f"haproxy -c refused {self.cfg} (exit {p.returncode}):\n{p.stdout}{p.stderr}\n"
                        + self.cfg.read_text())
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.cfg)], cwd=workdir,
                                         stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.logname = (name, self.log_path)
        _ACTIVE_LOGS.append(self.logname)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "Name: HAProxy" in self.command("show info"):
                return
            time.sleep(0.05)
        self.close()
        pytest.fail("haproxy did not start within 10 s:\n" + log_tail(self.log_path))

    def command(self, cmd: str) -> str:
        """One command on the stats socket (its answer; '' if it cannot connect)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect(str(self.stats))
                s.sendall(cmd.encode() + b"\n")
                out = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return out.decode(errors="replace")
                    out += chunk
        except OSError:
            return ""

    def servers(self, backend: str) -> Dict[str, Dict[str, str]]:
        """`show stat` rows of `backend`'s servers by name."""
        lines = self.command("show stat").splitlines()
        head = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(head, line.split(","))) for line in lines[1:] if line.strip()]
        return {r["svname"]: r for r in rows
                if r.get("pxname") == backend and r["svname"] not in ("FRONTEND", "BACKEND")}

    def close(self) -> None:
        """Soft stop (SIGUSR1: listeners closed, exit once connections end), SIGTERM and
        SIGKILL after that; by PID."""
        if self.logname in _ACTIVE_LOGS:
            _ACTIVE_LOGS.remove(self.logname)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGUSR1)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, grace=3)


# name -> (TLS terminated by HAProxy, to the relay's TLS listener, server options)
FRONTENDS = {
    "v1": (False, False, "send-proxy"),
    "v2": (False, False, "send-proxy-v2"),
    "v2-tlvs": (False, False, "send-proxy-v2 proxy-v2-options crc32c,unique-id"),
    "tls-terminated-v1": (True, False, "send-proxy"),
    "tls-terminated-v2-ssl": (True, False, "send-proxy-v2-ssl-cn"),
    "tls-passed-v2": (False, True, "send-proxy-v2"),
    "tls-passed-v1": (False, True, "send-proxy"),
}


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory, relay_module, certs):
    """HAProxy with one frontend per FRONTENDS entry on 127.0.0.1 and ::1 (port in
    `.ports[name]`), each to the relay's P or T from 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("haproxy")
    ports, sections = {}, ""
    for name, (terminate, to_tls, options) in FRONTENDS.items():
        port = ports[name] = free_port(kinds=(socket.SOCK_STREAM,))
        ssl_opts = f" ssl crt {certs[2]}" if terminate else ""
        target = relay_module.proxied(tls=to_tls)
        sections += (f"frontend fe-{name}\n"
                     f"    bind 127.0.0.1:{port}{ssl_opts}\n"
                     f"    bind [::1]:{port}{ssl_opts}\n"
                     + ("    unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt\n"
                        if "unique-id" in options else "")
                     + f"    default_backend be-{name}\n\n"
                     f"backend be-{name}\n"
                     f"    server relay {hostport(target)} {options} source {PROXY_IP}\n\n")
    h = HAProxy(workdir, sections)
    h.ports = ports
    yield h
    alive = h.proc.poll() is None
    h.close()
    assert alive, "haproxy died during the tests:\n" + log_tail(h.log_path)


def frontend(h: HAProxy, name: str, family: int) -> Tuple[Tuple[str, int], str]:
    """(HAProxy's address for `name`, the client's source) for an IPv4 or IPv6 client."""
    if family == 4:
        return ("127.0.0.1", h.ports[name]), CLIENT_IP
    return ("::1", h.ports[name]), "::1"


FAMILIES = pytest.mark.parametrize("family", [4, 6], ids=["client-127.0.0.2", "client-ipv6"])


# -------------------------------------------------------------------------------------
# 1. Binding through HAProxy to the proxied TCP listener


@FAMILIES
@pytest.mark.parametrize("name", ["v1", "v2", "v2-tlvs"])
def test_binding_through_haproxy_answers_the_clients_address(relay, haproxy, name, family):
    addr, source = frontend(haproxy, name, family)
    accepted = metric0(relay, "turn_connections_accepted_total", transport="tcp")
    bad = closed(relay, "tcp", "proxy_header")
    with Client(relay, addr, source=source) as c:
        for i in range(2):
            mapped = c.mapped()
            assert mapped == c.local(), (
                f"Binding {i + 1} through HAProxy ({FRONTENDS[name][2]}): XOR-MAPPED-ADDRESS "
                f"{mapped}, the client is {c.local()} (HAProxy connects from {PROXY_IP})")
    assert metric0(relay, "turn_connections_accepted_total", transport="tcp") > accepted
    assert closed(relay, "tcp", "proxy_header") == bad


# -------------------------------------------------------------------------------------
# 2. TURN through HAProxy: uclient, and a raw client seen by turn-ctl


def test_uclient_relays_through_haproxy_as_the_client(relay, haproxy, turnutils_peer):
    port = haproxy.ports["v2"]
    log0 = len(relay.log())
    cmd = [UCLIENT, "-t", "-L", CLIENT_IP, "-v", "-u", relay.username, "-w", relay.password,
           "-p", str(port), "-n", str(MESSAGES), "-l", str(LENGTH), "-z", str(INTERVAL_MS),
           "-m", "2", "-e", "127.0.0.1", "-r", str(turnutils_peer.port), "127.0.0.1"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                       stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace")
    _, relays = assert_no_loss(p.returncode, out, " ".join(cmd))
    created = log_events(relay.log()[log0:], "allocation_created")
    assert set(relays) <= {e.get("relayed") for e in created}, (
        f"uclient's relayed addresses {relays}, allocation_created lines {created}")
    wrong = [e for e in created
             if not (e.get("client", "").startswith(f"{CLIENT_IP}:")
                     and e.get("server") == f"127.0.0.1:{port}" and e.get("transport") == "tcp")]
    assert not wrong, (f"allocations whose 5-tuple is not ({CLIENT_IP}:*, HAProxy's "
                       f"127.0.0.1:{port}, tcp): {wrong}")


@pytest.mark.skipif(CTL is None, reason="turn-ctl not built")
def test_allocation_through_haproxy_belongs_to_the_client(relay, haproxy, echo_peer):
    addr = ("127.0.0.1", haproxy.ports["v2"])
    with Client(relay, addr, source=CLIENT_IP) as c:
        relayed = c.allocate()
        channel_bind(c, 0x4000, echo_peer.addr())
        payload = os.urandom(99)
        c.send(channel_data(0x4000, payload))
        kind, frame = c.read_frame(TIMEOUT_S)
        assert kind == "channel" and frame[:2] == (0x4000, payload), (kind, frame)
        assert echo_peer.sources() == {relayed}, (
            f"the peer heard from {echo_peer.sources()}, the relayed address is {relayed}")
        mine = [a for a in turn_ctl_allocations(relay.admin_socket)
                if hostport(relayed) in a["relayed"]]
        assert len(mine) == 1, turn_ctl_allocations(relay.admin_socket)
        assert (mine[0]["client"], mine[0]["server"], mine[0]["transport"]) == (
            hostport(c.local()), hostport(addr), "tcp"), mine[0]


@pytest.mark.skipif(CTL is None, reason="turn-ctl not built")
def test_status_and_start_line_name_the_proxied_listeners(relay):
    """`turn-ctl status` lists the listeners behind a proxy and the proxies; the start line
    names them under proxy_protocol and leaves them out of the client URLs (clients use the
    proxy's address), while the direct TCP listener stays among them."""
    p = subprocess.run([CTL, "--socket", str(relay.admin_socket), "--json", "status"], capture_output=True,
                       text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    st = json.loads(p.stdout)
    proxied = {f"127.0.0.1:{relay.tcp_port}", f"127.0.0.1:{relay.tls_port}"}
    assert set(st["proxy_protocol"]) == proxied and st["proxy_protocol_from"] == ["127.0.0.1/32"], st
    p = subprocess.run([CTL, "--socket", str(relay.admin_socket), "status"], capture_output=True,
                       text=True, timeout=20, stdin=subprocess.DEVNULL)
    line = [l for l in p.stdout.splitlines() if l.startswith("behind proxy")]
    assert len(line) == 1 and all(a in line[0] for a in proxied) and "(from 127.0.0.1/32)" in line[0], p.stdout
    started = [dict((k, v.strip('"')) for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line))
               for line in relay.log_path.read_text().splitlines() if "event=started " in line]
    assert len(started) == 1, started
    urls = started[0]["urls"].split()
    assert f"turn:127.0.0.1:{relay.direct_port}?transport=tcp" in urls, urls
    assert not [u for u in urls if str(relay.tcp_port) in u.split("?")[0].rsplit(":", 1)[1:]
                or str(relay.tls_port) in u.split("?")[0].rsplit(":", 1)[1:]], urls
    assert all(a in started[0]["proxy_protocol"] for a in proxied), started[0]


# -------------------------------------------------------------------------------------
# 3, 4. TLS terminated by HAProxy (to P), and passed through to the relay's TLS listener


@FAMILIES
@pytest.mark.parametrize("name", ["tls-terminated-v1", "tls-terminated-v2-ssl",
                                  "tls-passed-v2", "tls-passed-v1"])
def test_binding_over_tls_through_haproxy(relay, haproxy, client_ctx, name, family):
    addr, source = frontend(haproxy, name, family)
    passed = FRONTENDS[name][1]
    accepted = {t: metric0(relay, "turn_connections_accepted_total", transport=t)
                for t in ("tcp", "tls")}
    with Client(relay, addr, source=source, ctx=client_ctx) as c:
        mapped = c.mapped()
        assert mapped == c.local(), (
            f"Binding over TLS through HAProxy ({name}): XOR-MAPPED-ADDRESS {mapped}, the "
            f"client is {c.local()}")
    grew = {t: metric0(relay, "turn_connections_accepted_total", transport=t) - accepted[t]
            for t in ("tcp", "tls")}
    # Passed through, the relay did the TLS; terminated, it got plain TCP from HAProxy.
    assert (grew["tls"] >= 1 and grew["tcp"] == 0) if passed else (
        grew["tcp"] >= 1 and grew["tls"] == 0), grew


# -------------------------------------------------------------------------------------
# 5. Untrusted sources; listeners without proxy_protocol


def test_untrusted_source_is_closed_at_accept(relay):
    before = {t: closed(relay, t, "proxy_untrusted") for t in ("tcp", "tls")}
    cases = [
        ("tcp", "silent", b""),
        ("tcp", "binding", binding_request()),
        ("tcp", "valid header naming someone", proxy_v2(NAMED4, relay.proxied()) + binding_request()),
        ("tls", "silent", b""),
        ("tls", "header and a ClientHello's first bytes", proxy_v2() + b"\x16\x03\x01\x00\x05"),
    ]
    problems = []
    for transport, what, data in cases:
        with raw_connection(relay.proxied(tls=transport == "tls"), source=CLIENT_IP) as s:
            if data:
                send_ignoring_close(s, data)
            how, got = wait_closed(s, 2.0)
            if how is None or got:
                problems.append(f"{transport} {what}: closed={how}, received {got[:40].hex()!r}")
    assert not problems, (f"connections from {CLIENT_IP} (outside proxy_protocol_from) not "
                          "closed at once without an answer: " + "; ".join(problems))
    for t in ("tcp", "tls"):
        want = before[t] + sum(1 for c in cases if c[0] == t)
        v = poll(lambda: closed(relay, t, "proxy_untrusted"), lambda v: v >= want)
        assert v == want, (f"closed_total{{transport={t},reason=proxy_untrusted}} "
                           f"{before[t]} -> {v}, expected {want}")
    # The listener without proxy_protocol answers the same source as before the feature.
    with Client(relay, relay.direct(), source=CLIENT_IP) as c:
        assert c.mapped() == c.local() == (CLIENT_IP, c.local()[1])


def test_listener_without_proxy_protocol_takes_no_header(relay):
    """A header sent to D is no header there: its signature frames as a STUN message whose
    length is not a multiple of 4, closed as a bad frame; nothing answers as the named
    client."""
    bad_frame = closed(relay, "tcp", "bad_frame")
    with raw_connection(relay.direct(), source=PROXY_IP) as s:
        send_ignoring_close(s, proxy_v2(NAMED4, relay.direct()) + binding_request())
        how, got = wait_closed(s, 2.0)
    assert how is not None and not got, f"closed={how}, received {got[:40].hex()!r}"
    v = poll(lambda: closed(relay, "tcp", "bad_frame"), lambda v: v >= bad_frame + 1)
    assert v == bad_frame + 1, f"closed_total{{tcp,bad_frame}} {bad_frame} -> {v}"
    with Client(relay, relay.direct(), source=PROXY_IP) as c:
        assert c.mapped() == c.local()


# -------------------------------------------------------------------------------------
# 6. Hand-written headers from the trusted source


def bad_headers(dst: Tuple[str, int]) -> List[Tuple[str, bytes, bool]]:
    """(what, bytes, then half-close): none starts a connection with a valid header."""
    src = NAMED4
    good_v2 = proxy_v2(src, dst)
    return [
        ("plain STUN Binding", binding_request(), False),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: turn\r\n\r\n", False),
        ("v2 signature wrong in its last byte", good_v2[:11] + b"X" + good_v2[12:], False),
        ("v1 without the destination port",
         f"PROXY TCP4 {src[0]} {dst[0]} {src[1]}\r\n".encode() + binding_request(), False),
        ("v1 with an address that does not parse",
         f"PROXY TCP4 198.18.0.999 {dst[0]} {src[1]} {dst[1]}\r\n".encode(), False),
        ("v1 TCP4 naming IPv6 addresses",
         f"PROXY TCP4 {NAMED6[0]} ::1 {src[1]} {dst[1]}\r\n".encode(), False),
        ("v1 with a port above 65535",
         f"PROXY TCP4 {src[0]} {dst[0]} 70000 {dst[1]}\r\n".encode(), False),
        ("v1 with no CRLF in 107 bytes", b"PROXY TCP4 " + b"1" * 120, False),
        ("v2 of version 1", proxy_v2(src, dst, version=1), False),
        ("v2 with command 0xF", proxy_v2(src, dst, command=0xF), False),
        ("v2 INET over UDP (DGRAM)", proxy_v2(src, dst, transport=DGRAM) + binding_request(), False),
        ("v2 INET with a 4-byte address block", proxy_v2(family=AF_INET, block=b"\xc6\x12\x00\x07"),
         False),
        ("v2 truncated then half-closed", good_v2[:20], True),
        ("v1 truncated then half-closed", proxy_v1(src, dst)[:20], True),
    ]


def test_trusted_source_without_a_valid_header_is_closed(relay):
    cases = bad_headers(relay.proxied())
    before = closed(relay, "tcp", "proxy_header")
    # A client through a good header before the bad ones: still served after them.
    with Client(relay, relay.proxied(), source=PROXY_IP,
                preamble=proxy_v2(NAMED4, relay.proxied())) as early:
        assert early.mapped() == NAMED4
        problems = []
        for what, data, half_close in cases:
            with raw_connection(relay.proxied(), source=PROXY_IP) as s:
                send_ignoring_close(s, data)
                if half_close:
                    s.shutdown(socket.SHUT_WR)
                how, got = wait_closed(s, 3.0)
                if how is None or got:
                    problems.append(f"{what}: closed={how}, received {got[:40].hex()!r}")
        assert not problems, ("from the trusted source, not closed within 3 s without an "
                              "answer: " + "; ".join(problems))
        want = before + len(cases)
        v = poll(lambda: closed(relay, "tcp", "proxy_header"), lambda v: v >= want)
        assert v == want, (f"closed_total{{tcp,proxy_header}} {before} -> {v} after "
                           f"{len(cases)} connections without a valid header")
        assert early.mapped() == NAMED4
    relay.assert_alive()
    with Client(relay, relay.proxied(), source=PROXY_IP, preamble=proxy_v1(NAMED4, relay.proxied())) as c:
        assert c.mapped() == NAMED4
    with Client(relay, relay.direct()) as c:
        assert c.mapped() == c.local()


LOCAL_HEADERS = [
    ("v2-local", proxy_v2(command=V2_LOCAL)),
    ("v2-local-with-addresses", proxy_v2(NAMED4, ("127.0.0.1", 3478), command=V2_LOCAL)),
    ("v2-proxy-unspec", proxy_v2()),
    ("v1-unknown", b"PROXY UNKNOWN\r\n"),
    ("v1-unknown-with-addresses", b"PROXY UNKNOWN 2001:db8::7 ::1 4243 3478\r\n"),
]


@pytest.mark.parametrize("header", [h[1] for h in LOCAL_HEADERS], ids=[h[0] for h in LOCAL_HEADERS])
def test_header_naming_no_client_keeps_the_connections_address(relay, header):
    with Client(relay, relay.proxied(), source=PROXY_IP, preamble=header) as c:
        assert c.local()[0] == PROXY_IP
        assert c.mapped() == c.local()
        assert c.mapped() == c.local()


def naming_headers(dst_port: int) -> List[Tuple[str, bytes, Tuple[str, int]]]:
    dst4, dst6 = ("127.0.0.1", dst_port), ("::1", dst_port)
    return [
        ("v2-inet", proxy_v2(NAMED4, dst4), NAMED4),
        ("v2-inet6", proxy_v2(NAMED6, dst6), NAMED6),
        ("v2-inet-tlvs", proxy_v2(("198.18.0.9", 4244), dst4,
                                  tlvs=tlv(PP2_TYPE_ALPN, b"stun.turn")
                                  + tlv(PP2_TYPE_AUTHORITY, b"turn.example")
                                  + tlv(PP2_TYPE_NOOP, b"\0" * 5)), ("198.18.0.9", 4244)),
        ("v1-tcp4", proxy_v1(("198.18.0.8", 4245), dst4), ("198.18.0.8", 4245)),
        ("v1-tcp6", proxy_v1(("2001:db8::8", 4246), dst6), ("2001:db8::8", 4246)),
    ]


@pytest.mark.parametrize("case", range(5), ids=[c[0] for c in naming_headers(3478)])
def test_header_naming_a_client_is_the_mapped_address(relay, case):
    _, header, named = naming_headers(relay.tcp_port)[case]
    with Client(relay, relay.proxied(), source=PROXY_IP, preamble=header) as c:
        assert c.mapped() == named
        assert c.mapped() == named   # the header is read once, not per message


@pytest.mark.parametrize("split", ["v2-inside-the-signature", "v1-inside-the-line",
                                   "header-then-binding"])
def test_header_split_over_two_writes(relay, split):
    """The first part, a pause, then the rest of the header and a Binding in one write."""
    named = ("198.18.0.10", 4247)
    header = (proxy_v1 if split == "v1-inside-the-line" else proxy_v2)(named, relay.proxied())
    cut = {"v2-inside-the-signature": 7, "v1-inside-the-line": 9}.get(split, len(header))
    with Client(relay, relay.proxied(), source=PROXY_IP, preamble=header[:cut]) as c:
        time.sleep(0.3)
        c.send(header[cut:] + binding_request())
        kind, m = c.read_frame(TIMEOUT_S)
        assert kind == "stun" and m.xor_addr(A_XOR_MAPPED) == named, (kind, m)
        assert c.mapped() == named


# -------------------------------------------------------------------------------------
# HAProxy's health checks (v2 LOCAL, v1 with its own addresses) through tcp-check


CHECK_TID = "5055525052455a2d74657374"   # 12 bytes


def test_haproxy_health_checks_with_proxy_headers(tmp_path, certs):
    """tcp-check sends a Binding after the check's PROXY header and expects a success
    response with this transaction id whose XOR-MAPPED-ADDRESS (IPv4) is 127.0.0.1 (HAProxy's
    own address, 7f000001 ^ 2112a442 = 5e12a443), the port anything."""
    (tmp_path / "relay").mkdir()
    relay = start_proxied_relay(tmp_path / "relay", certs[0], certs[1])
    h = None
    try:
        before = closed(relay, "tcp", "proxy_header")
        target = hostport(relay.proxied())
        h = HAProxy(tmp_path, f"""\
backend checks
    option tcp-check
    tcp-check send-binary 000100002112a442{CHECK_TID}
    tcp-check expect rbinary ^0101....2112A442{CHECK_TID.upper()}(........)*002000080001....5E12A443
    server v2 {target} send-proxy-v2 check inter 300 rise 1 fall 1 source {PROXY_IP}
    server v1 {target} send-proxy check inter 300 rise 1 fall 1 source {PROXY_IP}
    server none {target} check inter 300 rise 1 fall 1 source {PROXY_IP}
""")

        def settled(s):
            return (s and all(s[n]["check_status"].lstrip("* ") == "L7OK" for n in ("v2", "v1"))
                    and s["none"]["status"].startswith("DOWN"))

        servers = poll(lambda: h.servers("checks"), settled, timeout=10, interval=0.1)
        assert settled(servers), {n: (s["status"], s["check_status"], s["check_desc"], s["chkfail"])
                                  for n, s in servers.items()}
        time.sleep(1.0)   # three more checks each
        servers = h.servers("checks")
        for n in ("v2", "v1"):
            s = servers[n]
            # "* " before the status: a check is running now
            assert (s["status"], s["check_status"].lstrip("* "), s["chkfail"]) == ("UP", "L7OK", "0"), (
                n, s["status"], s["check_status"], s["check_desc"], s["chkfail"])
        assert servers["none"]["status"].startswith("DOWN"), servers["none"]
        assert closed(relay, "tcp", "proxy_header") >= before + 1
    finally:
        if h is not None:
            h.close()
        stop_server(relay)


# -------------------------------------------------------------------------------------
# 7. Per-source limits count the header's client


def named_client(r: ProxiedRelay, ip: str, port: int) -> Client:
    return Client(r, r.proxied(), source=PROXY_IP, preamble=proxy_v2((ip, port), r.proxied()))


def refused(c: Client, timeout: float = 3.0) -> Tuple[Optional[str], bytes]:
    send_ignoring_close(c.sock, binding_request())
    return wait_closed(c.sock, timeout)


def test_max_connections_per_ip_counts_the_named_client(tmp_path, certs):
    r = start_proxied_relay(tmp_path, certs[0], certs[1], max_connections_per_ip=2)
    conns: List[Client] = []
    try:
        for port in (1001, 1002):
            conns.append(named_client(r, "198.18.0.1", port))
            assert conns[-1].mapped() == ("198.18.0.1", port)
        limit0 = closed(r, "tcp", "limit")
        with named_client(r, "198.18.0.1", 1003) as third:
            how, got = refused(third)
            assert how is not None and not got, (
                f"a third connection naming 198.18.0.1 (max_connections_per_ip = 2): "
                f"closed={how}, received {got[:40].hex()!r}")
        v = poll(lambda: closed(r, "tcp", "limit"), lambda v: v >= limit0 + 1)
        assert v == limit0 + 1, f"closed_total{{tcp,limit}} {limit0} -> {v}"
        # Other named clients through the same proxy address are admitted: 127.0.0.1 holds
        # five connections.
        for ip, port in (("198.18.0.2", 1001), ("198.18.0.2", 1002), ("198.18.0.3", 1001)):
            conns.append(named_client(r, ip, port))
            assert conns[-1].mapped() == (ip, port)
        assert all(c.mapped() == (c_ip, c_port) for c, (c_ip, c_port) in zip(
            conns, [("198.18.0.1", 1001), ("198.18.0.1", 1002), ("198.18.0.2", 1001),
                    ("198.18.0.2", 1002), ("198.18.0.3", 1001)]))
        assert closed(r, "tcp", "limit") == limit0 + 1
        # One of 198.18.0.1's two closes: room for it again.
        conns.pop(0).close()
        n = poll(lambda: metric0(r, "turn_connections", transport="tcp"), lambda v: v <= 4)
        assert n == 4, f"turn_connections{{tcp}} {n} after one of five closed"
        with named_client(r, "198.18.0.1", 1004) as again:
            assert again.mapped() == ("198.18.0.1", 1004)
    finally:
        for c in conns:
            c.close()
        stop_server(r)


def test_header_naming_an_open_connections_5_tuple_is_refused(tmp_path, certs):
    """A header naming the 5-tuple of a connection that is open (a proxied one, or a direct
    client's on D) is refused, and the open connection keeps being served: a header cannot
    end another client's connection. One event loop, so that both connections meet there."""
    r = start_proxied_relay(tmp_path, certs[0], certs[1], threads=1)
    try:
        before = closed(r, "tcp", "proxy_header")
        with named_client(r, "198.18.0.9", 5555) as first, Client(r, r.direct()) as direct:
            assert first.mapped() == ("198.18.0.9", 5555)
            me = direct.local()
            assert direct.mapped() == me
            for what, header in (("a proxied connection's", proxy_v2(("198.18.0.9", 5555), r.proxied())),
                                 ("a direct client's", proxy_v2(me, r.direct()))):
                with Client(r, r.proxied(), source=PROXY_IP, preamble=header) as dup:
                    how, got = refused(dup)
                    assert how is not None and not got, (
                        f"a header naming {what} 5-tuple: closed={how}, received {got[:40].hex()!r}")
            # Both open connections are still served.
            assert first.mapped() == ("198.18.0.9", 5555)
            assert direct.mapped() == me
        v = poll(lambda: closed(r, "tcp", "proxy_header"), lambda v: v >= before + 2)
        assert v == before + 2, f"closed_total{{tcp,proxy_header}} {before} -> {v}"
    finally:
        stop_server(r)


def test_accepts_per_ip_per_s_counts_the_named_client(tmp_path, certs):
    """8 connections naming 198.18.1.1 opened at once (headers written), then one naming
    198.18.1.2, all from 127.0.0.1 well within a second; then each asked for a Binding."""
    r = start_proxied_relay(tmp_path, certs[0], certs[1], accepts_per_ip_per_s=3)
    conns: List[Optional[Client]] = []
    try:
        rate0 = closed(r, "tcp", "rate")
        t0 = time.monotonic()
        for ip, port in [("198.18.1.1", 2000 + i) for i in range(8)] + [("198.18.1.2", 2000)]:
            try:
                conns.append(named_client(r, ip, port))
            except OSError:
                conns.append(None)   # closed before the header was written: not served
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, f"opening 9 connections took {elapsed:.2f} s"
        served = []
        for i, c in enumerate(conns):
            try:
                served.append(c is not None and c.mapped() == (("198.18.1.1", 2000 + i) if i < 8
                                                                else ("198.18.1.2", 2000)))
            except (Closed, OSError):
                served.append(False)
        assert served[8], "a client named by the same proxy, but another IP, was not served"
        assert served[:8].count(True) >= 3 and False in served[:8], (
            f"accepts_per_ip_per_s = 3, 8 connections naming 198.18.1.1 in {elapsed:.2f} s: "
            f"served {served[:8]}")
        refused_n = served.count(False)
        v = poll(lambda: closed(r, "tcp", "rate"), lambda v: v >= rate0 + refused_n)
        assert v == rate0 + refused_n, f"closed_total{{tcp,rate}} {rate0} -> {v}, refused {refused_n}"
    finally:
        for c in conns:
            if c is not None:
                c.close()
        stop_server(r)


# -------------------------------------------------------------------------------------
# 8. Configuration errors


def refusal_cases(tmp_path: Path) -> Dict[str, Tuple[str, str]]:
    """name -> (configuration, the key its error must name)."""
    udp, tcp, tls, other = (free_port(), free_port(kinds=(socket.SOCK_STREAM,)),
                            free_port(kinds=(socket.SOCK_STREAM,)), free_port())
    cert, key = make_self_signed_cert(tmp_path)

    def cfg(tcp_section: str) -> str:
        return (f'[server]\nlisten = ["127.0.0.1:{udp}"]\nlisten_tcp = ["127.0.0.1:{tcp}"]\n'
                f'listen_tls = ["127.0.0.1:{tls}"]\n[tls]\ncertificate = "{cert}"\n'
                f'private_key = "{key}"\n[auth]\nusers = ["a:one"]\n[metrics]\nlisten = ""\n'
                f"[tcp]\n{tcp_section}")

    frm = 'proxy_protocol_from = ["127.0.0.1/32"]\n'
    pp = "[tcp].proxy_protocol"
    ppf = "[tcp].proxy_protocol_from"
    return {
        "good": (cfg(f'proxy_protocol = ["127.0.0.1:{tcp}", "127.0.0.1:{tls}"]\n{frm}'), ""),
        "entry_is_the_udp_listener": (cfg(f'proxy_protocol = ["127.0.0.1:{udp}"]\n{frm}'), pp),
        "entry_is_no_listener": (cfg(f'proxy_protocol = ["127.0.0.1:{other}"]\n{frm}'), pp),
        "entry_is_the_ipv6_form": (cfg(f'proxy_protocol = ["[::1]:{tcp}"]\n{frm}'), pp),
        "entry_without_port": (cfg(f'proxy_protocol = ["127.0.0.1"]\n{frm}'), pp),
        "without_from": (cfg(f'proxy_protocol = ["127.0.0.1:{tcp}"]\n'), ppf),
        "with_empty_from": (cfg(f'proxy_protocol = ["127.0.0.1:{tcp}"]\nproxy_protocol_from = []\n'), ppf),
        "from_without_proxy_protocol": (cfg(frm), ppf),
        "cidr_prefix_too_long": (cfg(f'proxy_protocol = ["127.0.0.1:{tcp}"]\n'
                                     'proxy_protocol_from = ["127.0.0.1/33"]\n'), ppf),
        "cidr_not_an_address": (cfg(f'proxy_protocol = ["127.0.0.1:{tcp}"]\n'
                                    'proxy_protocol_from = ["haproxy.example/32"]\n'), ppf),
    }


REFUSALS = ["entry_is_the_udp_listener", "entry_is_no_listener", "entry_is_the_ipv6_form",
            "entry_without_port", "without_from", "with_empty_from", "from_without_proxy_protocol",
            "cidr_prefix_too_long", "cidr_not_an_address"]


def test_good_proxy_protocol_configuration_passes_the_check(tmp_path):
    text, _ = refusal_cases(tmp_path)["good"]
    f = tmp_path / "good.toml"
    f.write_text(text)
    rc, out, err = check("--config", str(f))
    assert rc == 0 and "configuration OK" in out, out + err


@pytest.mark.parametrize("case", REFUSALS)
def test_configuration_errors_stop_start_up(tmp_path, case):
    cases = refusal_cases(tmp_path)
    # The same file with the keys right passes: the refusal is this mistake's.
    good = tmp_path / "good.toml"
    good.write_text(cases["good"][0])
    rc, out, err = check("--config", str(good))
    assert rc == 0, out + err
    text, key = cases[case]
    f = tmp_path / f"{case}.toml"
    f.write_text(text)
    rc, out, err = check("--config", str(f))
    start_rc, start_out = run_relay("--config", str(f))
    assert start_rc == 2, f"start-up: exit {start_rc}, expected 2:\n{start_out}\n{text}"
    assert rc == 2, f"--check-config: exit {rc}, expected 2:\n{out}{err}\n{text}"
    line = error_line(start_out)
    # The key named, and not only as the prefix of the other one.
    assert re.search(re.escape(key) + r"(?!_from)", line) and "unknown key" not in line, (
        f"{case}: {line!r} does not name {key}")
    assert error_line(err) == line, f"check:\n{err}\nstart-up:\n{start_out}"
