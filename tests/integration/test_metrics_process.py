"""turn-relay's /metrics beyond the TURN counters: what an operator's alerts need.

- `turn_relay_build_info{version}` is the version `turn-relay --version` prints.
- The standard process series agree with the kernel's view of the same process: start time
  (within the seconds it took to start), open descriptors (/proc/PID/fd), the soft descriptor
  limit (/proc/PID/limits), resident memory (VmRSS), CPU seconds (/proc/PID/stat).
- `turn_tls_certificate_expiry_timestamp_seconds` is the notAfter of the certificate in use, and
  follows a renewed certificate on reload.
- `turn_config_last_reload_successful` / `..._success_timestamp_seconds`: 1 and the start time
  at first; a reload of a file with a mistake sets 0 and keeps the time; a good reload sets 1
  and a new time.
"""

import re
import signal
from pathlib import Path
import subprocess
import time
import urllib.request
from datetime import datetime, timezone

import pytest

from conftest import find_turn_relay_bin, free_port, log_tail, make_self_signed_cert, sample_sum, stop_process
from test_startup import minimal_config, start_until_started
from test_turn_probe import Relay


def scrape(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def value(text, name, **labels):
    v = sample_sum(text, name, **labels)
    assert v is not None, f"no {name} in:\n{text[-3000:]}"
    return v


def not_after(cert):
    """A PEM certificate's notAfter, seconds since the epoch (openssl's own reading)."""
    out = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", str(cert)], capture_output=True,
                         text=True, check=True).stdout.strip()
    when = out.split("=", 1)[1]
    return datetime.strptime(when, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc).timestamp()


def wait_for(pred, what, log, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"{what}:\n" + log_tail(log)
        time.sleep(0.05)


@pytest.fixture
def relay(tmp_path):
    t0 = time.time()
    r = Relay(tmp_path, tls_files=make_self_signed_cert(tmp_path, days=30, name="30"))
    r.started_between = (t0, time.time())
    yield r
    alive = r.proc.poll() is None
    stop_process(r.proc, second_signal_after=1.0)
    assert alive, "turn-relay died:\n" + log_tail(r.log)


def test_build_info_and_process_series_match_the_kernels_view(relay):
    version = subprocess.run([find_turn_relay_bin(), "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    text = scrape(relay.metrics)
    assert value(text, "turn_relay_build_info", version=version) == 1

    pid = relay.proc.pid
    lo, hi = relay.started_between
    start = value(text, "process_start_time_seconds")
    # /proc/stat's boot time is whole seconds: the start can read up to 1 s early.
    assert lo - 2.0 <= start <= hi + 0.1, (lo, start, hi)

    soft = int(re.search(r"Max open files\s+(\d+)", open(f"/proc/{pid}/limits").read()).group(1))
    assert value(text, "process_max_fds") == soft
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    open_fds = value(text, "process_open_fds")
    assert 10 <= open_fds <= soft and abs(open_fds - fds) <= 3, (open_fds, fds)

    rss_kib = int(re.search(r"VmRSS:\s+(\d+) kB", open(f"/proc/{pid}/status").read()).group(1))
    rss = value(text, "process_resident_memory_bytes")
    assert 0.5 * rss_kib * 1024 <= rss <= 2 * rss_kib * 1024, (rss, rss_kib)
    assert value(text, "process_virtual_memory_bytes") >= rss

    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = int(subprocess.run(["getconf", "CLK_TCK"], capture_output=True, text=True).stdout)
    cpu_now = (int(stat[14 - 3]) + int(stat[15 - 3])) / ticks
    cpu = value(text, "process_cpu_seconds_total")
    assert 0 <= cpu <= cpu_now + 0.05, (cpu, cpu_now)


def test_certificate_expiry_and_reload_outcome_follow_reloads(relay, tmp_path):
    text = scrape(relay.metrics)
    assert value(text, "turn_tls_certificate_expiry_timestamp_seconds") == not_after(relay.cert)
    assert value(text, "turn_config_last_reload_successful") == 1
    started = value(text, "turn_config_last_reload_success_timestamp_seconds")
    lo, hi = relay.started_between
    assert int(lo) <= started <= hi + 1

    cfg = relay.dir / "relay.toml"
    good = cfg.read_text()
    # A mistake: refused as a whole, the gauge says so, the time stays.
    time.sleep(1.1)  # the next success's second differs from the start's
    cfg.write_text(good.replace("[server]\n", "[server]\nlisten_udp = []\n", 1))
    relay.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: value(scrape(relay.metrics), "turn_config_last_reload_successful") == 0,
             "the failed reload did not show", relay.log)
    assert "event=config_reload_failed" in relay.log.read_text()
    text = scrape(relay.metrics)
    assert value(text, "turn_config_last_reload_success_timestamp_seconds") == started

    # A renewed certificate (90 days instead of 30) and the file fixed.
    cert, key = make_self_signed_cert(tmp_path, days=90, name="90")
    cfg.write_text(good.replace(str(relay.cert), str(cert)).replace(str(relay.key), str(key)))
    before = time.time()
    relay.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: value(scrape(relay.metrics), "turn_config_last_reload_successful") == 1,
             "the good reload did not show", relay.log)
    assert "event=config_reloaded" in relay.log.read_text()
    text = scrape(relay.metrics)
    assert value(text, "turn_config_last_reload_success_timestamp_seconds") >= int(before)
    assert value(text, "turn_tls_certificate_expiry_timestamp_seconds") == not_after(cert)
    assert not_after(cert) - not_after(relay.cert) > 50 * 86400


def test_no_expiry_series_without_tls(tmp_path):
    port = free_port()
    cfg = minimal_config(tmp_path / "r.toml")
    cfg.write_text(cfg.read_text().replace('[metrics]\nlisten = ""', f'[metrics]\nlisten = "127.0.0.1:{port}"'))
    proc = start_until_started(cfg, tmp_path / "r.log")
    try:
        text = scrape(port)
        assert "turn_config_last_reload_successful 1" in text
        assert "turn_tls_certificate_expiry_timestamp_seconds" not in text
    finally:
        stop_process(proc)
