"""deploy/prometheus/ and deploy/grafana/: the scrape configuration, the alerting and
recording rules and the dashboard an operator installs, checked the way Prometheus itself
would use them:
  * promtool accepts the configuration and the rules, and the rules' unit tests
    (turn-relay.rules.test.yml: each alert fires on what it is for, after its `for`, and
    not on normal traffic) pass;
  * every turn_* series the rules and the dashboard use is one turn-relay exports or a rule
    records (a renamed metric breaks this test, not an operator's alerting);
  * a real Prometheus server loads the rules while scraping a real turn-relay (TCP and TLS
    listeners with a 90-day certificate, a dataplane socket nobody attached): every rule
    evaluates without error, the recording rules produce series, TurnRelayDataplaneDisconnected
    goes pending on the live turn_dataplane_connected == 0 and nothing else does, the new
    alerts' selectors match the live relay's series (certificate expiry, last reload,
    process_* file descriptors under job="turn-relay"), and every dashboard query evaluates.
"""

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port, log_tail, make_self_signed_cert  # noqa: F401
from test_prometheus import PROMETHEUS, PROMTOOL, Prometheus
from test_turn_probe import Relay

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy" / "prometheus"
RULES = DEPLOY / "turn-relay.rules.yml"
DASHBOARD = DEPLOY.parent / "grafana" / "turn-relay.json"


def dashboard_exprs():
    import json
    d = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in d["panels"] for t in p["targets"]]

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None and not Path(PROMTOOL).exists(),
                                reason="prometheus package not installed")


def promtool(*args):
    p = subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def test_promtool_accepts_config_and_rules_and_their_unit_tests_pass():
    rc, out = promtool("check", "config", "prometheus.yml")
    assert rc == 0, out
    rc, out = promtool("check", "rules", "turn-relay.rules.yml")
    assert rc == 0 and "SUCCESS" in out, out
    rc, out = promtool("test", "rules", "turn-relay.rules.test.yml")
    assert rc == 0 and "SUCCESS" in out, out


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules-relay")
    # Relay's own self-signed certificate is valid for 2 days, which the certificate expiry
    # alerts (< 14 days, < 2 days) would rightly report: a 90-day one is the healthy case.
    cert, key = make_self_signed_cert(d, days=90, name="90")
    r = Relay(d, extra=f'[dataplane]\nsocket = "{d / "dp.sock"}"\n', tls_files=(cert, key))
    yield r
    r.proc.terminate()
    r.proc.wait(timeout=10)


def exported_names(relay):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics}/metrics", timeout=3).read().decode()
    return set(re.findall(r"^# TYPE (\w+) ", text, re.M)) | set(re.findall(r"^(turn_\w+)[{ ]", text, re.M))


def test_every_series_the_rules_and_the_dashboard_use_is_exported(relay):
    used = set(re.findall(r"\b(turn_[a-z_]+)\b", RULES.read_text()))
    assert len(used) >= 10, used
    missing = used - exported_names(relay)
    assert not missing, f"rules use series turn-relay does not export: {sorted(missing)}"
    # The dashboard: turn-relay's series or the rules' recorded ones.
    recorded = set(re.findall(r"record: (\S+)", RULES.read_text()))
    names = {n for e in dashboard_exprs() for n in re.findall(r"\b(turn[_:][a-z_:0-9]+)\b", e)}
    assert len(names) >= 15, names
    missing = {n for n in names if n not in recorded and n not in exported_names(relay)}
    assert not missing, f"the dashboard uses series nobody exports or records: {sorted(missing)}"


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed")
def test_a_real_prometheus_evaluates_every_rule(relay, tmp_path):
    prom = Prometheus(tmp_path, relay.metrics, rule_files=[str(RULES)])
    try:
        deadline = time.monotonic() + 30
        groups = []
        while time.monotonic() < deadline:
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if rules and all(r.get("lastEvaluation", "").startswith("2") and
                             not r["lastEvaluation"].startswith("0001") for r in rules):
                if any(r["name"] == "TurnRelayDataplaneDisconnected" and r.get("state") == "pending" for r in rules):
                    break
            time.sleep(0.5)
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 25, [r["name"] for r in rules]
        bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
        assert not bad, bad
        dp = [r for r in rules if r["name"] == "TurnRelayDataplaneDisconnected"][0]
        assert dp["state"] == "pending", dp
        assert dp["alerts"][0]["labels"]["instance"] == f"127.0.0.1:{relay.metrics}"
        # Nothing else fires on an idle, healthy relay.
        active = sorted(r["name"] for r in rules if r.get("type") == "alerting" and r.get("state") != "inactive")
        assert active == ["TurnRelayDataplaneDisconnected"], active
        # The new alerts' expressions (without their thresholds) select the live relay's
        # series: an alert that can never match would otherwise stay silently inactive.
        left = prom.value("turn_tls_certificate_expiry_timestamp_seconds - time()")
        assert left is not None and 89 * 86400 < left <= 90 * 86400, left
        assert prom.value("turn_config_last_reload_successful") == 1
        fds = prom.value('process_open_fds{job="turn-relay"} / process_max_fds{job="turn-relay"}')
        assert fds is not None and 0 < fds < 0.8, fds
        # Recording rules produce series from the live relay (their group is evaluated on its
        # own schedule: wait for the first evaluation).
        recorded = None
        for _ in range(60):
            recorded = prom.value("turn:connections:sum")
            if recorded is not None:
                break
            time.sleep(0.25)
        assert recorded == 0
        # Every dashboard query is valid PromQL that Prometheus evaluates (Grafana's
        # variables as a dashboard with "All" nodes and a 1-minute rate interval has them).
        for e in dashboard_exprs():
            q = e.replace("$instance", ".*").replace("$__rate_interval", "1m")
            prom.api("query", query=q)  # asserts status "success"
    finally:
        prom.close()
