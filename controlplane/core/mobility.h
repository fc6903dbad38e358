// RFC 8016 MOBILITY-TICKET: what a client shows from its new 5-tuple to take
// its allocation along. The ticket names the allocation (its process-wide
// id), the event loop that holds it and the allocation's move count when it
// was issued: a move makes every earlier ticket useless, so a captured
// Refresh cannot be replayed from another port to take the allocation after
// its client moved with it. RFC 8016 section 3.3 wants the ticket
// encrypted; it must also be unforgeable. So the 16-byte block (loop, id,
// move count and 4 random bytes, so two tickets cannot be linked) is
// encrypted with AES-256 and followed by 8 bytes of HMAC-SHA256 over the
// ciphertext, under keys drawn when the process starts; the 24 bytes travel
// as 32 characters of base64. Text, and that short, because coturn's
// turnutils_uclient keeps the ticket as a C string in 33 bytes (a binary or
// longer ticket is cut and comes back as a different one). Tickets of a
// previous process do not open (its keys are gone): a client that moves
// after a restart gets 400 and allocates again.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace turn::cp {

class MobilityTickets {
public:
    static constexpr size_t kSize = 32;  // base64 of 16 (ciphertext) + 8 (tag) bytes
    static constexpr uint64_t kMaxAllocationId = (uint64_t{1} << 56) - 1;

    MobilityTickets();  // random keys (OpenSSL RAND_bytes)
    explicit MobilityTickets(std::span<const uint8_t, 64> keys);

    struct Ticket {
        uint64_t allocation_id = 0;  // at most kMaxAllocationId
        uint8_t loop = 0;
        uint32_t moves = 0;          // Allocation::moves when issued
    };
    // Empty if the id does not fit (the client then gets no ticket).
    std::vector<uint8_t> issue(const Ticket& t) const;
    // nullopt unless the ticket is one of this process's, unaltered.
    std::optional<Ticket> open(std::span<const uint8_t> ticket) const;

private:
    std::array<uint8_t, 32> enc_key_{};
    std::array<uint8_t, 32> mac_key_{};
};

}  // namespace turn::cp
