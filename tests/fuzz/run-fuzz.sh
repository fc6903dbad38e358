#!/bin/sh
# Runs the libFuzzer targets for a while each, on a scratch copy of the seed
# corpus (the committed corpus is never modified).
#
#   tests/fuzz/run-fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS defaults to 60 per target; TARGET is stun, channel_data, proxy_header,
# worker, applier, server and/or snapshot (default all seven, one after the
# other). Environment:
#   BUILD_DIR   fuzzing build directory (default <repo>/build-fuzz); configured
#               with clang-14 and -Dfuzzing=true if it does not exist yet
#   FUZZ_JOBS   parallel fuzzing processes per target (default 1)
#   KEEP_CORPUS set to 1 to keep the scratch corpus (its path is printed)
# Crashing inputs are saved under tests/fuzz/crashes/ and the script exits 1.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-stun channel_data proxy_header worker applier server snapshot}
build=${BUILD_DIR:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-1}
crashes=$here/crashes

if [ ! -f "$build/build.ninja" ]; then
    CC=clang-14 CXX=clang++-14 meson setup "$build" "$root" -Dfuzzing=true -Dbench=false
fi
# A target added since the build was configured is only listed once meson has
# regenerated build.ninja (which ninja does when asked for it).
ninja -C "$build" build.ninja >/dev/null
# worker and applier need DPDK, server and snapshot the control plane: skip what this build lacks.
available=""
for t in $targets; do
    if ninja -C "$build" -t targets all | grep -q "^tests/fuzz/${t}_fuzz:"; then
        ninja -C "$build" "tests/fuzz/${t}_fuzz"
        available="$available $t"
    else
        echo "== $t: not in this build (needs DPDK or the control plane), skipped"
    fi
done
targets=$available

mkdir -p "$crashes"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in $targets; do
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$t.XXXXXX")
    cp "$here/corpus/$t"/* "$scratch/"
    extra=""
    [ -f "$here/$t.dict" ] && extra="-dict=$here/$t.dict"
    # -jobs forks workers that log to ./fuzz-N.log; only ask for it when wanted.
    [ "$jobs" -gt 1 ] && extra="$extra -jobs=$jobs -workers=$jobs"
    echo "== $t: $secs s, corpus copy in $scratch"
    # -artifact_prefix: crash-*, leak-*, timeout-* files land in crashes/.
    # shellcheck disable=SC2086
    if ! "$build/tests/fuzz/${t}_fuzz" $extra -max_total_time="$secs" -print_final_stats=1 \
            -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$crashes/$t-" "$scratch"; then
        status=1
        echo "!! $t found a failure. Saved inputs:"
        ls -1 "$crashes/$t-"* 2>/dev/null || true
        echo "   Reproduce with the libFuzzer binary:  $build/tests/fuzz/${t}_fuzz <file>"
        echo "   or the ASan/UBSan corpus driver:      <build>/tests/fuzz/${t}_corpus <file>"
        echo "   Minimise:  $build/tests/fuzz/${t}_fuzz -minimize_crash=1 -runs=10000 <file>"
    fi
    echo "== $t: corpus grew to $(ls "$scratch" | wc -l) inputs"
    if [ "${KEEP_CORPUS:-0}" = 1 ]; then
        echo "   kept in $scratch (merge new seeds with: ${t}_fuzz -merge=1 $here/corpus/$t $scratch)"
    else
        rm -rf "$scratch"
    fi
done
exit $status
