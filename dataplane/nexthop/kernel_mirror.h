// Keeps the next-hop table (nexthop.h) in step with the kernel of the
// dataplane's network namespace, over rtnetlink (libmnl), on the main lcore,
// for the exception port's kernel interface and the VLAN devices on it
// (open()'s exc_ifindex; other interfaces' neighbours and default routes
// are ignored):
//
//   neighbour with a link-layer address (REACHABLE, STALE, DELAY, PROBE,
//   PERMANENT, NOARP)            -> host entry IP -> MAC out of the NIC port,
//                                   tagged with the VLAN ID when the neighbour
//                                   is on an 802.1Q VLAN device (links are
//                                   followed too; Q-in-Q and 802.1ad devices'
//                                   neighbours get no entry: slow path)
//   neighbour whose MAC changed  -> entries learned through the old MAC go
//                                   (destinations behind that router), the
//                                   neighbour gets the new MAC
//   neighbour FAILED or deleted  -> its entry and every entry with its MAC go
//   a route added, deleted or    -> the routes and neighbours are read again
//   replaced, a link up or down     (apply_route_changes); the learned host
//                                   entries the change may reroute go: inside
//                                   a prefix notified, added or deleted, and,
//                                   when the default's gateway changed, those
//                                   no more specific route covers (re-learned
//                                   from kernel egress: their next packet
//                                   takes the slow path, never a stale
//                                   guess); neighbour entries and other
//                                   learned ones stay
//   lost notifications (ENOBUFS, -> the same full flush and re-read
//   or one longer than 1 MiB)
//   a multipath default route    -> no default next hop: every destination
//                                   is learned from kernel egress (nexthop.h
//                                   ages them)
//   default route via a gateway  -> the family's default next hop is the
//                                   gateway neighbour's MAC (while the kernel
//                                   has one for it; of several default
//                                   routes, the lowest metric's); none
//                                   without a route or an unresolved
//                                   gateway, unless a static default
//                                   (--gw4/--gw6) was given
//   a route more specific than   -> its prefix: destinations inside it get
//   the default (connected          no default next hop, only their host
//   subnet, another router,         entry (NextHops::covered); on any
//   blackhole; any interface)       interface, since the kernel would not
//                                   send them to the default gateway either
//                                   (routes in other tables than main, and
//                                   the policy rules choosing them, are not
//                                   followed); not for a family with a
//                                   static default, which the operator set
//                                   for every destination
//
// Start-up reads the whole neighbour table; poll() applies what changed since,
// without blocking. Never on the fast path. Every rtnetlink datagram is read
// whole, whatever its length (a link with many alternative names makes one
// of tens of KiB), into one buffer kept and grown to fit, up to 1 MiB.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

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
        uint64_t flushes = 0;        // full flushes (lost notifications)
        uint64_t route_changes = 0;  // batches of route notifications applied (no flush)
        uint64_t rerouted = 0;       // learned entries they removed
        uint64_t defaults_set = 0;   // default next hop set from the kernel's default route
        // Notification reads that lost some (each made a full flush): the
        // kernel dropped one or more (ENOBUFS), or one was longer than 1 MiB
        // (discarded) or came truncated.
        uint64_t notifications_lost = 0;
    };

    // nullptr and *error set if rtnetlink cannot be opened (start-up only).
    // static_default[f]: the family's default was set by hand (--gw4/--gw6);
    // the kernel's default route then leaves it alone.
    // exc_ifindex: the interface the exception port's PMD drives (its
    // rte_eth_dev_info if_index; 0: unknown). The kernel's end of it (the
    // veth peer, or the interface itself, a tap) and the VLAN devices on that
    // are the only interfaces whose neighbours and default route the mirror
    // takes: the NIC's traffic goes nowhere else (a management NIC's
    // neighbours and routes are not the NIC's). 0 follows every interface.
    // kernel_ifindex: the kernel's end named by the operator
    // (--exc-kernel-if, for a PMD that names no interface, e.g. virtio-user);
    // when not 0 it is the one followed and exc_ifindex is not consulted.
    static std::unique_ptr<KernelMirror> open(NextHops& nh, uint16_t nic_port, int exc_ifindex, bool static_default4,
                                              bool static_default6, std::string* error, int kernel_ifindex = 0);
    // A mirror without sockets, fed one rtnetlink message at a time through
    // apply() (tests; e.g. VLAN devices on a kernel built without 802.1Q).
    static std::unique_ptr<KernelMirror> detached(NextHops& nh, uint16_t nic_port, int exc_ifindex = 0,
                                                  int kernel_ifindex = 0, bool static_default4 = false);
    // The kernel's end of the exception port, once its link was seen (0: not
    // known, every interface followed).
    int kernel_ifindex() const { return kernel_if_; }
    ~KernelMirror();
    KernelMirror(const KernelMirror&) = delete;
    KernelMirror& operator=(const KernelMirror&) = delete;

    // Applies every pending notification; returns how many messages were read.
    unsigned poll();
    // Readable when notifications are pending (poll() them); -1 when detached.
    int fd() const;
    // Applies one rtnetlink message (RTM_{NEW,DEL}{LINK,NEIGH,ROUTE}) as the
    // start-up dump does: a route message sets the gateway, no resync.
    void apply(const nlmsghdr* n);
    // Applies one as poll() applies a notification, then what poll() does
    // after its batch (a route's learned entries removed; without sockets,
    // no neighbour re-read). Tests of a detached mirror.
    void notify(const nlmsghdr* n);
    const Stats& stats() const { return stats_; }

private:
    KernelMirror(NextHops& nh, uint16_t port, int exc_ifindex, int kernel_ifindex)
        : nh_(nh), port_(port), exc_if_(kernel_ifindex != 0 ? 0 : exc_ifindex), kernel_if_(kernel_ifindex) {}
    // Whether the NIC's traffic can be on this interface: the exception
    // port's kernel end or a VLAN device on it (everything while unknown).
    bool ours(int ifindex) const;
    bool dump(uint16_t type, std::string* error);
    ssize_t receive(mnl_socket* s, size_t* too_long);
    bool dump_all(std::string* error);
    void full_resync();
    // After a batch of notifications with route or link-state changes
    // (rerouted_, routes_changed_): the routes and neighbours are read
    // again, the prefixes published, and the learned entries the changes
    // may reroute go.
    void apply_route_changes();
    static int on_message(const nlmsghdr* n, void* self);
    void on_link(const nlmsghdr* n);
    void on_neighbour(const nlmsghdr* n);
    void on_route(const nlmsghdr* n);
    void note_prefix(uint8_t family, const NextHops::Prefix& p, bool add, bool replace = false);
    void publish_prefixes();
    // Re-derives the family's default next hop from its gateway's neighbour.
    void update_default(uint8_t family);
    // No default next hop for the families whose default is the kernel's.
    void clear_kernel_defaults();
    uint16_t vlan_of(int ifindex) const;

    struct Gateway {
        bool present = false;  // the kernel has a default route via a gateway
        uint8_t ip[16] = {};
        int oif = 0;                 // the route's device (0: not given)
        uint32_t metric = 0;         // its priority (RTA_PRIORITY)
        bool has_neighbour = false;  // the kernel has the gateway's MAC on that device:
        NextHop neighbour;           // this
        bool is_static = false;
        // The same default route's gateway (both absent, or the same IP on
        // the same device): what apply_route_changes compares.
        bool same_route(const Gateway& o) const {
            return present == o.present && (!present || (oif == o.oif && std::memcmp(ip, o.ip, sizeof ip) == 0));
        }
    };

    NextHops& nh_;
    uint16_t port_;
    int exc_if_ = 0;     // the exception port's interface (the PMD's side)
    int kernel_if_ = 0;  // its kernel end, from exc_if_'s link message (or named)
    mnl_socket* events_ = nullptr;
    std::vector<char> rx_;  // rtnetlink datagrams (receive()), as long as the longest read so far
    bool dumping_ = false;
    bool flush_wanted_ = false;
    // Route notifications since the last poll(), by family: the prefixes
    // added or deleted, and whether a default route was.
    struct Rerouted {
        std::vector<NextHops::Prefix> prefixes;
        bool any_default = false;
    };
    Rerouted rerouted_[2];
    bool routes_changed_ = false;
    Gateway gw_[2];  // [0] IPv4, [1] IPv6
    std::vector<NextHops::Prefix> prefixes_[2];  // routes more specific than the default, by family
    bool too_many_[2] = {false, false};          // more of them than NextHops::kMaxPrefixes (said once)
    static constexpr uint16_t kUnsupportedVlan = 0xffff;
    struct VlanDevice {
        uint16_t vid = kUnsupportedVlan;  // 802.1Q ID 1-4094, else kUnsupportedVlan (802.1ad, 0, 4095)
        int lower = 0;                    // IFLA_LINK
    };
    std::unordered_map<int, VlanDevice> vlans_;  // by ifindex, VLAN devices only
    std::unordered_map<int, unsigned> link_state_;  // by ifindex: IFF_UP | IFF_LOWER_UP as last seen
    Stats stats_;
};

}  // namespace dp
