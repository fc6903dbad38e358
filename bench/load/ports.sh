# Sourced by bench/load/compare.sh and tests/load/stream_load_test.sh (POSIX sh; needs $PY).
#
# free_port: prints a port free for UDP and TCP on 127.0.0.1 whose next port is
# free too (coturn also takes P+1 as its RFC 5780 alternate port); the caller's
# server binds it next.
free_port() {
    "$PY" -c '
import socket
for _ in range(100):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    try:
        for port, kind in ((p, socket.SOCK_STREAM), (p + 1, socket.SOCK_DGRAM), (p + 1, socket.SOCK_STREAM)):
            socket.socket(socket.AF_INET, kind).bind(("127.0.0.1", port))
    except OSError:
        continue
    print(p); break'
}
