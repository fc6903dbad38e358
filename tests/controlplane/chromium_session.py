"""Headless Chromium for the network-namespace WebRTC tests, run inside the namespace that
`ip netns exec` put this process in: a blank page served from the namespace's own loopback (so
the page is a secure context for WebRTC), chromedriver + Debian's Chromium through selenium,
and a clean-up that leaves no browser process behind even if quit() hangs.

    with chromium_page(CHROMIUM, CHROMEDRIVER, timeout_s=40) as driver:
        result = driver.execute_async_script(JS, ...)
"""
import contextlib
import functools
import http.server
import os
import signal
import subprocess
import tempfile
import threading


def descendants(pid):
    """All descendants of pid, from /proc."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            parent.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(d))
        except (OSError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in parent.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_pids(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def chromium_page(chromium, chromedriver, timeout_s, extra_args=()):
    """A driver on a blank page; `timeout_s` bounds each execute_async_script."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    workdir = tempfile.mkdtemp(prefix="turn-chromium-")
    with open(os.path.join(workdir, "index.html"), "w") as f:
        f.write("<!DOCTYPE html><html><head><meta charset='utf-8'><title>webrtc</title></head><body></body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=workdir)
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # the namespace's own loopback
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-extensions", "--disable-default-apps", "--metrics-recording-only", "--mute-audio",
              "--disable-dev-shm-usage", f"--user-data-dir={os.path.join(workdir, 'profile')}", *extra_args]:
        opts.add_argument(a)
    service = Service(chromedriver, log_path=os.path.join(workdir, "chromedriver.log"))
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=opts)
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(timeout_s)
        driver.get(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
        yield driver
    finally:
        proc = getattr(service, "process", None)
        procs = descendants(proc.pid) if proc else []
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        kill_pids([p for p in procs if os.path.exists(f"/proc/{p}")])  # whatever survived quit()
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        httpd.shutdown()
        httpd.server_close()
        subprocess.run(["rm", "-rf", workdir], check=False)
