#!/usr/bin/env python3
"""Chromium (libwebrtc) follows turn-relay's 300 Try Alternate ([redirect], RFC 8489 section
10) unchanged, over UDP and over TCP.

Chromium refuses a redirect to a loopback address, so the two relays need interface
addresses: the test makes one namespace, tredir, with its loopback up and a veth pair d0/d1
(both ends inside it), d0 carrying 198.18.7.1 (relay A) and 198.18.7.2 (relay B). Everything, Chromium included,
runs inside it; no traffic leaves it.

  A: turn-relay on 198.18.7.1:3478 (UDP and TCP), [redirect] servers = ["198.18.7.2:3478"],
     when = "always": it allocates nothing itself.
  B: turn-relay on 198.18.7.2:3478 (UDP and TCP), relayed addresses on 198.18.7.2,
     allow_peers = ["198.18.7.2/32"]: both ends of the call are relay-only and relayed by B,
     so each end's peer is B's other relayed address (relay to relay).

The page has two RTCPeerConnections with iceTransportPolicy 'relay' whose only ICE server is
A (turn:198.18.7.1:3478?transport=udp, then ?transport=tcp). They open a data channel and
ping-pong MSGS messages. Checks, per transport: every echo intact; both selected local
candidates are relay candidates on 198.18.7.2 (B) with the transport's relayProtocol and no
ICE candidate error; A answered at least two Allocates with 300 and none with 200, and holds
no allocation; B answered Allocates with 200 and relayed at least MSGS packets each way.

Exit 77 (skip) without chromium, chromium-driver or python3-selenium.

Usage: netns_redirect_chromium.py <turn-relay>           (root)
       netns_redirect_chromium.py page <udp|tcp>         (run inside tredir by the test)
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from checks import Checks  # noqa: E402
from chromium_session import chromium_page, descendants, kill_pids  # noqa: E402

NS = "tredir"
A_IP, B_IP, PORT = "198.18.7.1", "198.18.7.2", 3478
METRICS = {"A": 9761, "B": 9762}
PYTHON = "/usr/bin/python3"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
USER, PASSWORD = "alice", "alice-pw"
MSGS = 30
PAGE_TIMEOUT_S = 60

JS = r"""
const [turnUrl, user, pass, msgs, done] = arguments;
async function selectedPair(pc) {
  const stats = await pc.getStats();
  let id = null;
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) id = s.selectedCandidatePairId; });
  if (!id) return null;
  const p = stats.get(id), l = stats.get(p.localCandidateId);
  return [l.candidateType, l.address, l.port, l.relayProtocol, l.url];
}
(async () => {
  const cfg = {iceServers: [{urls: turnUrl, username: user, credential: pass}], iceTransportPolicy: 'relay'};
  const a = new RTCPeerConnection(cfg), b = new RTCPeerConnection(cfg);
  const errors = [];
  for (const pc of [a, b]) pc.onicecandidateerror = e => errors.push([e.url, e.errorCode, e.errorText]);
  a.onicecandidate = e => { if (e.candidate) b.addIceCandidate(e.candidate); };
  b.onicecandidate = e => { if (e.candidate) a.addIceCandidate(e.candidate); };
  const dc = a.createDataChannel('x');
  b.ondatachannel = e => { e.channel.onmessage = m => e.channel.send('echo:' + m.data); };
  const inbox = []; let waiter = null;
  dc.onmessage = m => { if (waiter) { const w = waiter; waiter = null; w(m.data); } else inbox.push(m.data); };
  const next = ms => inbox.length ? Promise.resolve(inbox.shift()) : new Promise(res => {
    const t = setTimeout(() => { waiter = null; res(null); }, ms);
    waiter = d => { clearTimeout(t); res(d); };
  });
  const opened = new Promise(res => { dc.onopen = res; });
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const ok = await Promise.race([opened.then(() => true), new Promise(res => setTimeout(() => res(false), 30000))]);
  if (!ok) { done({error: 'data channel did not open: ice ' + a.iceConnectionState, errors}); return; }
  let echoes = 0;
  for (const m of msgs) {
    dc.send(m);
    if (await next(5000) !== 'echo:' + m) break;
    echoes++;
  }
  const pairs = [await selectedPair(a), await selectedPair(b)];
  a.close(); b.close();
  done({echoes, pairs, errors});
})().catch(e => done({error: String(e && e.stack || e)}));
"""


def messages():
    return [f"m{i:03d}:" + "x" * (10 + (i * 97) % 1100) for i in range(MSGS)]


def page_main(transport):
    out = {}
    try:
        with chromium_page(CHROMIUM, CHROMEDRIVER, PAGE_TIMEOUT_S - 10) as driver:
            out = driver.execute_async_script(JS, f"turn:{A_IP}:{PORT}?transport={transport}", USER, PASSWORD,
                                              messages())
    except Exception as e:
        out = {"error": repr(e)[:2000]}
    print(json.dumps(out), flush=True)


# ---- orchestrator -----------------------------------------------------------------------

def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def metric(relay, name, **labels):
    text = sh(f"ip netns exec {NS} curl -s --max-time 3 http://127.0.0.1:{METRICS[relay]}/metrics",
              check=False).stdout
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
    return total


def write_config(path, name, ip, extra):
    with open(path, "w") as f:
        f.write(f"""
[server]
listen = ["{ip}:{PORT}"]
listen_tcp = ["{ip}:{PORT}"]
relay_ips = ["{ip}"]
relay_port_min = 49152
relay_port_max = 49400
threads = 1
[auth]
users = ["{USER}:{PASSWORD}"]
[metrics]
listen = "127.0.0.1:{METRICS[name]}"
[drain]
deadline_s = 0
{extra}""")


def has_module(mod):
    return subprocess.run([PYTHON, "-c", f"import {mod}"], capture_output=True).returncode == 0


def main():
    relay_bin = sys.argv[1]
    missing = [what for what, ok in (("chromium", os.path.exists(CHROMIUM)),
                                     ("chromium-driver", os.path.exists(CHROMEDRIVER)),
                                     ("python3-selenium", has_module("selenium"))) if not ok]
    if missing:
        print(f"SKIP: not installed: {', '.join(missing)} (deploy/install-deps.sh installs them)")
        sys.exit(77)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("SIGTERM"))  # meson's timeout: still clean up
    tmp = tempfile.mkdtemp(prefix="turn-redirect-chromium-")
    sh(f"ip netns del {NS}", check=False)
    sh(f"ip netns add {NS}")
    relays, logs, page = {}, {}, None

    check = Checks()

    try:
        sh(f"ip -n {NS} link set lo up")
        sh(f"ip -n {NS} link add d0 type veth peer name d1")  # no dummy driver on these kernels
        sh(f"ip -n {NS} addr add {A_IP}/24 dev d0")
        sh(f"ip -n {NS} addr add {B_IP}/24 dev d0")
        sh(f"ip -n {NS} link set d1 up")
        sh(f"ip -n {NS} link set d0 up")
        write_config(os.path.join(tmp, "a.toml"), "A", A_IP,
                     f'[redirect]\nservers = ["{B_IP}:{PORT}"]\nwhen = "always"\n')
        write_config(os.path.join(tmp, "b.toml"), "B", B_IP, f'[policy]\nallow_peers = ["{B_IP}/32"]\n')
        for name in ("A", "B"):
            logs[name] = open(os.path.join(tmp, f"{name}.log"), "w")
            relays[name] = subprocess.Popen(["ip", "netns", "exec", NS, relay_bin, "--config",
                                             os.path.join(tmp, f"{name.lower()}.toml")],
                                            stdout=logs[name], stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(
                sh(f"ip netns exec {NS} curl -s --max-time 1 -o /dev/null http://127.0.0.1:{METRICS[n]}/metrics",
                   check=False).returncode == 0 for n in relays):
            time.sleep(0.2)
        for transport in ("udp", "tcp"):
            before = {k: metric(*k[:1], k[1], **dict(k[2])) for k in (
                ("A", "turn_requests_total", (("method", "allocate"), ("code", "300"))),
                ("A", "turn_requests_total", (("method", "allocate"), ("code", "200"))),
                ("B", "turn_requests_total", (("method", "allocate"), ("code", "200"))),
                ("B", "turn_relayed_packets_total", (("direction", "client_to_peer"),)),
                ("B", "turn_relayed_packets_total", (("direction", "peer_to_client"),)))}
            t0 = time.monotonic()
            page = subprocess.Popen(["ip", "netns", "exec", NS, PYTHON, os.path.abspath(__file__), "page", transport],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                out, err = page.communicate(timeout=PAGE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                kill_pids(descendants(page.pid))
                page.kill()
                out, err = page.communicate()
            page = None
            try:
                res = json.loads([x for x in out.splitlines() if x.strip()][-1])
            except (IndexError, ValueError):
                res = {"error": "no result; stderr: " + err[-3000:]}
            print(f"--- {transport} ({time.monotonic() - t0:.1f} s): {json.dumps(res)[:2000]}", flush=True)
            delta = {k: metric(*k[:1], k[1], **dict(k[2])) - v for k, v in before.items()}
            a300, a200, b200, b_up, b_down = delta.values()
            check(not res.get("error"), f"{transport}: page ran without error ({res.get('error')})")
            check(res.get("echoes") == MSGS, f"{transport}: {MSGS} messages echoed intact ({res.get('echoes')})")
            check(not res.get("errors"), f"{transport}: no ICE candidate error ({res.get('errors')})")
            pairs = res.get("pairs") or []
            check(len(pairs) == 2 and all(p and p[0] == "relay" and p[1] == B_IP and p[3] == transport
                                          for p in pairs),
                  f"{transport}: both selected local candidates are relay on {B_IP} over {transport} ({pairs})")
            check(a300 >= 2 and a200 == 0, f"{transport}: A redirected {a300:g} Allocates (>= 2), allocated {a200:g}")
            check(metric("A", "turn_allocations") == 0, f"{transport}: A holds no allocation")
            check(b200 >= 2, f"{transport}: B allocated {b200:g} (>= 2)")
            check(b_up >= MSGS and b_down >= MSGS,
                  f"{transport}: B relayed {b_up:g} / {b_down:g} packets (>= {MSGS} each way)")
            check("event=allocation_redirected" in open(logs["A"].name).read(), f"{transport}: A logged the redirect")
    finally:
        if page is not None and page.poll() is None:
            kill_pids(descendants(page.pid))
            page.kill()
            page.wait()
        for name, p in relays.items():
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            logs[name].close()
            if not check.ok:
                with open(logs[name].name) as f:
                    print(f"relay {name} log (tail):\n" + "".join(f.readlines()[-30:]), flush=True)
        sh(f"ip netns del {NS}", check=False)
        sh(f"rm -rf {tmp}", check=False)
    sys.exit(check.finish())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "page":
        page_main(sys.argv[2])
    else:
        main()
