// Transport addresses, prefixes and 5-tuples for IPv4 and IPv6.
//
// An Address is a plain value (no allocation) usable as a hash key in both the
// control plane and the dataplane. IPv4 addresses keep their 4 bytes in ip[0..3]
// and zeros after; normalised() turns an IPv4-mapped IPv6 address
// (::ffff:a.b.c.d) into the IPv4 address it stands for, which every ACL check
// must do first (coturn's CVE-2020-26262 was the mapped-loopback bypass).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

struct sockaddr;
struct sockaddr_storage;

namespace turn {

enum class Family : uint8_t { kNone = 0, kIPv4 = 4, kIPv6 = 6 };

// STUN address family codes (RFC 8489 section 14.1).
constexpr uint8_t kStunFamilyIPv4 = 0x01;
constexpr uint8_t kStunFamilyIPv6 = 0x02;

struct Address {
    Family family = Family::kNone;
    uint16_t port = 0;                 // host byte order
    std::array<uint8_t, 16> ip{};      // network byte order; IPv4 uses ip[0..3]

    static Address v4(uint32_t host_order_ip, uint16_t port);
    static Address v4(const uint8_t bytes[4], uint16_t port);
    static Address v6(const uint8_t bytes[16], uint16_t port);

    // Parses "1.2.3.4", "1.2.3.4:5", "::1", "[::1]:5". Port defaults to 0.
    static std::optional<Address> parse(std::string_view text);
    // Converts from a kernel socket address (AF_INET / AF_INET6) of `len` bytes
    // (as recvmsg/getsockname return it); nullopt if too short for its family.
    static std::optional<Address> from_sockaddr(const sockaddr* sa, size_t len);
    // Same, for a pointer known to hold a whole sockaddr_storage (or at least
    // a sockaddr_in6): never pass a shorter buffer.
    static std::optional<Address> from_sockaddr(const sockaddr* sa);
    // Writes a kernel socket address; returns its length, 0 for kNone.
    size_t to_sockaddr(sockaddr_storage* out) const;

    bool is_v4() const { return family == Family::kIPv4; }
    bool is_v6() const { return family == Family::kIPv6; }
    size_t ip_len() const { return is_v4() ? 4 : is_v6() ? 16 : 0; }
    uint32_t v4_host_order() const;  // only meaningful for IPv4

    bool is_v4_mapped() const;        // ::ffff:a.b.c.d
    Address normalised() const;       // mapped -> IPv4, else unchanged
    bool is_unspecified() const;      // 0.0.0.0 or ::
    Address with_port(uint16_t p) const {
        Address a = *this;
        a.port = p;
        return a;
    }
    bool same_ip(const Address& o) const { return family == o.family && ip == o.ip; }

    std::string ip_string() const;    // "1.2.3.4" / "2001:db8::1"
    std::string to_string() const;    // "1.2.3.4:5" / "[2001:db8::1]:5"

    friend bool operator==(const Address&, const Address&) = default;
};

// An address range, "198.18.0.0/15" or "fd00::/8".
struct Prefix {
    Address base;        // port ignored
    uint8_t length = 0;  // bits

    // Parses "a.b.c.d/n", "x::/n", or a bare address (full length). An
    // IPv4-mapped prefix "::ffff:a.b.c.d/n" (n >= 96) becomes a.b.c.d/(n-96).
    static std::optional<Prefix> parse(std::string_view text);
    // True if `a` (normalised first) lies in this prefix. Families must match.
    bool contains(const Address& a) const;
    std::string to_string() const;
    friend bool operator==(const Prefix&, const Prefix&) = default;
};

enum class Transport : uint8_t { kUdp = 17, kTcp = 6, kTls = 56, kDtls = 57 };
// "udp", "tcp", "tls", "dtls" (logs, metric labels).
std::string_view transport_name(Transport t);

// RFC 8656 section 2: the 5-tuple naming a client's connection to the server.
struct FiveTuple {
    Address client;
    Address server;  // the listening address the client talks to
    Transport transport = Transport::kUdp;
    friend bool operator==(const FiveTuple&, const FiveTuple&) = default;
};

// Keyed with a per-process random SipHash key (common/siphash.h): remote
// senders choose these keys and must not be able to predict buckets.
struct AddressHash {
    size_t operator()(const Address& a) const noexcept;
};
struct FiveTupleHash {
    size_t operator()(const FiveTuple& t) const noexcept;
};

}  // namespace turn
