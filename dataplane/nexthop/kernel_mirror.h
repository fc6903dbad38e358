// Keeps the next-hop table (nexthop.h) in step with the kernel of the
// dataplane's network namespace, over rtnetlink (libmnl), on the main lcore:
//
//   neighbour with a link-layer address (REACHABLE, STALE, DELAY, PROBE,
//   PERMANENT, NOARP)            -> host entry IP -> MAC out of the NIC port
//   neighbour whose MAC changed  -> entries learned through the old MAC go
//                                   (destinations behind that router), the
//                                   neighbour gets the new MAC
//   neighbour FAILED or deleted  -> its entry and every entry with its MAC go
//   any unicast route change     -> every host entry goes, neighbours are
//                                   re-read; destinations are re-learned from
//                                   kernel egress (their next packet takes the
//                                   slow path, never a stale guess)
//   lost notifications (ENOBUFS) -> the same full flush and re-read
//
// Start-up reads the whole neighbour table; poll() applies what changed since,
// without blocking. Never on the fast path.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nexthop/nexthop.h"

struct mnl_socket;
struct nlmsghdr;

namespace dp {

class KernelMirror {
public:
    struct Stats {
        uint64_t neigh_set = 0;      // host entries added or changed from neighbours
        uint64_t neigh_removed = 0;  // neighbours gone (FAILED or deleted)
        uint64_t mac_retired = 0;    // entries removed because their MAC left
        uint64_t flushes = 0;        // full flushes (route change, lost notifications)
    };

    // nullptr and *error set if rtnetlink cannot be opened (start-up only).
    static std::unique_ptr<KernelMirror> open(NextHops& nh, uint16_t nic_port, std::string* error);
    ~KernelMirror();
    KernelMirror(const KernelMirror&) = delete;
    KernelMirror& operator=(const KernelMirror&) = delete;

    // Applies every pending notification; returns how many messages were read.
    unsigned poll();
    const Stats& stats() const { return stats_; }

private:
    KernelMirror(NextHops& nh, uint16_t port) : nh_(nh), port_(port) {}
    bool dump_neighbours(std::string* error);
    void full_resync();
    static int on_message(const nlmsghdr* n, void* self);
    void on_neighbour(const nlmsghdr* n);
    void on_route(const nlmsghdr* n);

    NextHops& nh_;
    uint16_t port_;
    mnl_socket* events_ = nullptr;
    bool dumping_ = false;
    bool flush_wanted_ = false;
    Stats stats_;
};

}  // namespace dp
