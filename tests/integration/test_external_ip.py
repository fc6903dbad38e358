"""A relay behind a 1:1 NAT ([server].external_ips, here 127.0.0.2 standing for the public IP of
the relay IP 127.0.0.1) against the real turn-relay with real clients (aioice): relayed
addresses are advertised on the external IP, and two relay-only clients of this relay reach
each other relay-to-relay although nothing answers on the external IP on this host (as a NAT
without hairpinning would not): the relay delivers between its own sockets and each client sees
the other on its advertised address. The start line and turn-ctl status name the mapping."""

import asyncio
import json
import subprocess

import pytest

from conftest import log_tail, stop_process
from test_turn_probe import PASSWORD, USER, Relay
from tool_paths import find_tool

aioice_turn = pytest.importorskip("aioice.turn")
CTL = find_tool("TURN_CTL_BIN", "tools/ctl/turn-ctl")


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


def test_relay_to_relay_behind_a_nat_without_hairpinning(tmp_path):
    sock = tmp_path / "admin.sock"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n', args=("--external-ip", "127.0.0.2"))
    try:
        async def scenario():
            ends = [await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                Collector, server_addr=("127.0.0.1", relay.port), username=USER, password=PASSWORD), 10)
                for _ in range(2)]
            relayed = [t.get_extra_info("sockname") for t, _ in ends]
            got = []
            # aioice installs the permission (and a channel) on first send; each side sends a
            # few times so that the other's permission exists when a datagram arrives.
            for i in range(10):
                ends[0][0].sendto(b"a->b %d" % i, relayed[1])
                ends[1][0].sendto(b"b->a %d" % i, relayed[0])
                await asyncio.sleep(0.1)
            for k in range(2):
                q = ends[k][1].queue
                while not q.empty():
                    got.append((k, *q.get_nowait()))
            for t, _ in ends:
                t.close()
            return relayed, got

        relayed, got = asyncio.run(scenario())
        # Advertised on the external IP, bound on the relay IP.
        assert [h for h, _ in relayed] == ["127.0.0.2", "127.0.0.2"], relayed
        to_b = [(d, a) for k, d, a in got if k == 1]
        to_a = [(d, a) for k, d, a in got if k == 0]
        assert to_b and to_a, got
        # Each sees the other on its advertised address.
        assert all(d.startswith(b"a->b") and tuple(a) == tuple(relayed[0]) for d, a in to_b), to_b
        assert all(d.startswith(b"b->a") and tuple(a) == tuple(relayed[1]) for d, a in to_a), to_a
        log = relay.log.read_text()
        assert 'relay_ips="127.0.0.1 (as 127.0.0.2),::1"' in log or "127.0.0.1 (as 127.0.0.2)" in log, log_tail(relay.log)
        if CTL is not None:
            p = subprocess.run([CTL, "--socket", str(sock), "--json", "status"], capture_output=True, text=True,
                               timeout=20)
            st = json.loads(p.stdout)
            assert st["relay_ips"] == ["127.0.0.1", "::1"] and st["external_ips"] == ["127.0.0.2"], st
        assert relay.proc.poll() is None, log_tail(relay.log)
    finally:
        stop_process(relay.proc, second_signal_after=1.0)
