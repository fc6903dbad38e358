#!/usr/bin/env python3
"""turn-dataplane never blocks on a control plane that does not read or accept (dataplane/main.cc,
IpcClient). The test plays the control plane on its own Unix socket and asks for counters
(CountersRequest) faster than it reads the answers, until the dataplane's socket has no room for
them:

- a control plane that reads late (1 s) keeps its link and gets every answer;
- one that reads nothing has its link dropped after the dataplane's bound (3 s), and the
  dataplane connects again with a new Hello;
- SIGTERM while the dataplane waits for room stops it at once;
- SIGTERM stops it at once too while the control plane accepts no connection and its listen
  backlog is full (a blocking connect() would wait for it).

Each stop: exit 0, the totals printed, no /var/run/dpdk/<prefix> left. Ports are net_null, no
namespaces, no hugepages (--no-huge), no traffic.

Usage: ipc_stuck_peer.py <turn-dataplane>
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402
from netns_smoke import hdr, listen_ipc  # noqa: E402  (a message header; the control plane's end of the socket)

SOCK = f"/tmp/dp-stuck-{os.getpid()}.sock"
HELLO, COUNTERS_REQUEST, COUNTERS_REPORT = 1, 20, 21
SEND_WAIT = 3.0  # IpcClient::kSendWaitMs


def start(dp_bin, prefix):
    return subprocess.Popen([dp_bin, "-l", "0,1", "--no-huge", "-m", "256", "--no-pci", f"--file-prefix={prefix}",
                             "--log-level=lib.eal:error", "--vdev=net_null0", "--vdev=net_null1", "--",
                             "--nic", "net_null0", "--exc", "net_null1", "--ipc", SOCK, "--flows", "1024",
                             "--no-kernel-mirror"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def sigterm(check, dp, prefix, name):
    """SIGTERM: exit 0 within 3 s with the totals, nothing left in /var/run/dpdk."""
    dp.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        out = dp.communicate(timeout=5)[0]
        took = time.monotonic() - t0
        ok = check(dp.returncode == 0 and took < 3 and "ipc_applied" in out,
                   f"{name}: SIGTERM: exit {dp.returncode} (want 0) {took:.1f} s later, totals printed")
    except subprocess.TimeoutExpired:
        dp.kill()
        out = dp.communicate()[0]
        ok = check(False, f"{name}: SIGTERM: still running 5 s later")
    left = os.path.exists(f"/var/run/dpdk/{prefix}")
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    ok = check(not left, f"{name}: /var/run/dpdk/{prefix} {'left behind' if left else 'removed'}") and ok
    return out, ok


def msg_type(d):
    return struct.unpack_from("<HHIQ", d)[1] if len(d) >= 16 else None


def hello(conn):
    conn.settimeout(5)
    return msg_type(conn.recv(4096)) == HELLO


def flood(conn):
    """Sends CountersRequests until the dataplane takes no more (it waits to send answers
    nobody reads, and so reads no more requests); returns how many it took."""
    conn.setblocking(False)
    n = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            conn.send(hdr(COUNTERS_REQUEST, 16, n + 1))
            n += 1
        except BlockingIOError:
            time.sleep(0.2)  # the dataplane may still be reading: full for good if it stays full
            try:
                conn.send(hdr(COUNTERS_REQUEST, 16, n + 1))
                n += 1
            except BlockingIOError:
                break
    return n


def reports(conn, want, timeout):
    """Reads answers until `want` complete CountersReports (the last chunk of each) came."""
    conn.settimeout(timeout)
    got = 0
    try:
        while got < want:
            d = conn.recv(4096)
            if not d:
                break
            got += msg_type(d) == COUNTERS_REPORT and d[20] == 1
    except socket.timeout:
        pass
    return got


def not_reading(check, dp_bin):
    """Late and wedged readers, then SIGTERM while the dataplane waits for room."""
    prefix = f"dpstuck{os.getpid()}_1"
    srv = listen_ipc(SOCK)
    dp = start(dp_bin, prefix)
    try:
        conn, _ = srv.accept()
        check(hello(conn), "connected, Hello")

        # Late: the answers wait for room, then all go on the same link.
        n = flood(conn)
        time.sleep(1)
        got = reports(conn, n, 5)
        srv.setblocking(False)
        try:
            srv.accept()[0].close()
            reconnected = True
        except BlockingIOError:
            reconnected = False
        check(n > 0 and got == n and not reconnected,
              f"a control plane that reads 1 s late: {got} of {n} CountersRequests answered, "
              f"{'a new connection' if reconnected else 'the same link'}")

        # Wedged: connected but reading nothing. The link is dropped after the bound and the
        # dataplane connects again.
        n = flood(conn)
        t0 = time.monotonic()
        srv.settimeout(SEND_WAIT + 4)
        try:
            conn2, _ = srv.accept()
            took = time.monotonic() - t0
            check(hello(conn2) and took < SEND_WAIT + 2,
                  f"a control plane that reads nothing ({n} requests unanswered): link dropped, a new Hello "
                  f"on a new connection {took:.1f} s later (bound {SEND_WAIT:.0f} s)")
            conn.close()
            conn = conn2
        except socket.timeout:
            check(False, f"a control plane that reads nothing ({n} requests unanswered): no new connection "
                         f"within {SEND_WAIT + 4:.0f} s")

        # Stopped while it waits for room, well inside the bound.
        n = flood(conn)
        time.sleep(0.5)
        out, ok = sigterm(check, dp, prefix, f"waiting to answer a control plane that reads nothing ({n} requests)")
        check("has read nothing for 3000 ms, dropping the link" in out, "the dropped link is logged")
        if not ok:
            print(out)
        conn.close()
    except socket.timeout as e:
        check(False, f"the dataplane did not connect: {e}")
    finally:
        if dp.poll() is None:
            dp.kill()
            dp.communicate()
            shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
        srv.close()
        os.unlink(SOCK)


def not_accepting(check, dp_bin):
    """A listening socket whose backlog is full and that accepts nothing: SIGTERM still stops it."""
    prefix = f"dpstuck{os.getpid()}_2"
    srv = listen_ipc(SOCK)
    srv.listen(0)
    fillers = []
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c.setblocking(False)
        try:
            c.connect(SOCK)
            fillers.append(c)
        except BlockingIOError:
            c.close()
            break
    dp = start(dp_bin, prefix)
    try:
        time.sleep(3)  # EAL, ports, then connect attempts with backoff
        out, ok = sigterm(check, dp, prefix, f"a control plane that accepts nothing ({len(fillers)} connection(s) "
                                             "fill its backlog)")
        if not ok:
            print(out)
    finally:
        for c in fillers:
            c.close()
        srv.close()
        os.unlink(SOCK)


def main():
    dp_bin = sys.argv[1]
    check = Checks()
    not_reading(check, dp_bin)
    not_accepting(check, dp_bin)
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
