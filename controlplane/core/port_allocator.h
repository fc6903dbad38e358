// Relayed port bookkeeping for the configured range, shared by every event
// loop (one mutex; taken only by Allocate/delete, never per packet).
//
// RFC 8656 section 7.2: EVEN-PORT asks for an even port; with the R bit the
// next higher port is reserved too and handed out later to the Allocate that
// presents the RESERVATION-TOKEN. Reservations expire (about 30 s).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>
#include <vector>

#include "net/address.h"

namespace turn::cp {

class PortAllocator {
public:
    // seed 0 (production): ports start from a generator seeded with 64 bits
    // of OpenSSL's RAND_bytes, and RESERVATION-TOKENs come from RAND_bytes
    // itself, so that no client can predict the token another was given and
    // take its reserved port. Another seed (tests, fuzzing): both from a
    // generator with that seed, reproducibly.
    PortAllocator(uint16_t min, uint16_t max, uint64_t reservation_ms, uint64_t seed);

    struct Grant {
        uint16_t port = 0;
        uint64_t token = 0;  // non-zero when the next port was reserved (R bit)
    };

    // A free port (even if `even`), reserving port+1 if `reserve_next`.
    std::optional<Grant> acquire(Family f, bool even, bool reserve_next, uint64_t now_ms);
    // The port reserved under `token` (and its family), once; nullopt if
    // unknown or expired. The reservation decides the family: RFC 8656
    // forbids REQUESTED-ADDRESS-FAMILY next to RESERVATION-TOKEN.
    struct Reserved {
        Family family;
        uint16_t port;
    };
    std::optional<Reserved> take_reserved(uint64_t token, uint64_t now_ms);
    // Takes exactly `port` (a restored allocation's); false if outside the
    // range or not free.
    bool take(Family f, uint16_t port);
    void release(Family f, uint16_t port);
    // Marks a port the kernel refused (another process holds it); it stays
    // taken until release().
    size_t in_use(Family f) const;

private:
    enum State : uint8_t { kFree = 0, kUsed = 1, kReserved = 2 };
    struct Reservation {
        Family family;
        uint16_t port;
        uint64_t expires_ms;
    };
    void expire_reservations(uint64_t now_ms);
    std::vector<uint8_t>& table(Family f) { return f == Family::kIPv6 ? v6_ : v4_; }

    mutable std::mutex mu_;
    uint16_t min_;
    uint16_t max_;
    uint64_t reservation_ms_;
    std::vector<uint8_t> v4_;
    std::vector<uint8_t> v6_;
    std::unordered_map<uint64_t, Reservation> reservations_;
    std::mt19937_64 rng_;
    bool secure_;  // seed 0: tokens from RAND_bytes
};

}  // namespace turn::cp
