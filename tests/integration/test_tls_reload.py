"""Certificate renewal without a restart: turn-relay re-reads [tls] certificate and private_key
on SIGHUP. The real process, real TLS clients (Python's ssl): after the files are replaced and
SIGHUP sent, new connections get the new certificate, a connection made before keeps working,
and the log says `tls_reloaded` with the new subject and expiry. Files that do not load leave
the current certificate in place (`tls_reload_failed`) and the process serving. SIGHUP does not
stop or drain the relay.
"""

import os
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

from test_turn_probe import Relay


def make_cert(dirpath, cn):
    cert, key = dirpath / f"{cn}.pem", dirpath / f"{cn}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(cert)], check=True,
                   capture_output=True)
    return cert, key


def tls_connect(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
    return s


def cn_of(s):
    der = s.getpeercert(binary_form=True)
    p = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der, capture_output=True)
    return p.stdout.decode().strip()


def read_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            break
        b += chunk
    return b


def binding(s):
    """A Binding over the stream; True if its whole success answer came back."""
    tid = os.urandom(12)
    s.sendall(struct.pack("!HHI", 0x0001, 0, 0x2112A442) + tid)
    hdr = read_exact(s, 20)
    if len(hdr) != 20:
        return False
    body = read_exact(s, struct.unpack("!H", hdr[2:4])[0])
    return hdr[:2] == b"\x01\x01" and hdr[8:20] == tid and len(body) == struct.unpack("!H", hdr[2:4])[0]


def wait_log(relay, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in relay.log.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def test_sighup_reloads_the_certificate(tmp_path):
    relay = Relay(tmp_path)
    try:
        first = tls_connect(relay.tls_port)
        assert "probe.test" in cn_of(first)
        assert binding(first)
        assert "probe.test" in relay.log.read_text()  # the start line names the certificate
        new_cert, new_key = make_cert(tmp_path, "renewed.test")
        os.replace(new_cert, relay.cert)
        os.replace(new_key, relay.key)
        relay.proc.send_signal(signal.SIGHUP)
        assert wait_log(relay, "event=tls_reloaded"), relay.log.read_text()[-2000:]
        assert "renewed.test" in relay.log.read_text().split("event=tls_reloaded", 1)[1].splitlines()[0]
        # The outcome line follows the certificate's and names it (it said
        # applied=none, before tls_reloaded, for a certificate-only reload).
        assert wait_log(relay, "event=config_reloaded"), relay.log.read_text()[-2000:]
        after = relay.log.read_text().split("event=tls_reloaded", 1)[1]
        outcome = [ln for ln in after.splitlines() if "event=config_reloaded" in ln]
        assert outcome and "[tls] certificate" in outcome[0], after[:2000]
        second = tls_connect(relay.tls_port)
        assert "renewed.test" in cn_of(second)
        assert binding(first), "a connection made before the reload must keep working"
        assert binding(second)
        # A broken file: the current certificate stays, the relay keeps serving.
        relay.cert.write_text("not a certificate\n")
        relay.proc.send_signal(signal.SIGHUP)
        assert wait_log(relay, "event=tls_reload_failed"), relay.log.read_text()[-2000:]
        third = tls_connect(relay.tls_port)
        assert "renewed.test" in cn_of(third)
        assert binding(third)
        assert relay.proc.poll() is None
        assert "event=draining" not in relay.log.read_text()
        for s in (first, second, third):
            s.close()
    finally:
        relay.proc.terminate()
        relay.proc.wait(timeout=10)
