// The kernel mirror's VLAN handling (nexthop/kernel_mirror.h), fed rtnetlink
// messages built here the way the kernel lays them out (libmnl), because
// these machines' kernel has no 802.1Q support to make VLAN devices with
// (tests/dataplane/netns_neigh.py covers the mirror against a real kernel,
// untagged). The NextHops table is the real one.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <memory>
#include <vector>

#include "common/dpdk.h"
#include "flow/tables.h"
#include "nexthop/kernel_mirror.h"
#include "nexthop/nexthop.h"

namespace dptest {
bool ensure_eal();
}

namespace {

constexpr int kEth = 3;        // the exception interface's kernel end
constexpr int kExcDp = 4;      // its veth peer, which the exception port's PMD drives
constexpr int kOther = 50;     // another NIC (management)
constexpr int kVlan100 = 7;    // eth.100
constexpr int kDot1ad = 8;     // an 802.1ad device on eth
constexpr int kStacked = 9;    // a VLAN device on eth.100 (Q-in-Q)
constexpr uint16_t kPort = 0;  // the NIC port the mirror's entries leave by

class Msg {
public:
    explicit Msg(uint16_t type) : buf_(MNL_SOCKET_BUFFER_SIZE) {
        n_ = mnl_nlmsg_put_header(buf_.data());
        n_->nlmsg_type = type;
    }
    Msg(Msg&&) = default;  // the buffer moves with its header pointer
    Msg(const Msg&) = delete;
    nlmsghdr* n() const { return n_; }

private:
    std::vector<char> buf_;
    nlmsghdr* n_;
};

// RTM_NEWLINK of `ifindex` on lower device `link` (0: none); `kind` "vlan"
// with its ID and protocol, or another kind.
Msg link(int ifindex, const char* kind, int lower = 0, uint16_t vid = 0, uint16_t proto = ETH_P_8021Q) {
    Msg m(RTM_NEWLINK);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(m.n(), sizeof(ifinfomsg)));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = ifindex;
    if (lower != 0) {
        mnl_attr_put_u32(m.n(), IFLA_LINK, static_cast<uint32_t>(lower));
    }
    nlattr* info = mnl_attr_nest_start(m.n(), IFLA_LINKINFO);
    mnl_attr_put_strz(m.n(), IFLA_INFO_KIND, kind);
    if (std::strcmp(kind, "vlan") == 0) {
        nlattr* data = mnl_attr_nest_start(m.n(), IFLA_INFO_DATA);
        mnl_attr_put_u16(m.n(), IFLA_VLAN_ID, vid);
        mnl_attr_put_u16(m.n(), IFLA_VLAN_PROTOCOL, htons(proto));
        mnl_attr_nest_end(m.n(), data);
    }
    mnl_attr_nest_end(m.n(), info);
    return m;
}

Msg del_link(int ifindex, uint8_t family = AF_UNSPEC) {
    Msg m(RTM_DELLINK);
    auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(m.n(), sizeof(ifinfomsg)));
    ifi->ifi_family = family;
    ifi->ifi_index = ifindex;
    return m;
}

// RTM_NEWNEIGH (REACHABLE, with a MAC) or RTM_DELNEIGH for ip on ifindex.
Msg neigh(uint16_t type, int ifindex, const std::vector<uint8_t>& ip, const std::array<uint8_t, 6>& mac) {
    Msg m(type);
    auto* nd = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(m.n(), sizeof(ndmsg)));
    nd->ndm_family = ip.size() == 4 ? AF_INET : AF_INET6;
    nd->ndm_ifindex = ifindex;
    nd->ndm_state = NUD_REACHABLE;
    mnl_attr_put(m.n(), NDA_DST, ip.size(), ip.data());
    mnl_attr_put(m.n(), NDA_LLADDR, mac.size(), mac.data());
    return m;
}

// The default route via `gw` (4 or 16 bytes), out of device `oif` (0: not given).
Msg default_route(const std::vector<uint8_t>& gw, int oif = 0) {
    Msg m(RTM_NEWROUTE);
    auto* rt = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(m.n(), sizeof(rtmsg)));
    rt->rtm_family = gw.size() == 4 ? AF_INET : AF_INET6;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_type = RTN_UNICAST;
    rt->rtm_dst_len = 0;
    mnl_attr_put(m.n(), RTA_GATEWAY, gw.size(), gw.data());
    if (oif != 0) {
        mnl_attr_put_u32(m.n(), RTA_OIF, static_cast<uint32_t>(oif));
    }
    return m;
}

// A route to `dst`/`len` (len 0: the default) of `type` in `table`, via `gw`
// (empty: on-link) out of `oif` (0: not given), with metric `metric` (0:
// none given); RTM_DELROUTE when `del`.
struct Route {
    std::vector<uint8_t> dst;
    uint8_t len = 0;
    std::vector<uint8_t> gw;
    int oif = 0;
    uint32_t metric = 0;
    uint8_t type = RTN_UNICAST;
    uint32_t table = RT_TABLE_MAIN;
    uint32_t flags = 0;
    bool del = false;
};
Msg route(const Route& r) {
    Msg m(r.del ? RTM_DELROUTE : RTM_NEWROUTE);
    auto* rt = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(m.n(), sizeof(rtmsg)));
    rt->rtm_family = r.dst.size() == 4 || r.gw.size() == 4 ? AF_INET : AF_INET6;
    rt->rtm_table = RT_TABLE_UNSPEC;
    rt->rtm_type = r.type;
    rt->rtm_dst_len = r.len;
    rt->rtm_flags = r.flags;
    mnl_attr_put_u32(m.n(), RTA_TABLE, r.table);
    if (r.len != 0) {
        mnl_attr_put(m.n(), RTA_DST, r.dst.size(), r.dst.data());
    }
    if (!r.gw.empty()) {
        mnl_attr_put(m.n(), RTA_GATEWAY, r.gw.size(), r.gw.data());
    }
    if (r.oif != 0) {
        mnl_attr_put_u32(m.n(), RTA_OIF, static_cast<uint32_t>(r.oif));
    }
    if (r.metric != 0) {
        mnl_attr_put_u32(m.n(), RTA_PRIORITY, r.metric);
    }
    return m;
}

class KernelMirrorVlan : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(dptest::ensure_eal());
        static int instance = 0;
        instance++;
        dp::FlowConfig fc;
        fc.name = "km" + std::to_string(instance);
        fc.entries_v4 = 64;
        fc.entries_v6 = 64;
        fc.max_allocations = 8;
        fc.max_channels = 8;
        fc.client_cache = false;
        std::string err;
        flows_ = dp::FlowTables::create(fc, &err);
        ASSERT_NE(flows_, nullptr) << err;
        nh_ = dp::NextHops::create("kmnh" + std::to_string(instance), 64, flows_->rcu, SOCKET_ID_ANY, &err);
        ASSERT_NE(nh_, nullptr) << err;
        mirror_ = dp::KernelMirror::detached(*nh_, kPort, kExcDp);
        mirror_->apply(link(kEth, "veth", kExcDp).n());
        mirror_->apply(link(kExcDp, "veth", kEth).n());
        mirror_->apply(link(kOther, "veth").n());
        mirror_->apply(link(kVlan100, "vlan", kEth, 100).n());
        mirror_->apply(link(kDot1ad, "vlan", kEth, 200, 0x88a8).n());
        mirror_->apply(link(kStacked, "vlan", kVlan100, 300).n());
    }
    void TearDown() override {
        mirror_.reset();
        delete nh_;
        delete flows_;
    }
    // The host entry of an IP: its VLAN, or -1 without one.
    int vlan_of(const std::vector<uint8_t>& ip) const {
        dp::NextHop h;
        if (!nh_->get_host(ip.size() == 4 ? 4 : 6, ip.data(), &h)) {
            return -1;
        }
        EXPECT_EQ(h.port, kPort);
        return h.vlan;
    }

    dp::FlowTables* flows_ = nullptr;
    dp::NextHops* nh_ = nullptr;
    std::unique_ptr<dp::KernelMirror> mirror_;
};

const std::vector<uint8_t> kClient{198, 18, 1, 2};
const std::vector<uint8_t> kPeer{198, 18, 2, 3};
const std::array<uint8_t, 6> kMacA{0x02, 0, 0, 0, 0, 0x0a};
const std::array<uint8_t, 6> kMacB{0x02, 0, 0, 0, 0, 0x0b};

TEST_F(KernelMirrorVlan, NeighbourOnAVlanDeviceIsTagged) {
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kClient, kMacA).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kPeer, kMacB).n());
    EXPECT_EQ(vlan_of(kClient), 100);
    EXPECT_EQ(vlan_of(kPeer), 0);
    std::vector<uint8_t> v6(16, 0);
    v6[0] = 0xfd;
    v6[15] = 2;
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, v6, kMacA).n());
    EXPECT_EQ(vlan_of(v6), 100);
}

TEST_F(KernelMirrorVlan, UnsupportedVlanDevicesGiveNoEntry) {
    mirror_->apply(neigh(RTM_NEWNEIGH, kDot1ad, kClient, kMacA).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kStacked, kPeer, kMacB).n());
    EXPECT_EQ(vlan_of(kClient), -1);
    EXPECT_EQ(vlan_of(kPeer), -1);
    // VLAN 0 (priority tags only) and 4095 (reserved) are no VLAN to tag with.
    for (uint16_t vid : {0, 4095}) {
        mirror_->apply(link(20 + vid % 2, "vlan", kEth, vid).n());
        mirror_->apply(neigh(RTM_NEWNEIGH, 20 + vid % 2, kPeer, kMacB).n());
        EXPECT_EQ(vlan_of(kPeer), -1) << vid;
    }
    // An entry the kernel then moves onto such a device goes.
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), 100);
    mirror_->apply(neigh(RTM_NEWNEIGH, kDot1ad, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), -1);
}

// The same IP and MAC seen on another device (VLAN) is a change.
TEST_F(KernelMirrorVlan, SameMacOnAnotherVlanIsAChange) {
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), 0);
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), 100);
}

// The default next hop is the gateway neighbour's, VLAN included.
TEST_F(KernelMirrorVlan, DefaultViaAGatewayOnAVlan) {
    mirror_->apply(default_route(kPeer).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kPeer, kMacB).n());
    const uint64_t w = nh_->default_word(4);
    ASSERT_TRUE(dp::NextHops::usable(w));
    EXPECT_EQ(dp::NextHops::vlan_of(w), 100);
    dp::NextHop h;
    dp::NextHops::unpack(w, &h);
    EXPECT_EQ(0, std::memcmp(h.mac.addr_bytes, kMacB.data(), 6));
    EXPECT_EQ(mirror_->stats().defaults_set, 1u);
}

// A gateway leaving a VLAN retires what was learned through it there, and
// only there: the same router MAC on another VLAN keeps its destinations.
TEST_F(KernelMirrorVlan, RetiringAMacStaysOnItsVlan) {
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kClient, kMacA).n());
    const std::vector<uint8_t> far1{198, 19, 9, 1}, far2{198, 19, 9, 2};
    dp::NextHop h;
    std::memcpy(h.mac.addr_bytes, kMacA.data(), 6);
    h.port = kPort;
    h.vlan = 100;
    ASSERT_EQ(nh_->set_host(4, far1.data(), h), 0);  // learned behind the router on VLAN 100
    h.vlan = 0;
    ASSERT_EQ(nh_->set_host(4, far2.data(), h), 0);  // and behind the same MAC untagged
    mirror_->apply(neigh(RTM_DELNEIGH, kVlan100, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), -1);
    EXPECT_EQ(vlan_of(far1), -1);
    EXPECT_EQ(vlan_of(far2), 0);
    EXPECT_EQ(mirror_->stats().mac_retired, 1u);
}

// An IPv6 router is fe80::1 on every VLAN: the default follows the
// neighbour on the default route's device only, and a link-local address
// is never a host entry.
TEST_F(KernelMirrorVlan, LinkLocalGatewayOnTwoVlans) {
    constexpr int kVlan200 = 11;
    mirror_->apply(link(kVlan200, "vlan", kEth, 200).n());
    std::vector<uint8_t> ll(16, 0);
    ll[0] = 0xfe;
    ll[1] = 0x80;
    ll[15] = 1;
    mirror_->apply(default_route(ll, kVlan200).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan200, ll, kMacA).n());
    auto def = [&] { return nh_->default_word(6); };
    ASSERT_TRUE(dp::NextHops::usable(def()));
    EXPECT_EQ(dp::NextHops::vlan_of(def()), 200);
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, ll, kMacB).n());  // the same address on VLAN 100
    EXPECT_EQ(dp::NextHops::vlan_of(def()), 200);
    dp::NextHop h;
    dp::NextHops::unpack(def(), &h);
    EXPECT_EQ(0, std::memcmp(h.mac.addr_bytes, kMacA.data(), 6));
    mirror_->apply(neigh(RTM_DELNEIGH, kVlan100, ll, kMacB).n());
    EXPECT_TRUE(dp::NextHops::usable(def()));
    EXPECT_EQ(vlan_of(ll), -1);
    mirror_->apply(neigh(RTM_DELNEIGH, kVlan200, ll, kMacA).n());
    EXPECT_FALSE(dp::NextHops::usable(def()));
}

// Q-in-Q is recognised whichever device the kernel reported first.
TEST_F(KernelMirrorVlan, StackedVlanSeenBeforeItsLowerDevice) {
    mirror_->apply(link(31, "vlan", 30, 400).n());  // on 30, not known yet
    mirror_->apply(link(30, "vlan", kEth, 40).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, 31, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), -1);
    mirror_->apply(neigh(RTM_NEWNEIGH, 30, kPeer, kMacB).n());
    EXPECT_EQ(vlan_of(kPeer), 40);
}

// The bridge code's AF_BRIDGE link messages (deletions too) are about
// bridge ports, not devices: they change nothing.
TEST_F(KernelMirrorVlan, BridgeFamilyLinkMessagesAreIgnored) {
    mirror_->apply(del_link(kVlan100, AF_BRIDGE).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), 100);
}

// Only the exception port's kernel end and the VLAN devices on it: another
// NIC's neighbours, VLANs and default route are not where the NIC's traffic
// goes.
TEST_F(KernelMirrorVlan, OtherInterfacesAreNotFollowed) {
    EXPECT_EQ(mirror_->kernel_ifindex(), kEth);
    mirror_->apply(link(51, "vlan", kOther, 60).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kOther, kClient, kMacA).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, 51, kPeer, kMacB).n());
    EXPECT_EQ(vlan_of(kClient), -1);
    EXPECT_EQ(vlan_of(kPeer), -1);
    const std::vector<uint8_t> mgmt_gw{198, 18, 9, 1}, our_gw{198, 18, 1, 1};
    mirror_->apply(default_route(mgmt_gw, kOther).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kOther, mgmt_gw, kMacA).n());
    EXPECT_FALSE(dp::NextHops::usable(nh_->default_word(4)));
    mirror_->apply(default_route(our_gw, kVlan100).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, our_gw, kMacB).n());
    ASSERT_TRUE(dp::NextHops::usable(nh_->default_word(4)));
    EXPECT_EQ(dp::NextHops::vlan_of(nh_->default_word(4)), 100);
    // The management route going away leaves ours alone.
    Msg del(RTM_DELROUTE);
    auto* rt = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(del.n(), sizeof(rtmsg)));
    rt->rtm_family = AF_INET;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_type = RTN_UNICAST;
    mnl_attr_put(del.n(), RTA_GATEWAY, mgmt_gw.size(), mgmt_gw.data());
    mnl_attr_put_u32(del.n(), RTA_OIF, kOther);
    mirror_->apply(del.n());
    EXPECT_TRUE(dp::NextHops::usable(nh_->default_word(4)));
}

// Without the exception port's interface (a PMD that names none), every
// interface is followed, as before.
TEST_F(KernelMirrorVlan, WithoutTheExceptionInterfaceEveryInterfaceIsFollowed) {
    auto unknown = dp::KernelMirror::detached(*nh_, kPort);  // on the fixture's table
    unknown->apply(link(kOther, "veth").n());
    unknown->apply(neigh(RTM_NEWNEIGH, kOther, kClient, kMacA).n());
    EXPECT_EQ(unknown->kernel_ifindex(), 0);
    EXPECT_EQ(vlan_of(kClient), 0);
}

// --exc-kernel-if: the kernel end named by the operator is the one followed,
// with its VLAN devices, and what the PMD's interface links to changes
// nothing (virtio-user names no interface; a name given wins).
TEST_F(KernelMirrorVlan, NamedKernelInterfaceIsTheOneFollowed) {
    auto named = dp::KernelMirror::detached(*nh_, kPort, kExcDp, kOther);  // on the fixture's table
    EXPECT_EQ(named->kernel_ifindex(), kOther);
    named->apply(link(kExcDp, "veth", kEth).n());  // the PMD's veth says its peer is kEth
    EXPECT_EQ(named->kernel_ifindex(), kOther);
    named->apply(link(61, "vlan", kOther, 70).n());
    named->apply(neigh(RTM_NEWNEIGH, kEth, kClient, kMacA).n());
    named->apply(neigh(RTM_NEWNEIGH, kOther, kPeer, kMacB).n());
    EXPECT_EQ(vlan_of(kClient), -1);
    EXPECT_EQ(vlan_of(kPeer), 0);
    const std::vector<uint8_t> other{198, 18, 1, 77};
    named->apply(neigh(RTM_NEWNEIGH, 61, other, kMacA).n());
    EXPECT_EQ(vlan_of(other), 70);
}

// A deleted VLAN device's index means nothing any more (an index the
// kernel reuses is a new device).
TEST_F(KernelMirrorVlan, DeletedLinkIsForgotten) {
    mirror_->apply(del_link(kVlan100).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), -1);  // no longer a device on the exception interface
    mirror_->apply(link(kVlan100, "vlan", kEth, 150).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kClient, kMacA).n());
    EXPECT_EQ(vlan_of(kClient), 150);
    // A message too short to hold its header changes nothing.
    Msg m(RTM_NEWLINK);
    mirror_->apply(m.n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kVlan100, kPeer, kMacB).n());
    EXPECT_EQ(vlan_of(kPeer), 150);
}

// Of two default routes the kernel sends by the lower metric's; the backup's
// gateway is not the default next hop, whichever came first, and deleting
// the backup leaves the primary.
TEST_F(KernelMirrorVlan, DefaultRouteOfTheLowestMetricIsTheDefault) {
    const std::vector<uint8_t> primary{198, 18, 1, 1};
    const std::vector<uint8_t> backup{198, 18, 1, 9};
    auto default_mac = [&]() {
        dp::NextHop h;
        dp::NextHops::unpack(nh_->default_word(4), &h);
        return std::array<uint8_t, 6>{h.mac.addr_bytes[0], h.mac.addr_bytes[1], h.mac.addr_bytes[2],
                                      h.mac.addr_bytes[3], h.mac.addr_bytes[4], h.mac.addr_bytes[5]};
    };
    mirror_->apply(route({.gw = backup, .oif = kEth, .metric = 200}).n());
    mirror_->apply(route({.gw = primary, .oif = kEth, .metric = 100}).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, backup, kMacB).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, primary, kMacA).n());
    ASSERT_TRUE(dp::NextHops::usable(nh_->default_word(4)));
    EXPECT_EQ(default_mac(), kMacA);
    mirror_->apply(route({.gw = backup, .oif = kEth, .metric = 300}).n());  // another backup, seen later
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, backup, kMacB).n());
    EXPECT_EQ(default_mac(), kMacA);
    mirror_->apply(route({.gw = backup, .oif = kEth, .metric = 200, .del = true}).n());
    ASSERT_TRUE(dp::NextHops::usable(nh_->default_word(4)));
    EXPECT_EQ(default_mac(), kMacA);
}

// A destination that a route more specific than the default covers (a
// connected subnet, a route via another router, a blackhole; on any
// interface) has no default next hop: only its own host entry. Routes of
// other tables, cached IPv6 exceptions and local routes do not count.
TEST_F(KernelMirrorVlan, DestinationsOfMoreSpecificRoutesHaveNoDefault) {
    const std::vector<uint8_t> gw{198, 18, 1, 1};
    mirror_->apply(route({.gw = gw, .oif = kEth}).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, gw, kMacA).n());
    const uint64_t def = nh_->default_word(4);
    ASSERT_TRUE(dp::NextHops::usable(def));
    const std::vector<uint8_t> on_link{198, 18, 1, 77};
    const std::vector<uint8_t> far{203, 0, 113, 5};
    const std::vector<uint8_t> behind_other{10, 9, 8, 7};
    const std::vector<uint8_t> blackholed{192, 0, 2, 99};
    const std::vector<uint8_t> mgmt{172, 16, 5, 5};
    EXPECT_FALSE(nh_->any_prefixes());
    EXPECT_EQ(nh_->word_for(4, on_link.data()), def);  // no routes yet: the default
    mirror_->apply(route({.dst = {198, 18, 1, 0}, .len = 24, .oif = kEth}).n());
    mirror_->apply(route({.dst = {10, 0, 0, 0}, .len = 8, .gw = {198, 18, 1, 254}, .oif = kEth}).n());
    mirror_->apply(route({.dst = {192, 0, 2, 0}, .len = 24, .type = RTN_BLACKHOLE}).n());
    mirror_->apply(route({.dst = {172, 16, 0, 0}, .len = 16, .oif = kOther}).n());
    mirror_->apply(route({.dst = {203, 0, 113, 0}, .len = 24, .oif = kEth, .table = 100}).n());
    mirror_->apply(route({.dst = {203, 0, 113, 5}, .len = 32, .oif = kEth, .type = RTN_LOCAL}).n());
    EXPECT_TRUE(nh_->any_prefixes());
    EXPECT_EQ(nh_->word_for(4, on_link.data()), 0u);
    EXPECT_EQ(nh_->word_for(4, behind_other.data()), 0u);
    EXPECT_EQ(nh_->word_for(4, blackholed.data()), 0u);
    EXPECT_EQ(nh_->word_for(4, mgmt.data()), 0u);
    EXPECT_EQ(nh_->word_for(4, far.data()), def);
    // Its neighbour entry, once the kernel has resolved it, sends it.
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, on_link, kMacB).n());
    const uint64_t own = nh_->word_for(4, on_link.data());
    ASSERT_TRUE(dp::NextHops::usable(own));
    EXPECT_NE(own, def);
    // A deleted route covers nothing.
    mirror_->apply(route({.dst = {10, 0, 0, 0}, .len = 8, .gw = {198, 18, 1, 254}, .oif = kEth, .del = true}).n());
    EXPECT_EQ(nh_->word_for(4, behind_other.data()), def);

    // IPv6: an on-link /64; a cached exception (a /128 for one far
    // destination) is not a route of its own.
    const std::vector<uint8_t> gw6{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    std::vector<uint8_t> net6{0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    std::vector<uint8_t> in6 = net6;
    in6[15] = 0x42;
    std::vector<uint8_t> out6 = net6;
    out6[7] = 1;
    std::vector<uint8_t> far6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9};
    mirror_->apply(route({.gw = gw6, .oif = kEth}).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, gw6, kMacA).n());
    const uint64_t def6 = nh_->default_word(6);
    ASSERT_TRUE(dp::NextHops::usable(def6));
    mirror_->apply(route({.dst = net6, .len = 64, .oif = kEth}).n());
    mirror_->apply(route({.dst = far6, .len = 128, .gw = gw6, .oif = kEth, .flags = RTM_F_CLONED}).n());
    EXPECT_EQ(nh_->word_for(6, in6.data()), 0u);
    EXPECT_EQ(nh_->word_for(6, out6.data()), def6);
    EXPECT_EQ(nh_->word_for(6, far6.data()), def6);
    EXPECT_EQ(nh_->word_for(4, far.data()), def);  // the families' prefixes apart
}

// Past NextHops::kMaxPrefixes routes every destination without a host entry
// is punted: the slow path, never a guess.
TEST_F(KernelMirrorVlan, TooManyRoutesLeaveNoDefault) {
    const std::vector<uint8_t> gw{198, 18, 1, 1};
    mirror_->apply(route({.gw = gw, .oif = kEth}).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, gw, kMacA).n());
    const std::vector<uint8_t> far{203, 0, 113, 5};
    for (uint32_t i = 0; i < dp::NextHops::kMaxPrefixes; i++) {
        mirror_->apply(route({.dst = {10, static_cast<uint8_t>(i), 0, 0}, .len = 16, .oif = kEth}).n());
    }
    EXPECT_TRUE(dp::NextHops::usable(nh_->word_for(4, far.data())));
    mirror_->apply(route({.dst = {10, 200, 0, 0}, .len = 16, .oif = kEth}).n());
    EXPECT_EQ(nh_->word_for(4, far.data()), 0u);
    EXPECT_TRUE(dp::NextHops::usable(nh_->word_for(4, gw.data())));  // host entries still send
}

// A static default (--gw4) is the operator's next hop for every destination
// without a host entry: the kernel's routes do not narrow it (IPv4 only
// here; IPv6, without one, still is).
TEST_F(KernelMirrorVlan, StaticDefaultIsNotNarrowedByRoutes) {
    auto st = dp::KernelMirror::detached(*nh_, kPort, kExcDp, 0, true);
    dp::NextHop gw;
    std::memcpy(gw.mac.addr_bytes, kMacA.data(), 6);
    nh_->set_default(4, gw);
    const uint64_t def = nh_->default_word(4);
    st->apply(route({.dst = {198, 18, 1, 0}, .len = 24, .oif = kEth}).n());
    const std::vector<uint8_t> on_link{198, 18, 1, 77};
    EXPECT_EQ(nh_->word_for(4, on_link.data()), def);
    const std::vector<uint8_t> gw6{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const std::vector<uint8_t> net6{0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    std::vector<uint8_t> in6 = net6;
    in6[15] = 0x42;
    st->apply(route({.gw = gw6, .oif = kEth}).n());
    st->apply(neigh(RTM_NEWNEIGH, kEth, gw6, kMacB).n());
    st->apply(route({.dst = net6, .len = 64, .oif = kEth}).n());
    ASSERT_TRUE(dp::NextHops::usable(nh_->default_word(6)));
    EXPECT_EQ(nh_->word_for(6, in6.data()), 0u);
}

// The same default route seen again with a higher metric (a second route
// via the same gateway) keeps the lower one: a third gateway between the two
// does not take over.
TEST_F(KernelMirrorVlan, SameGatewayAgainKeepsItsLowestMetric) {
    const std::vector<uint8_t> a{198, 18, 1, 1};
    const std::vector<uint8_t> b{198, 18, 1, 9};
    mirror_->apply(route({.gw = a, .oif = kEth, .metric = 100}).n());
    mirror_->apply(route({.gw = a, .oif = kEth, .metric = 200}).n());
    mirror_->apply(route({.gw = b, .oif = kEth, .metric = 150}).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, a, kMacA).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, b, kMacB).n());
    dp::NextHop h;
    dp::NextHops::unpack(nh_->default_word(4), &h);
    EXPECT_EQ(0, std::memcmp(h.mac.addr_bytes, kMacA.data(), 6));
}

// Two routes to one prefix (two devices): deleting one leaves it covered.
TEST_F(KernelMirrorVlan, DeletingOneOfTwoRoutesToAPrefixKeepsItCovered) {
    const std::vector<uint8_t> gw{198, 18, 1, 1};
    mirror_->apply(route({.gw = gw, .oif = kEth}).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, gw, kMacA).n());
    const std::vector<uint8_t> inside{10, 1, 2, 3};
    mirror_->apply(route({.dst = {10, 0, 0, 0}, .len = 8, .oif = kEth}).n());
    mirror_->apply(route({.dst = {10, 0, 0, 0}, .len = 8, .oif = kOther}).n());
    mirror_->apply(route({.dst = {10, 0, 0, 0}, .len = 8, .oif = kOther, .del = true}).n());
    EXPECT_EQ(nh_->word_for(4, inside.data()), 0u);
    mirror_->apply(route({.dst = {10, 0, 0, 0}, .len = 8, .oif = kEth, .del = true}).n());
    EXPECT_EQ(nh_->word_for(4, inside.data()), nh_->default_word(4));
}

// While every host entry is inside the kernel's more specific routes, a
// destination outside them is not looked up (its next hop is the default).
// An entry outside them (a neighbour off the subnets, or a destination the
// kernel sends to another MAC than the default's) makes every destination
// looked up again; kernel egress to the default's MAC adds no entry, and
// removes one that said otherwise.
TEST_F(KernelMirrorVlan, OnlyEntriesOutsideTheRoutesMakeEveryDestinationLookedUp) {
    const std::vector<uint8_t> gw{198, 18, 1, 1};
    const std::vector<uint8_t> far{203, 0, 113, 5};
    mirror_->apply(route({.gw = gw, .oif = kEth}).n());
    mirror_->apply(route({.dst = {198, 18, 1, 0}, .len = 24, .oif = kEth}).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, gw, kMacA).n());
    const uint64_t def = nh_->default_word(4);
    ASSERT_TRUE(dp::NextHops::usable(def));
    EXPECT_TRUE(nh_->any_hosts());
    EXPECT_FALSE(nh_->uncovered_hosts());
    EXPECT_FALSE(nh_->need_lookup(4, far.data()));
    EXPECT_TRUE(nh_->need_lookup(4, gw.data()));

    // Kernel egress to `far` through the default gateway: nothing to learn.
    rte_ether_addr mac_a, mac_b;
    std::memcpy(mac_a.addr_bytes, kMacA.data(), 6);
    std::memcpy(mac_b.addr_bytes, kMacB.data(), 6);
    nh_->learn(4, far.data(), mac_a, kPort, 0);
    nh_->apply_learned();
    EXPECT_EQ(nh_->hosts(), 1u);
    EXPECT_FALSE(nh_->uncovered_hosts());
    // Through another router (a policy the mirror does not follow): its entry.
    nh_->learn(4, far.data(), mac_b, kPort, 0);
    nh_->apply_learned();
    EXPECT_TRUE(nh_->uncovered_hosts());
    EXPECT_TRUE(nh_->need_lookup(4, far.data()));
    const uint64_t learned = nh_->word_for(4, far.data());
    ASSERT_TRUE(dp::NextHops::usable(learned));
    EXPECT_NE(learned, def);
    // Back through the default gateway: the entry goes.
    nh_->learn(4, far.data(), mac_a, kPort, 0);
    nh_->apply_learned();
    EXPECT_EQ(nh_->hosts(), 1u);
    EXPECT_FALSE(nh_->uncovered_hosts());
    EXPECT_EQ(nh_->word_for(4, far.data()), def);
    // A neighbour outside every route counts too, and its deletion uncounts it.
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, far, kMacB).n());
    EXPECT_TRUE(nh_->uncovered_hosts());
    mirror_->apply(neigh(RTM_DELNEIGH, kEth, far, kMacB).n());
    EXPECT_FALSE(nh_->uncovered_hosts());
    // New routes count again: the /24 gone, the gateway's entry is outside.
    mirror_->apply(route({.dst = {198, 18, 1, 0}, .len = 24, .oif = kEth, .del = true}).n());
    EXPECT_TRUE(nh_->uncovered_hosts());
}

// Learned next hops (NextHops::apply_learned, expire_learned): the main
// lcore's aging and room-making, on the fixture's 64-entry table (high
// water 60).
class LearnedNextHops : public KernelMirrorVlan {
protected:
    static rte_ether_addr mac(uint8_t last) {
        rte_ether_addr m{};
        m.addr_bytes[0] = 0x02;
        m.addr_bytes[5] = last;
        return m;
    }
    // 203.0.113.i (TEST-NET-3 as a table key only: nothing is sent).
    static std::vector<uint8_t> far(uint8_t i) { return {203, 0, 113, i}; }
    void learn_at(const std::vector<uint8_t>& ip, uint8_t mac_last, uint64_t now) {
        nh_->learn(4, ip.data(), mac(mac_last), kPort, 0);
        nh_->apply_learned(now);
    }
    bool has(const std::vector<uint8_t>& ip) const {
        dp::NextHop h;
        return nh_->get_host(4, ip.data(), &h);
    }
};

TEST_F(LearnedNextHops, LearnedEntriesExpireAtTheirTtlAndNeighboursDoNot) {
    nh_->set_learned_ttl(1000);
    // Each through its own router (a neighbour whose MAC changes takes the
    // entries learned through its old MAC with it: not what is tested here).
    learn_at(far(1), 1, 0);
    learn_at(far(2), 2, 500);
    learn_at(far(3), 3, 0);
    learn_at(far(4), 4, 0);
    learn_at(far(4), 5, 800);  // the kernel sends it elsewhere now: its clock restarts
    // far(3) becomes the kernel's neighbour: the kernel says when it goes.
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, far(3), kMacA).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kPeer, kMacB).n());
    EXPECT_EQ(nh_->hosts(), 5u);
    EXPECT_EQ(nh_->learned(), 3u);
    EXPECT_EQ(nh_->learn_stats().installed, 5u);

    EXPECT_EQ(nh_->expire_learned(999), 0u);
    EXPECT_EQ(nh_->expire_learned(1000), 1u);
    EXPECT_FALSE(has(far(1)));
    EXPECT_TRUE(has(far(2)));
    EXPECT_TRUE(has(far(4)));
    EXPECT_EQ(nh_->expire_learned(1500), 1u);
    EXPECT_FALSE(has(far(2)));
    EXPECT_TRUE(has(far(4)));
    EXPECT_EQ(nh_->expire_learned(1800), 1u);
    EXPECT_FALSE(has(far(4)));
    EXPECT_EQ(nh_->expire_learned(1000000), 0u);
    EXPECT_TRUE(has(far(3)));
    EXPECT_TRUE(has(kPeer));
    EXPECT_EQ(nh_->hosts(), 2u);
    EXPECT_EQ(nh_->learned(), 0u);
    EXPECT_EQ(nh_->learn_stats().expired, 3u);
    // Learned again after it expired: back, with a new clock.
    learn_at(far(1), 1, 2000);
    EXPECT_TRUE(has(far(1)));
    EXPECT_EQ(nh_->expire_learned(2999), 0u);
    EXPECT_EQ(nh_->expire_learned(3000), 1u);
}

TEST_F(LearnedNextHops, WithoutATtlLearnedEntriesStay) {
    nh_->set_learned_ttl(0);
    learn_at(far(1), 1, 0);
    EXPECT_EQ(nh_->expire_learned(UINT64_MAX), 0u);
    EXPECT_TRUE(has(far(1)));
}

TEST_F(LearnedNextHops, ExpiryLeavesAtMostABatchPerCall) {
    nh_->set_learned_ttl(10);
    // More than a batch, learned and removed in rounds (the table holds 60).
    unsigned learned = 0;
    for (unsigned round = 0; round < 6; round++) {
        for (uint8_t i = 1; i <= 50; i++) {
            learn_at(far(i), static_cast<uint8_t>(round + 1), round * 100);
            learned++;
        }
    }
    EXPECT_EQ(nh_->learned(), 50u);
    EXPECT_EQ(nh_->learn_stats().installed, learned);
    // The 250 records of the first five rounds are stale, the last 50 due.
    EXPECT_EQ(nh_->expire_learned(10000), 50u);
    EXPECT_EQ(nh_->learned(), 0u);
    EXPECT_EQ(nh_->hosts(), 0u);
}

TEST_F(LearnedNextHops, AFullTableMakesRoomWithTheOldestLearned) {
    nh_->set_learned_ttl(0);
    const uint32_t high = nh_->high_water();
    ASSERT_EQ(nh_->capacity(), 64u);
    ASSERT_EQ(high, 60u);
    for (uint8_t i = 1; i <= 70; i++) {
        learn_at(far(i), 1, i);
        EXPECT_LE(nh_->hosts(), high);
    }
    EXPECT_EQ(nh_->hosts(), high);
    EXPECT_EQ(nh_->learn_stats().evicted, 10u);
    EXPECT_EQ(nh_->learn_stats().refused, 0u);
    for (uint8_t i = 1; i <= 10; i++) {
        EXPECT_FALSE(has(far(i))) << unsigned{i};
    }
    for (uint8_t i = 11; i <= 70; i++) {
        EXPECT_TRUE(has(far(i))) << unsigned{i};
    }
    // A neighbour comes first: the oldest learned one makes room.
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kPeer, kMacB).n());
    EXPECT_TRUE(has(kPeer));
    EXPECT_FALSE(has(far(11)));
    EXPECT_EQ(nh_->hosts(), high);
    EXPECT_EQ(nh_->learn_stats().evicted, 11u);
}

TEST_F(LearnedNextHops, ATableFullOfNeighboursRefusesLearnedOnesAndKeepsTheNeighbours) {
    const uint32_t high = nh_->high_water();
    for (uint32_t i = 0; i < high; i++) {
        mirror_->apply(neigh(RTM_NEWNEIGH, kEth, {198, 18, 3, static_cast<uint8_t>(i)}, kMacA).n());
    }
    ASSERT_EQ(nh_->hosts(), high);
    // At the high water with no learned entry to make room: refused, the
    // rest of the table kept for neighbours and deleted entries' slots.
    for (uint8_t i = 1; i <= 10; i++) {
        learn_at(far(i), 1, i);
        EXPECT_FALSE(has(far(i)));
    }
    EXPECT_EQ(nh_->learn_stats().evicted, 0u);
    EXPECT_EQ(nh_->learn_stats().refused, 10u);
    EXPECT_EQ(nh_->learn_stats().installed, 0u);
    EXPECT_EQ(nh_->hosts(), high);
    // Neighbours still fit beyond the high water.
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kPeer, kMacB).n());
    EXPECT_TRUE(has(kPeer));
    EXPECT_EQ(nh_->hosts(), high + 1);
    for (uint32_t i = 0; i < high; i++) {
        EXPECT_TRUE(has({198, 18, 3, static_cast<uint8_t>(i)})) << i;
    }
}

TEST_F(LearnedNextHops, AFlushForgetsTheLearnedOnes) {
    nh_->set_learned_ttl(1000);
    learn_at(far(1), 1, 0);
    learn_at(far(2), 1, 0);
    EXPECT_EQ(nh_->flush_hosts(), 2u);
    EXPECT_EQ(nh_->learned(), 0u);
    // The neighbour that takes one of their IPs later is not aged.
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, far(1), kMacA).n());
    EXPECT_EQ(nh_->expire_learned(5000), 0u);
    EXPECT_TRUE(has(far(1)));
}

// A route notification removes only the learned entries it may reroute:
// inside its prefix, or, for a default route, outside every more specific
// route. Neighbour entries and the other learned ones stay (before, any route
// notification emptied the whole table: every learned destination's next
// packet went to the kernel).
TEST_F(LearnedNextHops, ARouteChangeDropsOnlyTheLearnedEntriesItMayReroute) {
    const std::vector<uint8_t> gw{198, 18, 1, 1};
    mirror_->apply(route({.gw = gw, .oif = kEth, .metric = 100}).n());
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, gw, kMacA).n());
    mirror_->apply(route({.dst = {10, 0, 0, 0}, .len = 8, .gw = {198, 18, 1, 7}, .oif = kEth}).n());
    ASSERT_TRUE(dp::NextHops::usable(nh_->default_word(4)));
    const std::vector<uint8_t> in16{10, 1, 2, 3};   // inside 10.1.0.0/16, added below
    const std::vector<uint8_t> in8{10, 2, 0, 1};    // inside 10.0.0.0/8 only
    const std::vector<uint8_t> out1{203, 0, 113, 1};  // no route but the default's
    const std::vector<uint8_t> out2{203, 0, 113, 2};
    learn_at(in16, 1, 0);
    learn_at(in8, 2, 0);
    learn_at(out1, 3, 0);  // the kernel sent it elsewhere than the default (a policy)
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kPeer, kMacB).n());
    ASSERT_EQ(nh_->learned(), 3u);
    ASSERT_EQ(nh_->hosts(), 5u);  // the gateway's neighbour, kPeer's, three learned

    // A more specific route: only what it covers is rerouted.
    mirror_->notify(route({.dst = {10, 1, 0, 0}, .len = 16, .gw = {198, 18, 1, 8}, .oif = kEth}).n());
    EXPECT_FALSE(has(in16));
    EXPECT_TRUE(has(in8));
    EXPECT_TRUE(has(out1));
    EXPECT_TRUE(has(kPeer));
    EXPECT_TRUE(has(gw));
    EXPECT_EQ(mirror_->stats().rerouted, 1u);
    EXPECT_EQ(mirror_->stats().flushes, 0u);
    // An unrelated prefix's route deleted: nothing learned is inside it.
    mirror_->notify(route({.dst = {192, 0, 2, 0}, .len = 24, .oif = kEth, .del = true}).n());
    EXPECT_TRUE(has(in8));
    EXPECT_TRUE(has(out1));
    EXPECT_EQ(mirror_->stats().rerouted, 1u);
    // A default route's change: what no more specific route covers.
    learn_at(out2, 4, 0);
    mirror_->notify(route({.gw = {198, 18, 1, 9}, .oif = kEth, .metric = 50}).n());
    EXPECT_FALSE(has(out1));
    EXPECT_FALSE(has(out2));
    EXPECT_TRUE(has(in8));
    EXPECT_TRUE(has(kPeer));
    EXPECT_TRUE(has(gw));
    EXPECT_EQ(mirror_->stats().rerouted, 3u);
    EXPECT_EQ(nh_->learned(), 1u);
    // The new default's gateway has no neighbour entry yet: no default
    // next hop (a detached mirror re-reads no neighbours).
    EXPECT_FALSE(dp::NextHops::usable(nh_->default_word(4)));
    mirror_->notify(neigh(RTM_NEWNEIGH, kEth, {198, 18, 1, 9}, kMacB).n());
    EXPECT_TRUE(dp::NextHops::usable(nh_->default_word(4)));
    // The default deleted: none, in the same pass (a mirror with sockets
    // reads the routes again and finds the metric-100 one; tests/dataplane/
    // netns_neigh.py step ten-b).
    mirror_->notify(route({.gw = {198, 18, 1, 9}, .oif = kEth, .metric = 50, .del = true}).n());
    EXPECT_FALSE(dp::NextHops::usable(nh_->default_word(4)));
    // Deleting the route a learned entry was under reroutes it too.
    mirror_->notify(route({.dst = {10, 0, 0, 0}, .len = 8, .gw = {198, 18, 1, 7}, .oif = kEth, .del = true}).n());
    EXPECT_FALSE(has(in8));
    EXPECT_EQ(nh_->learned(), 0u);
    EXPECT_TRUE(has(kPeer));
    EXPECT_EQ(mirror_->stats().route_changes, 5u);
    EXPECT_EQ(mirror_->stats().flushes, 0u);
}

// The kernel sends what waited for a neighbour's resolution before it
// notifies the neighbour: the entry is learned first, then the mirror finds
// it with the same MAC. It is the neighbour's entry from then on, never aged
// (before, it expired at the TTL while the kernel's neighbour was REACHABLE,
// and its next packet took the slow path; found by a review helper).
TEST_F(LearnedNextHops, ANeighbourLearnedFirstIsNotAged) {
    nh_->set_learned_ttl(1000);
    learn_at(kPeer, 0x0b, 0);
    ASSERT_EQ(nh_->learned(), 1u);
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kPeer, kMacB).n());
    EXPECT_EQ(nh_->learned(), 0u);
    EXPECT_EQ(nh_->expire_learned(5000), 0u);
    EXPECT_TRUE(has(kPeer));
}

// The other order: a worker queued the pair, the mirror installed the
// neighbour, then the queue is drained: nothing to learn.
TEST_F(LearnedNextHops, ALearnQueuedBeforeTheNeighbourLeavesItTheNeighbours) {
    nh_->set_learned_ttl(1000);
    rte_ether_addr b{};
    std::memcpy(b.addr_bytes, kMacB.data(), 6);
    nh_->learn(4, kPeer.data(), b, kPort, 0);
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kPeer, kMacB).n());
    EXPECT_EQ(nh_->apply_learned(0), 0u);
    EXPECT_EQ(nh_->learned(), 0u);
    EXPECT_EQ(nh_->learn_stats().installed, 0u);
    EXPECT_EQ(nh_->expire_learned(5000), 0u);
    EXPECT_TRUE(has(kPeer));
}

// Counts through the paths that mix the two kinds (a review helper's case).
TEST_F(LearnedNextHops, CountsStayExactThroughMixedPaths) {
    nh_->set_learned_ttl(1000);
    learn_at(far(1), 1, 0);  // learned, then the neighbour with another MAC takes it
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, far(1), kMacA).n());
    EXPECT_EQ(nh_->learned(), 0u);
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, kPeer, kMacB).n());
    learn_at(kPeer, 7, 10);  // the kernel's egress says another MAC: learned now
    EXPECT_EQ(nh_->learned(), 1u);
    mirror_->apply(neigh(RTM_DELNEIGH, kEth, kPeer, kMacB).n());
    EXPECT_EQ(nh_->learned(), 0u);
    EXPECT_FALSE(has(kPeer));
    learn_at(far(2), 9, 20);
    learn_at(far(3), 9, 20);
    EXPECT_EQ(nh_->remove_by_mac(mac(9), 0), 2u);
    EXPECT_EQ(nh_->learned(), 0u);
    EXPECT_EQ(nh_->hosts(), 1u);  // far(1), the neighbour
    EXPECT_EQ(nh_->expire_learned(1u << 30), 0u);
    EXPECT_EQ(nh_->hosts(), 1u);
}

// A replaced route (`ip route replace`, and how FRR's zebra installs every
// IPv4 route) is notified as one more RTM_NEWROUTE with NLM_F_REPLACE, no
// deletion: it is the same route, so deleting it afterwards uncovers its
// prefix (before, the replacement counted twice, and the prefix stayed
// covered after the kernel had no route for it; found by a review helper).
TEST_F(LearnedNextHops, AReplacedRouteIsOneRoute) {
    mirror_->notify(route({.dst = {10, 9, 0, 0}, .len = 16, .gw = {198, 18, 1, 7}, .oif = kEth}).n());
    EXPECT_EQ(nh_->prefix_count(4), 1u);
    Msg r = route({.dst = {10, 9, 0, 0}, .len = 16, .gw = {198, 18, 1, 8}, .oif = kEth});
    r.n()->nlmsg_flags |= NLM_F_REPLACE;
    learn_at({10, 9, 1, 1}, 7, 0);
    mirror_->notify(r.n());
    EXPECT_EQ(nh_->prefix_count(4), 1u);
    EXPECT_FALSE(has({10, 9, 1, 1}));  // rerouted by the replacement
    mirror_->notify(route({.dst = {10, 9, 0, 0}, .len = 16, .gw = {198, 18, 1, 8}, .oif = kEth, .del = true}).n());
    EXPECT_EQ(nh_->prefix_count(4), 0u);
}

// A neighbour whose entry was a learned one (the kernel sent it through
// router R, MAC R) says nothing of R's other destinations: only an entry
// that was the neighbour's own takes the entries learned through its MAC
// with it (before, R's destinations all went, and R's own entry; found by a
// review helper).
TEST_F(LearnedNextHops, ANeighbourOverALearnedEntryLeavesTheRoutersOtherDestinations) {
    nh_->set_learned_ttl(0);
    const std::vector<uint8_t> router{198, 18, 1, 7};
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, router, kMacA).n());
    learn_at(far(1), 0x0a, 0);  // through the router (its MAC is kMacA)
    learn_at(far(2), 0x0a, 0);
    ASSERT_EQ(nh_->hosts(), 3u);
    // far(1) turns out to be on-link with a MAC of its own, then fails.
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, far(1), kMacB).n());
    EXPECT_TRUE(has(far(2)));
    EXPECT_TRUE(has(router));
    EXPECT_EQ(mirror_->stats().mac_retired, 0u);
    mirror_->apply(neigh(RTM_DELNEIGH, kEth, far(1), kMacB).n());
    EXPECT_FALSE(has(far(1)));
    EXPECT_TRUE(has(far(2)));
    EXPECT_TRUE(has(router));
    // A learned far(3) through the router, deleted as a neighbour: the same.
    learn_at(far(3), 0x0a, 0);
    mirror_->apply(neigh(RTM_DELNEIGH, kEth, far(3), kMacA).n());
    EXPECT_FALSE(has(far(3)));
    EXPECT_TRUE(has(far(2)));
    EXPECT_TRUE(has(router));
    // The router's own MAC changing still takes what was learned through it.
    mirror_->apply(neigh(RTM_NEWNEIGH, kEth, router, kMacB).n());
    EXPECT_FALSE(has(far(2)));
    EXPECT_TRUE(has(router));
    EXPECT_EQ(mirror_->stats().mac_retired, 2u);  // far(2) and the router's old entry
}

}  // namespace
