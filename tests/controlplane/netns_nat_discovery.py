#!/usr/bin/env python3
"""NAT behaviour discovery (RFC 5780) through a real NAT: turn-relay with an alternate IP and
port in a server namespace, a Linux router namespace that masquerades (nftables) between it
and a client namespace, and two RFC 5780 clients in the client namespace: coturn's
turnutils_natdiscovery (a third-party client) and the project's tools/natcheck turn-natcheck.

Two NATs, each checked with both clients:
  * `masquerade` (Linux's default, port-preserving): endpoint-independent mapping, and
    conntrack lets in only the answers of the exact remote address and port:
    address-and-port-dependent filtering;
  * `masquerade random` (a new random port per destination, a "symmetric" NAT):
    address-and-port-dependent mapping and filtering, the case TURN exists for.
turn-natcheck must also see the NAT (mapped address != local address) and report the
server's OTHER-ADDRESS; without the NAT (the client talking to the server's namespace
directly is not possible here, so the loopback case is in tests/integration) the mapping is
what the router made it. Addresses from 198.18.0.0/15, namespaces made and removed here.

Usage: netns_nat_discovery.py <turn-relay> <turn-natcheck>   (root; nftables, coturn)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402

NS_C, NS_N, NS_S = "ndc_cli", "ndc_nat", "ndc_srv"
CLI_IP, NAT_IN, NAT_OUT, SRV_IP, SRV_ALT = "198.18.40.2", "198.18.40.1", "198.18.41.1", "198.18.41.2", "198.18.41.3"
PORT, ALT_PORT = 3478, 3479


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def setup():
    teardown()
    for ns in (NS_C, NS_N, NS_S):
        sh(f"ip netns add {ns}")
        sh(f"ip -n {ns} link set lo up")
    sh(f"ip link add ndc-c0 netns {NS_C} type veth peer name ndc-c1 netns {NS_N}")
    sh(f"ip link add ndc-s0 netns {NS_S} type veth peer name ndc-s1 netns {NS_N}")
    sh(f"ip -n {NS_C} addr add {CLI_IP}/24 dev ndc-c0; ip -n {NS_C} link set ndc-c0 up")
    sh(f"ip -n {NS_C} route add default via {NAT_IN}")
    sh(f"ip -n {NS_N} addr add {NAT_IN}/24 dev ndc-c1; ip -n {NS_N} link set ndc-c1 up")
    sh(f"ip -n {NS_N} addr add {NAT_OUT}/24 dev ndc-s1; ip -n {NS_N} link set ndc-s1 up")
    sh(f"ip netns exec {NS_N} sysctl -qw net.ipv4.ip_forward=1")
    sh(f"ip -n {NS_S} addr add {SRV_IP}/24 dev ndc-s0; ip -n {NS_S} addr add {SRV_ALT}/24 dev ndc-s0")
    sh(f"ip -n {NS_S} link set ndc-s0 up")
    # The server namespace has no route to the client's network: only the NAT's outside
    # address is reachable, as on the internet.


def set_nat(random_ports):
    rules = ("table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n"
             f"  oifname \"ndc-s1\" masquerade{' random' if random_ports else ''}\n }}\n}}\n")
    sh(f"ip netns exec {NS_N} nft flush ruleset")
    p = subprocess.run(["ip", "netns", "exec", NS_N, "nft", "-f", "-"], input=rules, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("nft: " + p.stderr)
    sh(f"ip netns exec {NS_N} conntrack -F", check=False)  # absent conntrack tool: entries age out


def teardown():
    for ns in (NS_C, NS_N, NS_S):
        sh(f"ip netns del {ns}", check=False)


def main():
    relay_bin, natcheck_bin = sys.argv[1], sys.argv[2]
    if os.geteuid() != 0:
        print("SKIP: needs root for network namespaces")
        return 77
    for tool in ("nft", "turnutils_natdiscovery"):
        if shutil.which(tool) is None:
            print(f"SKIP: {tool} not installed")
            return 77
    tmp = tempfile.mkdtemp(prefix="turn-natdisc-")
    cfg = os.path.join(tmp, "relay.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nlisten = ["{SRV_IP}:{PORT}"]\nalternate_ips = ["{SRV_ALT}"]\nalternate_port = {ALT_PORT}\n'
                f'relay_ips = ["{SRV_IP}"]\nthreads = 1\n[auth]\nusers = ["a:b"]\n[metrics]\nlisten = ""\n'
                '[log]\nlevel = "warn"\n[drain]\ndeadline_s = 1\n')
    check = Checks()

    relay = None
    try:
        setup()
        relay = subprocess.Popen(["ip", "netns", "exec", NS_S, relay_bin, "--config", cfg],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)
        check(relay.poll() is None, "turn-relay runs with alternate_ips / alternate_port")
        for random_ports, want_mapping, want_filtering, disc_mapping in (
                (False, "endpoint-independent", "address-and-port-dependent", "Endpoint Independent Mapping"),
                (True, "address-and-port-dependent", "address-and-port-dependent",
                 "Address and Port Dependent Mapping")):
            name = "masquerade random" if random_ports else "masquerade"
            set_nat(random_ports)
            p = subprocess.run(["ip", "netns", "exec", NS_C, natcheck_bin, "--json", "--timeout-ms", "700",
                                f"{SRV_IP}:{PORT}"], capture_output=True, text=True, timeout=60)
            try:
                r = json.loads(p.stdout)
            except ValueError:
                r = {}
            print(f"{name}: turn-natcheck {r} {p.stderr.strip()}", flush=True)
            check(p.returncode == 0 and r.get("ok") is True, f"{name}: turn-natcheck determined both behaviours")
            check(r.get("nat") is True and r.get("mapped", "").startswith(NAT_OUT + ":"),
                  f"{name}: turn-natcheck sees the NAT's address {NAT_OUT} ({r.get('mapped')})")
            check(r.get("other_address") == f"{SRV_ALT}:{ALT_PORT}", f"{name}: OTHER-ADDRESS {r.get('other_address')}")
            check(r.get("mapping") == want_mapping, f"{name}: mapping {r.get('mapping')} == {want_mapping}")
            check(r.get("filtering") == want_filtering, f"{name}: filtering {r.get('filtering')} == {want_filtering}")

            d = subprocess.run(["ip", "netns", "exec", NS_C, "turnutils_natdiscovery", "-m", "-f", "-p", str(PORT),
                                SRV_IP], capture_output=True, text=True, timeout=120)
            verdicts = [line.strip() for line in (d.stdout + d.stderr).splitlines() if line.startswith("NAT with")]
            print(f"{name}: turnutils_natdiscovery says {verdicts}", flush=True)
            check(f"NAT with {disc_mapping}!" in verdicts, f"{name}: natdiscovery: {disc_mapping}")
            check("NAT with Address and Port Dependent Filtering!" in verdicts,
                  f"{name}: natdiscovery: Address and Port Dependent Filtering")
        check(relay.poll() is None, "turn-relay still running")
    finally:
        if relay is not None:
            relay.terminate()
            try:
                out = relay.communicate(timeout=10)[0]
            except subprocess.TimeoutExpired:
                relay.kill()
                out = relay.communicate()[0]
            if not check.ok:
                print("--- turn-relay output ---\n" + out[-3000:])
        teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
