#!/bin/sh
# End-to-end test of turn-load --mode tcp-relay (RFC 6062 TCP allocations):
# the real turn-load against the real turn-relay and against Debian's coturn,
# both with TCP and TLS listeners on loopback (self-signed certificate made
# with the openssl command; turn-load verifies it with --tls-ca). Each
# allocation is a control connection (Allocate with REQUESTED-TRANSPORT TCP,
# Connect to turn-load's TCP echo peer) and a data connection (ConnectionBind,
# then a byte pipe to the peer).
#
# For each server and transport (tcp, tls): 4 allocations, 2 threads, 2000
# messages/s of 173 bytes (not a multiple of 4: nothing is padded in the
# pipe) for 3 s. Asserts from the JSON: every allocation set up and released,
# every message offered was sent and came back through the pipe (zero loss,
# none refused, duplicated, foreign or stale, no broken connection), the
# counts match the offered rate, delivered bytes/s = messages/s x size,
# latency percentiles ordered, and the peers saw one connection per
# allocation, from the relay, and echoed exactly the bytes sent. Then, against
# turn-relay: --setup-only (connect + Allocate + Connect + ConnectionBind for
# 8 allocations, all up and released), a two-rate --sweep, and the failure
# path: a peer address the relay denies (deny_peers 127.0.0.2) makes every
# Connect fail with 403, which is tallied in `errors`, and turn-load ends with
# status 1 and a message instead of crashing.
#
# Ports: listeners on random free ports in 40000-44999, relayed ports in
# 43000-43999.
#
# usage: tcp_relay_load_test.sh PATH/TO/turn-load PATH/TO/turn-relay   (exit 77 = skipped)
#        TURN_RELAY_BIN overrides the turn-relay path; TURNSERVER coturn's.
set -eu

TL=$1
RELAY=${TURN_RELAY_BIN:-${2:-}}
TURNSERVER=${TURNSERVER:-/usr/bin/turnserver}
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "SKIP: $PY missing"; exit 77; }
command -v openssl > /dev/null || { echo "SKIP: no openssl command"; exit 77; }
[ -x "$TL" ] || { echo "FAIL: no turn-load at $TL"; exit 1; }

. "$(dirname "$0")/lib.sh"  # scratch_dir, pids, wait_listen, make_cert, free_port
scratch_dir turn-load-tcp-relay-test
make_cert

check() {  # check JSON_FILE LABEL TRANSPORT
    "$PY" - "$@" <<'PYEOF'
import json, sys
path, label, transport = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(path))
t = d["traffic"]
lat = t["latency_us"]
size, duration, rate, allocs = 173, 3.0, 2000, 4
problems = []
for key, want in (("mode", "tcp-relay"), ("transport", transport), ("peer_transport", "tcp")):
    if d["config"].get(key) != want:
        problems.append("config.%s %r != %r" % (key, d["config"].get(key), want))
if d["setup"]["ok"] != allocs or d["setup"]["failed"] != 0:
    problems.append("setup ok %s failed %s (want %d, 0)" % (d["setup"]["ok"], d["setup"]["failed"], allocs))
offered = t["sent"] + t["send_failed"]
# 2000/s for 3 s: 6000 offered (the token bucket may run a little ahead).
if not 0.9 * rate * duration <= offered <= 1.1 * rate * duration:
    problems.append("offered %d, expected about %d" % (offered, rate * duration))
if t["send_failed"] != 0:
    problems.append("send_failed %d" % t["send_failed"])
if t["received"] != t["sent"] or t["lost"] != 0 or t["loss_ratio"] != 0:
    problems.append("sent %d, received %d, lost %d: not every message came back" % (t["sent"], t["received"], t["lost"]))
for k in ("duplicates", "stale", "foreign", "stream_broken"):
    if t.get(k, -1) != 0:
        problems.append("%s = %s" % (k, t.get(k)))
if abs(t["delivered_pps"] - t["received"] / duration) > 1e-6:
    problems.append("delivered_pps %.1f != received/duration" % t["delivered_pps"])
if abs(t["delivered_bytes_per_s"] - t["delivered_pps"] * size) > 1e-3:
    problems.append("delivered_bytes_per_s %.1f != delivered_pps x %d" % (t["delivered_bytes_per_s"], size))
if not (0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]) or lat["count"] != t["received"]:
    problems.append("latency: %s (received %d)" % (lat, t["received"]))
if not t.get("server_cpu_s", -1) > 0:
    problems.append("server_cpu_s %s: --server-pid not sampled" % t.get("server_cpu_s"))
if d["setup"]["released"] != allocs or d["setup"]["release_failed"] != 0:
    problems.append("released %s, release_failed %s" % (d["setup"]["released"], d["setup"]["release_failed"]))
p = d["peers"]
if p.get("transport") != "tcp" or p.get("connections") != allocs or p.get("refused_connections") != 0:
    problems.append("peers: %s (want %d connections from the relay, none refused)" % (p, allocs))
if p.get("echoed_bytes") != t["sent"] * size:
    problems.append("peers echoed %s bytes, sent %d x %d" % (p.get("echoed_bytes"), t["sent"], size))
errs = {k: v for k, v in d["errors"].items() if k != "438_retried"}
if errs:
    problems.append("errors %s" % errs)
print("%s: sent %d received %d lost %d, %.0f B/s, p50 %.1f us p99 %.1f us%s" % (
    label, t["sent"], t["received"], t["lost"], t["delivered_bytes_per_s"], lat["p50"], lat["p99"],
    "" if not problems else " -- FAIL: " + "; ".join(problems)))
sys.exit(1 if problems else 0)
PYEOF
}

run_traffic() {  # run_traffic NAME TCP_PORT TLS_PORT SERVER_PID
    for tr in tcp tls; do
        port=$2
        extra=""
        if [ "$tr" = tls ]; then
            port=$3
            extra="--tls-ca $dir/cert.pem"
        fi
        # shellcheck disable=SC2086
        timeout 60 "$TL" --server "127.0.0.1:$port" --transport "$tr" $extra --user demo --password demo-password \
            --mode tcp-relay --allocations 4 --threads 2 --size 173 --rate 2000 --duration 3 --grace 1 \
            --server-pid "$4" --quiet --json "$dir/$1-$tr.json"
        check "$dir/$1-$tr.json" "$1 $tr tcp-relay" "$tr"
    done
}

ran=0
if [ -n "$RELAY" ] && [ -x "$RELAY" ]; then
    rport=$(free_port 40000 45000)
    rtls=$(free_port 40000 45000)
    cat > "$dir/turn-relay.toml" <<TOML
[server]
listen = ["127.0.0.1:$rport"]
listen_tcp = ["127.0.0.1:$rport"]
listen_tls = ["127.0.0.1:$rtls"]
relay_ips = ["127.0.0.1"]
relay_port_min = 43000
relay_port_max = 43499
realm = "turnrelay.local"
threads = 2

[tls]
certificate = "$dir/cert.pem"
private_key = "$dir/key.pem"

[auth]
users = ["demo:demo-password"]
rest_secrets = []

[policy]
allow_peers = ["127.0.0.0/8"]
deny_peers = ["127.0.0.2/32"]

[metrics]
listen = ""
TOML
    "$RELAY" --config "$dir/turn-relay.toml" > "$dir/turn-relay.log" 2>&1 &
    rpid=$!
    pids="$pids $rpid"
    wait_listen "$rport" turn-relay
    wait_listen "$rtls" turn-relay
    run_traffic turn-relay "$rport" "$rtls" "$rpid"
    ran=$((ran + 1))

    # Setup only: connect + Allocate + Connect + data connection + ConnectionBind, 8 times.
    timeout 60 "$TL" --server "127.0.0.1:$rport" --transport tcp --user demo --password demo-password \
        --mode tcp-relay --allocations 8 --threads 2 --setup-only --duration 10 --quiet --json "$dir/setup.json"
    "$PY" - "$dir/setup.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["setup"], d["peers"]
problems = []
if s["ok"] != 8 or s["failed"] != 0 or s["released"] != 8 or not s["rate_per_s"] > 0:
    problems.append("setup %s" % s)
if p.get("connections") != 8 or p.get("echoed_bytes") != 0:
    problems.append("peers %s (want 8 connections, nothing echoed)" % p)
if "traffic" in d or "sweep" in d:
    problems.append("traffic in a --setup-only run")
if {k: v for k, v in d["errors"].items() if k != "438_retried"}:
    problems.append("errors %s" % d["errors"])
print("turn-relay setup-only: %d/8 up, %.0f/s%s" % (s["ok"], s["rate_per_s"],
      "" if not problems else " -- FAIL: " + "; ".join(problems)))
sys.exit(1 if problems else 0)
PYEOF

    # A two-rate sweep on the same allocations: one zero-loss entry per rate.
    timeout 60 "$TL" --server "127.0.0.1:$rport" --transport tcp --user demo --password demo-password \
        --mode tcp-relay --allocations 4 --size 173 --sweep 1000,3000 --duration 1 --grace 1 --quiet \
        --json "$dir/sweep.json"
    "$PY" - "$dir/sweep.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
sw = d.get("sweep", [])
problems = []
if [p["target_pps"] for p in sw] != [1000, 3000]:
    problems.append("sweep targets %s" % [p["target_pps"] for p in sw])
for p in sw:
    if p["lost"] != 0 or p["received"] != p["sent"] or not 0.9 * p["target_pps"] <= p["offered_pps"] <= 1.1 * p["target_pps"]:
        problems.append("at %d/s: offered %.0f sent %d received %d lost %d" % (
            p["target_pps"], p["offered_pps"], p["sent"], p["received"], p["lost"]))
print("turn-relay sweep: %s%s" % (", ".join("%.0f/s lost %d" % (p["offered_pps"], p["lost"]) for p in sw),
      "" if not problems else " -- FAIL: " + "; ".join(problems)))
sys.exit(1 if problems else 0)
PYEOF

    # Failure path: the relay denies the peer (403 to every Connect).
    rc=0
    timeout 60 "$TL" --server "127.0.0.1:$rport" --transport tcp --user demo --password demo-password \
        --mode tcp-relay --peer-addr 127.0.0.2 --allocations 4 --threads 2 --rate 1000 --duration 1 --quiet \
        --json "$dir/denied.json" 2> "$dir/denied.txt" || rc=$?
    [ "$rc" -eq 1 ] || { echo "FAIL: turn-load exited $rc (want 1) with every Connect refused:"; cat "$dir/denied.txt"; exit 1; }
    grep -q "no allocation could be set up.*403: 4" "$dir/denied.txt" \
        || { echo "FAIL: the refused Connects were not reported:"; cat "$dir/denied.txt"; exit 1; }
    "$PY" - "$dir/denied.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["setup"]
problems = []
if d["errors"].get("403") != 4:
    problems.append("errors %s (want 403: 4)" % d["errors"])
if s["ok"] != 0 or s["failed"] != 4:
    problems.append("setup ok %s failed %s (want 0, 4)" % (s["ok"], s["failed"]))
if d["peers"].get("connections") != 0:
    problems.append("peers %s: a denied peer was connected" % d["peers"])
print("turn-relay denied peer: errors %s, setup failed %d%s" % (d["errors"], s["failed"],
      "" if not problems else " -- FAIL: " + "; ".join(problems)))
sys.exit(1 if problems else 0)
PYEOF
else
    echo "no turn-relay binary (${RELAY:-none}): turn-relay cases skipped"
fi

if [ -x "$TURNSERVER" ]; then
    cport=$(free_port 40000 45000)
    ctls=$(free_port 40000 45000)
    # coturn serves TCP on its listening port and TLS on its TLS port.
    "$TURNSERVER" -n --listening-ip=127.0.0.1 --listening-port="$cport" --relay-ip=127.0.0.1 \
        --min-port=43500 --max-port=43999 --lt-cred-mech --user=demo:demo-password --realm=turnrelay.local \
        --allow-loopback-peers --tls-listening-port="$ctls" --cert="$dir/cert.pem" --pkey="$dir/key.pem" \
        --no-dtls --no-cli --db="$dir/coturn.db" --log-file=stdout > "$dir/coturn.log" 2>&1 &
    cpid=$!
    pids="$pids $cpid"
    wait_listen "$cport" coturn
    wait_listen "$ctls" coturn
    run_traffic coturn "$cport" "$ctls" "$cpid"
    ran=$((ran + 1))
else
    echo "no $TURNSERVER (Debian package coturn): coturn cases skipped"
fi

[ "$ran" -gt 0 ] || { echo "SKIP: neither turn-relay nor coturn available"; exit 77; }
echo "PASS"
