#!/bin/sh
# Sets up, builds and starts the TURN relay on the demo configuration
# (deploy/turnrelay.toml: loopback, user demo / demo-password), printing the
# TURN URLs and credentials. Run as root on Debian 12 (dependencies come from
# apt). Extra arguments go to turn-relay, e.g. --log-level debug.
set -eu
cd "$(dirname "$0")/.."

DEPS_MINIMAL=1 ./deploy/install-deps.sh
if [ ! -f build/build.ninja ]; then
    meson setup build
fi
ninja -C build controlplane/turn-relay

cat <<'BANNER'

turn-relay demo
  TURN URLs:   turn:127.0.0.1:3478?transport=udp   turn:[::1]:3478?transport=udp
  username:    demo
  credential:  demo-password
  realm:       turnrelay.local
  browser:     new RTCPeerConnection({iceServers: [{urls: 'turn:127.0.0.1:3478',
                 username: 'demo', credential: 'demo-password'}], iceTransportPolicy: 'relay'})
  metrics:     http://127.0.0.1:9641/metrics
  stop:        Ctrl-C (drains: no new allocations, existing ones served up to 30 s)

BANNER
exec build/controlplane/turn-relay --config deploy/turnrelay.toml "$@"
