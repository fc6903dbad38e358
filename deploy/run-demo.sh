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
ninja -C build controlplane/turn-relay tools/ctl/turn-ctl

# TURN over TLS and DTLS need a certificate: a self-signed one for the loopback
# addresses, made once (browsers will not trust it; coturn's tools and
# aioice do not check it).
if [ ! -f build/demo-tls/cert.pem ]; then
    mkdir -p build/demo-tls
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj /CN=turnrelay.demo -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
        -keyout build/demo-tls/key.pem -out build/demo-tls/cert.pem 2>/dev/null
fi

cat <<'BANNER'

turn-relay demo
  TURN URLs:   turn:127.0.0.1:3478?transport=udp   turn:[::1]:3478?transport=udp
               turn:127.0.0.1:3478?transport=tcp   turn:[::1]:3478?transport=tcp
               turns:127.0.0.1:5349?transport=tcp  turns:[::1]:5349?transport=tcp  (self-signed)
               turns:127.0.0.1:5349?transport=udp  turns:[::1]:5349?transport=udp  (DTLS, self-signed)
  username:    demo
  credential:  demo-password
  realm:       turnrelay.local
  browser:     new RTCPeerConnection({iceServers: [{urls: 'turn:127.0.0.1:3478',
                 username: 'demo', credential: 'demo-password'}], iceTransportPolicy: 'relay'})
  metrics:     http://127.0.0.1:9641/metrics
  inspect:     build/tools/ctl/turn-ctl status | allocations | reload   (another terminal)
  stop:        Ctrl-C (drains: no new allocations, existing ones served up to 30 s)

BANNER
exec build/controlplane/turn-relay --config deploy/turnrelay.toml \
    --listen-tls 127.0.0.1:5349 --listen-tls '[::1]:5349' \
    --listen-dtls 127.0.0.1:5349 --listen-dtls '[::1]:5349' \
    --tls-cert build/demo-tls/cert.pem --tls-key build/demo-tls/key.pem "$@"
