#!/bin/sh
# End-to-end test of bench/load/turn-load against Debian's coturn on loopback:
# 4 authenticated allocations, ~5 s at a modest rate in channel mode and in
# send mode (long-term credentials), then a short run with TURN REST
# credentials. Asserts from the JSON that packets were delivered, none was
# lost at this rate, and the latency percentiles are ordered.
#
# usage: coturn_load_test.sh PATH/TO/turn-load     (exit 77 = skipped)
set -eu

TL=$1
TURNSERVER=${TURNSERVER:-/usr/bin/turnserver}
PY=/usr/bin/python3
[ -x "$TURNSERVER" ] || { echo "SKIP: $TURNSERVER not installed (Debian package coturn)"; exit 77; }
[ -x "$PY" ] || { echo "SKIP: $PY missing"; exit 77; }

. "$(dirname "$0")/lib.sh"  # scratch_dir, pids, wait_listen, free_port
scratch_dir turn-load-test

# start_coturn NAME EXTRA_FLAGS...: starts coturn on a free port, sets $port.
start_coturn() {
    name=$1
    shift
    port=$(free_port)
    # Relay ports: a random block of 500 in 45000..59999.
    base=$((45000 + ($(od -An -N2 -tu2 /dev/urandom) % 30) * 500))
    "$TURNSERVER" -n --listening-ip="${LISTEN:-127.0.0.1}" --listening-port="$port" --relay-ip="${LISTEN:-127.0.0.1}" \
        --min-port="$base" --max-port=$((base + 499)) --realm=turnrelay.local \
        --allow-loopback-peers --no-tls --no-dtls --no-cli --no-stun-backward-compatibility \
        --db="$dir/$name.db" --log-file=stdout "$@" > "$dir/$name.log" 2>&1 &
    pids="$pids $!"
    wait_listen "$port" "$name" u
}

check() {  # check JSON_FILE LABEL
    "$PY" - "$1" "$2" <<'PYEOF'
import json, sys
path, label = sys.argv[1], sys.argv[2]
d = json.load(open(path))
t = d["traffic"]
lat = t["latency_us"]
problems = []
if d["setup"]["ok"] != 4:
    problems.append("setup ok %s != 4" % d["setup"]["ok"])
if not t["received"] > 0 or not t["delivered_pps"] > 0:
    problems.append("nothing delivered")
if t["lost"] != 0 or t["loss_ratio"] != 0:
    problems.append("lost %s packets (loss %.4f)" % (t["lost"], t["loss_ratio"]))
if not (0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]):
    problems.append("percentiles out of order: %s" % lat)
if d["setup"]["released"] != 4:
    problems.append("released %s != 4" % d["setup"]["released"])
if not t["per_second"]:
    problems.append("no per-second samples")
if d["peers"]["refused"] != 0:
    problems.append("peers refused %s datagrams" % d["peers"]["refused"])
print("%s: delivered %.0f/s, lost %d, p50 %.1f us, p99 %.1f us, setup %.0f/s%s" % (
    label, t["delivered_pps"], t["lost"], lat["p50"], lat["p99"], d["setup"]["rate_per_s"],
    "" if not problems else " -- FAIL: " + "; ".join(problems)))
sys.exit(1 if problems else 0)
PYEOF
}

start_coturn lt --lt-cred-mech --user=demo:demo-password
for mode in channel send; do
    "$TL" --server "127.0.0.1:$port" --user demo --password demo-password --allocations 4 --threads 2 \
        --mode "$mode" --rate 400 --duration 5 --grace 1 --quiet --json "$dir/$mode.json" \
        --plot "$dir/$mode.png"
    check "$dir/$mode.json" "coturn $mode"
    [ -s "$dir/$mode.png" ] || { echo "FAIL: no plot $dir/$mode.png"; exit 1; }
done

start_coturn rest --use-auth-secret --static-auth-secret=load-test-secret
# With churn alongside (new allocations created and deleted at 20/s).
"$TL" --server "127.0.0.1:$port" --rest-secret load-test-secret --allocations 4 --mode channel \
    --rate 200 --duration 2 --churn 20 --churn-hold 0.2 --quiet --json "$dir/rest.json"
check "$dir/rest.json" "coturn REST"
"$PY" - "$dir/rest.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["traffic"]["churn"]
ok = c["created"] >= 10 and c["failed"] == 0 and c["delete_failed"] == 0 and c["deleted"] == c["created"]
# On failure, why (STUN codes, timeouts: turn-load's error tally).
print("churn: created %d, failed %d, deleted %d, setup p50 %.2f ms%s" % (
    c["created"], c["failed"], c["deleted"], c["setup_latency_ms"]["p50"],
    "" if ok else " -- FAIL; errors %s" % d.get("errors")))
sys.exit(0 if ok else 1)
PYEOF

# A wrong secret must fail cleanly with an error, not hang.
if "$TL" --server "127.0.0.1:$port" --rest-secret wrong --allocations 1 --duration 1 --quiet 2>"$dir/err.txt"; then
    echo "FAIL: a wrong REST secret was accepted"; exit 1
fi
grep -q "401" "$dir/err.txt" || { echo "FAIL: wrong secret did not report 401:"; cat "$dir/err.txt"; exit 1; }
# IPv6 loopback, Send indications (XOR-PEER-ADDRESS depends on the
# transaction ID there), if the host has ::1.
if ip -6 addr show dev lo 2>/dev/null | grep -q '::1/128'; then
    LISTEN=::1 start_coturn v6 --lt-cred-mech --user=demo:demo-password
    "$TL" --server "[::1]:$port" --peer-addr ::1 --user demo --password demo-password --allocations 4 \
        --mode send --rate 200 --duration 1.5 --quiet --json "$dir/v6.json"
    check "$dir/v6.json" "coturn IPv6 send"
else
    echo "no ::1 on lo: IPv6 case skipped"
fi
echo "PASS"
