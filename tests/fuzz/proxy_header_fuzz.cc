// libFuzzer target for the PROXY protocol header (net/proxy_header.h,
// HAProxy's "The PROXY protocol" v1 and v2): parse_proxy_header on the input
// read as the first bytes of a TCP connection to a proxied listener, and on
// every prefix of it, as a reader that calls it after each read sees them.
//
// Invariants (a violation traps):
//   1. kNeedMore: no length, no addresses; the input is shorter than the
//      longest header (4096 bytes; 107 for a v1 start "P"; nothing but the
//      empty input for a first byte that starts neither version); from the
//      16 fixed bytes of a v2 header on, only with version 2, command LOCAL
//      or PROXY, 16 + length <= 4096 and fewer bytes than that (a header
//      too long is refused from its fixed part alone); every shorter prefix
//      needs more too.
//   2. kDone: 0 < length <= min(input size, 4096) (107 for v1); `local`
//      exactly when no addresses are given, otherwise source and destination
//      of one family; every prefix at least `length` long gives the same
//      kDone (length, local, addresses), every shorter one kNeedMore: the
//      bytes after the header are never looked at.
//   3. kBad: a reason, no length; every longer prefix is kBad too (with the
//      same reason), every shorter one kNeedMore.
//   4. Nothing is accepted beyond what the header comment lists: a v1 kDone
//      is one CRLF-terminated line, "PROXY UNKNOWN" and anything, or
//      "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>" with single spaces,
//      addresses of the protocol's family (all of each field, as inet_pton
//      reads it) and decimal ports
//      that are the ones parsed; a v2 kDone has the signature, version
//      2, 16 + its length field bytes, addresses only for PROXY over INET or
//      INET6 STREAM (and then the block's bytes and ports), local only for
//      LOCAL, UNSPEC over UNSPEC or STREAM, or a UNIX STREAM block of at least
//      216 bytes.
//   5. A header naming a client, written again from the parsed addresses
//      (canonical v1 text, v2 without TLVs), parses back to the same
//      addresses.
// Prefixes up to 128 bytes and those around the verdict are parsed again
// from exact-size heap copies, so a read past a prefix is an AddressSanitizer
// report; the input itself is exact-size under libFuzzer and corpus_driver.
#include <arpa/inet.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "net/address.h"
#include "net/proxy_header.h"

namespace {

using namespace turn;

using Status = ProxyHeader::Status;

constexpr uint8_t kSig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr size_t kExactCopiesUpTo = 128;

[[noreturn]] void fail() { __builtin_trap(); }

bool same(const ProxyHeader& a, const ProxyHeader& b) {
    if (a.status != b.status) {
        return false;
    }
    switch (a.status) {
        case Status::kNeedMore:
            return true;
        case Status::kBad:
            return std::strcmp(a.error, b.error) == 0;
        case Status::kDone:
            return a.length == b.length && a.local == b.local && a.source == b.source &&
                   a.destination == b.destination;
    }
    return false;
}

ProxyHeader parse_copy(std::span<const uint8_t> in) {
    const std::vector<uint8_t> copy(in.begin(), in.end());
    return parse_proxy_header(copy);
}

// Invariants 1-3 for one result on its own.
void check_alone(const ProxyHeader& h, std::span<const uint8_t> in) {
    const bool v1 = !in.empty() && in[0] == 'P';
    const bool v2 = !in.empty() && in[0] == kSig[0];
    switch (h.status) {
        case Status::kNeedMore:
            if (h.length != 0 || h.local || h.source != Address{} || h.destination != Address{}) {
                fail();
            }
            if (in.size() >= (v1 ? kMaxProxyV1Header : kMaxProxyHeader) || (!v1 && !v2 && !in.empty())) {
                fail();
            }
            // From its 16 fixed bytes on, a v2 header waits only for its
            // own bytes, and only if version, command and length allow it.
            if (v2 && in.size() >= 16 &&
                ((in[12] >> 4) != 2 || (in[12] & 0x0F) > 1 || 16u + load_be16(&in[14]) > kMaxProxyHeader ||
                 in.size() >= 16u + load_be16(&in[14]))) {
                fail();
            }
            return;
        case Status::kBad:
            if (h.error == nullptr || h.error[0] == '\0' || h.length != 0) {
                fail();
            }
            return;
        case Status::kDone:
            if (h.length == 0 || h.length > in.size() || h.length > (v1 ? kMaxProxyV1Header : kMaxProxyHeader) ||
                (!v1 && !v2)) {
                fail();
            }
            if (h.local) {
                if (h.source != Address{} || h.destination != Address{}) {
                    fail();
                }
            } else if (h.source.family == Family::kNone || h.source.family != h.destination.family) {
                fail();
            }
            return;
    }
    fail();
}

bool starts_with(std::span<const uint8_t> in, std::string_view s) {
    return in.size() >= s.size() && std::memcmp(in.data(), s.data(), s.size()) == 0;
}

// Invariants 4 and 5 for a v1 kDone.
void check_v1_done(const ProxyHeader& h, std::span<const uint8_t> in) {
    const std::span<const uint8_t> line = in.first(h.length);
    if (h.length < 8 || line[h.length - 2] != '\r' || line[h.length - 1] != '\n' ||
        std::memchr(line.data(), '\n', h.length - 1) != nullptr) {
        fail();
    }
    if (h.local) {
        if (!starts_with(line, "PROXY UNKNOWN\r") && !starts_with(line, "PROXY UNKNOWN ")) {
            fail();
        }
        return;
    }
    // The line split at each space on its own: "PROXY", the protocol, two
    // addresses of its family and two decimal ports, nothing else.
    std::string_view text(reinterpret_cast<const char*>(line.data()), h.length - 2);
    std::string_view field[6];
    for (size_t i = 0; i < 6; ++i) {
        const size_t sp = i < 5 ? text.find(' ') : std::string_view::npos;
        if (i < 5 && sp == std::string_view::npos) {
            fail();
        }
        field[i] = text.substr(0, sp);
        text.remove_prefix(i < 5 ? sp + 1 : text.size());
    }
    const bool tcp4 = field[1] == "TCP4";
    if (field[0] != "PROXY" || (!tcp4 && field[1] != "TCP6") || field[5].find(' ') != std::string_view::npos) {
        fail();
    }
    const Address* const parsed[2] = {&h.source, &h.destination};
    for (size_t i = 0; i < 2; ++i) {
        const Address& a = *parsed[i];
        char buf[64] = {};
        uint8_t ip[16] = {};
        if (field[2 + i].size() >= sizeof buf || (tcp4 ? !a.is_v4() : !a.is_v6())) {
            fail();
        }
        std::memcpy(buf, field[2 + i].data(), field[2 + i].size());
        // All of the field is the address: inet_pton reads up to a NUL.
        if (std::strlen(buf) != field[2 + i].size() ||
            inet_pton(tcp4 ? AF_INET : AF_INET6, buf, ip) != 1 || std::memcmp(ip, a.ip.data(), a.ip_len()) != 0) {
            fail();
        }
        const std::string_view port = field[4 + i];
        uint32_t value = 0;
        if (port.empty() || port.size() > 5) {
            fail();
        }
        for (const char c : port) {
            if (c < '0' || c > '9') {
                fail();
            }
            value = value * 10 + static_cast<uint32_t>(c - '0');
        }
        if (value != a.port) {
            fail();
        }
    }
    const std::string canonical = std::string(tcp4 ? "PROXY TCP4 " : "PROXY TCP6 ") + h.source.ip_string() + " " +
                                  h.destination.ip_string() + " " + std::to_string(h.source.port) + " " +
                                  std::to_string(h.destination.port) + "\r\n";
    const ProxyHeader back = parse_copy(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(canonical.data()), canonical.size()));
    if (back.status != Status::kDone || back.length != canonical.size() || back.local ||
        back.source != h.source || back.destination != h.destination) {
        fail();
    }
}

// Invariants 4 and 5 for a v2 kDone.
void check_v2_done(const ProxyHeader& h, std::span<const uint8_t> in) {
    if (h.length < 16 || std::memcmp(in.data(), kSig, sizeof kSig) != 0 || h.length != 16u + load_be16(&in[14])) {
        fail();
    }
    const uint8_t ver_cmd = in[12];
    const uint8_t fam_proto = in[13];
    const size_t len = h.length - 16;
    if (ver_cmd != 0x20 && ver_cmd != 0x21) {
        fail();
    }
    if (h.local) {
        // PROXY with the UNSPEC family over UNSPEC or STREAM, or a UNIX STREAM block.
        if (ver_cmd != 0x20 && fam_proto != 0x00 && fam_proto != 0x01 && !(fam_proto == 0x31 && len >= 216)) {
            fail();
        }
        return;
    }
    const uint8_t* a = in.data() + 16;
    std::vector<uint8_t> again(kSig, kSig + sizeof kSig);
    again.push_back(0x21);
    again.push_back(fam_proto);
    if (ver_cmd == 0x21 && fam_proto == 0x11 && len >= 12) {
        if (h.source != Address::v4(a, load_be16(a + 8)) || h.destination != Address::v4(a + 4, load_be16(a + 10))) {
            fail();
        }
        again.insert(again.end(), {0, 12});
        again.insert(again.end(), a, a + 12);
    } else if (ver_cmd == 0x21 && fam_proto == 0x21 && len >= 36) {
        if (h.source != Address::v6(a, load_be16(a + 32)) ||
            h.destination != Address::v6(a + 16, load_be16(a + 34))) {
            fail();
        }
        again.insert(again.end(), {0, 36});
        again.insert(again.end(), a, a + 36);
    } else {
        fail();
    }
    const ProxyHeader back = parse_copy(again);
    if (back.status != Status::kDone || back.length != again.size() || back.local || back.source != h.source ||
        back.destination != h.destination) {
        fail();
    }
}

void exercise(std::span<const uint8_t> in) {
    const ProxyHeader whole = parse_proxy_header(in);
    check_alone(whole, in);

    // Every prefix, as a reader sees the stream grow: kNeedMore up to the
    // verdict, then the verdict (kDone or kBad) unchanged. Past the longest
    // header nothing can change; the whole input checks that.
    const size_t last = std::min(in.size(), kMaxProxyHeader + 1);
    size_t verdict_at = SIZE_MAX;  // the shortest prefix that is not kNeedMore
    ProxyHeader verdict;
    for (size_t n = 0; n <= last; ++n) {
        const std::span<const uint8_t> prefix = in.first(n);
        const ProxyHeader h = parse_proxy_header(prefix);
        check_alone(h, prefix);
        if (n <= kExactCopiesUpTo && !same(parse_copy(prefix), h)) {
            fail();
        }
        if (verdict_at != SIZE_MAX) {
            if (!same(h, verdict)) {
                fail();
            }
            continue;
        }
        if (h.status == Status::kNeedMore) {
            continue;
        }
        verdict_at = n;
        verdict = h;
        if (h.status == Status::kDone && h.length != n) {
            fail();  // a header is done with its last byte, not later
        }
        // Around the verdict, from exact copies: a read past the prefix is
        // a report.
        if (n > kExactCopiesUpTo) {
            if (!same(parse_copy(prefix), h) || parse_copy(in.first(n - 1)).status != Status::kNeedMore ||
                (n < in.size() && !same(parse_copy(in.first(n + 1)), h))) {
                fail();
            }
        }
    }
    if (verdict_at == SIZE_MAX ? whole.status != Status::kNeedMore : !same(whole, verdict)) {
        fail();
    }

    if (whole.status == Status::kDone) {
        if (in[0] == 'P') {
            check_v1_done(whole, in);
        } else {
            check_v2_done(whole, in);
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    exercise(std::span<const uint8_t>(data, size));
    return 0;
}
