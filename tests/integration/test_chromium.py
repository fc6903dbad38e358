"""Headless Chromium: a page with two RTCPeerConnections using iceTransportPolicy 'relay'
opens a data channel through the server under test (data/webrtc_relay.html).

Driven through chromedriver with python3-selenium (Debian package). The page is served by
an http.server on 127.0.0.1 started by the test; it reports its result in window.__result,
which the test polls with a bounded deadline.

Loopback notes (investigated with Chromium 156 on Debian 12):
- TURN to 127.0.0.1 and [::1] works without extra flags: Chromium opens its TURN client
  socket on an unbound address and the kernel sources it from 127.0.0.1 (::1), so the server
  sees loopback clients only. --allow-loopback-in-peer-connection is only needed for host
  candidates on loopback, which iceTransportPolicy 'relay' never uses.
- Relayed candidates are 127.0.0.1 (the server's relay_ips), and the peer of each
  allocation is the other allocation's relayed address on the same server. turn-relay denies
  loopback and its own relay addresses as peers by default; the test configuration's
  allow_peers re-permits 127.0.0.0/8 and ::1 (coturn needs --allow-loopback-peers).
- Chromium hides the related address of relay candidates (raddr 0.0.0.0) and reports TURN
  failures through RTCPeerConnection.onicecandidateerror (e.g. errorCode 401).
- turns: (TURN over TLS) is verified like any HTTPS connection: the tests trust a throwaway
  CA through an NSS database in a HOME of their own (see the TLS section below); a
  certificate from another CA or without the URL's host name gives errorCode 701.
"""

import contextlib
import functools
import http.server
import json
import os
import signal
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
PAGE_TIMEOUT_S = 40

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("chromium or chromedriver not installed", allow_module_level=True)


def _children(pid: int):
    """All descendants of pid, from /proc."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            parent.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in parent.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def http_page():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(HERE / "data"))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/webrtc_relay.html"
    httpd.shutdown()
    httpd.server_close()


@contextlib.contextmanager
def _launch_browser(workdir: Path, env=None):
    """Headless Chromium under chromedriver with a new profile in workdir; `env`: the
    environment of chromedriver and so of Chromium (None: this process's)."""
    userdata = tempfile.mkdtemp(prefix="profile-", dir=workdir)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-extensions",
              "--disable-default-apps", "--metrics-recording-only", "--mute-audio",
              f"--user-data-dir={userdata}"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_path=str(workdir / "chromedriver.log"), env=env)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
    driver_pid = service.process.pid
    try:
        yield driver
    finally:
        procs = [p for p in _children(driver_pid) if "chrom" in _cmdline(p)]
        try:
            driver.quit()
        except Exception:
            pass
        # Whatever survived quit(): kill by PID (only the processes chromedriver started).
        for p in procs:
            if "chrom" in _cmdline(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if service.process and service.process.poll() is None:
            os.kill(driver_pid, signal.SIGKILL)
            service.process.wait(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with _launch_browser(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


def _run_page(browser, url, server, turn_url, password=None, **params):
    qs = urllib.parse.urlencode({"turn": turn_url, "user": server.username,
                                 "pass": password if password is not None else server.password,
                                 **params})
    browser.get(f"{url}?{qs}")
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while time.monotonic() < deadline:
        r = browser.execute_script("return window.__result")
        if r:
            return r
        time.sleep(0.25)
    log = browser.execute_script("return document.getElementById('log').textContent")
    pytest.fail(f"page did not finish within {PAGE_TIMEOUT_S}s; page log:\n{log}")


def assert_relayed_call(r, server, protocol, what):
    """What every relay-only page run asserts (also test_tcp_tls.py's): the exchange finished,
    both peer connections gathered relay candidates only, and each selected pair is relay to
    relay with the local candidate allocated over `protocol` in the server's port range.
    Returns the run's details for further assertion messages."""
    detail = json.dumps({k: v for k, v in r.items() if k not in ("sent", "received1", "received2")},
                        indent=1)
    assert r.get("ok"), f"data channel {what} failed: {r.get('error')}\n{detail}"
    for name in ("pc1", "pc2"):
        cands = r["candidates"][name]
        assert cands, f"{name} gathered no candidates"
        assert all(" typ relay " in c for c in cands), cands
    for key in ("pair1", "pair2"):
        pair = r[key]
        assert pair, f"no selected candidate pair in getStats ({key})\n{detail}"
        assert pair["local"]["type"] == "relay" and pair["remote"]["type"] == "relay", detail
        assert pair["local"]["relayProtocol"] == protocol, detail
        assert server.relay_min <= pair["local"]["port"] <= server.relay_max, detail
    return detail


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_chromium_datachannel_relay_only(server, browser, http_page, family):
    r = _run_page(browser, http_page, server, server.url(family), n=8)
    detail = assert_relayed_call(r, server, "udp", "exchange")
    assert len(r["received2"]) == 8 and len(r["received1"]) == 16
    for key in ("pair1", "pair2"):
        pair = r[key]
        assert server.relay_min <= pair["remote"]["port"] <= server.relay_max, detail
        assert pair["bytesSent"] > 0 and pair["receivedAllPairs"] > 0, detail


def test_chromium_wrong_password_reports_401(server, browser, http_page):
    r = _run_page(browser, http_page, server, server.url(4), password="wrong", mode="gather")
    assert r["candidates"]["pc1"] == [], f"relay candidate despite a wrong password: {r}"
    codes = {e["errorCode"] for e in r["errors"]}
    assert codes == {401}, f"expected onicecandidateerror 401, got {r['errors']}"


# -------------------------------------------------------------------------------------
# TURN over TLS (turns:) with a certificate Chromium really verifies
#
# Trust route (checked with Chromium 156 on Debian 12): the `turns:` TLS connection is made
# by Chromium's network stack (not by libwebrtc's own TLS code), so the certificate goes
# through the browser's normal verifier, which on Linux also trusts CAs from the NSS
# database in $HOME/.pki/nssdb. The tests make a throwaway CA (tls_ca.py), put it in a
# fresh NSS database with trust "C,," (TLS server issuer only) in a HOME directory of their
# own, and give that HOME only to the chromedriver/Chromium they start: no flag that
# weakens verification, nothing system-wide. The host name checked is the one written in
# the `turns:` URL: `localhost` must be a DNS SAN, `127.0.0.1` and `[::1]` IP SANs of their
# own (a DNS-only certificate fails for the IP URLs and vice versa); the CN is ignored.
#
# What the negative tests show: the same browser refuses a certificate with every name from
# a CA it does not trust, and one from the trusted CA that lacks the URL's name; a browser
# without that NSS database refuses the good certificate. Chromium then reports
# onicecandidateerror 701 and gathers no relay candidate (so, with iceTransportPolicy
# 'relay', nothing can connect), and turn-relay counts the connection closed during the
# TLS handshake.

import tls_ca  # noqa: E402
from conftest import start_server, stop_server  # noqa: E402

TLS_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
# subjectAltName entry for each URL host.
TLS_SAN = {"localhost": "DNS:localhost", "127.0.0.1": "IP:127.0.0.1", "[::1]": "IP:::1"}
TLS_IDS = ["localhost", "ipv4", "ipv6"]


class Pki:
    def __init__(self, root: Path):
        all_names = ",".join(TLS_SAN.values())
        self.ca = tls_ca.make_ca(root / "ca", "turnrelay-test-ca")
        self.foreign_ca = tls_ca.make_ca(root / "foreign", "untrusted-test-ca")
        # Every name the tests use, from the trusted CA.
        self.good = tls_ca.make_server_cert(root / "certs", self.ca, "good", all_names)
        # Every name, from a CA no browser here trusts.
        self.foreign = tls_ca.make_server_cert(root / "certs", self.foreign_ca, "foreign",
                                               all_names)
        # From the trusted CA, every name but the one of `host` in the SAN; that one is the
        # CN, which must not count.
        self.missing = {h: tls_ca.make_server_cert(
            root / "certs", self.ca, f"without-{i}",
            ",".join(v for k, v in TLS_SAN.items() if k != h), cn=h.strip("[]"))
            for h, i in zip(TLS_HOSTS, TLS_IDS)}
        self.home = root / "home"
        self.nssdb = tls_ca.make_nss_home(self.home, self.ca)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not os.path.exists(tls_ca.CERTUTIL):
        pytest.fail(f"{tls_ca.CERTUTIL} missing: install libnss3-tools (deploy/install-deps.sh)")
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_browser(tmp_path_factory, pki):
    """Chromium whose HOME holds an NSS database trusting the test CA (and nothing else
    differs from `browser`)."""
    env = dict(os.environ, HOME=str(pki.home))
    with _launch_browser(tmp_path_factory.mktemp("chromium-tls"), env=env) as driver:
        yield driver


@contextlib.contextmanager
def _tls_server(workdir: Path, cert: "tls_ca.ServerCert"):
    """The server under test with a TLS listener presenting `cert`."""
    srv = start_server(workdir, tls_files=(cert.chain, cert.key))
    try:
        yield srv
        srv.assert_alive()
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    with _tls_server(tmp_path_factory.mktemp("turnserver-tls"), pki.good) as srv:
        yield srv


def _m(server, name, **labels) -> float:
    v = server.metric(name, **labels)
    return 0.0 if v is None else v


def _poll(fn, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    v = fn()
    while not pred(v) and time.monotonic() < deadline:
        time.sleep(0.1)
        v = fn()
    return v


def _tls_counters(server) -> dict:
    return {"accepted": _m(server, "turn_connections_accepted_total", transport="tls"),
            "handshake_failed": _m(server, "turn_connections_closed_total", transport="tls",
                                   reason="tls_handshake"),
            "allocate_200": _m(server, "turn_requests_total", method="allocate", code="200")}


@pytest.mark.parametrize("host", TLS_HOSTS, ids=TLS_IDS)
def test_chromium_datachannel_turns_verified(tls_server, tls_browser, http_page, host):
    """turns: with a certificate from the CA the browser trusts: data channel over TLS."""
    server = tls_server
    turn_url = f"turns:{host}:{server.tls_port}?transport=tcp"
    before = _tls_counters(server)
    r = _run_page(tls_browser, http_page, server, turn_url, n=6, hold=1)
    try:
        # The local relayed candidates were allocated over TLS, through this URL.
        detail = assert_relayed_call(r, server, "tls", f"over {turn_url}")
        assert r["errors"] == [], detail
        assert len(r["received2"]) == 6 and len(r["received1"]) == 12
        for key in ("pair1", "pair2"):
            pair = r[key]
            assert pair["local"]["url"] == turn_url, detail
            assert server.relay_min <= pair["remote"]["port"] <= server.relay_max, detail
            assert pair["bytesSent"] > 0 and pair["receivedAllPairs"] > 0, detail
        if server.kind == "turnrelay":
            # While both peer connections are open: their allocations and TLS connections
            # are live on the server (the page reaches it through turns: only; this server
            # has no TCP listener).
            open_tls = _poll(lambda: _m(server, "turn_connections", transport="tls"),
                             lambda v: v >= 2)
            assert open_tls >= 2, f"{open_tls} open TLS connections for two peer connections"
            allocs = _m(server, "turn_allocations", family="ipv4")
            assert allocs >= 2, f"{allocs} live allocations for two peer connections"
            after = _tls_counters(server)
            assert after["accepted"] - before["accepted"] >= 2, (before, after)
            assert after["allocate_200"] - before["allocate_200"] >= 2, (before, after)
            assert after["handshake_failed"] == before["handshake_failed"], (before, after)
    finally:
        tls_browser.execute_script("if (window.__closeAll) window.__closeAll();")
    if server.kind == "turnrelay":
        # Closing the peer connections releases them on the server.
        left = _poll(lambda: (_m(server, "turn_connections", transport="tls"),
                              _m(server, "turn_allocations", family="ipv4")),
                     lambda v: v == (0.0, 0.0))
        assert left == (0.0, 0.0), f"(TLS connections, allocations) left after close: {left}"


def _assert_refused(server, browser, http_page, host):
    """pc1 gathers with turns:host: no relay candidate, a 701 candidate error, and (turn-relay)
    the connection ended in the TLS handshake without any allocation."""
    turn_url = f"turns:{host}:{server.tls_port}?transport=tcp"
    before = _tls_counters(server)
    r = _run_page(browser, http_page, server, turn_url, mode="gather")
    assert r["candidates"]["pc1"] == [], f"relay candidate through an untrusted certificate: {r}"
    assert r["errors"], f"no onicecandidateerror: {r}"
    assert {(e["url"], e["errorCode"]) for e in r["errors"]} == {(turn_url, 701)}, r["errors"]
    if server.kind == "turnrelay":
        after = _poll(lambda: _tls_counters(server),
                      lambda v: v["handshake_failed"] > before["handshake_failed"])
        assert after["accepted"] > before["accepted"], (before, after)
        assert after["handshake_failed"] > before["handshake_failed"], (
            f"no TLS connection closed in the handshake: {before} -> {after}")
        assert after["allocate_200"] == before["allocate_200"], (before, after)


@pytest.mark.parametrize("host", TLS_HOSTS, ids=TLS_IDS)
@pytest.mark.parametrize("kind", ["untrusted-ca", "name-missing"])
def test_chromium_turns_refuses_bad_certificate(tmp_path, pki, tls_browser, http_page, kind,
                                                host):
    """The browser of the test above refuses a certificate from a CA it does not trust
    (every name present), and one from the trusted CA without the URL's host name in the
    subjectAltName (it is the CN)."""
    cert = pki.foreign if kind == "untrusted-ca" else pki.missing[host]
    with _tls_server(tmp_path, cert) as server:
        _assert_refused(server, tls_browser, http_page, host)


def test_chromium_turns_untrusted_without_nssdb(tls_server, browser, http_page):
    """Control: the good certificate is refused by a browser without the test NSS database
    (the `browser` fixture), so that database is what makes the test CA trusted."""
    _assert_refused(tls_server, browser, http_page, "localhost")
