# Sourced by bench/load/compare.sh and tests/load/*_load_test.sh (POSIX sh; needs $PY).
#
# free_port [LO HI]: prints a port free for UDP and TCP on 127.0.0.1 whose
# next port is free too (coturn also takes P+1 as its RFC 5780 alternate
# port); the caller's server binds it next. Without arguments the kernel picks
# it (an ephemeral port); with LO HI, a random port in LO..HI-1 (to keep a run
# inside a range agreed with others on the machine).
free_port() {
    "$PY" -c '
import random, socket, sys
lo, hi = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (0, 0)
for _ in range(200):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", random.randrange(lo, hi) if hi else 0))
    except OSError:
        continue
    p = u.getsockname()[1]
    try:
        for port, kind in ((p, socket.SOCK_STREAM), (p + 1, socket.SOCK_DGRAM), (p + 1, socket.SOCK_STREAM)):
            socket.socket(socket.AF_INET, kind).bind(("127.0.0.1", port))
    except OSError:
        continue
    print(p); break' "$@"
}
