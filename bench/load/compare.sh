#!/bin/sh
# Side-by-side run of turn-load against coturn and turn-relay (socket mode) on
# loopback, both servers up at once and measured alternately, REPS times:
#   1. sweep: one short phase per offered rate; the highest zero-loss rate is
#      the highest rate actually offered before the first phase that lost a
#      packet (a lower bound if none lost any, or if the harness could not
#      offer the next target);
#   2. latency: 5 s at half of that rate (p50/p99 round trip);
#   3. setup: --setup-only with SETUP_N allocations (Allocate with the 401
#      round trip, CreatePermission, ChannelBind), SETUP_THREADS in parallel;
#   4. with COMMON_RATE set: 5 s at that same rate for every server (loss,
#      p50/p99 and CPU per relayed packet at equal load).
# With HOLD_N=N1,N2,... (increasing), before step 1: each server holds N
# allocations (N connections or DTLS sessions over TCP, TLS, DTLS) for
# HOLD_S seconds (default 20) at HOLD_PPS packets/s each (default 0.1: mostly
# idle), every size in turn on the freshly started server, while its resident
# memory (VmRSS) is sampled every 0.2 s; hold.md gets the peak against the
# size before, the memory per allocation between sizes (the slope, which
# memory the allocator kept from a smaller size does not hide) and the
# server's CPU (cores) while holding them. REPS=0 runs only that.
# Prints a Markdown table of medians (min-max) and writes every JSON and PNG
# to OUT. Loopback only; every process it starts is stopped by PID.
#
# --transport tcp|tls|dtls (default udp): turn-load talks TURN to both servers
# over TCP, TLS or DTLS (RFC 8656 3.1, RFC 7350; one connection or DTLS
# session per allocation, peers stay UDP). Both servers get a TCP, TLS or DTLS
# listener (coturn serves DTLS on its TLS port; turn-relay gets listen_dtls
# with its [dtls] per-IP limits lifted); for TLS and DTLS a self-signed
# certificate (IP SAN 127.0.0.1) is made with the openssl command in a
# temporary directory, and turn-load verifies the servers against it (--tls-ca).
#
# MODE=tcp-relay (with --transport tcp or tls): RFC 6062 TCP allocations, each
# a control and a data connection piping messages to TCP echo peers; the
# setup step then measures connect + Allocate + Connect + ConnectionBind.
#
# PORT_RANGE=LO-HI picks the servers' listening ports at random in LO..HI-1
# (default: ports the kernel picks); COTURN_RELAY_PORTS and RELAY_RELAY_PORTS
# (LO-HI) move their relayed port ranges (default 45000-47999, 48000-50999).
#
# usage: bench/load/compare.sh [--transport udp|tcp|tls|dtls] [OUT]   (env: REPS RATES
#        SETUP_N SETUP_THREADS ALLOCS THREADS SIZE MODE TRANSPORT COMMON_RATE TURN_LOAD
#        TURN_RELAY TURNSERVER PORT_RANGE COTURN_RELAY_PORTS RELAY_RELAY_PORTS HOLD_N HOLD_S HOLD_PPS)
set -eu

TRANSPORT=${TRANSPORT:-udp}
while [ $# -gt 0 ]; do
    case $1 in
        --transport) [ $# -ge 2 ] || { echo "compare.sh: --transport needs udp, tcp, tls or dtls" >&2; exit 2; }
                     TRANSPORT=$2; shift 2 ;;
        --transport=*) TRANSPORT=${1#--transport=}; shift ;;
        -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
        -*) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
case $TRANSPORT in
    udp|tcp|tls|dtls) ;;
    *) echo "compare.sh: --transport must be udp, tcp, tls or dtls, not '$TRANSPORT'" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/turn-load-compare.$(date -u +%Y%m%dT%H%M%SZ)}
REPS=${REPS:-3}
RATES=${RATES:-10000,20000,30000,40000,50000,60000,70000,80000,100000,120000}
STEP_S=${STEP_S:-2}
SETUP_N=${SETUP_N:-1000}
SETUP_THREADS=${SETUP_THREADS:-4}
ALLOCS=${ALLOCS:-8}
THREADS=${THREADS:-1}
SIZE=${SIZE:-172}
MODE=${MODE:-channel}
COMMON_RATE=${COMMON_RATE:-}
PORT_RANGE=${PORT_RANGE:-}
COTURN_RELAY_PORTS=${COTURN_RELAY_PORTS:-45000-47999}
RELAY_RELAY_PORTS=${RELAY_RELAY_PORTS:-48000-50999}
HOLD_N=${HOLD_N:-}
HOLD_S=${HOLD_S:-20}
HOLD_PPS=${HOLD_PPS:-0.1}
case $MODE in
    tcp-relay)
        case $TRANSPORT in
            tcp|tls) ;;
            *) echo "compare.sh: MODE=tcp-relay needs --transport tcp or tls (RFC 6062)" >&2; exit 2 ;;
        esac
        PEERS=tcp
        SETUP_MODE="--mode tcp-relay" ;;
    *)
        PEERS=udp
        SETUP_MODE="" ;;
esac
TURN_LOAD=${TURN_LOAD:-$ROOT/build-load/bench/load/turn-load}
TURN_RELAY=${TURN_RELAY:-$ROOT/build-load/controlplane/turn-relay}
TURNSERVER=${TURNSERVER:-/usr/bin/turnserver}
PY=/usr/bin/python3

for f in "$TURN_LOAD" "$TURNSERVER" "$PY"; do
    [ -x "$f" ] || { echo "compare.sh: missing $f" >&2; exit 1; }
done
mkdir -p "$OUT"
pids=""
tmp=""
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

. "$ROOT/bench/load/ports.sh"  # free_port
# A listening port: in PORT_RANGE if set.
listen_port() {
    if [ -n "$PORT_RANGE" ]; then
        free_port "${PORT_RANGE%-*}" "${PORT_RANGE#*-}"
    else
        free_port
    fi
}
# wait_listen PORT [u|t]: UDP (default) or TCP listener.
wait_listen() {
    i=0
    while ! ss -Hl"${2:-u}"n "sport = :$1" | grep -q .; do
        i=$((i + 1))
        [ $i -le 50 ] || { echo "compare.sh: nothing listens on $1" >&2; exit 1; }
        sleep 0.1
    done
}

TLS_ARGS=""
COTURN_TLS="--no-tls"
COTURN_DTLS="--no-dtls"
if [ "$TRANSPORT" = tls ] || [ "$TRANSPORT" = dtls ]; then
    tmp=$(mktemp -d /tmp/turn-load-compare-tls.XXXXXX)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=turnrelay.test -addext "subjectAltName=IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:TRUE" -keyout "$tmp/key.pem" -out "$tmp/cert.pem" \
        > "$tmp/openssl.log" 2>&1 || { cat "$tmp/openssl.log" >&2; exit 1; }
    cp "$tmp/cert.pem" "$OUT/cert.pem"   # public half, so the run can be checked later
    TLS_ARGS="--tls-ca $tmp/cert.pem"
fi

# coturn: Debian defaults plus what loopback testing needs.
# coturn listens on TCP on its UDP port by default; TLS (TCP) and DTLS (UDP)
# on a port of their own (and, like the UDP port, that port + 1: reserve two).
COTURN_PORT=$(listen_port)
COTURN_TARGET=$COTURN_PORT
if [ "$TRANSPORT" = tls ] || [ "$TRANSPORT" = dtls ]; then
    COTURN_TLS_PORT=$(listen_port)
    COTURN_TARGET=$COTURN_TLS_PORT
    COTURN_TLS="--tls-listening-port=$COTURN_TLS_PORT --cert=$tmp/cert.pem --pkey=$tmp/key.pem"
    # DTLS only for the DTLS run (its TLS listener on the same port stays on, idle).
    [ "$TRANSPORT" = tls ] || COTURN_DTLS=""
fi
# What turn-load's target listens on: TCP for TCP and TLS, UDP for UDP and DTLS.
TARGET_PROTO=t
case $TRANSPORT in udp|dtls) TARGET_PROTO=u ;; esac
COTURN_CMD="$TURNSERVER -n --listening-ip=127.0.0.1 --listening-port=$COTURN_PORT --relay-ip=127.0.0.1 \
--min-port=${COTURN_RELAY_PORTS%-*} --max-port=${COTURN_RELAY_PORTS#*-} --lt-cred-mech --user=demo:demo-password --realm=turnrelay.local \
--allow-loopback-peers $COTURN_TLS $COTURN_DTLS --no-cli --db=$OUT/coturn.db --log-file=stdout"
# shellcheck disable=SC2086
$COTURN_CMD > "$OUT/coturn.log" 2>&1 &
pids="$pids $!"
wait_listen "$COTURN_PORT"
wait_listen "$COTURN_TARGET" $TARGET_PROTO
servers="coturn=127.0.0.1:$COTURN_TARGET=$!"

if [ -x "$TURN_RELAY" ]; then
    RELAY_PORT=$(listen_port)
    RELAY_TARGET=$RELAY_PORT
    STREAM_KEYS=""
    TLS_SECTION=""
    if [ "$TRANSPORT" = tcp ]; then
        STREAM_KEYS="listen_tcp = [\"127.0.0.1:$RELAY_PORT\"]"
    elif [ "$TRANSPORT" = tls ] || [ "$TRANSPORT" = dtls ]; then
        RELAY_TARGET=$(listen_port)
        STREAM_KEYS="listen_$TRANSPORT = [\"127.0.0.1:$RELAY_TARGET\"]"
        TLS_SECTION="[tls]
certificate = \"$tmp/cert.pem\"
private_key = \"$tmp/key.pem\""
        [ "$TRANSPORT" = tls ] || TLS_SECTION="$TLS_SECTION

[dtls]
max_sessions = 100000
max_sessions_per_ip = 100000
handshakes_per_ip_per_s = 0"
    fi
    # Quota and unauthenticated-rate limits lifted, as coturn has none by
    # default (per-IP connections and DTLS sessions too: every client is 127.0.0.1).
    cat > "$OUT/turn-relay.toml" <<TOML
[server]
listen = ["127.0.0.1:$RELAY_PORT"]
$STREAM_KEYS
relay_ips = ["127.0.0.1"]
relay_port_min = ${RELAY_RELAY_PORTS%-*}
relay_port_max = ${RELAY_RELAY_PORTS#*-}
realm = "turnrelay.local"

[auth]
users = ["demo:demo-password"]
rest_secrets = []

[allocation]
max_per_user = 100000
max_total = 100000

[policy]
allow_peers = ["127.0.0.0/8", "::1/128"]
unauth_per_ip_per_s = 1000000

[tcp]
max_connections = 10000
max_connections_per_ip = 10000
accepts_per_ip_per_s = 0

[metrics]
listen = ""

$TLS_SECTION
TOML
    "$TURN_RELAY" --config "$OUT/turn-relay.toml" > "$OUT/turn-relay.log" 2>&1 &
    pids="$pids $!"
    wait_listen "$RELAY_PORT"
    wait_listen "$RELAY_TARGET" $TARGET_PROTO
    servers="$servers turn-relay=127.0.0.1:$RELAY_TARGET=$!"
else
    echo "compare.sh: $TURN_RELAY not built; coturn only" >&2
fi

AUTH="--user demo --password demo-password --transport $TRANSPORT $TLS_ARGS"
COMMON="--allocations $ALLOCS --threads $THREADS --mode $MODE --size $SIZE --quiet"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(uname -r), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "transport: $TRANSPORT (client <-> server; peers $PEERS), mode $MODE"
    echo "coturn: $COTURN_CMD"
    [ -x "$TURN_RELAY" ] && echo "turn-relay: $TURN_RELAY --config $OUT/turn-relay.toml"
    echo "sweep: turn-load --server S $AUTH $COMMON --sweep $RATES --duration $STEP_S --json F --plot F.png"
    echo "latency: turn-load --server S $AUTH $COMMON --rate R/2 --duration 5 --json F"
    [ -z "$COMMON_RATE" ] || echo "equal load: turn-load --server S $AUTH $COMMON --rate $COMMON_RATE --duration 5 --json F"
    echo "setup: turn-load --server S $AUTH $SETUP_MODE --allocations $SETUP_N --threads $SETUP_THREADS --setup-only --duration 60 --json F"
    [ -z "$HOLD_N" ] || echo "hold (before the first sweep, N in $HOLD_N): turn-load --server S $AUTH --mode $MODE --size $SIZE --quiet --allocations N --threads $SETUP_THREADS --rate N*$HOLD_PPS --duration $HOLD_S --json F, server VmRSS sampled every 0.2 s"
} > "$OUT/commands.txt"
cat "$OUT/commands.txt" >&2

rss_kib() {  # rss_kib PID: resident set of PID in KiB
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}
if [ -n "$HOLD_N" ]; then
    for entry in $servers; do
        name=${entry%%=*}
        rest=${entry#*=}
        addr=${rest%%=*}
        spid=${rest#*=}
        for n in $(echo "$HOLD_N" | tr ',' ' '); do
            before=$(rss_kib "$spid")
            rate=$("$PY" -c "print(max(1.0, $n * $HOLD_PPS))")
            echo "hold: $name $n allocations at $rate packets/s for $HOLD_S s" >&2
            # shellcheck disable=SC2086
            "$TURN_LOAD" --server "$addr" $AUTH --mode "$MODE" --size "$SIZE" --quiet --allocations "$n" \
                --threads "$SETUP_THREADS" --rate "$rate" --duration "$HOLD_S" --server-pid "$spid" \
                --json "$OUT/$name-hold-$n.json" &
            tl=$!
            peak=$before
            while kill -0 "$tl" 2>/dev/null; do
                r=$(rss_kib "$spid")
                [ "$r" -le "$peak" ] || peak=$r
                sleep 0.2
            done
            wait "$tl" || { echo "compare.sh: turn-load failed holding $n allocations on $name" >&2; exit 1; }
            echo "$name $n $before $peak" >> "$OUT/hold.txt"
        done
    done
    "$PY" - "$OUT" "$HOLD_S" <<'PYEOF' | tee "$OUT/hold.md"
import json, sys
out, hold_s = sys.argv[1], float(sys.argv[2])
rows = [l.split() for l in open(f"{out}/hold.txt")]
print("| relay | allocations held | RSS before (MiB) | peak RSS holding them (MiB) | KiB per allocation (peak - before) / N | KiB per allocation between sizes | server CPU while holding (cores) | set up / failed |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
prev = {}
for name, n, before, peak in rows:
    n, before, peak = int(n), int(before), int(peak)
    j = json.load(open(f"{out}/{name}-hold-{n}.json"))
    t, s = j["traffic"], j["setup"]
    cores = t.get("server_cpu_s", float("nan")) / t["duration_s"] if t.get("duration_s") else float("nan")
    slope = ""
    if name in prev and n > prev[name][0]:
        slope = f"{(peak - prev[name][1]) / (n - prev[name][0]):.1f}"
    prev[name] = (n, peak)
    print(f"| {name} | {n:,} | {before / 1024:.1f} | {peak / 1024:.1f} | {(peak - before) / n:.1f} | {slope} | "
          f"{cores:.3f} | {s['ok']} / {s['failed']} |")
print(f"\nresident memory sampled every 0.2 s; {hold_s:g} s of traffic per size; raw JSON in {out}")
PYEOF
fi
[ "$REPS" -gt 0 ] || exit 0

for rep in $(seq 1 "$REPS"); do
    for entry in $servers; do
        name=${entry%%=*}
        rest=${entry#*=}
        addr=${rest%%=*}
        spid=${rest#*=}
        echo "rep $rep: $name sweep" >&2
        # shellcheck disable=SC2086
        "$TURN_LOAD" --server "$addr" $AUTH $COMMON --sweep "$RATES" --duration "$STEP_S" --server-pid "$spid" \
            --json "$OUT/$name-sweep-$rep.json" --plot "$OUT/$name-sweep-$rep.png"
        zl=$("$PY" -c '
import json, sys
best = 0
for p in json.load(open(sys.argv[1]))["sweep"]:
    if p["lost"] != 0:
        break
    best = max(best, p["offered_pps"])
print(int(best))' "$OUT/$name-sweep-$rep.json")
        half=$((zl / 2))
        [ "$half" -gt 0 ] || half=1000
        echo "rep $rep: $name zero-loss $zl pps; latency run at $half pps" >&2
        # shellcheck disable=SC2086
        "$TURN_LOAD" --server "$addr" $AUTH $COMMON --rate "$half" --duration 5 --server-pid "$spid" \
            --json "$OUT/$name-half-$rep.json"
        if [ -n "$COMMON_RATE" ]; then
            echo "rep $rep: $name at $COMMON_RATE pps (equal load)" >&2
            # shellcheck disable=SC2086
            "$TURN_LOAD" --server "$addr" $AUTH $COMMON --rate "$COMMON_RATE" --duration 5 --server-pid "$spid" \
                --json "$OUT/$name-common-$rep.json"
        fi
        echo "rep $rep: $name setup" >&2
        # shellcheck disable=SC2086
        "$TURN_LOAD" --server "$addr" $AUTH $SETUP_MODE --allocations "$SETUP_N" --threads "$SETUP_THREADS" --setup-only \
            --duration 60 --quiet --json "$OUT/$name-setup-$rep.json"
    done
done

"$PY" - "$OUT" "$REPS" "$TRANSPORT" "${COMMON_RATE:-0}" "$MODE" $servers <<'PYEOF' | tee "$OUT/summary.md"
import json, statistics, sys
out, reps, transport, common, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
servers = [s.split("=")[0] for s in sys.argv[6:]]
# RFC 6062 pipes carry messages, not packets: name them so.
unit, echo = ("message", "messages") if mode == "tcp-relay" else ("packet", "echoes")

# Highest zero-loss rate: the highest rate actually offered (not the target:
# a CPU-starved harness may fall short of it) before the first lossy step.
# Marked as a lower bound when no step lost anything, or when the harness
# offered less than 97 % of the target at the step that would have been next.
def zero_loss(name, rep):
    best, bound = 0, True
    for p in json.load(open(f"{out}/{name}-sweep-{rep}.json"))["sweep"]:
        if p["lost"] != 0:
            bound = False
            break
        best = max(best, p["offered_pps"])
        if p["offered_pps"] < 0.97 * p["target_pps"]:
            break
    return best, bound

def fmt(vals, unit="", digits=0):
    med = statistics.median(vals)
    return f"{med:,.{digits}f}{unit} ({min(vals):,.{digits}f}-{max(vals):,.{digits}f})"

rows = {}
for name in servers:
    zl, p50, p99, loss, setup, setup_fail, cpu = [], [], [], [], [], [], []
    bounds = 0
    for rep in range(1, reps + 1):
        z, b = zero_loss(name, rep)
        zl.append(z)
        bounds += b
        h = json.load(open(f"{out}/{name}-half-{rep}.json"))["traffic"]
        p50.append(h["latency_us"]["p50"])
        p99.append(h["latency_us"]["p99"])
        loss.append(h["loss_ratio"] * 100)
        cpu.append(h.get("server_cpu_ns_per_relayed_packet", float("nan")))
        s = json.load(open(f"{out}/{name}-setup-{rep}.json"))["setup"]
        setup.append(s["rate_per_s"])
        setup_fail.append(s["failed"])
    rows[name] = dict(zl=zl, p50=p50, p99=p99, loss=loss, setup=setup, setup_fail=setup_fail, cpu=cpu, bounds=bounds)

print(f"| relay | highest zero-loss offered rate ({echo}/s) | p50 at half (us) | p99 at half (us) | loss at half (%) | server CPU per relayed {unit} at half (ns) | setup (allocations/s) | setup failures |")
print("|---|---|---|---|---|---|---|---|")
for name, r in rows.items():
    lb = f" [lower bound in {r['bounds']} of {reps}]" if r["bounds"] else ""
    print(f"| {name} | {fmt(r['zl'])}{lb} | {fmt(r['p50'], digits=1)} | {fmt(r['p99'], digits=1)} | "
          f"{fmt(r['loss'], digits=3)} | {fmt(r['cpu'])} | {fmt(r['setup'])} | {sum(r['setup_fail'])} |")
if "coturn" in rows and "turn-relay" in rows:
    c, t = rows["coturn"], rows["turn-relay"]
    m = statistics.median
    ratio = lambda a, b: (m(a) / m(b)) if m(b) else float("nan")
    print()
    print(f"turn-relay / coturn (medians): zero-loss rate {ratio(t['zl'], c['zl']):.2f}x, "
          f"setup {ratio(t['setup'], c['setup']):.2f}x, p99 at half load {ratio(t['p99'], c['p99']):.2f}x, "
          f"CPU per relayed {unit} {ratio(t['cpu'], c['cpu']):.2f}x "
          f"(each at its own half rate)")
if common > 0:
    print()
    print(f"| relay | equal load {common:,.0f}/s: loss (%) | p50 (us) | p99 (us) | server CPU per relayed {unit} (ns) |")
    print("|---|---|---|---|---|")
    for name in servers:
        c = [json.load(open(f"{out}/{name}-common-{rep}.json"))["traffic"] for rep in range(1, reps + 1)]
        print(f"| {name} | {fmt([x['loss_ratio'] * 100 for x in c], digits=3)} | "
              f"{fmt([x['latency_us']['p50'] for x in c], digits=1)} | {fmt([x['latency_us']['p99'] for x in c], digits=1)} | "
              f"{fmt([x.get('server_cpu_ns_per_relayed_packet', float('nan')) for x in c])} |")
print()
if mode == "tcp-relay":
    print("first lossy sweep step (refused by turn-load's full output queue / not back within --grace):")
else:
    print("first lossy sweep step (kernel UDP drops on turn-load's own sockets / on other sockets, i.e. the relay's):")
for name in servers:
    for rep in range(1, reps + 1):
        for p in json.load(open(f"{out}/{name}-sweep-{rep}.json"))["sweep"]:
            if p["lost"] != 0:
                d = p["udp_drops"]
                why = (f"refused {p['send_failed']:,}, late or missing {p['lost'] - p['send_failed']:,}"
                       if mode == "tcp-relay" else f"drops: own {d['own_sockets']:,}, other {d['other_sockets']:,}")
                print(f"- {name} run {rep}: target {p['target_pps']:,.0f}/s, offered {p['offered_pps']:,.0f}/s, "
                      f"lost {p['lost']:,} ({why})")
                break
        else:
            print(f"- {name} run {rep}: no loss up to the last step")
stream_note = " (latency to turn-load reading the stream)" if transport in ("tcp", "tls") else ""
print(f"\nmedian (min-max) of {reps} runs; one echo = two relayed {unit}s; client <-> server over {transport}"
      f"{stream_note}; mode {mode}; raw JSON and plots in {out}")
PYEOF
