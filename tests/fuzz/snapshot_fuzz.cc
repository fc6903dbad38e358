// libFuzzer target: the state snapshot file (controlplane/core/state_snapshot.h),
// which turn-relay reads from [state].dir at start-up as untrusted input, and
// AllocationManager::restore of every allocation it decodes, into a fresh
// core with a recording PacketIo (as server_fuzz.cc).
//
// Input: byte 0's low bit set: the rest is the whole file; clear: the rest is
// the file without its CRC, which the harness appends, so that mutations get
// past the checksum to the parser. Seeds from snapshot_seeds.cc.
//
// Invariants (a violation prints what failed and traps):
//   - decoding fails with a message, or succeeds; encoding what it decoded
//     decodes to the same snapshot (a version 1 or 2 file comes back as
//     version 3 with the same allocations);
//   - restore of each decoded allocation either says why not (and the core
//     holds no more allocations than before) or re-creates it: found under
//     its 5-tuple, with its id, user, the control plane's usage and its age,
//     and exactly the relayed addresses whose own expiry (a dual
//     allocation's, version 3; else the allocation's) is still ahead,
//     re-bound through the PacketIo; saved again, it has the same id and
//     5-tuple, those relayed addresses, each expiring at the same time (or at
//     the longest lifetime the configuration grants, if that is sooner), the
//     allocation at the latest of them, and keeps at most the permissions and
//     channels it was saved with, none for a family it has no relayed
//     address of;
//   - the allocations gauge counts exactly the restored ones, and ending the
//     core takes it back to zero.
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/state_snapshot.h"
#include "core_world.h"

namespace {

using namespace turn;
using namespace turn::cp;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "snapshot_fuzz: %s\n", what);
    __builtin_trap();
}

void check(bool ok, const char* what) {
    if (!ok) {
        fail(what);
    }
}

// The relay the seeds' allocations fit (snapshot_seeds.cc): server_net.h's, the
// clock at Unix 1'700'000'000 s.
std::unique_ptr<fuzzcore::CoreWorld> make_world() {
    auto w = std::make_unique<fuzzcore::CoreWorld>();
    if (const std::string err = fuzzcore::start_core(*w); !err.empty()) {
        std::fprintf(stderr, "snapshot_fuzz: %s\n", err.c_str());
        fail("configuration refused");
    }
    return w;
}

void restore_all(const LoopSnapshot& s) {
    auto w = make_world();
    AllocationManager& m = w->server->allocations();
    int64_t restored = 0;
    for (const SavedAllocation& a : s.allocations) {
        const int64_t before = w->shared->allocations.load();
        const std::string why = m.restore(a);
        if (!why.empty()) {
            check(w->shared->allocations.load() == before, "a refused restore took an allocation");
            continue;
        }
        ++restored;
        const Allocation* r = m.find(a.five_tuple);
        check(r != nullptr, "a restored allocation is not found under its 5-tuple");
        check(r->id == a.id, "restored under another id");
        check(r->username == a.username, "restored for another user");
        check(r->relayed == a.usage, "the control plane's usage changed");
        const uint64_t unix_now = w->clock.unix_ms();
        // What each relayed address should come back with (0: not at all).
        std::array<uint64_t, 2> expect{};
        uint64_t latest = 0;
        for (size_t f = 0; f < 2; ++f) {
            const uint64_t own = a.relayed_expires_unix_ms[f];
            const uint64_t exp = own != 0 ? std::min(own, a.expires_unix_ms) : a.expires_unix_ms;
            if (a.relayed[f].family != Family::kNone && exp > unix_now) {
                expect[f] = std::min(exp, unix_now + 3'600'000);
                latest = std::max(latest, expect[f]);
            }
            check(r->relays[f].active() == (expect[f] != 0), "relayed family lost or added");
            check(!r->relays[f].active() || r->relays[f].addr == a.relayed[f], "relayed address changed");
        }
        if (a.created_unix_ms != 0 && a.created_unix_ms <= unix_now) {
            check(r->age_ms(w->clock.now_ms()) == unix_now - a.created_unix_ms, "age changed");
        }
        const SavedAllocation again = m.saved_view(*r);
        check(again.id == a.id && again.five_tuple == a.five_tuple, "saved again as another allocation");
        for (size_t f = 0; f < 2; ++f) {
            check(again.relayed[f] == (expect[f] != 0 ? a.relayed[f] : Address{}), "saved with other relayed addresses");
            check(again.relayed_expires_unix_ms[f] == expect[f],
                  "a relayed address's expiry changed (other than capped at [allocation].max_lifetime_s)");
        }
        check(again.expires_unix_ms == latest, "the allocation's expiry is not its relayed addresses' latest");
        check(again.usage == a.usage, "usage saved differently");
        check(again.permissions.size() <= a.permissions.size() && again.channels.size() <= a.channels.size(),
              "permissions or channels appeared");
        for (const auto& p : again.permissions) {
            check(r->has_family(p.peer.family), "a permission for a family without a relayed address");
        }
        for (const auto& c : again.channels) {
            check(r->has_family(c.peer.family), "a channel for a family without a relayed address");
        }
    }
    check(w->shared->allocations.load() == restored, "allocations gauge differs from the restored count");
    w->server.reset();
    check(w->shared->allocations.load() == 0, "allocations left after the core ended");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // SNAPSHOT_FUZZ_LOG=1: the core's lines (allocation_restored,
    // allocation_not_restored and why), to see what a seed reaches.
    static const bool quiet = [] {
        if (std::getenv("SNAPSHOT_FUZZ_LOG") == nullptr) {
            spdlog::set_level(spdlog::level::off);
        }
        return true;
    }();
    (void)quiet;
    if (size == 0) {
        return 0;
    }
    std::vector<uint8_t> file(data + 1, data + size);
    if ((data[0] & 1) == 0) {
        const uLong crc = crc32(crc32(0L, Z_NULL, 0), file.data(), static_cast<uInt>(file.size()));
        for (int i = 3; i >= 0; --i) {
            file.push_back(static_cast<uint8_t>(crc >> (8 * i)));
        }
    }
    std::string err;
    const auto s = decode_snapshot(file, err);
    if (!s) {
        check(!err.empty(), "decoding failed without a message");
        return 0;
    }
    std::string err2;
    const auto again = decode_snapshot(encode_snapshot(*s), err2);
    check(again.has_value(), "an encoded snapshot does not decode");
    check(again->loop == s->loop && again->loops == s->loops && again->saved_unix_ms == s->saved_unix_ms &&
              again->allocations == s->allocations,
          "decode(encode(snapshot)) differs");
    restore_all(*s);
    return 0;
}
