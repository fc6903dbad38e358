# Sourced by tests/load/*_load_test.sh (POSIX sh; needs $PY): what every
# end-to-end load test does around its own checks.
#
# scratch_dir NAME: makes $dir (a fresh directory under /tmp) and a trap that,
# on exit, stops the processes whose PIDs are listed in $pids and removes $dir.
# wait_listen PORT NAME [t|u]: waits up to 5 s for a TCP (default) or UDP
# listener on PORT; else fails, printing $dir/NAME.log (the server's output).
# make_cert: a self-signed P-256 certificate for 127.0.0.1 (CN turnrelay.test,
# usable as its own CA by --tls-ca) in $dir/cert.pem, its key in $dir/key.pem.
# free_port [LO HI]: bench/load/ports.sh.

. "$(dirname "$0")/../../bench/load/ports.sh"

pids=""

scratch_dir() {
    dir=$(mktemp -d "/tmp/$1.XXXXXX")
    trap stop_and_clean EXIT INT TERM
}

stop_and_clean() {
    for p in $pids; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$dir"
}

wait_listen() {
    i=0
    while ! ss -Hl"${3:-t}"n "sport = :$1" | grep -q .; do
        i=$((i + 1))
        if [ $i -gt 50 ]; then
            echo "FAIL: $2 did not listen on $([ "${3:-t}" = t ] && echo TCP || echo UDP) 127.0.0.1:$1"
            cat "$dir/$2.log"; exit 1
        fi
        sleep 0.1
    done
}

make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=turnrelay.test \
        -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:TRUE" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" > "$dir/openssl.log" 2>&1 \
        || { echo "FAIL: openssl req"; cat "$dir/openssl.log"; exit 1; }
}
