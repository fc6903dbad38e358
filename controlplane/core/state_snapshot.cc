#include "core/state_snapshot.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "common/bytes.h"

namespace turn::cp {

namespace {

constexpr std::array<uint8_t, 8> kMagic{'T', 'U', 'R', 'N', 'S', 'N', 'A', 'P'};

uint32_t crc_of(std::span<const uint8_t> d) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (!d.empty()) {
        const size_t n = std::min<size_t>(d.size(), 1u << 30);
        crc = crc32(crc, d.data(), static_cast<uInt>(n));
        d = d.subspan(n);
    }
    return static_cast<uint32_t>(crc);
}

class Writer {
public:
    void u8(uint8_t v) { out.push_back(v); }
    void u16(uint16_t v) {
        const size_t at = grow(2);
        store_be16(&out[at], v);
    }
    void u32(uint32_t v) {
        const size_t at = grow(4);
        store_be32(&out[at], v);
    }
    void u64(uint64_t v) {
        const size_t at = grow(8);
        store_be64(&out[at], v);
    }
    void bytes(std::span<const uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); }
    void str(const std::string& s) {
        u16(static_cast<uint16_t>(std::min(s.size(), kSnapshotMaxString)));
        out.insert(out.end(), s.begin(), s.begin() + static_cast<ptrdiff_t>(std::min(s.size(), kSnapshotMaxString)));
    }
    void addr(const Address& a) {
        u8(static_cast<uint8_t>(a.family));
        bytes(a.ip);
        u16(a.port);
    }
    std::vector<uint8_t> out;

private:
    size_t grow(size_t n) {
        const size_t at = out.size();
        out.resize(at + n);
        return at;
    }
};

// Bounded reader: the first failure sticks and every later read returns zero.
class Reader {
public:
    explicit Reader(std::span<const uint8_t> d) : d_(d) {}
    bool ok() const { return error.empty(); }
    size_t left() const { return d_.size() - pos_; }
    const uint8_t* take(size_t n, const char* what) {
        if (!ok()) {
            return nullptr;
        }
        if (n > left()) {
            error = std::string("truncated in ") + what;
            return nullptr;
        }
        const uint8_t* p = d_.data() + pos_;
        pos_ += n;
        return p;
    }
    uint8_t u8(const char* what) {
        const uint8_t* p = take(1, what);
        return p ? *p : 0;
    }
    uint16_t u16(const char* what) {
        const uint8_t* p = take(2, what);
        return p ? load_be16(p) : 0;
    }
    uint32_t u32(const char* what) {
        const uint8_t* p = take(4, what);
        return p ? load_be32(p) : 0;
    }
    uint64_t u64(const char* what) {
        const uint8_t* p = take(8, what);
        return p ? load_be64(p) : 0;
    }
    std::string str(const char* what) {
        const uint16_t n = u16(what);
        if (ok() && n > kSnapshotMaxString) {
            error = std::string(what) + " longer than " + std::to_string(kSnapshotMaxString) + " bytes";
            return {};
        }
        const uint8_t* p = take(n, what);
        return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
    }
    Address addr(const char* what, bool may_be_none) {
        Address a;
        const uint8_t fam = u8(what);
        const uint8_t* ip = take(16, what);
        a.port = u16(what);
        if (!ok()) {
            return {};
        }
        if (fam == 4 || fam == 6) {
            a.family = static_cast<Family>(fam);
            std::memcpy(a.ip.data(), ip, 16);
        } else if (fam != 0 || !may_be_none) {
            error = std::string(what) + ": bad address family " + std::to_string(fam);
        } else {
            return {};  // none: whatever bytes follow (the writer puts zeros) mean nothing
        }
        return a;
    }
    std::string error;

private:
    std::span<const uint8_t> d_;
    size_t pos_ = 0;
};

// Smallest encoded sizes, to reject counts that cannot fit before allocating.
constexpr size_t kAddrSize = 1 + 16 + 2;
constexpr size_t kMinAllocationSize = 8 + 1 + 2 * kAddrSize + 2 + 2 + 2 * kAddrSize + 8 + 1 + 4 + 4;
constexpr size_t kPermissionSize = kAddrSize + 8;
constexpr size_t kChannelSize = 2 + kAddrSize + 8;
constexpr size_t kUsageSize = 8 + 4 * 8;  // version 2: created_unix_ms, RelayUsage
constexpr size_t kRelayedExpirySize = 2 * 8;  // version 3: relayed_expires_unix_ms

}  // namespace

std::vector<uint8_t> encode_snapshot(const LoopSnapshot& s) {
    std::vector<const SavedAllocation*> all;
    all.reserve(s.allocations.size());
    for (const auto& a : s.allocations) {
        all.push_back(&a);
    }
    return encode_snapshot(s.loop, s.loops, s.saved_unix_ms, all);
}

std::vector<uint8_t> encode_snapshot(uint32_t loop, uint32_t loops, uint64_t saved_unix_ms,
                                     std::span<const SavedAllocation* const> allocations) {
    Writer w;
    w.out.reserve(64 + allocations.size() * 216);
    w.bytes(kMagic);
    w.u32(kSnapshotVersion);
    w.u32(loop);
    w.u32(loops);
    w.u64(saved_unix_ms);
    w.u32(static_cast<uint32_t>(allocations.size()));
    for (const SavedAllocation* ap : allocations) {
        const SavedAllocation& a = *ap;
        w.u64(a.id);
        w.u8(static_cast<uint8_t>(a.five_tuple.transport));
        w.addr(a.five_tuple.client);
        w.addr(a.five_tuple.server);
        w.str(a.username);
        w.str(a.realm);
        w.addr(a.relayed[0]);
        w.addr(a.relayed[1]);
        w.u64(a.expires_unix_ms);
        // Flags: DONT-FRAGMENT, RFC 8016 mobile, moved. (Version 1 files had
        // only the first: the byte was 0 or 1, which reads the same.)
        w.u8(static_cast<uint8_t>((a.dont_fragment ? 1 : 0) | (a.mobile ? 2 : 0) | (a.moved ? 4 : 0)));
        w.u32(static_cast<uint32_t>(a.permissions.size()));
        for (const auto& p : a.permissions) {
            w.addr(p.peer);
            w.u64(p.expires_unix_ms);
        }
        w.u32(static_cast<uint32_t>(a.channels.size()));
        for (const auto& c : a.channels) {
            w.u16(c.number);
            w.addr(c.peer);
            w.u64(c.expires_unix_ms);
        }
        w.u64(a.created_unix_ms);
        w.u64(a.usage.packets_to_peer);
        w.u64(a.usage.bytes_to_peer);
        w.u64(a.usage.packets_to_client);
        w.u64(a.usage.bytes_to_client);
        w.u64(a.relayed_expires_unix_ms[0]);
        w.u64(a.relayed_expires_unix_ms[1]);
    }
    w.u32(crc_of(w.out));
    return std::move(w.out);
}

std::optional<LoopSnapshot> decode_snapshot(std::span<const uint8_t> data, std::string& error) {
    if (data.size() < kMagic.size() + 4) {
        error = "too short to be a state snapshot";
        return std::nullopt;
    }
    if (!std::equal(kMagic.begin(), kMagic.end(), data.begin())) {
        error = "not a turn-relay state snapshot (bad magic)";
        return std::nullopt;
    }
    const auto body = data.first(data.size() - 4);
    if (crc_of(body) != load_be32(data.data() + body.size())) {
        error = "checksum mismatch (file truncated or corrupted)";
        return std::nullopt;
    }
    Reader r(body.subspan(kMagic.size()));
    const uint32_t version = r.u32("header");
    if (r.ok() && (version < kSnapshotOldestVersion || version > kSnapshotVersion)) {
        error = "snapshot version " + std::to_string(version) + ", this build reads versions " +
                std::to_string(kSnapshotOldestVersion) + " to " + std::to_string(kSnapshotVersion);
        return std::nullopt;
    }
    const size_t min_allocation =
        kMinAllocationSize + (version >= 2 ? kUsageSize : 0) + (version >= 3 ? kRelayedExpirySize : 0);
    LoopSnapshot s;
    s.loop = r.u32("header");
    s.loops = r.u32("header");
    s.saved_unix_ms = r.u64("header");
    const uint32_t count = r.u32("header");
    if (r.ok() && (count > kSnapshotMaxAllocations || count > r.left() / min_allocation)) {
        r.error = "allocation count " + std::to_string(count) + " does not fit the file";
    }
    if (r.ok()) {
        s.allocations.reserve(count);
    }
    for (uint32_t i = 0; r.ok() && i < count; ++i) {
        SavedAllocation a;
        a.id = r.u64("allocation");
        const uint8_t transport = r.u8("allocation");
        a.five_tuple.transport = static_cast<Transport>(transport);
        a.five_tuple.client = r.addr("client address", false);
        a.five_tuple.server = r.addr("server address", false);
        a.username = r.str("username");
        a.realm = r.str("realm");
        a.relayed[0] = r.addr("relayed address", true);
        a.relayed[1] = r.addr("relayed address", true);
        a.expires_unix_ms = r.u64("allocation");
        const uint8_t flags = r.u8("allocation");
        a.dont_fragment = (flags & 1) != 0;
        a.mobile = (flags & 2) != 0;
        a.moved = (flags & 4) != 0;
        if (r.ok() && (flags & ~7) != 0) {
            r.error = "unknown allocation flags " + std::to_string(flags);
        }
        if (r.ok() && transport != static_cast<uint8_t>(Transport::kUdp)) {
            r.error = "allocation transport " + std::to_string(transport) + " (only UDP is saved)";
        }
        if (r.ok() && (a.relayed[0].family == Family::kIPv6 || a.relayed[1].family == Family::kIPv4)) {
            r.error = "relayed address in the wrong family slot";
        }
        const uint32_t np = r.u32("permissions");
        if (r.ok() && (np > kSnapshotMaxEntries || np > r.left() / kPermissionSize)) {
            r.error = "permission count " + std::to_string(np) + " does not fit the file";
        }
        for (uint32_t k = 0; r.ok() && k < np; ++k) {
            SavedPermission p;
            p.peer = r.addr("permission", false);
            p.expires_unix_ms = r.u64("permission");
            a.permissions.push_back(p);
        }
        const uint32_t nc = r.u32("channels");
        if (r.ok() && (nc > kSnapshotMaxEntries || nc > r.left() / kChannelSize)) {
            r.error = "channel count " + std::to_string(nc) + " does not fit the file";
        }
        for (uint32_t k = 0; r.ok() && k < nc; ++k) {
            SavedChannel c;
            c.number = r.u16("channel");
            c.peer = r.addr("channel", false);
            c.expires_unix_ms = r.u64("channel");
            a.channels.push_back(c);
        }
        if (version >= 2) {
            a.created_unix_ms = r.u64("allocation");
            a.usage.packets_to_peer = r.u64("usage");
            a.usage.bytes_to_peer = r.u64("usage");
            a.usage.packets_to_client = r.u64("usage");
            a.usage.bytes_to_client = r.u64("usage");
        }
        if (version >= 3) {
            a.relayed_expires_unix_ms[0] = r.u64("relayed address expiry");
            a.relayed_expires_unix_ms[1] = r.u64("relayed address expiry");
        }
        s.allocations.push_back(std::move(a));
    }
    if (r.ok() && r.left() != 0) {
        r.error = std::to_string(r.left()) + " unexpected bytes after the last allocation";
    }
    if (!r.ok()) {
        error = r.error;
        return std::nullopt;
    }
    return s;
}

}  // namespace turn::cp
