"""RFC 6062 TCP allocations against turn-relay, with real TCP peers on loopback.

  * coturn's turnutils_uclient with TCP relaying (-T) over a TCP and over a TLS control
    connection: zero loss, received == sent, and the relay counted Connect and ConnectionBind
    requests (with -m 2 uclient's clients reach each other through their relayed addresses, so
    one side Connects and the other is told with a ConnectionAttempt);
  * a raw client (the STUN encoding below) does each step itself and checks the bytes:
    client-initiated (Connect -> CONNECTION-ID -> a second connection with ConnectionBind ->
    1 MiB each way through the pipe, intact; over TCP written all at once while reading,
    which needs the relay's backpressure since the echo peer writes back as fast as it reads;
    over TLS in 64 KiB steps); peer-initiated (a permitted peer connects to
    the relayed address -> ConnectionAttempt with its address and a CONNECTION-ID ->
    ConnectionBind -> bytes both ways); half-closes relayed both ways (a peer's FIN after 2 MiB
    reaches the client after the last byte, over TCP and TLS; a peer's FIN before the bind;
    the client's shutdown reaches the peer after its answer); a peer without a permission is
    closed and never announced; closing the control connection ends the allocation and its
    data connections;
  * the error answers of sections 5.1-5.4: TCP over a UDP client (400), Connect twice to one
    peer (446), Connect to a closed port (447), ConnectionBind with an unknown id (400), with
    another user's credentials (441), and Connect on a UDP allocation (400).
"""

import hashlib
import hmac
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib

import pytest

from conftest import find_turn_relay_bin, free_port, log_tail, relay_port_window, stop_process

MAGIC = 0x2112A442
ALLOCATE, REFRESH, CREATE_PERMISSION, CONNECT, CONNECTION_BIND = 0x003, 0x004, 0x008, 0x00A, 0x00B
CONNECTION_ATTEMPT = 0x00C
A_USERNAME, A_MI, A_ERROR, A_LIFETIME, A_PEER, A_REALM, A_NONCE, A_RELAYED, A_TRANSPORT = (
    0x0006, 0x0008, 0x0009, 0x000D, 0x0012, 0x0014, 0x0015, 0x0016, 0x0019)
A_CONNECTION_ID, A_FINGERPRINT = 0x002A, 0x8028
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
REALM = "tcp6062.test"
# Every loop accepts TCP/TLS clients, so a data connection usually lands on another loop than
# its allocation's and is handed over (3 times in 4 with 4 loops).
LOOPS = 4


# ---------------------------------------------------------------- STUN encoding

def xor_addr(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.inet_pton(fam, host)
    key = struct.pack("!I", MAGIC) + b"\0" * 12
    x = bytes(a ^ b for a, b in zip(raw, key))
    return struct.pack("!BBH", 0, 1 if fam == socket.AF_INET else 2, port ^ (MAGIC >> 16)) + x


def unxor_addr(v, tid):
    fam, port = v[1], struct.unpack("!H", v[2:4])[0] ^ (MAGIC >> 16)
    key = struct.pack("!I", MAGIC) + tid
    ip = bytes(a ^ b for a, b in zip(v[4:], key))
    return socket.inet_ntop(socket.AF_INET if fam == 1 else socket.AF_INET6, ip), port


def encode(method, cls, attrs, key=None, tid=None):
    tid = tid or os.urandom(12)
    t = (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7)
    body = b""
    for at, v in attrs:
        body += struct.pack("!HH", at, len(v)) + v + b"\0" * (-len(v) % 4)
    if key is not None:
        hdr = struct.pack("!HHI", t, len(body) + 24, MAGIC) + tid
        body += struct.pack("!HH", A_MI, 20) + hmac.new(key, hdr + body, hashlib.sha1).digest()
    hdr = struct.pack("!HHI", t, len(body) + 8, MAGIC) + tid
    crc = (zlib.crc32(hdr + body) ^ 0x5354554E) & 0xFFFFFFFF
    body += struct.pack("!HHI", A_FINGERPRINT, 4, crc)
    return struct.pack("!HHI", t, len(body), MAGIC) + tid + body, tid


def decode(msg):
    t, length = struct.unpack("!HH", msg[:4])
    method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    cls = ((t >> 4) & 1) | ((t >> 7) & 2)
    attrs, body = {}, msg[20:20 + length]
    while len(body) >= 4:
        at, n = struct.unpack("!HH", body[:4])
        attrs.setdefault(at, body[4:4 + n])
        body = body[4 + n + (-n % 4):]
    return method, cls, msg[8:20], attrs


def error_code(attrs):
    v = attrs.get(A_ERROR)
    return v[2] * 100 + v[3] if v else 200


def small_buffer_connection(addr, rcvbuf):
    """A TCP connection whose receive buffer (so the window it offers) is `rcvbuf` bytes, set
    before connecting: the kernel cannot absorb what the application does not read, so the
    relay's own queue for it is what fills."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(addr)
    return s


class Stream:
    """A TCP (or TLS) connection to the relay, carrying framed STUN messages."""

    def __init__(self, addr, tls=False, user="alice", rcvbuf=None):
        s = small_buffer_connection(addr, rcvbuf) if rcvbuf else socket.create_connection(addr, timeout=5)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s)
        self.s, self.buf, self.user = s, b"", user
        self.key = self.nonce = self.realm = None

    def recv_msg(self, timeout=5.0):
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                n = 20 + struct.unpack("!H", self.buf[2:4])[0]
                if len(self.buf) >= n:
                    m, self.buf = self.buf[:n], self.buf[n:]
                    return m
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the relay")
            self.buf += chunk

    def request(self, method, attrs=()):
        """Authenticated request (the 401 round first); answers (class, attrs)."""
        for _ in range(3):
            extra = [(A_USERNAME, self.user.encode()), (A_REALM, self.realm), (A_NONCE, self.nonce)] if self.key else []
            msg, tid = encode(method, 0, list(attrs) + extra, self.key)
            self.s.sendall(msg)
            while True:
                m, c, rtid, a = decode(self.recv_msg())
                if rtid == tid:
                    break
            if c == 3 and error_code(a) in (401, 438) and A_NONCE in a:
                self.realm, self.nonce = a[A_REALM], a[A_NONCE]
                self.key = hashlib.md5(f"{self.user}:{self.realm.decode()}:{USERS[self.user]}".encode()).digest()
                continue
            return c, a, rtid
        raise AssertionError("challenged forever")

    def indication(self, timeout=3.0):
        """The next indication (ConnectionAttempt), skipping nothing else."""
        m, c, tid, a = decode(self.recv_msg(timeout))
        return m, c, tid, a

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class EchoPeer:
    """TCP echo server on 127.0.0.1; records the addresses that connected."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.sources = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, a = self.ls.accept()
            except OSError:
                return
            self.sources.append(a)
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()

    def close(self):
        self.ls.close()


def start_tcp_relay(d, threads=1, extra="", preexec_fn=None, server_extra="", relay_ports=None):
    """turn-relay on 127.0.0.1 with UDP and TCP on one port, users alice and bob, loopback
    peers allowed, `server_extra` (more [server] keys) and `extra` (more TOML sections; "{port}"
    in it stands for that port) in its configuration under directory d, relayed ports from
    `relay_ports` (lo, hi) or a random window;
    returned once its TCP listener accepts, as an object with addr, port, metrics, log and
    proc (stop it with stop_process)."""
    port = free_port(span=1)
    metrics = free_port(kinds=(socket.SOCK_STREAM,))
    lo, hi = relay_ports or relay_port_window()
    cfg = d / "relay.toml"
    cfg.write_text(f"""
[server]
listen = ["127.0.0.1:{port}"]
listen_tcp = ["127.0.0.1:{port}"]
relay_ips = ["127.0.0.1"]
relay_port_min = {lo}
relay_port_max = {hi}
realm = "{REALM}"
threads = {threads}
{server_extra}
[auth]
users = ["alice:alice-pw", "bob:bob-pw"]
[policy]
allow_peers = ["127.0.0.0/8"]
unauth_per_ip_per_s = 1000
[metrics]
listen = "127.0.0.1:{metrics}"
{extra.replace("{port}", str(port))}""")
    os.chmod(cfg, 0o600)
    log = d / "relay.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(cfg)], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", metrics), timeout=0.2).close()
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    r = type("Relay", (), {})()
    r.addr, r.port, r.metrics, r.log, r.proc = ("127.0.0.1", port), port, metrics, log, proc
    return r


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    d = tmp_path_factory.mktemp("tcp6062")
    tls_port = free_port(kinds=(socket.SOCK_STREAM,))
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=t", "-keyout", str(key), "-out", str(cert)], check=True,
                   capture_output=True)
    r = start_tcp_relay(d, threads=LOOPS, server_extra=f'listen_tls = ["127.0.0.1:{tls_port}"]', extra=f"""[tls]
certificate = "{cert}"
private_key = "{key}"
[allocation]
max_tcp_peer_connections = {MAX_PEER_CONNECTIONS}
""")
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", tls_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    r.tls_addr = ("127.0.0.1", tls_port)
    proc, log = r.proc, r.log
    yield r
    alive = proc.poll() is None
    stop_process(proc, second_signal_after=0.5)
    assert alive, "turn-relay died:\n" + log_tail(log)


MAX_PEER_CONNECTIONS = 3  # [allocation].max_tcp_peer_connections of the module's relay


def metric(relay, prefix):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=3).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def tcp_allocation(relay, tls=False, user="alice"):
    ctl = Stream(relay.tls_addr if tls else relay.addr, tls, user)
    c, a, tid = ctl.request(ALLOCATE, [(A_TRANSPORT, bytes([6, 0, 0, 0]))])
    assert c == 2, f"Allocate TCP: {error_code(a)}"
    return ctl, unxor_addr(a[A_RELAYED], tid)


def permitted_tcp_allocation(relay, tls=False):
    """A TCP allocation with a permission for 127.0.0.1: (control connection, relayed address)."""
    ctl, relayed = tcp_allocation(relay, tls)
    c, a, _ = ctl.request(CREATE_PERMISSION, [(A_PEER, xor_addr("127.0.0.1", 0))])
    assert c == 2, f"CreatePermission: {error_code(a)}"
    return ctl, relayed


def bind(relay, conn_id, tls=False, user="alice", rcvbuf=None):
    data = Stream(relay.tls_addr if tls else relay.addr, tls, user, rcvbuf)
    c, a, _ = data.request(CONNECTION_BIND, [(A_CONNECTION_ID, struct.pack("!I", conn_id))])
    return data, c, a


def pump(sock, payload, expect_len, timeout=20):
    """Send `payload` while reading `expect_len` bytes back (both at once: the pipe is
    bounded, so writing everything before reading would stall on purpose). An SSLSocket
    must not be read and written from two threads at once (OpenSSL's SSL object is not
    thread-safe): over TLS the payload goes in 64 KiB steps, each read back before the next."""
    got = bytearray(sock.buf) if hasattr(sock, "buf") else bytearray()
    raw = sock.s
    raw.settimeout(timeout)
    if isinstance(raw, ssl.SSLSocket):
        step = 64 * 1024
        for off in range(0, len(payload), step):
            raw.sendall(payload[off:off + step])
            want = min(off + step, expect_len)
            while len(got) < want:
                chunk = raw.recv(65536)
                if not chunk:
                    return bytes(got)
                got += chunk
        return bytes(got)
    err = []

    def writer():
        try:
            raw.sendall(payload)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=writer)
    t.start()
    while len(got) < expect_len:
        chunk = raw.recv(65536)
        if not chunk:
            break
        got += chunk
    t.join(timeout)
    assert not err, err
    return bytes(got)


@pytest.mark.skipif(shutil.which("turnutils_uclient") is None, reason="coturn not installed")
@pytest.mark.parametrize("tls", [False, True])
def test_uclient_tcp_relay(relay, tls):
    from test_uclient import parse_summary
    peer = EchoPeer()
    before = metric(relay, 'turn_requests_total{method="connect",code="200"}')
    port = relay.tls_addr[1] if tls else relay.addr[1]
    cmd = ["turnutils_uclient", "-t", "-T"] + (["-S"] if tls else []) + [
        "-u", "alice", "-w", "alice-pw", "-p", str(port), "-n", "30", "-l", "300", "-z", "5", "-m", "2",
        "-e", "127.0.0.1", "-r", str(peer.port), "127.0.0.1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    s = parse_summary(out)
    peer.close()
    assert p.returncode == 0 and s["sent"] > 0 and s["recv"] == s["sent"] and s["lost"] == 0, out[-3000:]
    assert s["recv_bytes"] == s["sent_bytes"]
    assert metric(relay, 'turn_requests_total{method="connect",code="200"}') > before
    assert metric(relay, 'turn_requests_total{method="connection_bind",code="200"}') > 0


@pytest.mark.parametrize("tls", [False, True])
def test_connect_bind_and_a_megabyte_each_way(relay, tls):
    peer = EchoPeer()
    log_from = len(relay.log.read_text())  # an earlier allocation may have had the same relayed port
    ctl, relayed = tcp_allocation(relay, tls)
    c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peer.port))])
    assert c == 2, error_code(a)
    conn_id = struct.unpack("!I", a[A_CONNECTION_ID])[0]
    for _ in range(50):  # the echo peer's accept thread records it
        if peer.sources:
            break
        time.sleep(0.02)
    assert peer.sources and peer.sources[-1] == relayed, (peer.sources, relayed)  # from the relayed address
    data, c, a = bind(relay, conn_id, tls)
    assert c == 2, error_code(a)
    before = {d: metric(relay, f'turn_tcp_relayed_bytes_total{{direction="{d}"}}')
              for d in ("client_to_peer", "peer_to_client")}
    payload = os.urandom(1 << 20)
    echoed = pump(data, payload, len(payload))
    assert echoed == payload
    for d in before:  # counted as it crossed the pipe
        assert metric(relay, f'turn_tcp_relayed_bytes_total{{direction="{d}"}}') - before[d] >= len(payload), d
    data.close()
    ctl.close()
    peer.close()
    # The allocation's end line counts the bytes its data connection piped, each way (a
    # stream has no datagrams: packets stay 0).
    want = f"relayed={relayed[0]}:{relayed[1]} "
    line = ""
    for _ in range(150):
        line = next((l for l in relay.log.read_text()[log_from:].splitlines()
                     if "event=allocation_connection_closed" in l and want in l), "")
        if line:
            break
        time.sleep(0.02)
    assert (f" packets_to_peer=0 bytes_to_peer={len(payload)} packets_to_client=0 bytes_to_client={len(payload)}"
            in line), line or log_tail(relay.log)


@pytest.mark.parametrize("tls", [False, True])
def test_data_connections_reach_their_allocation_from_any_loop(relay, tls):
    """With 4 event loops the kernel spreads control and data connections over them; each
    CONNECTION-ID names its allocation's loop, and a ConnectionBind framed elsewhere brings its
    connection over (the request answered there, the bytes after it kept: every other bind is
    written together with the first bytes for the peer). 16 binds: every one succeeds and pipes
    bytes both ways in order; the relay counted the handoffs."""
    before = metric(relay, "turn_connections_handed_off_total")
    open_before = metric(relay, "turn_connections{")
    loops_named = set()
    for i in range(16):
        peer = EchoPeer()
        ctl, relayed = tcp_allocation(relay, tls)
        c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peer.port))])
        assert c == 2, error_code(a)
        conn_id = struct.unpack("!I", a[A_CONNECTION_ID])[0]
        loops_named.add(conn_id % LOOPS)
        first = b""
        if i % 2 == 0:
            data, c, a = bind(relay, conn_id, tls)
            assert c == 2, (i, error_code(a))
        else:
            # The ConnectionBind and the client's first bytes for the peer in one write: the
            # bytes after the request travel with the connection. The nonce comes from a
            # Refresh first (437: this connection holds no allocation; no handoff for that).
            data = Stream(relay.tls_addr if tls else relay.addr, tls)
            c, a, _ = data.request(REFRESH, [])
            assert (c, error_code(a)) == (3, 437), (i, error_code(a))
            msg, tid = encode(CONNECTION_BIND, 0, [(A_CONNECTION_ID, struct.pack("!I", conn_id)),
                                                   (A_USERNAME, b"alice"), (A_REALM, data.realm),
                                                   (A_NONCE, data.nonce)], data.key)
            first = f"pipelined with bind {i}|".encode()
            if i % 4 == 1:
                data.s.sendall(msg + first)
            else:  # two writes (over TLS two records, which the first loop may read together)
                data.s.sendall(msg)
                data.s.sendall(first)
            m, c, rtid, a = decode(data.recv_msg())
            assert (rtid, c) == (tid, 2), (i, error_code(a))
        payload = f"bind {i}: ".encode() + os.urandom(3000)
        assert pump(data, payload, len(first) + len(payload)) == first + payload, i
        data.close()
        ctl.close()
        peer.close()
    assert len(loops_named) > 1, loops_named  # allocations on several loops
    # 3 binds in 4 land on another loop than their allocation's; fewer than 4 of 16 would
    # take luck against the kernel's hash (or a handoff that did not happen).
    assert metric(relay, "turn_connections_handed_off_total") - before >= 4
    # Every connection was counted once and released once, wherever it ended (a handed-over
    # connection counted twice, or never released, would leave the gauge above where it was).
    deadline = time.monotonic() + 5
    while metric(relay, "turn_connections{") > open_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(relay, "turn_connections{") <= open_before


def test_peer_initiated_connection(relay):
    ctl, relayed = permitted_tcp_allocation(relay)
    p = socket.create_connection(relayed, timeout=5)
    m, cls, tid, attrs = ctl.indication()
    assert (m, cls) == (CONNECTION_ATTEMPT, 1)
    assert unxor_addr(attrs[A_PEER], tid) == p.getsockname()
    conn_id = struct.unpack("!I", attrs[A_CONNECTION_ID])[0]
    p.sendall(b"early bytes before the bind|")  # kept until the bind
    data, c, a = bind(relay, conn_id)
    assert c == 2, error_code(a)
    p.sendall(b"hello client")
    got = data.buf
    data.s.settimeout(5)
    while len(got) < len(b"early bytes before the bind|hello client"):
        got += data.s.recv(4096)
    assert got == b"early bytes before the bind|hello client"
    data.s.sendall(b"hello peer")
    p.settimeout(5)
    assert p.recv(100) == b"hello peer"
    # The peer closes: the data connection goes too.
    p.close()
    data.s.settimeout(5)
    assert data.s.recv(100) == b""
    ctl.close()


def peer_attempt(relay, tls=False, rcvbuf=None):
    """A permitted peer connects to a TCP allocation's relayed address: (control, peer socket,
    CONNECTION-ID)."""
    ctl, relayed = permitted_tcp_allocation(relay, tls)
    p = small_buffer_connection(relayed, rcvbuf) if rcvbuf else socket.create_connection(relayed, timeout=5)
    m, cls, tid, attrs = ctl.indication()
    assert (m, cls) == (CONNECTION_ATTEMPT, 1)
    return ctl, p, struct.unpack("!I", attrs[A_CONNECTION_ID])[0]


def read_to_eof(sock, got=b"", timeout=20, slow=False):
    """Everything up to the end of the stream; `slow`: 64 KiB every 10 ms, a reader that keeps
    the relay's queue for it (and the kernel's buffers) from ever emptying."""
    sock.settimeout(timeout)
    got = bytearray(got)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(got)
        got += chunk
        if slow:
            time.sleep(0.01)


@pytest.mark.parametrize("tls", [False, True])
def test_peer_half_close_delivers_everything_then_the_fin(relay, tls):
    """The peer writes 2 MiB and ends its stream (FIN) while the client is not reading: the
    client still gets every byte, then the end of the stream (over TLS a close_notify), and its
    own direction stays open until it ends it too."""
    ctl, p, conn_id = peer_attempt(relay, tls)
    data, c, a = bind(relay, conn_id, tls)
    assert c == 2, error_code(a)
    big = os.urandom(2 << 20)
    sender = threading.Thread(target=lambda: (p.sendall(big), p.shutdown(socket.SHUT_WR)))
    sender.start()
    time.sleep(1.0)  # the relay's queue for the client fills up meanwhile; the FIN waits behind it
    got = read_to_eof(data.s, data.buf)
    sender.join(10)
    assert len(got) == len(big) and got == big
    data.s.sendall(b"after your FIN")
    p.settimeout(5)
    assert p.recv(100) == b"after your FIN"
    data.close()
    assert read_to_eof(p) == b""
    p.close()
    ctl.close()


def max_busy(relay):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=3).read().decode()
    return max(float(line.split()[-1]) for line in text.splitlines() if line.startswith("turn_event_loop_busy_ratio{"))


@pytest.mark.parametrize("tls", [False, True])
def test_request_fin_then_a_large_answer_and_the_peers_fin(relay, tls):
    """Request, FIN, the whole answer: the client sends its request and ends its side; the peer
    answers 2 MiB and closes while the client (8 KiB receive buffer) is not reading, then the
    client reads slowly. Both of the peer socket's
    directions are then shut down (it hangs up) while its side is paused behind the client's
    full queue: the relay must neither spin on the hang-up nor cut the answer short."""
    ctl, p, conn_id = peer_attempt(relay, tls)
    data, c, a = bind(relay, conn_id, tls, rcvbuf=8192)
    assert c == 2, error_code(a)
    data.s.sendall(b"GET the answer")
    if tls:
        pass  # TLS: the client keeps its side open (no close_notify half-close from Python's ssl)
    else:
        data.s.shutdown(socket.SHUT_WR)
    p.settimeout(5)
    got = b""
    while len(got) < len(b"GET the answer"):
        got += p.recv(100)
    assert got == b"GET the answer"
    if not tls:
        assert read_to_eof(p) == b""  # the client's FIN reached the peer
    # More than the relay queues for the client (send_buffer_bytes, 256 KiB) and the client's
    # small receive buffer take: the peer's side is paused with its FIN behind the data, and the
    # FIN must wait for the client's queue while the peer socket is shut down both ways (it
    # reports a hang-up, which is level-triggered). Whether the FIN is read while the queue is
    # still full depends on how much loopback's kernel buffers absorb, so this checks the
    # outcome (every byte, then the end, no spinning), not that one interleaving.
    answer = os.urandom(2 << 20)
    sender = threading.Thread(target=lambda: (p.sendall(answer), p.shutdown(socket.SHUT_WR)))
    sender.start()
    time.sleep(2.2)  # a whole busy-ratio window with the answer queued and the peer hung up
    busy = max_busy(relay)
    assert busy < 0.5, f"an event loop was busy {busy:.2f} of the time while nothing moved (spinning?)"
    assert read_to_eof(data.s, data.buf, slow=True) == answer
    sender.join(10)
    p.close()
    data.close()
    ctl.close()


def test_peer_fin_first_then_a_large_upload_and_the_clients_fin(relay):
    """The mirror: the peer ends its side first; the client uploads 2 MiB to a peer (8 KiB
    receive buffer) that is not reading yet, then ends its side; the peer, reading slowly, gets
    the whole upload, then the end."""
    ctl, p, conn_id = peer_attempt(relay, rcvbuf=8192)
    data, c, a = bind(relay, conn_id)
    assert c == 2, error_code(a)
    p.shutdown(socket.SHUT_WR)
    assert read_to_eof(data.s, data.buf) == b""  # the peer's FIN reached the client
    upload = os.urandom(2 << 20)
    sender = threading.Thread(target=lambda: (data.s.sendall(upload), data.s.shutdown(socket.SHUT_WR)))
    sender.start()
    time.sleep(2.2)
    busy = max_busy(relay)
    assert busy < 0.5, f"an event loop was busy {busy:.2f} of the time while nothing moved (spinning?)"
    assert read_to_eof(p, slow=True) == upload
    sender.join(10)
    p.close()
    data.close()
    ctl.close()


def test_client_half_close_and_a_peer_fin_before_the_bind(relay):
    """A peer that sent its bytes and ended before the bind: the client gets them, then the
    FIN; the client answers, ends its side (shutdown), and the peer reads the answer and the
    end of the stream: request / FIN / whole answer, both ways round."""
    ctl, p, conn_id = peer_attempt(relay)
    p.sendall(b"request from the peer")
    p.shutdown(socket.SHUT_WR)
    time.sleep(0.2)  # the relay reads the FIN before the bind
    data, c, a = bind(relay, conn_id)
    assert c == 2, error_code(a)
    assert read_to_eof(data.s, data.buf) == b"request from the peer"
    data.s.sendall(b"answer from the client")
    data.s.shutdown(socket.SHUT_WR)
    assert read_to_eof(p) == b"answer from the client"
    p.close()
    data.close()
    ctl.close()


def test_peer_without_permission_is_closed_unannounced(relay):
    ctl, relayed = tcp_allocation(relay)
    p = socket.create_connection(relayed, timeout=5)
    p.settimeout(3)
    try:
        closed = p.recv(10) == b""
    except ConnectionResetError:
        closed = True
    assert closed
    with pytest.raises(socket.timeout):
        ctl.indication(timeout=1.0)
    ctl.close()


def test_closing_the_control_connection_ends_everything(relay):
    peer = EchoPeer()
    ctl, relayed = tcp_allocation(relay)
    c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peer.port))])
    data, c, _ = bind(relay, struct.unpack("!I", a[A_CONNECTION_ID])[0])
    assert c == 2
    ctl.close()
    data.s.settimeout(5)
    assert data.s.recv(100) == b"", "the data connection outlived its allocation"
    with pytest.raises(OSError):
        socket.create_connection(relayed, timeout=2).recv(1)  # nothing listens on the relayed port
    peer.close()


def test_error_answers(relay):
    peer = EchoPeer()
    # 400: TCP relaying for a client on UDP (section 5.1).
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    msg, tid = encode(ALLOCATE, 0, [(A_TRANSPORT, bytes([6, 0, 0, 0]))])
    u.sendto(msg, relay.addr)
    _, _, _, a = decode(u.recv(2048))
    realm, nonce = a[A_REALM], a[A_NONCE]
    key = hashlib.md5(f"alice:{realm.decode()}:alice-pw".encode()).digest()
    msg, tid = encode(ALLOCATE, 0, [(A_TRANSPORT, bytes([6, 0, 0, 0])), (A_USERNAME, b"alice"), (A_REALM, realm),
                                    (A_NONCE, nonce)], key)
    u.sendto(msg, relay.addr)
    assert error_code(decode(u.recv(2048))[3]) == 400
    u.close()

    ctl, relayed = tcp_allocation(relay)
    peer_attr = [(A_PEER, xor_addr("127.0.0.1", peer.port))]
    assert ctl.request(CONNECT, peer_attr)[0] == 2
    c, a, _ = ctl.request(CONNECT, peer_attr)
    assert error_code(a) == 446  # one connection per peer address
    closed_port = free_port(kinds=(socket.SOCK_STREAM,))
    c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", closed_port))])
    assert error_code(a) == 447
    # ConnectionBind: unknown id; and another user's credentials on a real id.
    _, c, a = bind(relay, 0x7eadbeef)
    assert error_code(a) == 400
    c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", EchoPeer().port))])
    conn_id = struct.unpack("!I", a[A_CONNECTION_ID])[0]
    _, c, a = bind(relay, conn_id, user="bob")
    assert error_code(a) == 441
    # Connect on a UDP-relaying allocation made over TCP.
    ctl2 = Stream(relay.addr)
    assert ctl2.request(ALLOCATE, [(A_TRANSPORT, bytes([17, 0, 0, 0]))])[0] == 2
    c, a, _ = ctl2.request(CONNECT, peer_attr)
    assert error_code(a) == 400
    for s in (ctl, ctl2):
        s.close()
    peer.close()


def test_one_allocation_cannot_take_every_peer_connection(relay):
    """[allocation].max_tcp_peer_connections (3 here): a fourth Connect on one allocation gets
    508 and a fourth peer connecting to it is closed unannounced (tcp_peer_limit); another
    user's allocation still connects, and a closed connection makes room again."""
    peers = [EchoPeer() for _ in range(MAX_PEER_CONNECTIONS + 2)]
    ctl, relayed = tcp_allocation(relay)
    other = None
    try:
        ids = []
        for p in peers[:MAX_PEER_CONNECTIONS]:
            c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", p.port))])
            assert c == 2, error_code(a)
            ids.append(struct.unpack("!I", a[A_CONNECTION_ID])[0])
        c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peers[-2].port))])
        assert error_code(a) == 508
        # A peer's own connection to the full allocation: closed, no ConnectionAttempt.
        dropped = metric(relay, 'turn_drops_total{reason="tcp_peer_limit"}')
        s = socket.create_connection(relayed, timeout=5)
        s.settimeout(5)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        s.close()
        deadline = time.monotonic() + 5
        while metric(relay, 'turn_drops_total{reason="tcp_peer_limit"}') != dropped + 1:
            assert time.monotonic() < deadline, "tcp_peer_limit not counted"
            time.sleep(0.05)
        with pytest.raises(socket.timeout):
            ctl.indication(timeout=0.5)
        # Another allocation is not affected.
        other, _ = tcp_allocation(relay, user="bob")
        c, a, _ = other.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peers[-1].port))])
        assert c == 2, error_code(a)
        # One of the three ends (its bind never comes: closed at the bind timeout is too slow
        # here, so bind it and close the data connection): room for another.
        data, c, a = bind(relay, ids[0])
        assert c == 2, error_code(a)
        data.close()
        deadline = time.monotonic() + 5
        while True:
            c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peers[-2].port))])
            if c == 2:
                break
            assert error_code(a) == 508 and time.monotonic() < deadline, error_code(a)
            time.sleep(0.1)
    finally:
        ctl.close()
        if other is not None:
            other.close()
        for p in peers:
            p.close()


def test_connect_waits_thirty_seconds_for_a_slow_peer(relay):
    """RFC 6062 section 5.2: a Connect's attempt times out after at least 30 s. A peer whose
    accept queue is full (Linux drops the SYNs; the relay's kernel retransmits them at about 1,
    3, 7 and 15 s) starts accepting after 12 s: the Connect succeeds. (The relay gave up after
    10 s, with 447, before a review found it.)"""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.3)
    ctl, _ = permitted_tcp_allocation(relay)

    def accept_late():
        time.sleep(12)
        while True:
            try:
                ls.accept()[0].close()
            except OSError:
                return

    try:
        extra = [(A_USERNAME, b"alice"), (A_REALM, ctl.realm), (A_NONCE, ctl.nonce)]
        msg, tid = encode(CONNECT, 0, [(A_PEER, xor_addr("127.0.0.1", port))] + extra, ctl.key)
        start = time.monotonic()
        ctl.s.sendall(msg)
        threading.Thread(target=accept_late, daemon=True).start()
        while True:
            _, c, rtid, a = decode(ctl.recv_msg(timeout=40))
            if rtid == tid:
                break
        took = time.monotonic() - start
        assert c == 2, f"Connect answered {error_code(a)} after {took:.1f} s"
        assert took > 10, f"the peer accepted nothing before 12 s, yet the Connect succeeded after {took:.1f} s"
    finally:
        ctl.close()
        ls.close()
        for f in fillers:
            f.close()


def test_a_tcp_relayed_port_held_elsewhere_is_skipped(tmp_path):
    """A TCP relayed listener takes SO_REUSEPORT (the Connects' outgoing connections bind its
    address), which would let it share a port another socket of the same user listens on with
    SO_REUSEPORT too, the kernel then splitting that port's peer connections between the two. A
    port something else holds is skipped, as for UDP: with only that port in the range a TCP
    Allocate gets 508 (it got the port, before a review found it); once the port is free, the
    same Allocate gets it."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(8)
    port = holder.getsockname()[1]
    r = start_tcp_relay(tmp_path, relay_ports=(port, port))
    try:
        ctl = Stream(r.addr)
        c, a, _ = ctl.request(ALLOCATE, [(A_TRANSPORT, bytes([6, 0, 0, 0]))])
        ctl.close()
        assert c == 3 and error_code(a) == 508, f"TCP Allocate on a held port: class {c}, {error_code(a)}"
        holder.close()
        ctl, relayed = tcp_allocation(r)
        ctl.close()
        assert relayed[1] == port
    finally:
        holder.close()
        stop_process(r.proc)


@pytest.mark.parametrize("tls", [False, True])
def test_bandwidth_limit_holds_on_tcp_pipes(tmp_path, tls):
    """[allocation].bandwidth_bps limits a TCP allocation's pipes too, both directions together,
    by not reading a side while the allocation's budget is spent: nothing is dropped, the sender
    waits. 200 KB each way through an echoing peer at 800 kbit/s (100 kB/s, a 64 KiB burst) take
    about (400 - 64) / 100 = 3.4 s, and arrive whole; before a review found the pipes unlimited
    they took a few milliseconds."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=t", "-keyout", str(key), "-out", str(cert)], check=True,
                   capture_output=True)
    tls_port = free_port(kinds=(socket.SOCK_STREAM,))
    r = start_tcp_relay(tmp_path, server_extra=f'listen_tls = ["127.0.0.1:{tls_port}"]', extra=f"""[tls]
certificate = "{cert}"
private_key = "{key}"
[allocation]
bandwidth_bps = 800000
""")
    r.tls_addr = ("127.0.0.1", tls_port)
    peer = EchoPeer()
    try:
        for _ in range(100):
            try:
                socket.create_connection(r.tls_addr, timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        ctl, _ = tcp_allocation(r, tls)
        c, a, _ = ctl.request(CONNECT, [(A_PEER, xor_addr("127.0.0.1", peer.port))])
        assert c == 2, error_code(a)
        data, c, a = bind(r, struct.unpack("!I", a[A_CONNECTION_ID])[0], tls)
        assert c == 2, error_code(a)
        payload = os.urandom(200_000)
        start = time.monotonic()
        echoed = pump(data, payload, len(payload), timeout=30)
        took = time.monotonic() - start
        assert echoed == payload
        assert took > 2.5, f"400 kB at 100 kB/s with a 64 KiB burst in {took:.2f} s"
        assert took < 20, f"400 kB at 100 kB/s took {took:.1f} s"
        data.close()
        ctl.close()
    finally:
        peer.close()
        stop_process(r.proc)
