#!/bin/sh
# Installs every build, test and benchmark dependency from Debian 12's package
# repository. Used by the README's commands and by .ci/run. Idempotent.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (it calls apt-get)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Build toolchain and libraries the code links against.
BUILD="build-essential meson ninja-build pkg-config openssl
       libssl-dev libdpdk-dev dpdk libpcap-dev libbpf-dev libxdp-dev libmnl-dev
       libgtest-dev libgmock-dev libbenchmark-dev prometheus-cpp-dev libcivetweb-dev
       zlib1g-dev libunistring-dev libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev"

# Fuzzing and sanitizers: clang with libFuzzer and the ASan/UBSan runtimes.
FUZZ="clang-14 libclang-rt-14-dev llvm-14"

# Real third-party clients and tools used by the integration tests.
TEST="iproute2 ethtool nftables systemd python3 python3-pytest python3-aioice python3-aiortc python3-openssl python3-selenium python3-gi gir1.2-nice-0.1 coturn stun-client chromium chromium-driver libnss3-tools
      valgrind procps gnuplot-nox curl linux-perf prometheus haproxy"

if [ "${DEPS_MINIMAL:-0}" = 1 ]; then
    PKGS="$BUILD $FUZZ"
else
    PKGS="$BUILD $FUZZ $TEST"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    apt-get update -qq
    # Packages with a service (prometheus, coturn, haproxy) must not start it: the tests run
    # their own instances on ports they choose. policy-rc.d 101 = "do not start".
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        guard=1
    fi
    rc=0
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing || rc=$?
    if [ -n "$guard" ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
fi
echo "install-deps.sh: all dependencies present"
