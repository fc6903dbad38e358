#!/bin/bash
# Every figure from one command (issue 5, bench/RESULTS.md): the Google Benchmark
# microbenchmarks of src/ and the control plane, the pcap-fed DPDK dataplane benchmark
# on hugepages, and the side-by-side comparison of coturn, turn-relay (sockets) and
# turn-relay + turn-dataplane on a network-namespace topology.
#
#   bench/run-all.sh [--quick] [--build DIR] [--out DIR]      (root; Debian 12)
#
# --quick: fewer repetitions and one short comparison run (~5 minutes in all);
# the default takes ~25 minutes. Results (JSON and logs) go to OUT
# (default /tmp/turnrelay-bench.<UTC time>); the summary is printed as it goes.
# Every step is bounded in time; hugepages reserved here are released at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build="$here/build"
out="/tmp/turnrelay-bench.$(date -u +%Y%m%dT%H%M%SZ)"
quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --build) build=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "run-all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "run-all.sh: run as root (hugepages, network namespaces)" >&2; exit 2; }
for b in bench/micro/micro_bench tests/controlplane/controlplane_relay_bench bench/dataplane/dataplane_bench \
         bench/load/turn-load controlplane/turn-relay dataplane/turn-dataplane; do
    [ -x "$build/$b" ] || { echo "run-all.sh: $build/$b missing: build first (meson setup build && ninja -C build)" >&2; exit 2; }
done
mkdir -p "$out"
reps=5; runs=9; packets=1000000; flows=1000,10000,100000,1000000; cmp_args=(--reps 3)
if [ $quick = 1 ]; then
    reps=2; runs=3; packets=300000; flows=1000,10000,1000000; cmp_args=(--quick)
fi
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')"

echo "== microbenchmarks: src/ (median of $reps)"
timeout 600 "$build/bench/micro/micro_bench" --benchmark_repetitions=$reps --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/micro.json" --benchmark_out_format=json | grep -E '_median|^Benchmark|^---' || true

echo "== microbenchmarks: control plane (median of $reps)"
timeout 900 "$build/tests/controlplane/controlplane_relay_bench" --benchmark_repetitions=$reps \
    --benchmark_report_aggregates_only=true --benchmark_out="$out/controlplane.json" --benchmark_out_format=json \
    | grep -E '_median|^Benchmark|^---' || true

echo "== dataplane: net_pcap infinite_rx -> pipeline -> net_null, side by side with a plain loop (hugepages)"
hp=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
hp_before=$(cat $hp)
hp_set=""
hugedir=/run/turnrelay-bench-huge
mounted=0
cleanup() {
    rm -f "$hugedir"/rtebench* 2>/dev/null || true
    rm -rf /var/run/dpdk/rtebench
    if [ $mounted = 1 ]; then umount "$hugedir" 2>/dev/null || true; rmdir "$hugedir" 2>/dev/null || true; mounted=0; fi
    # Give back only what this script added, and only if nobody changed the count since.
    if [ -n "$hp_set" ] && [ "$(cat $hp)" = "$hp_set" ]; then echo "$hp_before" > $hp; fi
    hp_set=""
}
trap cleanup EXIT
if [ "$hp_before" -lt 1024 ]; then echo 1024 > $hp; hp_set=$(cat $hp); fi
mkdir -p "$hugedir"
if ! mountpoint -q "$hugedir"; then mount -t hugetlbfs none "$hugedir"; mounted=1; fi
timeout 1800 "$build/bench/dataplane/dataplane_bench" --flows $flows --runs $runs --packets $packets -- \
    -l 1 -n 1 --no-pci --file-prefix=rtebench --huge-dir="$hugedir" --log-level=lib.eal:error \
    | tee "$out/dataplane.txt"
cleanup
trap - EXIT

echo "== coturn vs turn-relay (sockets) vs turn-relay + turn-dataplane (AF_XDP), network namespaces"
timeout 3000 /usr/bin/python3 "$here/bench/load/netns_compare.py" --build "$build" --out "$out/compare" "${cmp_args[@]}" \
    | tee "$out/compare.txt"

echo "== done: $out (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
