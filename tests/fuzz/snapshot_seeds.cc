// Writes the seed corpus of snapshot_fuzz.cc (tests/fuzz/corpus/snapshot/):
// state snapshot files as turn-relay writes them (core/state_snapshot.h's own
// encoder), each after a 0 byte and without its CRC (the harness appends it),
// one whole file after a 1 byte. The allocations fit snapshot_fuzz.cc's relay
// (198.18.0.1 and fd00::1, ports 50000-50099, the clock at 1'700'000'000 s)
// or miss it in one way each, so that restore's every refusal is reached.
// (Restore caps lifetimes at the relay's: 3600 s for an allocation.)
//
//   build/tests/fuzz/snapshot_seeds tests/fuzz/corpus/snapshot
#include <string>
#include <vector>

#include "core/state_snapshot.h"
#include "seed_writer.h"

namespace {

using namespace turn;
using namespace turn::cp;

Address A(const char* s) { return *Address::parse(s); }

constexpr uint64_t kNow = 1'700'000'000'000;  // snapshot_fuzz.cc's clock, Unix ms

SavedAllocation v4(uint64_t id, uint16_t client_port, uint16_t relayed_port) {
    SavedAllocation a;
    a.id = id;
    a.five_tuple = {A("198.18.1.1:5000").with_port(client_port), A("198.18.0.1:3478"), Transport::kUdp};
    a.username = "alice";
    a.realm = "example.org";
    a.relayed[0] = A("198.18.0.1:0").with_port(relayed_port);
    a.expires_unix_ms = kNow + 300'000;
    a.created_unix_ms = kNow - 90'000;
    a.usage = {12, 1200, 10, 999};
    a.permissions = {{A("198.18.9.9:0"), kNow + 200'000}, {A("198.18.9.10:0"), kNow - 1}};
    a.channels = {{0x4000, A("198.18.9.9:7000"), kNow + 500'000}, {0x4001, A("198.18.9.10:7001"), kNow + 1}};
    return a;
}

// Mode byte 0, then the file without its CRC (the harness appends it) and
// without `cut` bytes before it.
std::vector<uint8_t> body(const LoopSnapshot& s, size_t cut = 0) {
    const std::vector<uint8_t> f = encode_snapshot(s);
    std::vector<uint8_t> out{0};
    out.insert(out.end(), f.begin(), f.end() - 4 - static_cast<ptrdiff_t>(cut));
    return out;
}

LoopSnapshot snap(std::vector<SavedAllocation> a) {
    LoopSnapshot s;
    s.loop = 0;
    s.loops = 1;
    s.saved_unix_ms = kNow - 5'000;
    s.allocations = std::move(a);
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    fuzzseeds::Files files;
    // Restored: IPv4, a dual allocation (both families), IPv6 only, mobile and moved.
    SavedAllocation dual = v4(7, 5001, 50011);
    dual.relayed[1] = A("[fd00::1]:50012");
    dual.permissions.push_back({A("[fd00:9::9]:0"), kNow + 100'000});
    dual.channels.push_back({0x4fff, A("[fd00:9::9]:7000"), kNow + 100'000});
    SavedAllocation six;
    six.id = 9;
    six.five_tuple = {A("[fd00::99]:6000"), A("[fd00::1]:3478"), Transport::kUdp};
    six.username = "bob";
    six.realm = "example.org";
    six.relayed[1] = A("[fd00::1]:50020");
    six.expires_unix_ms = kNow + 3'600'000;
    six.dont_fragment = true;
    six.mobile = true;
    six.moved = true;
    files.emplace_back("restored", body(snap({v4(1, 5000, 50001), dual, six})));
    files.emplace_back("empty", body(snap({})));
    // Refused, one reason each: expired, relayed IP not ours, port outside the
    // range, the same 5-tuple twice, the same id twice, over the user's quota.
    SavedAllocation expired = v4(2, 5002, 50002);
    expired.expires_unix_ms = kNow - 1;
    SavedAllocation foreign = v4(3, 5003, 50003);
    foreign.relayed[0] = A("198.18.0.2:50003");
    SavedAllocation outside = v4(4, 5004, 60000);
    std::vector<SavedAllocation> quota;
    for (uint64_t i = 0; i < 12; ++i) {
        quota.push_back(v4(100 + i, static_cast<uint16_t>(7000 + i), static_cast<uint16_t>(50040 + i)));
    }
    files.emplace_back("refused", body(snap({expired, foreign, outside, v4(5, 5005, 50005), v4(6, 5005, 50006),
                                             v4(8, 5008, 50008), v4(8, 5009, 50009)})));
    files.emplace_back("quota", body(snap(quota)));
    // Age unknown (0), in the future, and older than the core's clock.
    SavedAllocation ages[3] = {v4(20, 5020, 50030), v4(21, 5021, 50031), v4(22, 5022, 50032)};
    ages[0].created_unix_ms = 0;
    ages[1].created_unix_ms = kNow + 60'000;
    ages[2].created_unix_ms = kNow - 86'400'000;
    files.emplace_back("ages", body(snap({ages[0], ages[1], ages[2]})));
    // A version 1 file (no creation time or usage, no relayed addresses' own
    // expiries): 56 bytes less per allocation; a version 2 file: 16 less.
    {
        std::vector<uint8_t> f = body(snap({v4(30, 5030, 50033)}), 56);
        f[1 + 8 + 3] = 1;  // version (big-endian u32 after the mode byte and the magic)
        files.emplace_back("version1", f);
        SavedAllocation two = v4(31, 5031, 50036);
        two.relayed[1] = A("[fd00::1]:50037");
        f = body(snap({two}), 16);
        f[1 + 8 + 3] = 2;
        files.emplace_back("version2", f);
    }
    // Dual allocations whose relayed addresses have lifetimes of their own:
    // both unexpired, and one whose IPv6 address ran out while no process
    // ran (restored IPv4-only, without its IPv6 permission and channel).
    {
        SavedAllocation both = dual;
        both.id = 60;
        both.five_tuple.client = A("198.18.1.1:5060");
        both.relayed = {A("198.18.0.1:50060"), A("[fd00::1]:50061")};
        both.relayed_expires_unix_ms = {kNow + 300'000, kNow + 100'000};
        SavedAllocation half = both;
        half.id = 61;
        half.five_tuple.client = A("198.18.1.1:5061");
        half.relayed = {A("198.18.0.1:50062"), A("[fd00::1]:50063")};
        half.relayed_expires_unix_ms = {kNow + 300'000, kNow - 1};
        files.emplace_back("dual-own-lifetimes", body(snap({both, half})));
    }
    // An absent relayed address (family 0) with bytes after it: no address
    // (what the fuzzer found first: such a port was kept).
    {
        std::vector<uint8_t> f = body(snap({v4(50, 5050, 50035)}));
        // Mode byte, header, then id, transport, client, server, username,
        // realm and the first relayed address; the second's family, IP, port.
        const size_t at = 1 + 8 + 4 + 4 + 4 + 8 + 4 + 8 + 1 + 19 + 19 + 2 + 5 + 2 + 11 + 19;
        f[at + 1] = 0xAB;
        f[at + 17] = 0xFF;
        files.emplace_back("none-address-with-port", f);
    }
    // The whole file, its own CRC checked.
    {
        std::vector<uint8_t> f = encode_snapshot(snap({v4(40, 5040, 50034)}));
        f.insert(f.begin(), 1);
        files.emplace_back("whole-file", f);
    }
    return fuzzseeds::write_seeds(argc, argv, files);
}
