#include "net/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/rand.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

#include "common/siphash.h"

namespace turn {

namespace {

constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool parse_port(std::string_view s, uint16_t& out) {
    if (s.empty() || s.size() > 5) {
        return false;
    }
    unsigned v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v > 65535) {
        return false;
    }
    out = static_cast<uint16_t>(v);
    return true;
}

// inet_pton needs a NUL-terminated string; bound the copy. A NUL inside
// `s` would end the text inet_pton reads and pass what is before it ("1.2.3.4\0x"):
// refused, as is anything that could be no address.
bool parse_ip(std::string_view s, Address& out) {
    char buf[INET6_ADDRSTRLEN + 1];
    if (s.empty() || s.size() >= sizeof buf || s.find('\0') != std::string_view::npos) {
        return false;
    }
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    uint8_t bytes[16];
    if (inet_pton(AF_INET, buf, bytes) == 1) {
        out = Address::v4(bytes, 0);
        return true;
    }
    if (inet_pton(AF_INET6, buf, bytes) == 1) {
        out = Address::v6(bytes, 0);
        return true;
    }
    return false;
}

}  // namespace

Address Address::v4(uint32_t host_order_ip, uint16_t port) {
    Address a;
    a.family = Family::kIPv4;
    a.port = port;
    a.ip[0] = static_cast<uint8_t>(host_order_ip >> 24);
    a.ip[1] = static_cast<uint8_t>(host_order_ip >> 16);
    a.ip[2] = static_cast<uint8_t>(host_order_ip >> 8);
    a.ip[3] = static_cast<uint8_t>(host_order_ip);
    return a;
}

Address Address::v4(const uint8_t bytes[4], uint16_t port) {
    Address a;
    a.family = Family::kIPv4;
    a.port = port;
    std::memcpy(a.ip.data(), bytes, 4);
    return a;
}

Address Address::v6(const uint8_t bytes[16], uint16_t port) {
    Address a;
    a.family = Family::kIPv6;
    a.port = port;
    std::memcpy(a.ip.data(), bytes, 16);
    return a;
}

std::optional<Address> Address::parse(std::string_view text) {
    Address a;
    if (!text.empty() && text.front() == '[') {
        const size_t close = text.find(']');
        if (close == std::string_view::npos) {
            return std::nullopt;
        }
        if (!parse_ip(text.substr(1, close - 1), a) || !a.is_v6()) {
            return std::nullopt;
        }
        std::string_view rest = text.substr(close + 1);
        if (rest.empty()) {
            return a;
        }
        if (rest.front() != ':' || !parse_port(rest.substr(1), a.port)) {
            return std::nullopt;
        }
        return a;
    }
    const size_t colon = text.find(':');
    if (colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
        // Exactly one colon: IPv4 with a port.
        if (!parse_ip(text.substr(0, colon), a) || !a.is_v4()) {
            return std::nullopt;
        }
        if (!parse_port(text.substr(colon + 1), a.port)) {
            return std::nullopt;
        }
        return a;
    }
    if (!parse_ip(text, a)) {
        return std::nullopt;
    }
    return a;
}

std::optional<Address> Address::from_sockaddr(const sockaddr* sa, size_t len) {
    if (sa == nullptr || len < sizeof(sa_family_t)) {
        return std::nullopt;
    }
    if ((sa->sa_family == AF_INET && len < sizeof(sockaddr_in)) ||
        (sa->sa_family == AF_INET6 && len < sizeof(sockaddr_in6))) {
        return std::nullopt;
    }
    return from_sockaddr(sa);
}

std::optional<Address> Address::from_sockaddr(const sockaddr* sa) {
    if (sa == nullptr) {
        return std::nullopt;
    }
    if (sa->sa_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, sa, sizeof sin);
        return Address::v4(reinterpret_cast<const uint8_t*>(&sin.sin_addr), ntohs(sin.sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, sa, sizeof sin6);
        return Address::v6(sin6.sin6_addr.s6_addr, ntohs(sin6.sin6_port));
    }
    return std::nullopt;
}

size_t Address::to_sockaddr(sockaddr_storage* out) const {
    std::memset(out, 0, sizeof *out);
    if (is_v4()) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        std::memcpy(&sin.sin_addr, ip.data(), 4);
        std::memcpy(out, &sin, sizeof sin);
        return sizeof sin;
    }
    if (is_v6()) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        std::memcpy(&sin6.sin6_addr, ip.data(), 16);
        std::memcpy(out, &sin6, sizeof sin6);
        return sizeof sin6;
    }
    return 0;
}

uint32_t Address::v4_host_order() const {
    return (uint32_t{ip[0]} << 24) | (uint32_t{ip[1]} << 16) | (uint32_t{ip[2]} << 8) | ip[3];
}

bool Address::is_v4_mapped() const {
    return is_v6() && std::memcmp(ip.data(), kMappedPrefix, sizeof kMappedPrefix) == 0;
}

Address Address::normalised() const {
    if (!is_v4_mapped()) {
        return *this;
    }
    return Address::v4(ip.data() + 12, port);
}

bool Address::is_unspecified() const {
    // ::ffff:0.0.0.0 is 0.0.0.0 on a dual-stack socket: judge the normalised form.
    const Address a = normalised();
    for (size_t i = 0; i < a.ip_len(); ++i) {
        if (a.ip[i] != 0) {
            return false;
        }
    }
    return a.family != Family::kNone;
}

std::string Address::ip_string() const {
    char buf[INET6_ADDRSTRLEN];
    if (is_v4()) {
        return inet_ntop(AF_INET, ip.data(), buf, sizeof buf) ? buf : "";
    }
    if (is_v6()) {
        return inet_ntop(AF_INET6, ip.data(), buf, sizeof buf) ? buf : "";
    }
    return "none";
}

std::string Address::to_string() const {
    // Built with append: gcc 12 -O3 reports a false -Wrestrict on operator+ chains.
    std::string out;
    out.reserve(INET6_ADDRSTRLEN + 8);
    if (is_v6()) {
        out.append("[").append(ip_string()).append("]");
    } else {
        out.append(ip_string());
    }
    out.append(":").append(std::to_string(port));
    return out;
}

std::optional<Prefix> Prefix::parse(std::string_view text) {
    Prefix p;
    const size_t slash = text.find('/');
    Address a;
    if (!parse_ip(text.substr(0, slash), a)) {
        return std::nullopt;
    }
    const unsigned max_len = a.is_v4() ? 32 : 128;
    unsigned len = max_len;
    if (slash != std::string_view::npos) {
        std::string_view l = text.substr(slash + 1);
        auto [ptr, ec] = std::from_chars(l.data(), l.data() + l.size(), len);
        if (l.empty() || ec != std::errc() || ptr != l.data() + l.size() || len > max_len) {
            return std::nullopt;
        }
    }
    // An IPv4-mapped prefix (::ffff:a.b.c.d/96+n) is stored as the IPv4 prefix
    // a.b.c.d/n: contains() normalises addresses before comparing, so a rule
    // kept in mapped form would never match anything. Shorter mapped prefixes
    // would mix IPv4 and IPv6 space and are refused.
    if (a.is_v4_mapped()) {
        if (len < 96) {
            return std::nullopt;
        }
        a = a.normalised();
        len -= 96;
    }
    const unsigned bits = a.is_v4() ? 32 : 128;
    // Clear host bits so equal prefixes compare equal.
    for (unsigned bit = len; bit < bits; ++bit) {
        a.ip[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
    }
    p.base = a;
    p.length = static_cast<uint8_t>(len);
    return p;
}

bool Prefix::contains(const Address& addr) const {
    const Address a = addr.normalised();
    if (a.family != base.family) {
        return false;
    }
    // A hand-built Prefix may carry any length: clamp before indexing.
    const unsigned max_len = a.is_v4() ? 32u : 128u;
    const unsigned len = length > max_len ? max_len : length;
    const unsigned full = len / 8u;
    if (std::memcmp(a.ip.data(), base.ip.data(), full) != 0) {
        return false;
    }
    const unsigned rem = len % 8u;
    if (rem == 0) {
        return true;
    }
    const uint8_t mask = static_cast<uint8_t>(0xFFu << (8 - rem));
    return (a.ip[full] & mask) == (base.ip[full] & mask);
}

std::string Prefix::to_string() const {
    std::string out = base.ip_string();
    out.append("/").append(std::to_string(length));
    return out;
}

const SipKey& process_sip_key() {
    static const SipKey key = [] {
        SipKey k;
        uint8_t bytes[16];
        if (RAND_bytes(bytes, sizeof bytes) != 1) {
            // Start-up only; without randomness the tables are floodable.
            std::abort();
        }
        std::memcpy(&k.k0, bytes, 8);
        std::memcpy(&k.k1, bytes + 8, 8);
        return k;
    }();
    return key;
}

// Keyed (SipHash-1-3): remote senders choose these addresses, so an unkeyed
// hash would let them fill one bucket of the control plane's maps.
size_t AddressHash::operator()(const Address& a) const noexcept {
    uint8_t buf[20];
    std::memcpy(buf, a.ip.data(), 16);
    buf[16] = static_cast<uint8_t>(a.port >> 8);
    buf[17] = static_cast<uint8_t>(a.port);
    buf[18] = static_cast<uint8_t>(a.family);
    buf[19] = 0;
    return static_cast<size_t>(siphash13(process_sip_key(), buf, sizeof buf));
}

size_t FiveTupleHash::operator()(const FiveTuple& t) const noexcept {
    uint8_t buf[40];
    std::memcpy(buf, t.client.ip.data(), 16);
    std::memcpy(buf + 16, t.server.ip.data(), 16);
    buf[32] = static_cast<uint8_t>(t.client.port >> 8);
    buf[33] = static_cast<uint8_t>(t.client.port);
    buf[34] = static_cast<uint8_t>(t.server.port >> 8);
    buf[35] = static_cast<uint8_t>(t.server.port);
    buf[36] = static_cast<uint8_t>(t.client.family);
    buf[37] = static_cast<uint8_t>(t.server.family);
    buf[38] = static_cast<uint8_t>(t.transport);
    buf[39] = 0;
    return static_cast<size_t>(siphash13(process_sip_key(), buf, sizeof buf));
}

std::string_view transport_name(Transport t) {
    switch (t) {
        case Transport::kUdp: return "udp";
        case Transport::kTcp: return "tcp";
        case Transport::kTls: return "tls";
        case Transport::kDtls: return "dtls";
    }
    return "unknown";
}

}  // namespace turn
