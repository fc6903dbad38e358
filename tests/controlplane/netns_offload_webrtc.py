#!/usr/bin/env python3
"""End to end with real WebRTC stacks: a relay-only client (aiortc, then headless Chromium)
in the client namespace opens a data channel through turn-relay with turn-dataplane attached
(AF_XDP on veths) to an aiortc peer that does not use TURN (host candidate on the peer
address only), so every relayed datagram goes client -> relay -> peer and back through the
dataplane. Topology and helpers come from netns_offload_e2e.py (imported, namespaces renamed
to twrtc_h / twrtc_r so this test never collides with the other netns tests):

  twrtc_h (client 198.18.2.2, peer 198.18.2.3 on h0)  h0 <-> n0 (DPDK)
  twrtc_r: x0k 198.18.2.1 (relay IP; turn-relay) <-> x0d (exception port)

Two runs, each with its own dataplane instance (the second one attached by resync) so that
its exit counters are that run's alone:
  * aiortc (python3-aiortc 1.4): aiortc 1.4 has no iceTransportPolicy, so the client forces
    aioice's TransportPolicy.RELAY on the ICE connection that has a TURN server (as
    tests/integration/test_aiortc.py does); its SDP must carry relay candidates only.
  * Chromium (chromium + chromium-driver + python3-selenium, headless, --no-sandbox, a fresh
    profile, chromedriver started inside twrtc_h): an RTCPeerConnection with
    iceTransportPolicy 'relay'.
The peer is aiortc with iceServers=[] (no STUN, no TURN) and host candidates on 198.18.2.3
only. The peer is a plain address, not another relayed address (relay to relay through the
dataplane is netns_offload_relay_to_relay.py's).

Exchange: MSGS text messages (sizes 10 B .. 1.2 kB, one of 20000 B that SCTP splits over many
datagrams), ping-pong: the client sends message i and waits for the peer's "echo:" + message i
before sending i + 1. Checks: the peer received exactly the client's messages (SHA-256 and
length, in order), the client received exactly every echo, the selected ICE pair is local
relay <-> remote host 198.18.2.3.

Fast path: because of the ping-pong, each message is at least one datagram in its direction
(SCTP cannot bundle two messages that are never outstanding at the same time), so the
dataplane's forward counters must have moved by at least MSGS each way:
fwd_client_channel + fwd_client_send >= MSGS and fwd_peer_channel + fwd_peer_data >= MSGS (the
ICE checks, DTLS handshake, SCTP SACKs and the 20000 B message add more). turn-relay's /metrics
path="socket" relayed counters may move a little, never much: the first connectivity checks
are sent right after the client's CreatePermission / ChannelBind is answered, and can reach
the relay before that permission or channel has been offloaded to the dataplane over IPC (the
same race the aioice run of netns_offload_clients.py allows one datagram for). ICE then
retransmits its checks every 50-100 ms for a few rounds, so a handful of datagrams per
direction can legitimately take the socket path; SOCKET_MAX (per direction, per run) bounds
that, and it is far below MSGS, so a relay that fell back to its sockets for the data itself
fails. turn-relay's /metrics path="dataplane" must have grown by >= MSGS each way as well (see
HOLD_S for why the client keeps the allocation a little after the exchange).
Seen (3 runs, 2-core machine): aiortc fwd_client_channel 143, fwd_peer_channel 141; Chromium
fwd_client_channel 89 + fwd_client_send 4 (Send indications until its ChannelBind), fwd_peer_channel
145 + fwd_peer_data 4; path="socket" 0 both ways in every run.

Exit code 77 (skip) if python3-aiortc is not installed for /usr/bin/python3; if only Chromium,
chromedriver or python3-selenium is missing, the aiortc run still runs and must pass, and
then the test exits 77 naming what was missing (deploy/install-deps.sh installs all of them).

Usage: netns_offload_webrtc.py <turn-relay> <turn-dataplane>   (root)
       netns_offload_webrtc.py aiortc | chromium | peer     (run inside twrtc_h by the test)
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import netns_offload_e2e as e2e  # noqa: E402
from checks import Checks  # noqa: E402
from chromium_session import chromium_page, descendants, kill_pids  # noqa: E402
from netns_offload_e2e import RELAY, PEER, TURN_PORT, start_dataplane, \
    stop_dataplane, wait_metric  # noqa: E402

# Our own namespaces: the imported helpers read these module globals at call time.
e2e.NS_H, e2e.NS_R = "twrtc_h", "twrtc_r"
NS_H, NS_R = e2e.NS_H, e2e.NS_R
MPORT = 9741
PYTHON = "/usr/bin/python3"  # Debian's interpreter: python3-aiortc, python3-selenium
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
USER, PASSWORD = "alice", "alice-pw"
TURN_URL = f"turn:{RELAY}:{TURN_PORT}?transport=udp"
MSGS = 50
SOCKET_MAX = 10
# The client keeps its allocation HOLD_S after the exchange before closing. turn-relay's
# path="dataplane" figures come from per-allocation counters it polls from the dataplane every
# second; an allocation deleted before the next poll takes the packets since the last poll with
# it (they never reach /metrics), so without the hold most of a short call is missing there.
HOLD_S = 2.5
CLIENT_TIMEOUT_S = 50  # per client run (seen: aiortc 4 s, Chromium 7 s, HOLD_S included)
DIRS = ("client_to_peer", "peer_to_client")


def messages():
    """MSGS deterministic text messages of varied sizes, one of 20000 characters."""
    out = []
    for i in range(MSGS):
        size = 20000 if i == MSGS // 2 else 10 + (i * 97) % 1190
        body = "".join(chr(0x21 + (i * 7 + k * 13) % 94) for k in range(size))
        out.append(f"m{i:03d}:" + body)
    return out


def digest(m):
    return [len(m), hashlib.sha256(m.encode()).hexdigest()]


def emit(obj):
    print(json.dumps(obj), flush=True)


# ---- the peer: aiortc, no ICE servers, host candidate on PEER only ----------------------

def peer_main():
    import asyncio
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [PEER]

    async def run():
        loop = asyncio.get_running_loop()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # [] : no default STUN server
        got = []

        @pc.on("datachannel")
        def on_dc(ch):
            @ch.on("message")
            def on_msg(m):
                got.append(digest(m) if isinstance(m, str) else [len(m), "bytes"])
                ch.send("echo:" + m if isinstance(m, str) else b"echo:" + m)

        offer = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        emit({"sdp": pc.localDescription.sdp})
        await loop.run_in_executor(None, sys.stdin.readline)  # "done" (or EOF)
        pair = None
        try:
            p = pc.sctp.transport.transport.iceGatherer._connection._nominated.get(1)
            pair = [[p.local_candidate.type, p.local_candidate.host, p.local_candidate.port],
                    [p.remote_candidate.type, p.remote_candidate.host, p.remote_candidate.port]]
        except AttributeError:
            pass
        await asyncio.wait_for(pc.close(), 10)
        emit({"received": got, "pair": pair})

    asyncio.run(run())


class Peer:
    """The peer process (started by the client process, inside twrtc_h), signalled over pipes."""

    def __init__(self):
        self.p = subprocess.Popen([PYTHON, os.path.abspath(__file__), "peer"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def answer(self, offer_sdp):
        self.p.stdin.write(json.dumps({"sdp": offer_sdp}) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line.strip():
            raise RuntimeError("peer gave no answer: " + self.p.stderr.read()[-3000:])
        return json.loads(line)["sdp"]

    def finish(self):
        try:
            self.p.stdin.write("done\n")
            self.p.stdin.flush()
            out, err = self.p.communicate(timeout=20)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            self.p.kill()
            out, err = self.p.communicate()
        lines = [x for x in out.splitlines() if x.strip()]
        try:
            res = json.loads(lines[-1])
        except (IndexError, ValueError):
            res = {}
        res["stderr"] = err[-2000:] if not res.get("received") else ""
        return res


def sdp_candidates(sdp):
    return [ln for ln in sdp.splitlines() if ln.startswith("a=candidate:")]


# ---- client 1: aiortc, relay only -------------------------------------------------------

def aiortc_main():
    import asyncio
    import aioice.ice
    import aiortc.rtcicetransport as rtcicetransport
    from aioice import TransportPolicy
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    # No host sockets at all: under TransportPolicy.RELAY aioice 0.8 still pairs its host
    # sockets (self._protocols) with the remote candidates and checks from them, so with a host
    # socket on 198.18.2.2 it nominates a direct host <-> host pair past the relay (seen).
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: []
    original = rtcicetransport.Connection

    def connection(*args, **kwargs):
        if kwargs.get("turn_server"):
            kwargs["transport_policy"] = TransportPolicy.RELAY
        kwargs["use_ipv6"] = False
        return original(*args, **kwargs)

    rtcicetransport.Connection = connection
    out = {"echoes_ok": 0, "bad": [], "sent": [digest(m) for m in messages()]}
    peer = Peer()

    async def run():
        loop = asyncio.get_running_loop()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[
            RTCIceServer(urls=TURN_URL, username=USER, credential=PASSWORD)]))
        dc = pc.createDataChannel("chat")
        opened, inbox = asyncio.Event(), asyncio.Queue()
        dc.on("open", opened.set)
        dc.on("message", inbox.put_nowait)
        try:
            await pc.setLocalDescription(await pc.createOffer())
            out["offer_candidates"] = sdp_candidates(pc.localDescription.sdp)
            answer = await loop.run_in_executor(None, peer.answer, pc.localDescription.sdp)
            out["answer_candidates"] = sdp_candidates(answer)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.wait_for(opened.wait(), 20)
            for i, m in enumerate(messages()):
                dc.send(m)
                try:
                    e = await asyncio.wait_for(inbox.get(), 5)
                except asyncio.TimeoutError:
                    out["bad"].append([i, "timeout"])
                    break  # the call is broken: stop within the time bound
                if e == "echo:" + m:
                    out["echoes_ok"] += 1
                else:
                    out["bad"].append([i, digest(e) if isinstance(e, str) else repr(e[:20])])
            p = pc.sctp.transport.transport.iceGatherer._connection._nominated.get(1)
            await asyncio.sleep(HOLD_S)  # see HOLD_S
            if p is not None:
                out["pair"] = [[p.local_candidate.type, p.local_candidate.host, p.local_candidate.port],
                               [p.remote_candidate.type, p.remote_candidate.host, p.remote_candidate.port]]
        except Exception as e:  # reported, and the peer still stopped
            out["error"] = repr(e)
        finally:
            await asyncio.wait_for(pc.close(), 10)

    try:
        asyncio.run(asyncio.wait_for(run(), CLIENT_TIMEOUT_S - 10))
    except Exception as e:
        out.setdefault("error", repr(e))
    out["peer"] = peer.finish()
    emit(out)


# ---- client 2: headless Chromium, iceTransportPolicy 'relay' ----------------------------

JS_OFFER = r"""
const [turn, user, pass, done] = arguments;
(async () => {
  const pc = new RTCPeerConnection({iceServers: [{urls: turn, username: user, credential: pass}],
                                    iceTransportPolicy: 'relay'});
  window.pc = pc; window.errors = []; window.inbox = []; window.waiter = null;
  pc.onicecandidateerror = e => window.errors.push([e.url, e.errorCode, e.errorText]);
  const dc = pc.createDataChannel('chat');
  window.dc = dc;
  window.opened = new Promise(res => { dc.onopen = res; });
  dc.onmessage = m => { if (window.waiter) { const w = window.waiter; window.waiter = null; w(m.data); }
                        else window.inbox.push(m.data); };
  const gathered = new Promise(res => {
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') res(); };
  });
  await pc.setLocalDescription(await pc.createOffer());
  await Promise.race([gathered, new Promise(res => setTimeout(res, 20000))]);
  done({sdp: pc.localDescription.sdp, errors: window.errors});
})().catch(e => done({error: String(e && e.stack || e)}));
"""

JS_RUN = r"""
const [answer, msgs, hold, done] = arguments;
function next(ms) {
  if (window.inbox.length) return Promise.resolve(window.inbox.shift());
  return new Promise(res => {
    const t = setTimeout(() => { window.waiter = null; res(null); }, ms);
    window.waiter = d => { clearTimeout(t); res(d); };
  });
}
async function selectedPair(pc) {
  const stats = await pc.getStats();
  let id = null;
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) id = s.selectedCandidatePairId; });
  if (!id) return null;
  const p = stats.get(id), l = stats.get(p.localCandidateId), r = stats.get(p.remoteCandidateId);
  return [[l.candidateType, l.address, l.port, l.relayProtocol], [r.candidateType, r.address, r.port],
          p.bytesSent, p.bytesReceived];
}
(async () => {
  const pc = window.pc;
  await pc.setRemoteDescription({type: 'answer', sdp: answer});
  const t0 = Date.now();
  const ok = await Promise.race([window.opened.then(() => true), new Promise(res => setTimeout(() => res(false), 20000))]);
  if (!ok) { done({error: 'data channel did not open: ice ' + pc.iceConnectionState, errors: window.errors}); return; }
  const openMs = Date.now() - t0;
  let echoesOk = 0; const bad = [];
  for (let i = 0; i < msgs.length; i++) {
    window.dc.send(msgs[i]);
    const e = await next(5000);
    if (e === 'echo:' + msgs[i]) echoesOk++;
    else bad.push([i, e === null ? 'timeout' : String(e).slice(0, 40)]);
    if (e === null) break;  // the call is broken: stop within the time bound
  }
  const pair = await selectedPair(pc);
  await new Promise(res => setTimeout(res, hold));  // see HOLD_S
  pc.close();
  done({echoes_ok: echoesOk, bad, pair, open_ms: openMs, errors: window.errors});
})().catch(e => done({error: String(e && e.stack || e)}));
"""


def chromium_main():
    out = {"sent": [digest(m) for m in messages()]}
    peer = None
    try:
        with chromium_page(CHROMIUM, CHROMEDRIVER, CLIENT_TIMEOUT_S - 10) as driver:
            peer = Peer()
            r = driver.execute_async_script(JS_OFFER, TURN_URL, USER, PASSWORD)
            if r.get("error") or not r.get("sdp"):
                out["error"] = "offer: " + json.dumps(r)
            else:
                out["offer_candidates"] = sdp_candidates(r["sdp"])
                answer = peer.answer(r["sdp"])
                out["answer_candidates"] = sdp_candidates(answer)
                res = driver.execute_async_script(JS_RUN, answer, messages(), int(HOLD_S * 1000))
                out.update(res)
    except Exception as e:
        out["error"] = repr(e)[:2000]
    finally:
        out["peer"] = peer.finish() if peer is not None else {}
    emit(out)


# ---- orchestrator -----------------------------------------------------------------------

def main():
    relay_bin, dp_bin = sys.argv[1], sys.argv[2]
    if not os.path.exists(PYTHON) or not e2e.has_module(PYTHON, "aiortc"):
        print(f"SKIP: python3-aiortc is not installed for {PYTHON} (deploy/install-deps.sh installs it)")
        sys.exit(77)
    missing = [what for what, ok in (("chromium", os.path.exists(CHROMIUM)),
                                     ("chromium-driver", os.path.exists(CHROMEDRIVER)),
                                     ("python3-selenium", e2e.has_module(PYTHON, "selenium"))) if not ok]
    tmp = tempfile.mkdtemp(prefix="turn-offload-webrtc-")
    sock = os.path.join(tmp, "dataplane.sock")
    cfg = os.path.join(tmp, "relay.toml")
    e2e.write_relay_config(cfg, MPORT, sock, port_max=49200, users=(f"{USER}:{PASSWORD}",))
    prefixes = {"aiortc": "twrtc_a", "chromium": "twrtc_b"}
    runs = ["aiortc"] + ([] if missing else ["chromium"])
    # meson's timeout sends SIGTERM: turn it into an exception so that the finally below
    # still stops our processes and deletes the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("SIGTERM"))
    e2e.setup()
    relay = dp = client = None
    want = [digest(m) for m in messages()]

    check = Checks()

    def one_run(name, resyncs):
        nonlocal dp, client
        dp = start_dataplane(dp_bin, sock, prefixes[name])
        check(wait_metric(MPORT, "turn_dataplane_connected", 1, 100) == 1, f"{name}: dataplane attached")
        check(wait_metric(MPORT, "turn_dataplane_resyncs_total", resyncs, 50) == resyncs,
              f"{name}: resync #{resyncs}")
        time.sleep(0.3)
        before = e2e.relayed_snapshot(MPORT)
        t0 = time.monotonic()
        p = client = subprocess.Popen(["ip", "netns", "exec", NS_H, PYTHON, os.path.abspath(__file__), name],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=CLIENT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_pids(descendants(p.pid))  # chromedriver, Chromium, the peer: all started by it
            p.kill()
            out, err = p.communicate()
        client = None
        took = time.monotonic() - t0
        time.sleep(2.0)  # the relay polls the dataplane's counters every second
        after = e2e.relayed_snapshot(MPORT)
        counters = stop_dataplane(dp)
        dp = None
        check(wait_metric(MPORT, "turn_dataplane_connected", 0, 50) == 0, f"{name}: dataplane detached")
        try:
            res = json.loads([x for x in out.splitlines() if x.strip()][-1])
        except (IndexError, ValueError):
            res = {}
        peer = res.get("peer", {})
        summary = {k: v for k, v in res.items() if k not in ("sent", "peer")}
        print(f"--- {name} ({took:.1f} s): {json.dumps(summary)[:3000]}", flush=True)
        print(f"{name}: peer pair {peer.get('pair')}, received {len(peer.get('received', []))}", flush=True)
        if not res or res.get("error") or peer.get("stderr"):
            print(f"{name}: client stderr:\n{err[-4000:]}\npeer stderr:\n{peer.get('stderr', '')}", flush=True)
        check(not res.get("error"), f"{name}: client ran without error ({res.get('error')})")
        oc, ac = res.get("offer_candidates", []), res.get("answer_candidates", [])
        check(bool(oc) and all(" typ relay " in c and f" {RELAY} " in c for c in oc),
              f"{name}: client offered relay candidates on {RELAY} only ({len(oc)})")
        check(bool(ac) and all(" typ host" in c and f" {PEER} " in c for c in ac),
              f"{name}: peer answered host candidates on {PEER} only ({len(ac)})")
        check(peer.get("received") == want, f"{name}: peer received all {MSGS} messages intact, in order "
              f"({len(peer.get('received', []))})")
        check(res.get("echoes_ok") == MSGS and not res.get("bad"),
              f"{name}: client received all {MSGS} echoes intact ({res.get('echoes_ok')}, bad {res.get('bad')})")
        pair = res.get("pair") or [[None], [None]]
        check(pair[0][0] == "relay" and pair[0][1] == RELAY and 49152 <= (pair[0][2] or 0) <= 49200,
              f"{name}: selected pair local is relay on {RELAY} ({pair[0]})")
        check(pair[1][0] == "host" and pair[1][1] == PEER, f"{name}: selected pair remote is host {PEER} ({pair[1]})")
        c = {k: int(v) for k, v in counters.items()}
        fwd = {k: v for k, v in c.items() if k.startswith(("fwd_", "drop_", "punt"))}
        delta = {k: after[k] - before[k] for k in before}
        print(f"{name}: dataplane counters {fwd}", flush=True)
        print(f"{name}: /metrics deltas " + ", ".join(f"{d}/{p}={v:g}" for (d, p), v in delta.items()), flush=True)
        up = c.get("fwd_client_channel", 0) + c.get("fwd_client_send", 0)
        down = c.get("fwd_peer_channel", 0) + c.get("fwd_peer_data", 0)
        check(up >= MSGS, f"{name}: fwd_client_channel + fwd_client_send = {up} >= {MSGS}")
        check(down >= MSGS, f"{name}: fwd_peer_channel + fwd_peer_data = {down} >= {MSGS}")
        for d in DIRS:
            check(delta[(d, "dataplane")] >= MSGS, f"{name}: /metrics {d} path=dataplane grew by "
                  f"{delta[(d, 'dataplane')]:g} >= {MSGS}")
            check(delta[(d, "socket")] <= SOCKET_MAX, f"{name}: /metrics {d} path=socket grew by "
                  f"{delta[(d, 'socket')]:g} <= {SOCKET_MAX}")

    try:
        relay_log = open(os.path.join(tmp, "relay.log"), "w")
        relay = subprocess.Popen(["ip", "netns", "exec", NS_R, relay_bin, "--config", cfg],
                                 stdout=relay_log, stderr=subprocess.STDOUT, text=True)
        for _ in range(50):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        for i, name in enumerate(runs):
            one_run(name, i + 1)
    finally:
        if client is not None and client.poll() is None:
            kill_pids(descendants(client.pid))
            client.kill()
            client.wait()
        if dp is not None:
            stop_dataplane(dp)
        if relay is not None:
            e2e.stop_relay(relay)
            relay_log.close()
            if not check.ok:
                with open(relay_log.name) as f:
                    print("turn-relay log (tail):\n" + "".join(f.readlines()[-60:]), flush=True)
        e2e.teardown()
        e2e.sh(f"rm -rf {tmp} " + " ".join(f"/var/run/dpdk/{p}" for p in prefixes.values()), check=False)
    if check.ok and missing:
        print(f"RESULT: SKIP (aiortc run passed; Chromium run skipped, not installed: {', '.join(missing)})")
        sys.exit(77)
    sys.exit(check.finish())


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] in ("aiortc", "chromium", "peer"):
        {"aiortc": aiortc_main, "chromium": chromium_main, "peer": peer_main}[sys.argv[1]]()
    else:
        main()
