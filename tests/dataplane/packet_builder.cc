#include "packet_builder.h"

#include <cstring>

#include "stun/integrity.h"

namespace dptest {

namespace {
void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}
void put32(Bytes& b, uint32_t v) {
    put16(b, static_cast<uint16_t>(v >> 16));
    put16(b, static_cast<uint16_t>(v));
}
void set16(Bytes& b, size_t off, uint16_t v) {
    b[off] = static_cast<uint8_t>(v >> 8);
    b[off + 1] = static_cast<uint8_t>(v);
}
constexpr uint32_t kCookie = 0x2112A442;

void xor_address(Bytes& b, const std::array<uint8_t, 12>& txid, const turn::Address& a) {
    put16(b, 0x0012);
    put16(b, a.is_v4() ? 8 : 20);
    b.push_back(0);
    b.push_back(a.is_v4() ? 0x01 : 0x02);
    put16(b, a.port ^ 0x2112);
    uint8_t key[16] = {0x21, 0x12, 0xA4, 0x42};
    std::memcpy(key + 4, txid.data(), 12);
    for (size_t i = 0; i < a.ip_len(); i++) {
        b.push_back(a.ip[i] ^ key[i]);
    }
}
}  // namespace

uint16_t checksum(const uint8_t* p, size_t n, uint32_t initial) {
    uint64_t s = initial;
    for (size_t i = 0; i + 1 < n; i += 2) {
        s += (uint32_t{p[i]} << 8) | p[i + 1];
    }
    if (n & 1) {
        s += uint32_t{p[n - 1]} << 8;
    }
    while (s >> 16) {
        s = (s & 0xffff) + (s >> 16);
    }
    return static_cast<uint16_t>(~s);
}

Bytes build(const Frame& f) {
    Bytes b;
    b.insert(b.end(), f.dst_mac.begin(), f.dst_mac.end());
    b.insert(b.end(), f.src_mac.begin(), f.src_mac.end());
    if (f.vlan) {
        put16(b, 0x8100);
        put16(b, *f.vlan);
    }
    const bool v4 = f.src.is_v4();
    put16(b, v4 ? 0x0800 : 0x86DD);
    const size_t l3 = b.size();
    const uint16_t udp_len = static_cast<uint16_t>(8 + f.payload.size());
    if (v4) {
        b.push_back(0x45);
        b.push_back(f.tos);
        put16(b, static_cast<uint16_t>(20 + udp_len));
        put16(b, f.ip_id);
        put16(b, f.df ? 0x4000 : 0);
        b.push_back(f.ttl);
        b.push_back(f.proto);
        put16(b, 0);
        b.insert(b.end(), f.src.ip.begin(), f.src.ip.begin() + 4);
        b.insert(b.end(), f.dst.ip.begin(), f.dst.ip.begin() + 4);
        set16(b, l3 + 10, checksum(&b[l3], 20));
    } else {
        put32(b, (6u << 28) | (uint32_t{f.tos} << 20));
        put16(b, udp_len);
        b.push_back(f.proto);
        b.push_back(f.ttl);
        b.insert(b.end(), f.src.ip.begin(), f.src.ip.end());
        b.insert(b.end(), f.dst.ip.begin(), f.dst.ip.end());
    }
    const size_t l4 = b.size();
    put16(b, f.src.port);
    put16(b, f.dst.port);
    put16(b, udp_len);
    put16(b, 0);
    b.insert(b.end(), f.payload.begin(), f.payload.end());
    if (f.proto == 17 && !(v4 && f.zero_udp_checksum)) {
        // Pseudo-header (RFC 768 / RFC 8200 8.1) then the datagram.
        Bytes ph;
        const size_t ilen = v4 ? 4 : 16;
        ph.insert(ph.end(), f.src.ip.begin(), f.src.ip.begin() + static_cast<long>(ilen));
        ph.insert(ph.end(), f.dst.ip.begin(), f.dst.ip.begin() + static_cast<long>(ilen));
        put16(ph, 17);
        put16(ph, udp_len);
        ph.insert(ph.end(), b.begin() + static_cast<long>(l4), b.end());
        uint16_t c = checksum(ph.data(), ph.size());
        if (c == 0) {
            c = 0xffff;
        }
        set16(b, l4 + 6, c);
    }
    return b;
}

Bytes channel_data(uint16_t channel, const Bytes& data, size_t extra_pad) {
    Bytes b;
    put16(b, channel);
    put16(b, static_cast<uint16_t>(data.size()));
    b.insert(b.end(), data.begin(), data.end());
    b.insert(b.end(), extra_pad, 0);
    return b;
}

Bytes send_indication(const std::array<uint8_t, 12>& txid, const turn::Address& peer, const Bytes& data,
                      bool fingerprint) {
    Bytes attrs;
    xor_address(attrs, txid, peer);
    put16(attrs, 0x0013);
    put16(attrs, static_cast<uint16_t>(data.size()));
    attrs.insert(attrs.end(), data.begin(), data.end());
    while (attrs.size() % 4) {
        attrs.push_back(0);
    }
    Bytes b;
    put16(b, 0x0016);
    put16(b, static_cast<uint16_t>(attrs.size() + (fingerprint ? 8 : 0)));
    put32(b, kCookie);
    b.insert(b.end(), txid.begin(), txid.end());
    b.insert(b.end(), attrs.begin(), attrs.end());
    if (fingerprint) {  // the control plane's own FINGERPRINT code (zlib's CRC-32)
        const uint32_t fp = turn::stun::fingerprint_value(b);
        put16(b, 0x8028);
        put16(b, 4);
        put32(b, fp);
    }
    return b;
}

Bytes data_indication(const std::array<uint8_t, 12>& txid, const turn::Address& peer, const Bytes& data) {
    Bytes attrs;
    xor_address(attrs, txid, peer);
    put16(attrs, 0x0013);
    put16(attrs, static_cast<uint16_t>(data.size()));
    attrs.insert(attrs.end(), data.begin(), data.end());
    while (attrs.size() % 4) {
        attrs.push_back(0);
    }
    Bytes b;
    put16(b, 0x0017);
    put16(b, static_cast<uint16_t>(attrs.size()));
    put32(b, kCookie);
    b.insert(b.end(), txid.begin(), txid.end());
    b.insert(b.end(), attrs.begin(), attrs.end());
    return b;
}

Bytes stun_binding_request() {
    Bytes b;
    put16(b, 0x0001);
    put16(b, 0);
    put32(b, kCookie);
    for (int i = 0; i < 12; i++) {
        b.push_back(static_cast<uint8_t>(i));
    }
    return b;
}

Bytes pattern(size_t n, uint8_t seed) {
    Bytes b(n);
    for (size_t i = 0; i < n; i++) {
        b[i] = static_cast<uint8_t>(seed + i * 7);
    }
    return b;
}

}  // namespace dptest
