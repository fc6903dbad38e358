"""TURN REST API (draft-uberti-behave-turn-rest) ephemeral credentials.

username = "<expiry unix time>:<user>", password = base64(HMAC-SHA1(secret, username)).
The server gets two shared secrets, newest first; credentials made with either work (secret
rotation), expired or wrongly signed ones get 401. Clients: aioice and turnutils_uclient -W.
"""

import asyncio
import base64
import hashlib
import hmac
import shutil
import subprocess
import time

import pytest
from aioice import stun, turn

from conftest import start_server, stop_process, _ACTIVE_LOGS, server_kind

SECRETS = ["newest-shared-secret-1f2e", "older-shared-secret-9a8b"]
TIMEOUT_S = 10
UCLIENT = shutil.which("turnutils_uclient") or "/usr/bin/turnutils_uclient"


def rest_credentials(secret: str, user: str = "alice", ttl: int = 3600):
    username = f"{int(time.time()) + ttl}:{user}"
    password = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory):
    # coturn takes only one --static-auth-secret from the command line (the last one wins),
    # so it gets the newest secret only.
    secrets = SECRETS if server_kind() != "coturn" else SECRETS[:1]
    srv = start_server(tmp_path_factory.mktemp("restserver"), rest_secrets=secrets)
    yield srv
    alive = srv.proc.poll() is None
    stop_process(srv.proc, second_signal_after=1.0 if srv.kind == "turnrelay" else None)
    _ACTIVE_LOGS.remove((f"{srv.kind} server", srv.log_path))
    assert alive, f"{srv.kind} died during the REST API tests"


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


async def _roundtrip(server, family, username, password, echo_peer):
    transport, proto = await asyncio.wait_for(
        turn.create_turn_endpoint(Collector, server_addr=server.addr(family),
                                  username=username, password=password), TIMEOUT_S)
    try:
        relayed = transport.get_extra_info("sockname")
        fam = 6 if ":" in relayed[0] else 4
        payload = f"REST {username}".encode()
        transport.sendto(payload, echo_peer.addr(fam))
        data, _ = await asyncio.wait_for(proto.queue.get(), TIMEOUT_S)
        return data == payload
    finally:
        transport.close()
        await asyncio.sleep(0.1)


async def _allocate_error(server, username, password):
    try:
        transport, _ = await asyncio.wait_for(
            turn.create_turn_endpoint(Collector, server_addr=server.addr(4),
                                      username=username, password=password), TIMEOUT_S)
    except stun.TransactionFailed as e:
        return e.response.attributes["ERROR-CODE"][0]
    transport.close()
    await asyncio.sleep(0.1)
    return None


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_rest_credentials_allocate_and_relay(rest_server, echo_peer, family):
    username, password = rest_credentials(SECRETS[0])
    assert asyncio.run(_roundtrip(rest_server, family, username, password, echo_peer))


def test_rest_credentials_older_secret(rest_server, echo_peer):
    if rest_server.kind == "coturn":
        pytest.skip("coturn's command line holds a single static-auth-secret")
    username, password = rest_credentials(SECRETS[1])
    assert asyncio.run(_roundtrip(rest_server, 4, username, password, echo_peer))


def test_rest_credentials_expired_gets_401(rest_server):
    username, password = rest_credentials(SECRETS[0], ttl=-120)
    before = rest_server.metric("turn_auth_failures_total", reason="expired_user")
    assert asyncio.run(_allocate_error(rest_server, username, password)) == 401
    if rest_server.kind == "turnrelay":
        after = rest_server.metric("turn_auth_failures_total", reason="expired_user")
        assert before is not None and after is not None and after > before, \
            f"turn_auth_failures_total{{reason=expired_user}}: {before} -> {after}"


def test_rest_credentials_wrong_secret_gets_401(rest_server):
    username, password = rest_credentials("not-a-configured-secret")
    assert asyncio.run(_allocate_error(rest_server, username, password)) == 401


def test_rest_uclient(rest_server, turnutils_peer):
    """turnutils_uclient -W SECRET makes its own REST username (expiry:user) and password."""
    cmd = [UCLIENT, "-u", "bob", "-W", SECRETS[0], "-p", str(rest_server.port), "-n", "20",
           "-l", "200", "-z", "5", "-m", "2", "-e", "127.0.0.1", "-r", str(turnutils_peer.port),
           "127.0.0.1"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout.decode(errors="replace")
    ctx = f"\ncommand: {' '.join(cmd)}\n" + "\n".join(out.splitlines()[-30:])
    assert proc.returncode == 0 and "ERROR" not in out, ctx
    from test_uclient import parse_summary
    s = parse_summary(out)
    assert s["sent"] > 0 and s["recv"] == s["sent"] and s["lost"] == 0, f"{s}{ctx}"
