#include "net/proxy_header.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <string_view>

namespace turn {

namespace {

constexpr uint8_t kV2Signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr std::string_view kV1Prefix = "PROXY ";
constexpr size_t kV2Fixed = 16;

ProxyHeader bad(const char* why) {
    ProxyHeader h;
    h.status = ProxyHeader::Status::kBad;
    h.error = why;
    return h;
}

ProxyHeader done(size_t length) {
    ProxyHeader h;
    h.status = ProxyHeader::Status::kDone;
    h.length = length;
    h.local = true;
    return h;
}

// A decimal port, "0".."65535".
bool parse_port(std::string_view s, uint16_t& out) {
    if (s.empty() || s.size() > 5) {
        return false;
    }
    uint32_t v = 0;
    for (const char ch : s) {
        if (ch < '0' || ch > '9') {
            return false;
        }
        v = v * 10 + static_cast<uint32_t>(ch - '0');
    }
    if (v > 65535) {
        return false;
    }
    out = static_cast<uint16_t>(v);
    return true;
}

// A textual address of family `af` (AF_INET, AF_INET6), nothing else: no
// port, no brackets.
bool parse_ip(std::string_view s, int af, Address& out) {
    if (s.empty() || s.front() == '[' || (af == AF_INET && s.find(':') != std::string_view::npos)) {
        return false;
    }
    const auto a = Address::parse(s);
    if (!a || a->family != (af == AF_INET ? Family::kIPv4 : Family::kIPv6) || a->port != 0) {
        return false;
    }
    out = *a;
    return true;
}

ProxyHeader parse_v1(std::span<const uint8_t> b) {
    const size_t n = std::min(b.size(), kMaxProxyV1Header);
    const auto* nl = static_cast<const uint8_t*>(std::memchr(b.data(), '\n', n));
    if (nl == nullptr) {
        if (b.size() >= kMaxProxyV1Header) {
            return bad("v1 header without CRLF in its first 107 bytes");
        }
        return ProxyHeader{};
    }
    const size_t end = static_cast<size_t>(nl - b.data());  // the LF
    if (b[end - 1] != '\r') {
        return bad("v1 header not ended by CRLF");
    }
    std::string_view line(reinterpret_cast<const char*>(b.data()) + kV1Prefix.size(), end - 1 - kV1Prefix.size());
    // Fields separated by single spaces.
    std::string_view f[6];
    size_t nf = 0;
    while (nf < 6) {
        const size_t sp = line.find(' ');
        f[nf++] = line.substr(0, sp);
        if (sp == std::string_view::npos) {
            line = {};
            break;
        }
        line.remove_prefix(sp + 1);
    }
    if (f[0] == "UNKNOWN") {
        return done(end + 1);  // whatever follows on the line is to be ignored
    }
    int af;
    if (f[0] == "TCP4") {
        af = AF_INET;
    } else if (f[0] == "TCP6") {
        af = AF_INET6;
    } else {
        return bad("v1 protocol is not TCP4, TCP6 or UNKNOWN");
    }
    if (nf != 5 || !line.empty()) {
        return bad("v1 header does not have 4 address fields");
    }
    ProxyHeader h = done(end + 1);
    h.local = false;
    if (!parse_ip(f[1], af, h.source) || !parse_ip(f[2], af, h.destination)) {
        return bad("v1 address does not parse as the protocol's family");
    }
    if (!parse_port(f[3], h.source.port) || !parse_port(f[4], h.destination.port)) {
        return bad("v1 port is not a number 0..65535");
    }
    return h;
}

ProxyHeader parse_v2(std::span<const uint8_t> b) {
    if (b.size() > 12 && (b[12] >> 4) != 2) {
        return bad("v2 version is not 2");
    }
    if (b.size() > 12 && (b[12] & 0x0F) > 1) {
        return bad("v2 command is neither LOCAL nor PROXY");
    }
    if (b.size() < kV2Fixed) {
        return ProxyHeader{};
    }
    const bool proxy = (b[12] & 0x0F) == 1;  // else LOCAL: the proxy's own connection; the block is ignored
    const uint8_t family = b[13] >> 4;
    const uint8_t protocol = b[13] & 0x0F;
    const size_t len = size_t{b[14]} << 8 | b[15];
    if (kV2Fixed + len > kMaxProxyHeader) {
        return bad("v2 header longer than 4096 bytes");
    }
    // What the fixed part says is decided before the block arrives: a
    // header refused for it is refused at its 16th byte.
    constexpr size_t kBlock[4] = {0, 12, 36, 216};  // UNSPEC, INET, INET6, UNIX
    if (proxy && family > 3) {
        return bad("v2 address family unknown");
    }
    // STREAM (TCP) only: not DGRAM, nor an unassigned protocol; UNSPEC
    // (0) only with the UNSPEC family, which names no addresses.
    if (proxy && protocol != 1 && !(family == 0 && protocol == 0)) {
        return bad("v2 header is not for a TCP (STREAM) connection");
    }
    if (proxy && len < kBlock[family]) {
        return bad("v2 address block shorter than its family's addresses");
    }
    if (b.size() < kV2Fixed + len) {
        return ProxyHeader{};
    }
    ProxyHeader h = done(kV2Fixed + len);
    const uint8_t* a = b.data() + kV2Fixed;
    if (proxy && family == 1) {  // INET
        h.local = false;
        h.source = Address::v4(a, static_cast<uint16_t>(a[8] << 8 | a[9]));
        h.destination = Address::v4(a + 4, static_cast<uint16_t>(a[10] << 8 | a[11]));
    } else if (proxy && family == 2) {  // INET6
        h.local = false;
        h.source = Address::v6(a, static_cast<uint16_t>(a[32] << 8 | a[33]));
        h.destination = Address::v6(a + 16, static_cast<uint16_t>(a[34] << 8 | a[35]));
    }
    // UNSPEC, UNIX (no IP to name) and LOCAL: the connection's own addresses.
    return h;
}

}  // namespace

ProxyHeader parse_proxy_header(std::span<const uint8_t> b) {
    if (b.empty()) {
        return ProxyHeader{};
    }
    if (b[0] == kV2Signature[0]) {
        const size_t k = std::min(b.size(), sizeof kV2Signature);
        if (std::memcmp(b.data(), kV2Signature, k) != 0) {
            return bad("no PROXY protocol signature");
        }
        return k < sizeof kV2Signature ? ProxyHeader{} : parse_v2(b);
    }
    const size_t k = std::min(b.size(), kV1Prefix.size());
    if (std::memcmp(b.data(), kV1Prefix.data(), k) != 0) {
        return bad("no PROXY protocol signature");
    }
    return k < kV1Prefix.size() ? ProxyHeader{} : parse_v1(b);
}

}  // namespace turn
