#include "nexthop/kernel_mirror.h"

#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <vector>

namespace dp {

namespace {

struct NeighAttrs {
    const nlattr* dst = nullptr;
    const nlattr* lladdr = nullptr;
};

struct RouteAttrs {
    const nlattr* dst = nullptr;
    const nlattr* gateway = nullptr;
    const nlattr* table = nullptr;
    const nlattr* oif = nullptr;
    const nlattr* priority = nullptr;
};

int route_attr(const nlattr* a, void* data) {
    auto* out = static_cast<RouteAttrs*>(data);
    switch (mnl_attr_get_type(a)) {
    case RTA_DST: out->dst = a; break;
    case RTA_GATEWAY: out->gateway = a; break;
    case RTA_PRIORITY: out->priority = a; break;
    case RTA_TABLE: out->table = a; break;
    case RTA_OIF: out->oif = a; break;
    default: break;
    }
    return MNL_CB_OK;
}

int neigh_attr(const nlattr* a, void* data) {
    auto* out = static_cast<NeighAttrs*>(data);
    switch (mnl_attr_get_type(a)) {
    case NDA_DST: out->dst = a; break;
    case NDA_LLADDR: out->lladdr = a; break;
    default: break;
    }
    return MNL_CB_OK;
}

// A link's IFLA_LINK (lower device), and from IFLA_LINKINFO its kind and,
// for a VLAN device, IFLA_INFO_DATA's ID and protocol.
struct LinkAttrs {
    const nlattr* link = nullptr;
    const nlattr* link_netnsid = nullptr;
    const nlattr* kind = nullptr;
    const nlattr* data = nullptr;
    const nlattr* vlan_id = nullptr;
    const nlattr* vlan_proto = nullptr;
};

int link_info_data_attr(const nlattr* a, void* data) {
    auto* out = static_cast<LinkAttrs*>(data);
    switch (mnl_attr_get_type(a)) {
    case IFLA_VLAN_ID: out->vlan_id = a; break;
    case IFLA_VLAN_PROTOCOL: out->vlan_proto = a; break;
    default: break;
    }
    return MNL_CB_OK;
}

int link_info_attr(const nlattr* a, void* data) {
    auto* out = static_cast<LinkAttrs*>(data);
    switch (mnl_attr_get_type(a)) {
    case IFLA_INFO_KIND: out->kind = a; break;
    case IFLA_INFO_DATA: out->data = a; break;
    default: break;
    }
    return MNL_CB_OK;
}

int link_attr(const nlattr* a, void* data) {
    auto* out = static_cast<LinkAttrs*>(data);
    switch (mnl_attr_get_type(a)) {
    case IFLA_LINK: out->link = a; break;
    case IFLA_LINK_NETNSID: out->link_netnsid = a; break;
    case IFLA_LINKINFO: mnl_attr_parse_nested(a, link_info_attr, data); break;
    default: break;
    }
    return MNL_CB_OK;
}

constexpr uint16_t kUsable = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;

// The longest rtnetlink datagram read. The kernel's are far shorter (a link
// message with as many 127-character alternative names as the kernel allows
// one interface is under 70 KiB; a dump datagram holds that or 32 KiB of
// messages); a longer one is discarded (KernelMirror::receive).
constexpr size_t kMaxDatagram = size_t{1} << 20;
// The receive buffer's first size: what one read asks for is what the
// kernel fills a dump's datagrams up to (it caps that at 32 KiB).
constexpr size_t kFirstBuffer = size_t{16} << 10;

}  // namespace

std::unique_ptr<KernelMirror> KernelMirror::open(NextHops& nh, uint16_t nic_port, int exc_ifindex,
                                                 bool static_default4, bool static_default6, std::string* error,
                                                 int kernel_ifindex) {
    std::unique_ptr<KernelMirror> m(new KernelMirror(nh, nic_port, exc_ifindex, kernel_ifindex));
    m->gw_[0].is_static = static_default4;
    m->gw_[1].is_static = static_default6;
    m->events_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_NONBLOCK | SOCK_CLOEXEC);
    const unsigned groups = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
    if (m->events_ == nullptr || mnl_socket_bind(m->events_, groups, MNL_SOCKET_AUTOPID) < 0) {
        *error = std::string("rtnetlink (neighbour and route notifications): ") + std::strerror(errno);
        return nullptr;
    }
    // Room for a burst of notifications (a routing daemon's updates) while
    // the main lcore reads a table: fewer lost ones (ENOBUFS), each of which
    // costs a full flush. Past the system's rmem_max only with CAP_NET_ADMIN
    // (SO_RCVBUFFORCE); else what SO_RCVBUF grants.
    const int rcvbuf = 8 << 20;
    if (setsockopt(mnl_socket_get_fd(m->events_), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0) {
        setsockopt(mnl_socket_get_fd(m->events_), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    }
    if (!m->dump_all(error)) {
        return nullptr;
    }
    return m;
}

std::unique_ptr<KernelMirror> KernelMirror::detached(NextHops& nh, uint16_t nic_port, int exc_ifindex,
                                                     int kernel_ifindex, bool static_default4) {
    std::unique_ptr<KernelMirror> m(new KernelMirror(nh, nic_port, exc_ifindex, kernel_ifindex));
    m->gw_[0].is_static = static_default4;
    return m;
}

bool KernelMirror::ours(int ifindex) const {
    if (kernel_if_ == 0 || ifindex == kernel_if_) {
        return true;
    }
    const auto v = vlans_.find(ifindex);
    return v != vlans_.end() && v->second.lower == kernel_if_;
}

void KernelMirror::apply(const nlmsghdr* n) {
    dumping_ = true;
    on_message(n, this);
    dumping_ = false;
    publish_prefixes();
}

void KernelMirror::notify(const nlmsghdr* n) {
    on_message(n, this);
    if (routes_changed_) {
        apply_route_changes();
    }
}

KernelMirror::~KernelMirror() {
    if (events_ != nullptr) {
        mnl_socket_close(events_);
    }
}

// Links first (to know the VLAN devices), routes (to know the gateways),
// then neighbours.
bool KernelMirror::dump_all(std::string* error) {
    const bool ok = dump(RTM_GETLINK, error) && dump(RTM_GETROUTE, error) && dump(RTM_GETNEIGH, error);
    publish_prefixes();
    return ok;
}

// Each prefix once, none for a family with a static default (--gw4/--gw6:
// the operator's word for every destination without a host entry, which
// the routes do not narrow). Past NextHops::kMaxPrefixes no destination gets
// the default any more: said once per crossing, on stderr.
void KernelMirror::publish_prefixes() {
    for (int f = 0; f < 2; f++) {
        std::vector<NextHops::Prefix> v;
        if (!gw_[f].is_static) {
            // Each once, up to one more than fits (a node with a large table
            // need not be compared entry by entry).
            for (const NextHops::Prefix& p : prefixes_[f]) {
                if (std::find(v.begin(), v.end(), p) == v.end()) {
                    v.push_back(p);
                    if (v.size() > NextHops::kMaxPrefixes) {
                        break;
                    }
                }
            }
        }
        const bool over = v.size() > NextHops::kMaxPrefixes;
        if (over != too_many_[f]) {
            too_many_[f] = over;
            if (over) {
                std::fprintf(stderr,
                             "turn-dataplane: the kernel has more than %u IPv%d routes more specific than the "
                             "default: destinations without a host entry take the slow path\n",
                             NextHops::kMaxPrefixes, f == 0 ? 4 : 6);
            } else {
                std::fprintf(stderr, "turn-dataplane: the kernel's IPv%d routes fit again (%zu): the default next "
                             "hop is used again\n", f == 0 ? 4 : 6, v.size());
            }
        }
        nh_.set_prefixes(f == 0 ? 4 : 6, v);
    }
}

// The next datagram of `s`, whole, into rx_ (grown to fit: its length is
// peeked first, as iproute2's rtnl_recvmsg does): its length, or -1 with
// errno as the socket left it (EAGAIN: none pending on a non-blocking
// socket; ENOBUFS: the kernel dropped notifications, the datagram stays
// queued). One longer than kMaxDatagram is read and discarded: -1 with
// EMSGSIZE and *too_long its length (else 0).
ssize_t KernelMirror::receive(mnl_socket* s, size_t* too_long) {
    *too_long = 0;
    const int fd = mnl_socket_get_fd(s);
    const ssize_t len = recv(fd, nullptr, 0, MSG_PEEK | MSG_TRUNC);  // netlink: the whole length
    if (len < 0) {
        return -1;
    }
    const auto need = static_cast<size_t>(len);
    if (need > kMaxDatagram) {
        char first;
        if (recv(fd, &first, 1, 0) < 0) {  // dequeues it (the rest is dropped)
            return -1;
        }
        *too_long = need;
        errno = EMSGSIZE;
        return -1;
    }
    if (rx_.size() < std::max(need, kFirstBuffer)) {
        rx_.resize(std::max(need, kFirstBuffer));
    }
    return mnl_socket_recvfrom(s, rx_.data(), rx_.size());
}

// Reads a whole table on a socket of its own (so notifications and the dump
// never interleave on one socket), each datagram whole (receive()). The link
// dump asks for IFLA_EXT_MASK (statistics left out, which the mirror does not
// read): with it the kernel makes each dump datagram room for its longest
// link message; without, one longer than the 32 KiB a datagram gets (many
// alternative names) would end the dump there, silently, as if done.
bool KernelMirror::dump(uint16_t type, std::string* error) {
    const char* what = type == RTM_GETNEIGH  ? "rtnetlink neighbour dump: "
                       : type == RTM_GETLINK ? "rtnetlink link dump: "
                                             : "rtnetlink route dump: ";
    mnl_socket* s = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (s == nullptr || mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
        *error = std::string("rtnetlink dump socket: ") + std::strerror(errno);
        if (s != nullptr) {
            mnl_socket_close(s);
        }
        return false;
    }
    alignas(nlmsghdr) char req_buf[MNL_NLMSG_HDRLEN + 64];
    nlmsghdr* req = mnl_nlmsg_put_header(req_buf);
    req->nlmsg_type = type;
    req->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    const auto seq = static_cast<uint32_t>(time(nullptr));
    req->nlmsg_seq = seq;
    if (type == RTM_GETNEIGH) {
        auto* nd = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(req, sizeof(ndmsg)));
        nd->ndm_family = AF_UNSPEC;
    } else if (type == RTM_GETLINK) {
        auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(req, sizeof(ifinfomsg)));
        ifi->ifi_family = AF_UNSPEC;
        mnl_attr_put_u32(req, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    } else {
        auto* rt = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(req, sizeof(rtmsg)));
        rt->rtm_family = AF_UNSPEC;
    }
    bool ok = mnl_socket_sendto(s, req, req->nlmsg_len) >= 0;
    const unsigned portid = mnl_socket_get_portid(s);
    size_t too_long = 0;
    dumping_ = true;
    while (ok) {
        const ssize_t n = receive(s, &too_long);
        if (n <= 0) {
            ok = false;
            break;
        }
        const int r = mnl_cb_run(rx_.data(), static_cast<size_t>(n), seq, portid, &KernelMirror::on_message, this);
        if (r == MNL_CB_STOP) {
            break;
        }
        if (r == MNL_CB_ERROR) {
            ok = false;
        }
    }
    dumping_ = false;
    if (!ok) {
        *error = std::string(what) +
                 (too_long != 0 ? "a datagram of " + std::to_string(too_long) + " bytes, longer than the " +
                                      std::to_string(kMaxDatagram) + " read: discarded, the table is incomplete"
                                : std::string(std::strerror(errno)));
    }
    mnl_socket_close(s);
    return ok;
}

void KernelMirror::full_resync() {
    nh_.flush_hosts();
    vlans_.clear();  // re-read below (a lost notification may have been a link's)
    stats_.flushes++;
    for (auto& g : gw_) {
        g.present = false;  // re-read below
        g.has_neighbour = false;
    }
    for (auto& p : prefixes_) {
        p.clear();  // re-read below
    }
    for (auto& r : rerouted_) {
        r = Rerouted{};  // everything goes anyway
    }
    routes_changed_ = false;
    std::string err;
    if (!dump_all(&err)) {
        // Routes may be missing: no default from the kernel until a whole
        // read (the next poll() tries again).
        clear_kernel_defaults();
        flush_wanted_ = true;
        return;
    }
    update_default(4);
    update_default(6);
}

int KernelMirror::fd() const { return events_ != nullptr ? mnl_socket_get_fd(events_) : -1; }

// Each notification datagram is read whole, whatever its length (receive();
// a link's with many alternative names is tens of KiB), into rx_, kept from
// call to call. Notifications the mirror could not read are lost, and any of
// them may have mattered: the kernel dropped some (ENOBUFS), one was longer
// than kMaxDatagram (discarded) or still came truncated (ENOSPC, libmnl's
// MSG_TRUNC): a full flush and re-read puts the mirror back in step.
unsigned KernelMirror::poll() {
    unsigned msgs = 0;
    for (;;) {
        size_t too_long = 0;
        const ssize_t n = receive(events_, &too_long);
        if (n < 0) {
            if (errno == ENOBUFS || errno == ENOSPC || too_long != 0) {
                flush_wanted_ = true;  // notifications were lost: start over
                stats_.notifications_lost++;
                continue;
            }
            break;  // EAGAIN: nothing more
        }
        msgs++;
        mnl_cb_run(rx_.data(), static_cast<size_t>(n), 0, 0, &KernelMirror::on_message, this);
    }
    if (flush_wanted_) {
        flush_wanted_ = false;
        full_resync();
    } else if (routes_changed_) {
        apply_route_changes();
    }
    return msgs;
}

// After a batch of notifications with route (or link state) changes. The
// kernel's routes are read again, not patched from the notifications: the
// kernel does not say everything (IPv4 routes a link or address takes with
// it go without a notification, a replaced route comes as one more
// RTM_NEWROUTE, an IPv6 multipath route loses one next hop per message), and
// a dump heals whatever the patching missed. Then the neighbours, for the
// gateways' MACs (an entry already there brings no notification). The host
// entries stay: neighbour entries say where on-link hosts are, which no
// route changes; learned entries (the kernel's egress before the change) go
// where the change may reroute them: inside a prefix notified, added,
// deleted or replaced, and, when a default route's gateway changed,
// outside every more specific route before or after. With more routes than
// NextHops::kMaxPrefixes in a family, its learned entries all go (bounded
// work on a node with a large table).
void KernelMirror::apply_route_changes() {
    routes_changed_ = false;
    stats_.route_changes++;
    std::vector<NextHops::Prefix> before[2] = {prefixes_[0], prefixes_[1]};
    const Gateway was[2] = {gw_[0], gw_[1]};
    bool complete = true;
    if (events_ != nullptr) {
        for (int f = 0; f < 2; f++) {
            if (rerouted_[f].any_default && !gw_[f].is_static) {
                // Until the routes are read again, no default: the slow
                // path for a moment rather than the deleted gateway.
                nh_.clear_default(f == 0 ? 4 : 6);
            }
            gw_[f].present = false;
            gw_[f].has_neighbour = false;
            prefixes_[f].clear();
        }
        std::string err;
        complete = dump(RTM_GETROUTE, &err) && dump(RTM_GETNEIGH, &err);
    }
    publish_prefixes();
    for (int f = 0; f < 2; f++) {
        const uint8_t family = f == 0 ? 4 : 6;
        const std::vector<NextHops::Prefix>& now = prefixes_[f];
        const std::vector<NextHops::Prefix>& then = before[f];
        std::vector<NextHops::Prefix> changed = std::move(rerouted_[f].prefixes);
        const bool default_moved = rerouted_[f].any_default || !was[f].same_route(gw_[f]);
        rerouted_[f] = Rerouted{};
        constexpr size_t kMany = NextHops::kMaxPrefixes;
        if (now.size() > kMany || then.size() > kMany || changed.size() > kMany) {
            stats_.rerouted += nh_.remove_learned_if([&](const NextHopKey& k) { return k.family == family; });
            continue;
        }
        for (const auto* a : {&now, &then}) {
            const auto* b = a == &now ? &then : &now;
            for (const NextHops::Prefix& p : *a) {
                if (std::find(b->begin(), b->end(), p) == b->end()) {
                    changed.push_back(p);  // added or deleted (a replaced one is notified: in already)
                }
            }
        }
        if (changed.empty() && !default_moved) {
            continue;
        }
        auto covered_by = [](const uint8_t* ip, const std::vector<NextHops::Prefix>& v) {
            return std::any_of(v.begin(), v.end(), [&](const NextHops::Prefix& p) { return p.contains(ip); });
        };
        stats_.rerouted += nh_.remove_learned_if([&](const NextHopKey& k) {
            return k.family == family &&
                   (covered_by(k.ip, changed) ||
                    (default_moved && (!covered_by(k.ip, now) || !covered_by(k.ip, then))));
        });
    }
    if (!complete) {
        // A partial read: routes may be missing, so no default from the
        // kernel until a whole one (the next poll() starts over).
        clear_kernel_defaults();
        flush_wanted_ = true;
        return;
    }
    update_default(4);
    update_default(6);
}

// A static default (--gw4/--gw6) is the operator's, whatever the routes.
void KernelMirror::clear_kernel_defaults() {
    for (int f = 0; f < 2; f++) {
        if (!gw_[f].is_static) {
            nh_.clear_default(f == 0 ? 4 : 6);
        }
    }
}

int KernelMirror::on_message(const nlmsghdr* n, void* self) {
    auto* m = static_cast<KernelMirror*>(self);
    switch (n->nlmsg_type) {
    case RTM_NEWLINK:
    case RTM_DELLINK: m->on_link(n); break;
    case RTM_NEWNEIGH:
    case RTM_DELNEIGH: m->on_neighbour(n); break;
    case RTM_NEWROUTE:
    case RTM_DELROUTE: m->on_route(n); break;
    default: break;
    }
    return MNL_CB_OK;
}

// Which interfaces are VLAN devices: their ID, protocol and lower device
// (vlan_of decides what their neighbours get). A device's VLAN ID cannot
// change while it exists. Only AF_UNSPEC link messages describe devices
// (the bridge code sends AF_BRIDGE ones, deletions included, for ports).
void KernelMirror::on_link(const nlmsghdr* n) {
    if (mnl_nlmsg_get_payload_len(n) < sizeof(ifinfomsg)) {
        return;
    }
    const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(n));
    if (ifi->ifi_family != AF_UNSPEC) {
        return;
    }
    // A link that goes down (or away) takes its IPv4 routes with it, and
    // the kernel does not say so route by route: its routes are read again
    // (apply_route_changes), as when it comes back up.
    const unsigned state = ifi->ifi_flags & (IFF_UP | IFF_LOWER_UP);
    if (n->nlmsg_type == RTM_DELLINK) {
        vlans_.erase(ifi->ifi_index);
        routes_changed_ |= link_state_.erase(ifi->ifi_index) != 0 && !dumping_;
        return;
    }
    const auto [ls, fresh] = link_state_.try_emplace(ifi->ifi_index, state);
    if (!fresh && ls->second != state) {
        ls->second = state;
        routes_changed_ |= !dumping_;
    }
    LinkAttrs a;
    mnl_attr_parse(n, sizeof(ifinfomsg), link_attr, &a);
    if (exc_if_ != 0 && ifi->ifi_index == exc_if_) {
        // A veth's IFLA_LINK is its peer, the kernel's end (unless the peer
        // is in another namespace: then nothing here is, and every
        // interface is followed); a tap has none and is the kernel's own.
        if (a.link == nullptr || mnl_attr_get_payload_len(a.link) != 4) {
            kernel_if_ = exc_if_;
        } else if (a.link_netnsid == nullptr) {
            kernel_if_ = static_cast<int>(mnl_attr_get_u32(a.link));
        }
    }
    if (a.kind == nullptr || mnl_attr_validate(a.kind, MNL_TYPE_NUL_STRING) < 0 ||
        std::strcmp(mnl_attr_get_str(a.kind), "vlan") != 0) {
        vlans_.erase(ifi->ifi_index);
        return;
    }
    if (a.data != nullptr) {
        mnl_attr_parse_nested(a.data, link_info_data_attr, &a);
    }
    VlanDevice d;
    if (a.vlan_id != nullptr && mnl_attr_get_payload_len(a.vlan_id) == 2) {
        d.vid = mnl_attr_get_u16(a.vlan_id);
    }
    const bool dot1q = a.vlan_proto == nullptr || (mnl_attr_get_payload_len(a.vlan_proto) == 2 &&
                                                   mnl_attr_get_u16(a.vlan_proto) == htons(ETH_P_8021Q));
    if (!dot1q || d.vid == 0 || d.vid > kMaxVlanId) {
        d.vid = kUnsupportedVlan;
    }
    if (a.link != nullptr && mnl_attr_get_payload_len(a.link) == 4) {
        d.lower = static_cast<int>(mnl_attr_get_u32(a.link));
    }
    vlans_[ifi->ifi_index] = d;
}

// The VLAN ID a neighbour on `ifindex` is reached with: 0 for a device that
// is no VLAN device; kUnsupportedVlan for an 802.1ad one, one with an ID
// that cannot be tagged, or one on another VLAN device (Q-in-Q), decided
// here rather than when the link arrived, so the order in which the
// devices were seen does not matter.
uint16_t KernelMirror::vlan_of(int ifindex) const {
    const auto v = vlans_.find(ifindex);
    if (v == vlans_.end()) {
        return 0;
    }
    if (v->second.lower != 0 && vlans_.count(v->second.lower) != 0) {
        return kUnsupportedVlan;
    }
    return v->second.vid;
}

void KernelMirror::on_neighbour(const nlmsghdr* n) {
    if (mnl_nlmsg_get_payload_len(n) < sizeof(ndmsg)) {
        return;
    }
    const auto* nd = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(n));
    if (nd->ndm_family != AF_INET && nd->ndm_family != AF_INET6) {
        return;
    }
    NeighAttrs a;
    mnl_attr_parse(n, sizeof(ndmsg), neigh_attr, &a);
    const uint8_t family = nd->ndm_family == AF_INET ? 4 : 6;
    const size_t ip_len = family == 4 ? 4 : 16;
    if (a.dst == nullptr || mnl_attr_get_payload_len(a.dst) != ip_len) {
        return;
    }
    const auto* ip = static_cast<const uint8_t*>(mnl_attr_get_payload(a.dst));
    if (!ours(nd->ndm_ifindex)) {
        return;  // another interface's neighbour: the NIC does not reach it
    }
    const uint16_t vlan = vlan_of(nd->ndm_ifindex);
    const bool usable = n->nlmsg_type == RTM_NEWNEIGH && (nd->ndm_state & kUsable) != 0 && a.lladdr != nullptr &&
                        mnl_attr_get_payload_len(a.lladdr) == RTE_ETHER_ADDR_LEN && vlan != kUnsupportedVlan;
    // INCOMPLETE (resolution under way) changes nothing; FAILED, NONE or a
    // deletion means the kernel no longer knows where this IP is.
    if (!usable && n->nlmsg_type == RTM_NEWNEIGH && (nd->ndm_state & NUD_INCOMPLETE) != 0) {
        return;
    }
    // The default route's gateway: its neighbour on the route's device (an
    // IPv6 router is often fe80::1 on every VLAN).
    Gateway& g = gw_[family == 4 ? 0 : 1];
    if (g.present && std::memcmp(g.ip, ip, ip_len) == 0 && (g.oif == 0 || g.oif == nd->ndm_ifindex)) {
        g.has_neighbour = usable;
        if (usable) {
            std::memcpy(g.neighbour.mac.addr_bytes, mnl_attr_get_payload(a.lladdr), RTE_ETHER_ADDR_LEN);
            g.neighbour.port = port_;
            g.neighbour.vlan = vlan;
        }
        update_default(family);
    }
    // IPv6 link-local addresses are no relayed packet's destination, and the
    // same one is on every link: gateways only, never a host entry.
    if (family == 6 && ip[0] == 0xfe && (ip[1] & 0xc0) == 0x80) {
        return;
    }
    NextHop old;
    const bool had = nh_.get_host(family, ip, &old);
    // The entry's MAC is this neighbour's own only if the entry is the
    // neighbour's: a learned one carries the MAC of the router the kernel
    // sent through, whose other destinations this neighbour says nothing of.
    const bool own_mac = had && !nh_.is_learned(family, ip);
    if (!usable) {
        if (had) {
            nh_.del_host(family, ip);
            stats_.neigh_removed++;
            if (own_mac) {
                stats_.mac_retired += nh_.remove_by_mac(old.mac, old.vlan);
            }
        }
        return;
    }
    NextHop now;
    std::memcpy(now.mac.addr_bytes, mnl_attr_get_payload(a.lladdr), RTE_ETHER_ADDR_LEN);
    now.port = port_;
    now.vlan = vlan;
    if (had && old.vlan == now.vlan && std::memcmp(old.mac.addr_bytes, now.mac.addr_bytes, RTE_ETHER_ADDR_LEN) == 0) {
        // Learned first, maybe: the kernel sends what waited for the
        // resolution before it tells of the neighbour. The kernel's
        // neighbour table says when it goes now, not a TTL.
        nh_.keep_as_neighbour(family, ip);
        return;
    }
    if (own_mac) {
        stats_.mac_retired += nh_.remove_by_mac(old.mac, old.vlan);
    }
    if (nh_.set_host(family, ip, now) == 0) {
        stats_.neigh_set++;
    }
}

void KernelMirror::update_default(uint8_t family) {
    Gateway& g = gw_[family == 4 ? 0 : 1];
    if (g.is_static) {
        return;
    }
    if (g.present && g.has_neighbour) {
        nh_.set_default(family, g.neighbour);
        stats_.defaults_set++;
    } else {
        nh_.clear_default(family);
    }
}

// The main table's routes of the NIC's traffic: the default via a gateway
// on the exception interface (of several there, the lowest metric's, as the
// kernel takes it; another interface's default is not the NIC's traffic's),
// and every more specific route on any interface (the prefixes a default
// next hop must not be guessed for: NextHops::covered). Local, broadcast,
// multicast and anycast routes decide nothing for a relayed packet, nor do
// cached IPv6 exceptions (RTM_F_CLONED).
void KernelMirror::on_route(const nlmsghdr* n) {
    if (mnl_nlmsg_get_payload_len(n) < sizeof(rtmsg)) {
        return;
    }
    const auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(n));
    RouteAttrs a;
    mnl_attr_parse(n, sizeof(rtmsg), route_attr, &a);
    const uint32_t table = a.table != nullptr && mnl_attr_get_payload_len(a.table) == 4 ? mnl_attr_get_u32(a.table)
                                                                                          : rt->rtm_table;
    const bool forwarding = rt->rtm_type == RTN_UNICAST || rt->rtm_type == RTN_BLACKHOLE ||
                            rt->rtm_type == RTN_UNREACHABLE || rt->rtm_type == RTN_PROHIBIT ||
                            rt->rtm_type == RTN_THROW;
    if (!forwarding || table != RT_TABLE_MAIN || (rt->rtm_flags & RTM_F_CLONED) != 0 ||
        (rt->rtm_family != AF_INET && rt->rtm_family != AF_INET6)) {
        return;
    }
    const uint8_t family = rt->rtm_family == AF_INET ? 4 : 6;
    const size_t len = family == 4 ? 4 : 16;
    const uint32_t metric = a.priority != nullptr && mnl_attr_get_payload_len(a.priority) == 4
                                ? mnl_attr_get_u32(a.priority)
                                : 0;
    if (rt->rtm_dst_len != 0) {
        if (rt->rtm_dst_len <= len * 8 && a.dst != nullptr && mnl_attr_get_payload_len(a.dst) == len) {
            NextHops::Prefix p;
            std::memcpy(p.ip, mnl_attr_get_payload(a.dst), len);
            p.len = rt->rtm_dst_len;
            note_prefix(family, p, n->nlmsg_type == RTM_NEWROUTE, (n->nlmsg_flags & NLM_F_REPLACE) != 0);
            if (!dumping_) {
                rerouted_[family == 4 ? 0 : 1].prefixes.push_back(p);
                routes_changed_ = true;
            }
        } else if (!dumping_) {
            flush_wanted_ = true;  // a route we cannot place: start over
        }
        return;
    }
    if (!dumping_) {
        rerouted_[family == 4 ? 0 : 1].any_default = true;
        routes_changed_ = true;
    }
    if (rt->rtm_type == RTN_UNICAST) {
        Gateway& g = gw_[family == 4 ? 0 : 1];
        const int oif = a.oif != nullptr && mnl_attr_get_payload_len(a.oif) == 4
                            ? static_cast<int>(mnl_attr_get_u32(a.oif))
                            : 0;
        const bool via = a.gateway != nullptr && mnl_attr_get_payload_len(a.gateway) == len;
        const bool same = via && g.present && g.oif == oif && std::memcmp(g.ip, mnl_attr_get_payload(a.gateway), len) == 0;
        if (n->nlmsg_type == RTM_NEWROUTE && via && (oif == 0 || ours(oif))) {
            // A backup default (a higher metric) is not where the kernel sends.
            if (!g.present || same || metric < g.metric) {
                g.present = true;
                g.has_neighbour = false;  // the neighbour dump (or a resync's) follows
                std::memset(g.ip, 0, sizeof g.ip);
                std::memcpy(g.ip, mnl_attr_get_payload(a.gateway), len);
                g.oif = oif;
                g.metric = same ? std::min(g.metric, metric) : metric;
            }
        } else if (n->nlmsg_type == RTM_DELROUTE && (!via || same) && (a.priority == nullptr || metric == g.metric) &&
                   (oif == 0 || oif == g.oif)) {
            g.present = false;
            g.has_neighbour = false;
        }
    }
    // During a dump the neighbours follow and update_default() runs as they
    // come; after notifications, apply_route_changes() does.
}

// A route more specific than the default, seen (add) or deleted: one entry
// per route (two routes to one prefix, on two devices or with two metrics,
// are two), so that deleting one leaves the prefix covered by the other.
void KernelMirror::note_prefix(uint8_t family, const NextHops::Prefix& p, bool add, bool replace) {
    std::vector<NextHops::Prefix>& v = prefixes_[family == 4 ? 0 : 1];
    if (add) {
        // A replaced route (NLM_F_REPLACE) is the same route, not another.
        if (!replace || std::find(v.begin(), v.end(), p) == v.end()) {
            v.push_back(p);
        }
        return;
    }
    if (const auto it = std::find(v.begin(), v.end(), p); it != v.end()) {
        v.erase(it);
    }
}

}  // namespace dp
