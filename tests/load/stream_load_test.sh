#!/bin/sh
# End-to-end test of turn-load over TCP, TLS and DTLS (RFC 8656 3.1, RFC
# 7350): the real turn-load against the real turn-relay and against Debian's
# coturn, both with TCP, TLS and DTLS listeners on loopback (self-signed
# certificate made with the openssl command; turn-load verifies it with
# --tls-ca). For each server, transport (tcp, tls, dtls) and mode (channel,
# send): 4 allocations, 2 threads, 300 echoes/s for 2 s. Asserts from the
# JSON: every allocation set up and released, every packet offered was sent
# and came back (zero loss, no send refused, no duplicate, no foreign message,
# no broken connection or DTLS session), the counts match the offered rate,
# latency percentiles ordered, the transport recorded. Then the failure paths:
# a refused connection (TCP, and DTLS: ICMP port unreachable) and an
# unverifiable certificate (TLS, DTLS) each end turn-load with a non-zero exit
# and a message that names the cause.
#
# usage: stream_load_test.sh PATH/TO/turn-load PATH/TO/turn-relay   (exit 77 = skipped)
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
scratch_dir turn-load-stream-test
make_cert

check() {  # check JSON_FILE LABEL TRANSPORT
    "$PY" - "$@" <<'PYEOF'
import json, sys
path, label, transport = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(path))
t = d["traffic"]
lat = t["latency_us"]
problems = []
if d["config"].get("transport") != transport:
    problems.append("config.transport %r != %r" % (d["config"].get("transport"), transport))
if d["setup"]["ok"] != 4 or d["setup"]["failed"] != 0:
    problems.append("setup ok %s failed %s (want 4, 0)" % (d["setup"]["ok"], d["setup"]["failed"]))
offered = t["sent"] + t["send_failed"]
# 300/s for 2 s: 600 offered (the token bucket may run a little ahead).
if not 540 <= offered <= 660:
    problems.append("offered %d, expected about 600" % offered)
if t["send_failed"] != 0:
    problems.append("send_failed %d" % t["send_failed"])
if t["received"] != t["sent"] or t["lost"] != 0 or t["loss_ratio"] != 0:
    problems.append("sent %d, received %d, lost %d: not every packet came back" % (t["sent"], t["received"], t["lost"]))
for k in ("duplicates", "stale", "foreign", "stream_broken"):
    if t.get(k, -1) != 0:
        problems.append("%s = %s" % (k, t.get(k)))
if abs(t["delivered_pps"] - t["received"] / 2.0) > 1e-6:
    problems.append("delivered_pps %.1f != received/duration" % t["delivered_pps"])
if not (0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]) or lat["count"] != t["received"]:
    problems.append("latency: %s (received %d)" % (lat, t["received"]))
if d["setup"]["released"] != 4:
    problems.append("released %s != 4" % d["setup"]["released"])
if d["peers"]["refused"] != 0 or d["peers"]["echoed"] != t["received"]:
    problems.append("peers: echoed %s refused %s (received %d)" % (d["peers"]["echoed"], d["peers"]["refused"], t["received"]))
errs = {k: v for k, v in d["errors"].items() if k != "438_retried"}
if errs:
    problems.append("errors %s" % errs)
print("%s: sent %d received %d lost %d, p50 %.1f us p99 %.1f us%s" % (
    label, t["sent"], t["received"], t["lost"], lat["p50"], lat["p99"],
    "" if not problems else " -- FAIL: " + "; ".join(problems)))
sys.exit(1 if problems else 0)
PYEOF
}

run_all() {  # run_all NAME TCP_PORT TLS_PORT DTLS_PORT
    for tr in tcp tls dtls; do
        port=$2
        extra=""
        if [ "$tr" = tls ]; then
            port=$3
            extra="--tls-ca $dir/cert.pem"
        elif [ "$tr" = dtls ]; then
            port=$4
            extra="--tls-ca $dir/cert.pem"
        fi
        for mode in channel send; do
            # shellcheck disable=SC2086
            timeout 60 "$TL" --server "127.0.0.1:$port" --transport "$tr" $extra --user demo --password demo-password \
                --allocations 4 --threads 2 --mode "$mode" --size 173 --rate 300 --duration 2 --grace 1 --quiet \
                --json "$dir/$1-$tr-$mode.json"
            check "$dir/$1-$tr-$mode.json" "$1 $tr $mode" "$tr"
        done
    done
}

ran=0
if [ -n "$RELAY" ] && [ -x "$RELAY" ]; then
    rport=$(free_port)
    rtls=$(free_port)
    rdtls=$(free_port)
    cat > "$dir/turn-relay.toml" <<TOML
[server]
listen = ["127.0.0.1:$rport"]
listen_tcp = ["127.0.0.1:$rport"]
listen_tls = ["127.0.0.1:$rtls"]
listen_dtls = ["127.0.0.1:$rdtls"]
relay_ips = ["127.0.0.1"]
relay_port_min = 50000
relay_port_max = 50999
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

[metrics]
listen = ""
TOML
    "$RELAY" --config "$dir/turn-relay.toml" > "$dir/turn-relay.log" 2>&1 &
    pids="$pids $!"
    wait_listen "$rport" turn-relay
    wait_listen "$rtls" turn-relay
    wait_listen "$rdtls" turn-relay u
    run_all turn-relay "$rport" "$rtls" "$rdtls"
    ran=$((ran + 1))

    # Failure paths (against turn-relay's listeners).
    # Refused: nothing listens on the port after the closed one we reserve.
    dead=$(free_port)
    if timeout 30 "$TL" --server "127.0.0.1:$dead" --transport tcp --user demo --password demo-password \
        --allocations 2 --duration 1 --quiet 2> "$dir/refused.txt"; then
        echo "FAIL: turn-load exited 0 with its connections refused"; exit 1
    fi
    grep -q "Connection refused" "$dir/refused.txt" \
        || { echo "FAIL: a refused connection was not reported:"; cat "$dir/refused.txt"; exit 1; }
    # Over DTLS the same port answers the ClientHello with ICMP port unreachable.
    if timeout 30 "$TL" --server "127.0.0.1:$dead" --transport dtls --tls-no-verify --user demo \
        --password demo-password --allocations 2 --duration 1 --quiet 2> "$dir/refused-dtls.txt"; then
        echo "FAIL: turn-load exited 0 with its DTLS handshakes refused"; exit 1
    fi
    grep -q "DTLS handshake with 127.0.0.1:$dead: Connection refused" "$dir/refused-dtls.txt" \
        || { echo "FAIL: a refused DTLS handshake was not reported:"; cat "$dir/refused-dtls.txt"; exit 1; }
    # The self-signed certificate without --tls-ca does not verify (TLS, DTLS).
    for tr in tls dtls; do
        port=$rtls
        [ "$tr" = tls ] || port=$rdtls
        if timeout 30 "$TL" --server "127.0.0.1:$port" --transport $tr --user demo --password demo-password \
            --allocations 2 --duration 1 --quiet 2> "$dir/verify-$tr.txt"; then
            echo "FAIL: turn-load accepted an unverifiable certificate over $tr"; exit 1
        fi
        grep -q "TLS handshake.*certificate not accepted" "$dir/verify-$tr.txt" \
            || { echo "FAIL: the $tr handshake failure was not reported:"; cat "$dir/verify-$tr.txt"; exit 1; }
    done
    echo "failure paths: refused (TCP, DTLS) and unverifiable certificate (TLS, DTLS) reported, non-zero exit"
else
    echo "no turn-relay binary (${RELAY:-none}): turn-relay cases skipped"
fi

if [ -x "$TURNSERVER" ]; then
    cport=$(free_port)
    ctls=$(free_port)
    # coturn serves TLS (TCP) and DTLS (UDP) on its TLS port.
    "$TURNSERVER" -n --listening-ip=127.0.0.1 --listening-port="$cport" --relay-ip=127.0.0.1 \
        --min-port=51000 --max-port=51999 --lt-cred-mech --user=demo:demo-password --realm=turnrelay.local \
        --allow-loopback-peers --tls-listening-port="$ctls" --cert="$dir/cert.pem" --pkey="$dir/key.pem" \
        --no-cli --db="$dir/coturn.db" --log-file=stdout > "$dir/coturn.log" 2>&1 &
    pids="$pids $!"
    wait_listen "$cport" coturn
    wait_listen "$ctls" coturn
    wait_listen "$ctls" coturn u
    run_all coturn "$cport" "$ctls" "$ctls"
    ran=$((ran + 1))
else
    echo "no $TURNSERVER (Debian package coturn): coturn cases skipped"
fi

[ "$ran" -gt 0 ] || { echo "SKIP: neither turn-relay nor coturn available"; exit 77; }
echo "PASS"
