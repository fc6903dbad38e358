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
"""

import functools
import http.server
import json
import os
import shutil
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


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chromium")
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
    service = Service(CHROMEDRIVER, log_path=str(workdir / "chromedriver.log"))
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


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_chromium_datachannel_relay_only(server, browser, http_page, family):
    r = _run_page(browser, http_page, server, server.url(family), n=8)
    detail = json.dumps({k: v for k, v in r.items() if k not in ("sent", "received1",
                                                                 "received2")}, indent=1)
    assert r.get("ok"), f"data channel exchange failed: {r.get('error')}\n{detail}"
    assert len(r["received2"]) == 8 and len(r["received1"]) == 16
    for name in ("pc1", "pc2"):
        cands = r["candidates"][name]
        assert cands, f"{name} gathered no candidates"
        assert all(" typ relay " in c for c in cands), cands
    for key in ("pair1", "pair2"):
        pair = r[key]
        assert pair, f"no selected candidate pair in getStats ({key})\n{detail}"
        assert pair["local"]["type"] == "relay" and pair["remote"]["type"] == "relay", detail
        assert pair["local"]["relayProtocol"] == "udp", detail
        assert server.relay_min <= pair["local"]["port"] <= server.relay_max, detail
        assert server.relay_min <= pair["remote"]["port"] <= server.relay_max, detail
        assert pair["bytesSent"] > 0 and pair["bytesReceived"] > 0, detail


def test_chromium_wrong_password_reports_401(server, browser, http_page):
    r = _run_page(browser, http_page, server, server.url(4), password="wrong", mode="gather")
    assert r["candidates"]["pc1"] == [], f"relay candidate despite a wrong password: {r}"
    codes = {e["errorCode"] for e in r["errors"]}
    assert codes == {401}, f"expected onicecandidateerror 401, got {r['errors']}"
