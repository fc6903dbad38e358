"""A real Prometheus server (Debian's `prometheus`) scraping turn-relay's /metrics.

Operators scrape the relay with Prometheus; these tests run the real thing on loopback:
  * promtool's linter accepts the exposition (names, types, HELP, _total suffixes);
  * Prometheus scrapes the relay's target without errors (target health "up", no
    lastError, up == 1);
  * after coturn's turnutils_uclient relays traffic through the server, the series
    Prometheus stored (turn_relayed_packets_total, turn_requests_total,
    turn_allocations) equal what the relay's own /metrics says at the same moment, and
    the relayed-packet counters moved by at least what uclient sent.

Skipped (not failed) when the server under test is coturn, which has no Prometheus
endpoint in this configuration, or when the prometheus package is missing.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import free_port, log_tail, stop_process, _ACTIVE_LOGS
from test_uclient import run_uclient, assert_no_loss

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


class Prometheus:
    def __init__(self, workdir, metrics_port, rule_files=()):
        self.port = free_port(kinds=(socket.SOCK_STREAM,))
        cfg = workdir / "prometheus.yml"
        rules = "rule_files:\n" + "".join(f"  - '{r}'\n" for r in rule_files) if rule_files else ""
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n" + rules +
            "scrape_configs:\n  - job_name: turn-relay\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{metrics_port}']\n")
        self.log_path = workdir / "prometheus.log"
        logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            cwd=workdir, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited:\n" + log_tail(self.log_path))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        stop_process(self.proc)
        raise RuntimeError("prometheus not ready within 60 s:\n" + log_tail(self.log_path))

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body.get("status") == "success", body
        return body["data"]

    def value(self, query):
        """Sum of an instant query's samples, or None if it has none."""
        res = self.api("query", query=query)["result"]
        return sum(float(s["value"][1]) for s in res) if res else None

    def close(self):
        stop_process(self.proc)


@pytest.fixture(scope="module")
def prometheus(turn_server, tmp_path_factory):
    if turn_server.kind != "turnrelay":
        pytest.skip("only turn-relay exports Prometheus metrics here")
    if not os.path.exists(PROMETHEUS):
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    p = Prometheus(tmp_path_factory.mktemp("prometheus"), turn_server.metrics_port)
    _ACTIVE_LOGS.append(("prometheus", p.log_path))
    yield p
    _ACTIVE_LOGS.remove(("prometheus", p.log_path))
    p.close()


def wait_for(fn, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_exposition_passes_promtool_lint(server):
    if server.kind != "turnrelay":
        pytest.skip("only turn-relay exports Prometheus metrics here")
    text = server.metrics()
    assert text and "turn_relayed_packets_total" in text
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()


def test_prometheus_scrapes_the_relay(server, prometheus):
    def healthy():
        ts = prometheus.api("targets")["activeTargets"]
        return ts and ts[0]["health"] == "up" and ts[0]["lastError"] == "" and ts
    targets = wait_for(healthy, what="the turn-relay target to be up")
    assert targets[0]["labels"]["job"] == "turn-relay"
    assert wait_for(lambda: prometheus.value('up{job="turn-relay"}') == 1.0, what="up == 1")


def test_prometheus_series_match_the_relay_after_traffic(server, prometheus, turnutils_peer):
    q_c2p = 'sum(turn_relayed_packets_total{job="turn-relay",direction="client_to_peer"})'
    q_p2c = 'sum(turn_relayed_packets_total{job="turn-relay",direction="peer_to_client"})'
    # The relay exports its counters from the start (at 0): wait for the first scrape.
    before = wait_for(lambda: (prometheus.value(q_c2p),) if prometheus.value(q_c2p) is not None else None,
                      what="the relayed-packet series")[0]
    rc, out, cmd = run_uclient(server, ["-e", "127.0.0.1", "-r", str(turnutils_peer.port)], 4)
    s, _ = assert_no_loss(rc, out, cmd)

    # Wait until Prometheus has scraped the relay's final figures: its value equals what
    # the relay's own endpoint says now (no traffic runs any more).
    for name, labels in (("turn_relayed_packets_total", {"direction": "client_to_peer"}),
                         ("turn_relayed_packets_total", {"direction": "peer_to_client"}),
                         ("turn_requests_total", {"method": "allocate", "code": "200"}),
                         ("turn_allocations", {})):
        want = server.metric(name, **labels)
        assert want is not None, f"{name}{labels} missing from /metrics"
        sel = ",".join(['job="turn-relay"'] + [f'{k}="{v}"' for k, v in labels.items()])
        q = f"sum({name}{{{sel}}})"
        wait_for(lambda q=q, want=want: prometheus.value(q) == want, what=f"{q} == {want} (relay's /metrics)")
    # uclient's messages were all relayed (both ways, one packet per message per leg).
    c2p = prometheus.value(q_c2p)
    p2c = prometheus.value(q_p2c)
    assert c2p - before >= s["sent"], (c2p, before, s)
    assert p2c >= s["recv"], (p2c, s)
