"""python3-aiortc (1.4): two RTCPeerConnections limited to relay candidates exchange
data-channel messages through the server under test.

How "relay only" is enforced: aiortc 1.4's RTCConfiguration has no iceTransportPolicy, but
the ICE agent underneath, aioice 0.8's Connection, has `transport_policy` and with
TransportPolicy.RELAY it never offers host or server-reflexive candidates (they are not in
local_candidates, so no check pair can use them). aiortc creates that Connection in
aiortc.rtcicetransport (`from aioice import Connection`), so the test replaces that name with
a wrapper that forces transport_policy=RELAY for every gatherer. This is more robust than
filtering "typ relay" lines out of the SDP: aioice would still pair and check its host
candidates with peer-reflexive candidates it learns, and a filtered SDP could still connect
directly. The test also checks the SDP carries relay candidates only and that the nominated
ICE pair is relay <-> relay on relayed ports of the server.

aioice's host sockets (which are never advertised under RELAY) are bound to loopback only, so
nothing in this test touches a non-loopback address. aiortc's TURN URL parser does not
accept IPv6 literals ("turn:[::1]:3478"), so this test is IPv4-only.
"""

import asyncio
import re

import pytest

aiortc = pytest.importorskip("aiortc")
import aioice.ice  # noqa: E402
import aiortc.rtcicetransport as rtcicetransport  # noqa: E402
from aioice import TransportPolicy  # noqa: E402
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection  # noqa: E402

TIMEOUT_S = 30
MESSAGES = 10


@pytest.fixture
def relay_only(monkeypatch):
    original = rtcicetransport.Connection

    def connection(*args, **kwargs):
        kwargs["transport_policy"] = TransportPolicy.RELAY
        kwargs["use_ipv6"] = False
        return original(*args, **kwargs)

    monkeypatch.setattr(rtcicetransport, "Connection", connection)
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def _candidates(sdp: str):
    return re.findall(r"^a=candidate:.*$", sdp, re.M)


def _nominated(pc):
    ice = pc.sctp.transport.transport  # RTCDtlsTransport -> RTCIceTransport
    conn = ice.iceGatherer._connection
    return conn._nominated.get(1)


async def _run(server):
    config = RTCConfiguration(iceServers=[RTCIceServer(
        urls=server.url(4), username=server.username, credential=server.password)])
    pc1 = RTCPeerConnection(config)
    pc2 = RTCPeerConnection(config)
    got1, got2 = [], []
    done1, done2 = asyncio.Event(), asyncio.Event()
    opened = asyncio.Event()
    dc2_holder = {}

    try:
        dc1 = pc1.createDataChannel("chat")

        @dc1.on("open")
        def _open():
            opened.set()

        @dc1.on("message")
        def _msg1(m):
            got1.append(m)
            if len(got1) >= 2 * MESSAGES:
                done1.set()

        @pc2.on("datachannel")
        def _dc(channel):
            dc2_holder["dc"] = channel

            @channel.on("message")
            def _msg2(m):
                got2.append(m)
                channel.send("echo:" + m if isinstance(m, str) else m)
                if len(got2) >= MESSAGES:
                    done2.set()

        await pc1.setLocalDescription(await pc1.createOffer())
        offer = pc1.localDescription
        await pc2.setRemoteDescription(offer)
        await pc2.setLocalDescription(await pc2.createAnswer())
        answer = pc2.localDescription
        await pc1.setRemoteDescription(answer)

        for name, sdp in (("offer", offer.sdp), ("answer", answer.sdp)):
            cands = _candidates(sdp)
            assert cands, f"{name} has no candidates (allocation failed?):\n{sdp}"
            assert all(" typ relay" in c for c in cands), f"non-relay candidate in {name}: {cands}"

        await asyncio.wait_for(opened.wait(), TIMEOUT_S)
        payloads = [f"ping {i} " + "x" * (i * 100) for i in range(MESSAGES // 2)]
        payloads += [bytes([i]) * (200 + i) for i in range(MESSAGES - len(payloads) - 1)]
        payloads.append(b"L" * 60000)  # SCTP splits it over many relayed datagrams
        for p in payloads:
            dc1.send(p)
        await asyncio.wait_for(done2.wait(), TIMEOUT_S)
        # pc2 -> pc1 messages that are not echoes
        dc2 = dc2_holder["dc"]
        extra = [f"from pc2 #{i}" for i in range(MESSAGES)]
        for e in extra:
            dc2.send(e)
        await asyncio.wait_for(done1.wait(), TIMEOUT_S)

        pairs = [_nominated(pc1), _nominated(pc2)]
        return payloads, extra, list(got1), list(got2), pairs, offer.sdp, answer.sdp
    finally:
        await asyncio.wait_for(pc1.close(), 10)
        await asyncio.wait_for(pc2.close(), 10)


def test_datachannel_over_relay(server, relay_only):
    before = server.metric("turn_relayed_bytes_total")
    payloads, extra, got1, got2, pairs, offer, answer = asyncio.run(
        asyncio.wait_for(_run(server), 50))
    if server.kind == "turnrelay":
        after = server.metric("turn_relayed_bytes_total")
        assert before is not None and after is not None and after - before > 2000, \
            f"server metrics show no relayed traffic: {before} -> {after}"
    assert got2 == payloads, "pc2 did not receive pc1's messages intact"
    echoes = [("echo:" + p) if isinstance(p, str) else p for p in payloads]
    assert sorted(map(repr, got1)) == sorted(map(repr, echoes + extra)), \
        "pc1 did not receive pc2's messages intact"
    for pair in pairs:
        assert pair is not None, "no nominated ICE pair"
        lc, rc = pair.local_candidate, pair.remote_candidate
        assert lc.type == "relay", f"local candidate not relay: {lc}"
        # The remote candidate is the other side's relayed address on the server.
        assert rc.type == "relay" and rc.host == "127.0.0.1", f"remote candidate: {rc}"
        assert server.relay_min <= lc.port <= server.relay_max, lc
        assert server.relay_min <= rc.port <= server.relay_max, rc
