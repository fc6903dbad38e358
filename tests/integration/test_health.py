"""GET /health on the metrics listener: what a load balancer's or a DNS failover service's HTTP
check reads. 200 while the relay takes new allocations; 503 while it drains (turn-ctl drain,
SIGTERM) or holds [allocation].max_total, so new clients go elsewhere while the allocations
here go on. A real HAProxy (`option httpchk GET /health`) marks the relay DOWN when it starts
draining, having had it UP before; /metrics is served as before; HEAD answers without a body,
other methods 405.
"""

import asyncio
import http.client
import json
import os
import socket

import pytest

from conftest import free_port, stop_process
from test_admin import CTL, Collector, ctl
from test_proxy_protocol import HAPROXY, HAProxy
from test_tcp_tls import poll
from test_turn_probe import PASSWORD, USER, Relay

aioice_turn = pytest.importorskip("aioice.turn")
pytestmark = [
    pytest.mark.skipif(CTL is None, reason="turn-ctl not built"),
]


def get(relay, path="/health", method="GET"):
    """(status, body) of one request to the relay's metrics listener."""
    c = http.client.HTTPConnection("127.0.0.1", relay.metrics, timeout=5)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def health(relay):
    status, body = get(relay)
    return status, json.loads(body)


async def allocate(relay):
    return await asyncio.wait_for(aioice_turn.create_turn_endpoint(
        Collector, server_addr=("127.0.0.1", relay.port), username=USER, password=PASSWORD), 10)


def test_health_answers_ok_full_and_draining(tmp_path):
    sock = tmp_path / "admin.sock"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n[allocation]\nmax_total = 1\n'
                                  '[drain]\ndeadline_s = 600\n')
    try:
        assert health(relay) == (200, {"status": "ok", "allocations": 0, "max_total": 1, "draining": False})
        status, body = get(relay, method="HEAD")
        assert status == 200 and body == b""
        assert get(relay, method="POST")[0] == 405
        status, body = get(relay, "/metrics")
        assert status == 200 and b"turn_allocations" in body
        assert get(relay, "/healthz")[0] == 404

        async def scenario():
            r = {}
            t, _ = await allocate(relay)
            r["full"] = await asyncio.to_thread(poll, lambda: health(relay), lambda v: v[0] == 503)
            t.close()  # Refresh 0
            await asyncio.sleep(0)
            r["freed"] = await asyncio.to_thread(poll, lambda: health(relay), lambda v: v[0] == 200)
            t, _ = await allocate(relay)  # held through the drain, which waits for it
            r["drain"] = await asyncio.to_thread(ctl, sock, "drain")
            r["draining"] = await asyncio.to_thread(poll, lambda: health(relay),
                                                    lambda v: v[1]["draining"])
            t.close()
            await asyncio.sleep(0)
            return r

        r = asyncio.run(scenario())
        assert r["full"] == (503, {"status": "full", "allocations": 1, "max_total": 1, "draining": False}), r
        assert r["freed"] == (200, {"status": "ok", "allocations": 0, "max_total": 1, "draining": False}), r
        assert r["drain"][0] == 0, r["drain"]
        status, j = r["draining"]
        # Draining wins over full: the allocation is still there.
        assert status == 503 and j["status"] == "draining" and j["draining"] is True, r["draining"]
        assert relay.proc.wait(timeout=15) == 0  # the last allocation ended: the drain is over
    finally:
        if relay.proc.poll() is None:
            stop_process(relay.proc, second_signal_after=1.0)


@pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="haproxy not installed")
def test_haproxy_http_check_takes_a_draining_relay_out(tmp_path):
    """HAProxy's HTTP health check on /health: UP while the relay serves, DOWN once it drains
    (while it still holds an allocation and runs)."""
    sock = tmp_path / "admin.sock"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n[drain]\ndeadline_s = 600\n')
    haproxy = None
    try:
        front = free_port(kinds=(socket.SOCK_STREAM,))  # HAProxy needs a frontend; nothing connects to it
        haproxy = HAProxy(tmp_path, f"""\
frontend turn
    bind 127.0.0.1:{front}
    default_backend relays

backend relays
    option httpchk GET /health
    http-check expect status 200
    server relay 127.0.0.1:{relay.port} check port {relay.metrics} inter 200ms fall 2 rise 1
""")

        def state():
            return haproxy.servers("relays").get("relay", {}).get("status", "")

        assert poll(state, lambda s: s == "UP") == "UP", haproxy.command("show stat")

        async def scenario():
            t, _ = await allocate(relay)
            rc = await asyncio.to_thread(ctl, sock, "drain")
            down = await asyncio.to_thread(poll, state, lambda s: s.startswith("DOWN"))
            alive = relay.proc.poll() is None
            t.close()
            await asyncio.sleep(0)
            return rc, down, alive

        rc, down, alive = asyncio.run(scenario())
        assert rc[0] == 0, rc
        assert down.startswith("DOWN") and alive, (down, haproxy.command("show stat"))
        assert relay.proc.wait(timeout=15) == 0
    finally:
        if haproxy is not None:
            haproxy.close()
        if relay.proc.poll() is None:
            stop_process(relay.proc, second_signal_after=1.0)
