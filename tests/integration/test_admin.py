"""The admin interface ([admin].socket) through tools/ctl's turn-ctl against a real turn-relay
with allocations held by real clients (aioice, UDP): status and allocations show what the
clients hold (users, relayed addresses, permissions, channels), `close` ends one allocation so
its client's data stops being relayed, `reload` applies a rewritten [auth] and says so, and
`drain` with a deadline drains the relay, which exits once its last allocation ends. Errors:
an unknown allocation, a reload whose TLS key does not load, a second drain (exit 1), no relay
at the socket (exit 3); the socket is its owner's only.
"""

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import time

import pytest

from conftest import log_tail, stop_process
from test_turn_probe import PASSWORD, USER, Relay
from tool_paths import find_tool

aioice_turn = pytest.importorskip("aioice.turn")
CTL = find_tool("TURN_CTL_BIN", "tools/ctl/turn-ctl")
pytestmark = pytest.mark.skipif(CTL is None, reason="turn-ctl not built")


def ctl(sock, *args):
    p = subprocess.run([CTL, "--socket", str(sock), *args], capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


def ctl_json(sock, *args):
    rc, out, err = ctl(sock, "--json", *args)
    return rc, json.loads(out) if out.strip() else None


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


def test_turn_ctl_inspects_closes_reloads_and_drains(tmp_path):
    sock = tmp_path / "run" / "admin.sock"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n[drain]\ndeadline_s = 600\n')
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(3)
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

        async def scenario():
            ends = []
            for _ in range(2):
                ends.append(await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                    Collector, server_addr=("127.0.0.1", relay.port), username=USER, password=PASSWORD), 10))
            relayed = [t.get_extra_info("sockname") for t, _ in ends]

            async def round_trip(i, payload):
                ends[i][0].sendto(payload, echo.getsockname())
                try:
                    data, src = await asyncio.to_thread(echo.recvfrom, 100)
                except socket.timeout:
                    return None
                echo.sendto(data, src)
                return (await asyncio.wait_for(ends[i][1].queue.get(), 3))[0]

            assert await round_trip(0, b"zero") == b"zero" and await round_trip(1, b"one") == b"one"
            r = {}
            r["status"] = await asyncio.to_thread(ctl_json, sock, "status")
            r["all"] = await asyncio.to_thread(ctl_json, sock, "allocations")
            r["table"] = await asyncio.to_thread(ctl, sock, "allocations")
            r["nobody"] = await asyncio.to_thread(ctl_json, sock, "allocations", "--user", "nobody")
            by_relayed = {a["relayed"][0]: a for a in r["all"][1]["allocations"]}
            first = by_relayed[f"{relayed[0][0]}:{relayed[0][1]}"]
            r["close"] = await asyncio.to_thread(ctl, sock, "close", str(first["id"]))
            r["after_close"] = await round_trip(0, b"closed?")
            r["still"] = await round_trip(1, b"still")
            r["left"] = await asyncio.to_thread(ctl_json, sock, "allocations")
            r["unknown"] = await asyncio.to_thread(ctl, sock, "close", "987654321")
            cfg = relay.dir / "relay.toml"
            cfg.write_text(cfg.read_text().replace(f'users = ["{USER}:{PASSWORD}"]', f'users = ["{USER}:{PASSWORD}", "dave:dave-pw"]'))
            r["reload"] = await asyncio.to_thread(ctl, sock, "reload")
            # A renewal hook's broken key: the reload fails (exit 1), the old certificate stays.
            good_key = relay.key.read_bytes()
            relay.key.write_text("not a key\n")
            r["reload_bad_tls"] = await asyncio.to_thread(ctl, sock, "reload")
            relay.key.write_bytes(good_key)
            r["drain"] = await asyncio.to_thread(ctl, sock, "drain", "--deadline", "20")
            time.sleep(0.3)
            r["draining"] = await asyncio.to_thread(ctl_json, sock, "status")
            r["drain_again"] = await asyncio.to_thread(ctl, sock, "drain")
            for t, _ in ends:
                t.close()  # Refresh 0: the drain has nothing left to wait for
            return relayed, by_relayed, r

        relayed, by_relayed, r = asyncio.run(scenario())
        rc, st = r["status"]
        assert rc == 0 and st["ok"] and st["allocations"]["total"] == 2 and st["draining"] is False, st
        assert st["listen"] == [f"127.0.0.1:{relay.port}", f"[::1]:{relay.port}"] and st["relay_ips"] == ["127.0.0.1", "::1"]
        assert st["listen_dtls"] == [] and st["dtls_sessions"] == 0 and st["connections"] == 0, st
        rc, al = r["all"]
        assert rc == 0 and al["complete"] is True and len(al["allocations"]) == 2, al
        for a in al["allocations"]:
            assert a["user"] == USER and a["transport"] == "udp" and a["client"].startswith("127.0.0.1:")
            assert 0 < a["expires_in_s"] <= 600 and a["age_s"] >= 0
            assert [p["peer"] for p in a["permissions"]] == ["127.0.0.1"], a
            assert a["packets_client_to_peer"] >= 1 and a["packets_peer_to_client"] >= 1, a
        assert set(by_relayed) == {f"{h}:{p}" for h, p in relayed}
        # What each relayed, payload bytes: b"zero" one way and back, b"one" the same.
        for (h, p), size in zip(relayed, (4, 3)):
            a = by_relayed[f"{h}:{p}"]
            assert a["bytes_client_to_peer"] == size * a["packets_client_to_peer"], a
            assert a["bytes_peer_to_client"] == size * a["packets_peer_to_client"], a
        rc, out, err = r["table"]
        assert rc == 0 and "2 allocation(s)" in out and USER in out and "BYTES_UP" in out
        assert r["nobody"][0] == 0 and r["nobody"][1]["allocations"] == []
        rc, out, err = r["close"]
        assert rc == 0 and f"closed allocation {by_relayed[f'{relayed[0][0]}:{relayed[0][1]}']['id']}" in out, (out, err)
        assert r["after_close"] is None and r["still"] == b"still"
        assert len(r["left"][1]["allocations"]) == 1
        closed = by_relayed[f"{relayed[0][0]}:{relayed[0][1]}"]
        end = re.search(rf"event=allocation_closed_by_operator id={closed['id']} .*", relay.log.read_text())
        assert end, relay.log.read_text()
        assert (f" packets_to_peer={closed['packets_client_to_peer']} bytes_to_peer={closed['bytes_client_to_peer']}"
                f" packets_to_client={closed['packets_peer_to_client']} bytes_to_client={closed['bytes_peer_to_client']}"
                in end.group(0)), end.group(0)
        rc, out, err = r["unknown"]
        assert rc == 1 and "no allocation 987654321" in err
        rc, out, err = r["reload"]
        assert rc == 0 and "applied: [auth].users" in out, (out, err)
        rc, out, err = r["reload_bad_tls"]
        assert rc == 1 and "[tls]" in err and "event=tls_reload_failed" in relay.log.read_text(), (out, err)
        rc, out, err = r["drain"]
        assert rc == 0 and "draining" in out, (out, err)
        rc, out, err = r["drain_again"]
        assert rc == 1 and "already draining" in err, (out, err)
        assert r["draining"][1]["draining"] is True
        assert "event=draining" in relay.log.read_text() and "deadline_s=20" in relay.log.read_text()
        assert relay.proc.wait(timeout=15) == 0, log_tail(relay.log)
        assert not sock.exists()  # removed on exit
        rc, out, err = ctl(sock, "status")
        assert rc == 3 and "cannot connect" in err
    finally:
        echo.close()
        if relay.proc.poll() is None:
            stop_process(relay.proc, second_signal_after=1.0)
