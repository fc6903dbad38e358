// Writes the seed corpus of worker_fuzz.cc (tests/fuzz/corpus/worker/): one
// input per fast-path case, drop and punt of the relay in worker_net.h (with
// its host next hops, some on VLANs), and mixed bursts of all of them under
// each next-hop set-up and at headrooms where tagging needs the room,
// frames delivered as chains of mbufs split inside every header, and
// relay-to-relay between its allocations (r2r-*, written last), with
// frames built by the golden tests' independent packet builder
// (tests/dataplane/packet_builder.h).
//
//   build/tests/fuzz/worker_seeds tests/fuzz/corpus/worker
//
// The output is deterministic; the files are committed.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "packet_builder.h"
#include "seed_writer.h"
#include "worker_net.h"

namespace {

using dptest::Bytes;
using dptest::Frame;
using turn::Address;
using workerfuzz::Net;

const Net kNet;
constexpr std::array<uint8_t, 12> kTxid = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

Frame udp(const Address& src, const Address& dst, Bytes payload) {
    Frame f;
    f.dst_mac = workerfuzz::kPortMac;
    f.src_mac = workerfuzz::kHostMac;
    f.src = src;
    f.dst = dst;
    f.payload = std::move(payload);
    return f;
}

void fix_ipv4_checksum(Bytes& b, size_t l3) {
    b[l3 + 10] = 0;
    b[l3 + 11] = 0;
    const uint16_t c = dptest::checksum(&b[l3], 20);
    b[l3 + 10] = static_cast<uint8_t>(c >> 8);
    b[l3 + 11] = static_cast<uint8_t>(c);
}

std::vector<std::pair<std::string, Bytes>> cases() {
    const Net& n = kNet;
    const Bytes d = dptest::pattern(100);
    std::vector<std::pair<std::string, Bytes>> c;
    auto add = [&](std::string name, const Frame& f) { c.emplace_back(std::move(name), dptest::build(f)); };

    // Client -> peer.
    add("cd4-slot0", udp(n.client1, n.listen4, dptest::channel_data(0x4001, d)));
    add("cd4-slot1", udp(n.client1, n.listen4, dptest::channel_data(0x4002, d)));
    add("cd4-hash", udp(n.client1, n.listen4, dptest::channel_data(0x4003, d)));
    add("cd4-to-v6-peer", udp(n.client1, n.listen4, dptest::channel_data(0x4004, d)));
    add("cd4-padded", udp(n.client1, n.listen4, dptest::channel_data(0x4001, dptest::pattern(99), 1)));
    add("cd4-odd-pad3", udp(n.client1, n.listen4, dptest::channel_data(0x4001, dptest::pattern(97), 3)));
    add("cd4-unbound", udp(n.client1, n.listen4, dptest::channel_data(0x4005, d)));
    add("cd4-empty", udp(n.client1, n.listen4, dptest::channel_data(0x4001, {})));
    add("cd4-unknown-client", udp(n.stranger4, n.listen4, dptest::channel_data(0x4001, d)));
    add("cd4-limited-allocation", udp(n.client3, n.listen4, dptest::channel_data(0x4001, dptest::pattern(1000))));
    add("cd6-slot0", udp(n.client2, n.listen6, dptest::channel_data(0x4001, d)));
    {
        Bytes cd = dptest::channel_data(0x4001, d);
        cd[3] = 200;  // length beyond the datagram
        add("cd4-bad-length", udp(n.client1, n.listen4, cd));
    }
    add("send4", udp(n.client1, n.listen4, dptest::send_indication(kTxid, n.peer4, d, false)));
    add("send4-fingerprint", udp(n.client1, n.listen4, dptest::send_indication(kTxid, n.perm_only4, d, true)));
    add("send4-no-permission", udp(n.client1, n.listen4, dptest::send_indication(kTxid, n.stranger4, d, false)));
    add("send4-to-v6-peer", udp(n.client1, n.listen4, dptest::send_indication(kTxid, n.peer6, d, false)));
    add("send6", udp(n.client2, n.listen6, dptest::send_indication(kTxid, n.perm_only6, d, true)));
    // Peer -> client.
    add("peer4-channel", udp(n.peer4, n.relayed1_4, d));
    add("peer4-data", udp(n.perm_only4, n.relayed1_4, dptest::pattern(101)));
    add("peer4-no-permission", udp(n.stranger4, n.relayed1_4, d));
    add("peer4-data-by-ip", udp(n.peer4, n.relayed3, d));  // allocation 3's permission is for the IP
    add("peer4-unknown-port", udp(n.peer4, Address::parse("198.18.0.1:49160").value(), d));
    add("peer6-channel-to-v4-client", udp(n.peer6, n.relayed1_6, d));
    add("peer6-channel", udp(n.peer6, n.relayed2, d));
    add("peer6-data", udp(n.perm_only6, n.relayed2, dptest::pattern(33)));
    add("peer4-limited-allocation", udp(n.peer4d, n.relayed3, dptest::pattern(1200)));
    // The exception path.
    add("stun-binding", udp(n.stranger4, n.listen4, dptest::stun_binding_request()));
    add("stun-binding6", udp(n.stranger6, n.listen6, dptest::stun_binding_request()));
    {
        Frame f = udp(n.client1, n.listen4, dptest::channel_data(0x4001, d));
        f.zero_udp_checksum = true;
        add("cd4-zero-udp-checksum", f);
        f = udp(n.client1, n.listen4, dptest::channel_data(0x4001, d));
        f.vlan = 100;
        add("cd4-vlan", f);
        f = udp(n.peer4, n.relayed1_4, d);
        f.proto = 1;
        add("icmp4", f);
        f = udp(n.peer4, n.relayed1_4, dptest::pattern(1480));
        add("peer4-over-mtu", f);
        // TTL / hop limit: 1 and 0 are dropped when relayed, 2 leaves with 1
        // (RFC 8656 section 14); a request with 1 is still punted.
        f = udp(n.client1, n.listen4, dptest::channel_data(0x4001, d));
        f.ttl = 1;
        add("cd4-ttl1", f);
        f.ttl = 2;
        add("cd4-ttl2", f);
        f = udp(n.peer6, n.relayed2, d);
        f.ttl = 0;
        add("peer6-ttl0", f);
        f = udp(n.stranger4, n.listen4, dptest::stun_binding_request());
        f.ttl = 1;
        add("stun-binding-ttl1", f);
    }
    {
        Bytes b = dptest::build(udp(n.client1, n.listen4, dptest::channel_data(0x4001, d)));
        b[14 + 6] |= 0x20;  // more fragments
        fix_ipv4_checksum(b, 14);
        c.emplace_back("cd4-fragment", b);
        b = dptest::build(udp(n.client1, n.listen4, dptest::channel_data(0x4001, d)));
        b[14 + 10] ^= 0xff;
        c.emplace_back("cd4-bad-ip-checksum", b);
        b = dptest::build(udp(n.client1, n.listen4, dptest::channel_data(0x4001, d)));
        b[14 + 20 + 6] ^= 0x5a;
        c.emplace_back("cd4-bad-udp-checksum", b);
    }
    {
        Bytes arp(42, 0);
        for (int i = 0; i < 6; i++) {
            arp[static_cast<size_t>(i)] = 0xff;
        }
        arp[12] = 0x08;
        arp[13] = 0x06;
        c.emplace_back("arp", arp);
    }
    return c;
}

// Relay-to-relay (worker_net.h, dataplane/worker/route.cc own_destination):
// a client's datagram to another allocation's relayed address on this relay
// goes round the pipeline twice and reaches that allocation's client, or is
// dropped or punted there; to an own IP that no allocation holds it is
// punted unchanged (punt_own_address), and so is a datagram to a client on
// an own address.
std::vector<std::pair<std::string, Bytes>> relay_to_relay_cases() {
    const Net& n = kNet;
    const Bytes d = dptest::pattern(100, 3);
    std::vector<std::pair<std::string, Bytes>> c;
    auto add = [&](std::string name, const Frame& f) { c.emplace_back(std::move(name), dptest::build(f)); };
    auto send = [&](const Address& client, const Address& listen, const Address& peer, bool fingerprint = false) {
        return udp(client, listen, dptest::send_indication(kTxid, peer, d, fingerprint));
    };
    // Clients 1 and 3 on one relay IP: ChannelData to a channel on the
    // other side, both ways (client1's channel is hashed, client3's is a
    // slot, which the express lane finds and leaves to route); a Send
    // indication; client1 to its own relayed address (a Data indication
    // back to itself).
    add("r2r-cd4-channel", udp(n.client1, n.listen4, dptest::channel_data(0x4010, d)));
    add("r2r-cd4-channel-back", udp(n.client3, n.listen4, dptest::channel_data(0x4002, d)));
    add("r2r-send4-channel", send(n.client1, n.listen4, n.relayed3, true));
    add("r2r-send4-self", send(n.client1, n.listen4, n.relayed1_4));
    // Only a permission on the other side: a Data indication (client4's
    // slot channel to relayed1_4; client1's hashed channel across families
    // to relayed2). No permission there: dropped (drop_no_permission).
    add("r2r-cd4-data", udp(n.client4, n.listen4b, dptest::channel_data(0x4002, d)));
    add("r2r-cd4-to-v6-data", udp(n.client1, n.listen4, dptest::channel_data(0x4011, d)));
    add("r2r-cd4-no-permission", udp(n.client4, n.listen4b, dptest::channel_data(0x4003, d)));
    add("r2r-send6-channel", send(n.client2, n.listen6, n.relayed1_6, true));
    add("r2r-send4-to-v6-no-permission", send(n.client1, n.listen4, n.relayed5));
    // The other allocation's client is an own address: punted (unchanged).
    add("r2r-send4-own-client", send(n.client1, n.listen4, n.relayed4));
    add("r2r-send4-to-v6-own-client", send(n.client1, n.listen4, n.relayed6));
    {
        // TTL: 2 leaves the first relayed address with 1, which the second
        // does not relay (drop_ttl_expired); 3 arrives with 1.
        Frame f = udp(n.client1, n.listen4, dptest::channel_data(0x4010, d));
        f.ttl = 2;
        add("r2r-cd4-ttl2", f);
        f.ttl = 3;
        add("r2r-cd4-ttl3", f);
        f = send(n.client2, n.listen6, n.relayed1_6);
        f.ttl = 2;
        add("r2r-send6-ttl2", f);
        f = udp(n.client1, n.listen4, dptest::channel_data(0x4010, d));
        f.vlan = 300;
        add("r2r-cd4-vlan", f);
    }
    // A Data indication that would not fit the MTU on the second round
    // (punt_mtu, unchanged); 1000 bytes to allocation 3's limit.
    add("r2r-cd4-data-over-mtu", udp(n.client4, n.listen4b, dptest::channel_data(0x4002, dptest::pattern(1440))));
    add("r2r-cd4-limited", udp(n.client1, n.listen4, dptest::channel_data(0x4010, dptest::pattern(1000))));
    // Own IPs that are no offloaded relayed address: punt_own_address,
    // unchanged. A relayed port no allocation holds, by channel and by Send;
    // a listening address on a relay IP; listening-only IPs of both
    // families; a peer's datagram to a client on an own address (a relay
    // IP's port; another allocation's relayed address).
    add("r2r-cd4-unallocated-port", udp(n.client1, n.listen4, dptest::channel_data(0x4012, d)));
    add("r2r-send4-unallocated-port", send(n.client1, n.listen4, n.unallocated4));
    add("r2r-send4-listen", send(n.client1, n.listen4, n.listen4));
    add("r2r-send4-listen-only-ip", send(n.client1, n.listen4, n.listen4b));
    add("r2r-send6-listen-only-ip", send(n.client1, n.listen4, n.listen6b));
    add("r2r-peer4-own-client", udp(n.peer4, n.relayed4, d));
    add("r2r-peer6-own-client", udp(n.peer6, n.relayed6, d));
    // The clients on own addresses sending as any client (forwarded to
    // kPeer4 and kPeer6).
    add("r2r-cd4-client-on-own-ip", udp(n.client4, n.listen4b, dptest::channel_data(0x4001, d)));
    add("r2r-cd6-client-on-relayed", udp(n.relayed2, n.listen6, dptest::channel_data(0x4001, d)));
    return c;
}

// Relay-to-relay behind a 1:1 NAT (worker_net.h: allocations 1, 2 and 7
// know each other by their external addresses on 198.18.7.1 and
// fd00:7::1): with the NAT's pair, a client's datagram to the other's
// external address goes round as one from the sender's external address;
// without it, or to an external port no allocation holds, or from a
// sender on another relay IP, it is punted unchanged (punt_own_address).
std::vector<std::pair<std::string, Bytes>> nat_cases() {
    const Net& n = kNet;
    const Bytes d = dptest::pattern(100, 5);
    std::vector<std::pair<std::string, Bytes>> c;
    auto add = [&](std::string name, const Frame& f) { c.emplace_back(std::move(name), dptest::build(f)); };
    auto send = [&](const Address& client, const Address& listen, const Address& peer, bool fingerprint = false) {
        return udp(client, listen, dptest::send_indication(kTxid, peer, d, fingerprint));
    };
    // ChannelData both ways between clients 1 and 7 (client7's slot channel
    // to ext(relayed1_4), answered on client1's hashed 0x4020; what client1
    // sends reaches client7 on its slot), and from client7 across families
    // to client2's slot channel.
    add("r2r-nat-cd4-channel", udp(n.client1, n.listen4, dptest::channel_data(0x4020, d)));
    add("r2r-nat-cd4-channel-back", udp(n.client7, n.listen4, dptest::channel_data(0x4001, d)));
    add("r2r-nat-cd4-to-v6-channel", udp(n.client7, n.listen4, dptest::channel_data(0x4002, d)));
    // Send indications: to a channel on the other side (client2's to
    // client1's 0x4022; client7's to client1's 0x4020); to a permission
    // only (a Data indication naming the sender's external address: client1
    // from its IPv6 relayed address to client2, and to its own external
    // address).
    add("r2r-nat-send6-channel", send(n.client2, n.listen6, n.ext(n.relayed1_6), true));
    add("r2r-nat-send4-channel", send(n.client7, n.listen4, n.ext(n.relayed1_4)));
    add("r2r-nat-send4-to-v6-data", send(n.client1, n.listen4, n.ext(n.relayed2)));
    add("r2r-nat-send4-self", send(n.client1, n.listen4, n.ext(n.relayed1_4), true));
    // IPv6 ChannelData from client2's slot to client7's (across families).
    add("r2r-nat-cd6-channel", udp(n.client2, n.listen6, dptest::channel_data(0x4002, d)));
    // The other allocation permits only the relay IP, not the external one
    // the packet comes from: dropped there (drop_no_permission), in both
    // families; the same allocation 8 reached at its relayed address itself
    // (a Data indication from relayed2). Client3 has no permission for the
    // external IP: its Send indication is punted (punt_miss, unchanged).
    add("r2r-nat-cd4-internal-only", udp(n.client7, n.listen4, dptest::channel_data(0x4003, d)));
    add("r2r-nat-send4-internal-only", send(n.client1, n.listen4, n.ext(n.relayed3)));
    add("r2r-nat-send6-internal-only", send(n.client2, n.listen6, n.ext(n.relayed8)));
    add("r2r-nat-send6-internal", send(n.client2, n.listen6, n.relayed8));
    add("r2r-nat-send4-no-permission", send(n.client3, n.listen4, n.ext(n.relayed1_4)));
    // Punted unchanged (punt_own_address): an external port no allocation
    // holds (channel, and a Send indication in IPv6); a sender on another
    // relay IP (client4: 198.18.0.3), by channel and by Send.
    add("r2r-nat-cd4-unallocated-port", udp(n.client1, n.listen4, dptest::channel_data(0x4021, d)));
    add("r2r-nat-send6-unallocated-port", send(n.client1, n.listen4, n.external6.with_port(49160)));
    add("r2r-nat-cd4-other-relay-ip", udp(n.client4, n.listen4b, dptest::channel_data(0x4004, d)));
    add("r2r-nat-send4-other-relay-ip", send(n.client4, n.listen4b, n.ext(n.relayed1_4)));
    // A datagram from outside to an external address, as no NAT delivers.
    add("r2r-nat-peer4-to-external", udp(n.peer4, n.ext(n.relayed1_4), d));
    add("r2r-nat-peer6-to-external", udp(n.peer6, n.ext(n.relayed2), d));
    {
        // TTL 2 leaves the first leg with 1, which the second does not
        // relay; 3 arrives with 1.
        Frame f = udp(n.client1, n.listen4, dptest::channel_data(0x4020, d));
        f.ttl = 2;
        add("r2r-nat-cd4-ttl2", f);
        f.ttl = 3;
        add("r2r-nat-cd4-ttl3", f);
    }
    // Too long for a Data indication on the second round (route judges the
    // worst case before the first): punted unchanged (punt_mtu).
    add("r2r-nat-cd4-over-mtu", udp(n.client1, n.listen4, dptest::channel_data(0x4020, dptest::pattern(1440))));
    return c;
}

// A frame and where the NIC splits it into mbufs: the offsets at which
// segments 2, 3 and 4 start (increasing; none: one mbuf). Or, with `option`
// not 0, no frame but that option word (worker_net.h: the NAT's pairs, the
// lane's rest).
struct Rx {
    const Bytes* f;
    std::vector<uint16_t> cuts = {};
    uint16_t option = 0;
};

void put16(Bytes& b, unsigned v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

// nh: byte 1, the next hops (kNh*) and the headroom (an index in
// kHeadrooms); tail: bytes of tailroom after each frame; flags: index in
// kRxFlags (worker_net.h). A chained frame is preceded by its chain marker
// and segment lengths.
Bytes input(uint8_t ctl, uint8_t nh, const std::vector<Rx>& frames, unsigned tail = 4, unsigned flags = 0) {
    Bytes in{ctl, nh};
    for (const Rx& r : frames) {
        if (r.option != 0) {
            put16(in, r.option);
            continue;
        }
        if (!r.cuts.empty()) {
            put16(in, workerfuzz::chain_marker(static_cast<unsigned>(r.cuts.size() + 1)));
            unsigned at = 0;
            for (const uint16_t c : r.cuts) {
                put16(in, c - at);
                at = c;
            }
        }
        put16(in, static_cast<unsigned>(r.f->size()) | tail << workerfuzz::kTailShift | flags << workerfuzz::kFlagsShift);
        in.insert(in.end(), r.f->begin(), r.f->end());
    }
    return in;
}
Bytes input(uint8_t ctl, uint8_t nh, const std::vector<const Bytes*>& frames, unsigned tail = 4, unsigned flags = 0) {
    std::vector<Rx> rx;
    for (const Bytes* f : frames) {
        rx.push_back({f});
    }
    return input(ctl, nh, rx, tail, flags);
}

}  // namespace

int main(int argc, char** argv) {
    using namespace workerfuzz;
    const auto c = cases();
    fuzzseeds::Files files;
    auto write = [&](const std::string& name, const Bytes& b) { files.emplace_back(name, b); };
    // Each case alone with the host next hops (so cd4-slot0 goes to a peer
    // on VLAN 300 through the stages, peer6-channel to client2 on VLAN
    // 4094, peer4-channel to client1 untagged through the lane).
    std::vector<const Bytes*> all;
    for (const auto& [name, frame] : c) {
        write(name, input(0, kNhHosts, {&frame}));
        all.push_back(&frame);
    }
    // Every case in one burst of 32 and the rest in a second (with and
    // without tailroom), with the untagged gateway as the only next hop; the
    // same in bursts of 4 with the clock moving (bandwidth buckets refill);
    // and the lane's common case, 40 ChannelData frames from both sides.
    write("mixed-burst32", input(31, 0, all));
    write("mixed-burst32-no-tailroom", input(31, 0, all, 0));
    // As a NIC with checksum offload delivers them: all good, IP bad, UDP bad.
    write("mixed-burst32-nic-good", input(31, 0, all, 4, 1));
    write("mixed-burst32-nic-ip-bad", input(31, 0, all, 4, 2));
    write("mixed-burst32-nic-udp-bad", input(31, 0, all, 4, 3));
    write("mixed-burst4-clock", input(3 | 3 << 5, 0, all));
    // The other next-hop set-ups: host entries (tagged and untagged, the
    // rest to the gateway); the gateway on a VLAN in both families (the
    // lane hands every packet to the stages); host entries and no gateway
    // (the rest punted for want of a next hop).
    write("mixed-burst32-hosts", input(31, kNhHosts, all));
    write("mixed-burst32-gateway-vlan", input(31, kNhGw4Vlan | kNhGw6Vlan, all));
    write("mixed-burst32-hosts-no-gateway", input(31, kNhHosts | kNhNoGw4 | kNhNoGw6, all));
    auto frame = [&](const std::string& name) -> const Bytes* {
        for (const auto& [nm, f] : c) {
            if (nm == name) {
                return &f;
            }
        }
        std::fprintf(stderr, "no case %s\n", name.c_str());
        std::exit(1);
    };
    std::vector<const Bytes*> cd;
    for (int i = 0; i < 20; i++) {
        cd.push_back(frame("cd4-slot0"));
        cd.push_back(frame("peer4-channel"));
    }
    write("channeldata-both-ways", input(31, 0, cd));
    // The same bursts with the host next hops: the lane finishes the frames
    // to client1 and hands those to the peer (VLAN 300) to the stages; with
    // the IPv4 gateway on a VLAN, both directions go through the stages
    // tagged.
    write("channeldata-both-ways-hosts", input(31, kNhHosts, cd));
    write("channeldata-both-ways-gateway-vlan", input(31, kNhGw4Vlan, cd));
    // Frames to clients with just the headroom their new headers need
    // untagged, or tagged (worker_net.h kHeadrooms): ChannelData and Data
    // indications, to tagged and untagged next hops, in both families.
    const std::vector<const Bytes*> to_clients = {frame("peer4-channel"), frame("peer6-channel"),
                                                  frame("peer4-data"),    frame("peer6-data"),
                                                  frame("cd4-slot0"),     frame("peer6-channel-to-v4-client")};
    write("headroom4-hosts", input(31, kNhHosts | 2 << kHeadroomShift, to_clients));
    write("headroom8-gateway-vlan", input(31, kNhGw4Vlan | kNhGw6Vlan | 3 << kHeadroomShift, to_clients));
    write("headroom40-gateway-vlan", input(31, kNhGw4Vlan | kNhGw6Vlan | 5 << kHeadroomShift, to_clients));
    // Allocation 3's bandwidth limit: 80 kB in bursts of 32, 16 cycles
    // apart, against a bucket of 64 KiB (worker/police.cc).
    const std::vector<const Bytes*> limited(80, frame("cd4-limited-allocation"));
    write("rate-limited-bursts", input(31 | 1 << 5, 0, limited));

    // Chained mbufs (scattered rx): each is punted to the kernel unchanged
    // (punt_multi_segment), wherever it is split, with the host next hops
    // (unchained, most of these would be forwarded, some tagged). Offsets:
    // Ethernet 0-13 (802.1Q tag 12-15), IPv4 14-33 (IPv6 14-53), UDP 34-41
    // (54-61), then the ChannelData header (4 bytes) or STUN's (20).
    auto chain = [&](const std::string& name, const std::string& of, std::vector<uint16_t> cuts) {
        write(name, input(0, kNhHosts, std::vector<Rx>{{frame(of), std::move(cuts)}}));
    };
    chain("chain-cd4-slot0", "cd4-slot0", {10, 30, 38});   // in the MACs, the IPv4 addresses, the UDP length
    chain("chain-cd4-channel-header", "cd4-slot0", {44});  // between channel number and length
    chain("chain-peer4-channel", "peer4-channel", {20, 40});  // IPv4 fragment field, UDP checksum
    chain("chain-peer4-data", "peer4-data", {42});            // UDP header | payload
    chain("chain-send4", "send4", {52, 70});  // STUN transaction ID, XOR-PEER-ADDRESS's address
    chain("chain-cd6-slot0", "cd6-slot0", {38, 58});  // IPv6 source address, UDP length
    chain("chain-cd4-vlan", "cd4-vlan", {16});        // inside the 802.1Q tag
    chain("chain-peer4-over-mtu", "peer4-over-mtu", {512, 1024, 1500});
    // A first segment shorter than an Ethernet header; empty segments.
    chain("chain-first-seg-6", "cd4-slot0", {6});
    chain("chain-first-seg-13", "cd4-slot0", {13});
    chain("chain-empty-segments", "cd4-slot0", {0, 34, 34});
    // The whole IP datagram in the first segment, the Ethernet padding of a
    // minimum-size frame in the second: a parser that looked at the first
    // segment alone would find it complete. The same frame unchained after
    // it is forwarded, by the express lane (the untagged gateway).
    Bytes small = dptest::build(udp(kNet.client1, kNet.listen4, dptest::channel_data(0x4001, dptest::pattern(4))));
    const uint16_t datagram = static_cast<uint16_t>(small.size());
    small.resize(60, 0);
    write("chain-cd4-trailer", input(0, 0, std::vector<Rx>{{&small, {datagram}}, {&small}}));
    // Every case, every other one chained (2-4 segments, cut at offsets
    // that move through the headers), with the host next hops; and the same
    // with no headroom nor tailroom at all, as a NIC with checksum offload
    // delivers them.
    std::vector<Rx> mixed;
    for (size_t i = 0; i < all.size(); i++) {
        Rx r{all[i]};
        if (i % 2 == 1) {
            const auto size = static_cast<uint16_t>(all[i]->size());
            const unsigned segs = 2 + (i / 2) % 3;
            for (unsigned k = 1; k < segs; k++) {
                r.cuts.push_back(std::min<uint16_t>(size, static_cast<uint16_t>(i + 14 * k)));
            }
        }
        mixed.push_back(r);
    }
    write("mixed-burst32-chained", input(31, kNhHosts, mixed));
    write("mixed-burst32-chained-exact", input(31, kNhHosts | 1 << kHeadroomShift, mixed, 0, 1));

    // Relay-to-relay (worker_net.h): after every seed above, whose bytes stay
    // as they were. Each case alone with the host next hops, then in bursts.
    const auto r2r = relay_to_relay_cases();
    std::vector<const Bytes*> r2r_all;
    for (const auto& [name, f] : r2r) {
        write(name, input(0, kNhHosts, {&f}));
        r2r_all.push_back(&f);
    }
    auto r2r_frame = [&](const std::string& name) -> const Bytes* {
        for (const auto& [nm, f] : r2r) {
            if (nm == name) {
                return &f;
            }
        }
        std::fprintf(stderr, "no case %s\n", name.c_str());
        std::exit(1);
    };
    // What the second round could not send (no next hop for the other
    // allocation's client: no gateway in either family; no headroom for a
    // Data indication's 36 bytes: headroom 0; a tagged gateway at headroom
    // 40), which must be punted unchanged, before the first round rewrote it.
    const std::vector<const Bytes*> two_rounds = {r2r_frame("r2r-cd4-channel"), r2r_frame("r2r-cd4-channel-back"),
                                                  r2r_frame("r2r-cd4-data"), r2r_frame("r2r-cd4-to-v6-data"),
                                                  r2r_frame("r2r-send6-channel")};
    write("r2r-no-gateway", input(31, kNhNoGw4 | kNhNoGw6, two_rounds));
    write("r2r-headroom0", input(31, kNhHosts | 1 << kHeadroomShift, two_rounds, 0));
    write("r2r-headroom40-gateway-vlan", input(31, kNhGw4Vlan | kNhGw6Vlan | 5 << kHeadroomShift, two_rounds));
    // Every relay-to-relay case and every earlier one in bursts of 32
    // (relay-to-relay first, so that the first burst has both kinds), with
    // the untagged gateway and with the host entries; the lane's case,
    // ChannelData both ways between clients 1 and 3 with ordinary
    // ChannelData between them; allocation 3's limit on what client1 sends
    // it (80 kB, as rate-limited-bursts); a client's ChannelData to a relayed
    // address, chained (punted unchanged as any chain).
    std::vector<const Bytes*> mixed_r2r = r2r_all;
    mixed_r2r.insert(mixed_r2r.end(), all.begin(), all.end());
    write("r2r-mixed-burst32", input(31, 0, mixed_r2r));
    write("r2r-mixed-burst32-hosts", input(31, kNhHosts, mixed_r2r));
    write("r2r-mixed-burst32-nic-good", input(31, kNhHosts, mixed_r2r, 4, 1));
    std::vector<const Bytes*> both;
    for (int i = 0; i < 16; i++) {
        both.push_back(r2r_frame("r2r-cd4-channel"));
        both.push_back(r2r_frame("r2r-cd4-channel-back"));
        both.push_back(frame(i % 2 == 0 ? "cd4-slot0" : "peer4-channel"));
    }
    write("r2r-channeldata-both-ways", input(31, 0, both));
    write("r2r-channeldata-both-ways-hosts", input(31, kNhHosts, both));
    const std::vector<const Bytes*> limited_r2r(80, r2r_frame("r2r-cd4-limited"));
    write("r2r-rate-limited-bursts", input(31 | 1 << 5, 0, limited_r2r));
    write("r2r-chain-cd4-channel", input(0, kNhHosts, std::vector<Rx>{{r2r_frame("r2r-cd4-channel"), {30, 44}}}));

    // Behind a 1:1 NAT (r2r-nat-*, after every seed above, whose bytes stay
    // as they were): each case alone with both families' pairs (an option
    // word before the first frame) and the host next hops.
    const auto natc = nat_cases();
    const Rx nat_both{nullptr, {}, option_word(kOptNat, kNat4 | kNat6)};
    std::vector<const Bytes*> nat_all;
    for (const auto& [name, f] : natc) {
        write(name, input(0, kNhHosts, std::vector<Rx>{nat_both, {&f}}));
        nat_all.push_back(&f);
    }
    auto nat_frame = [&](const std::string& name) -> const Bytes* {
        for (const auto& [nm, f] : natc) {
            if (nm == name) {
                return &f;
            }
        }
        std::fprintf(stderr, "no case %s\n", name.c_str());
        std::exit(1);
    };
    // Bursts of every NAT case, every relay-to-relay case and every earlier
    // one: with both pairs, with the IPv4 or the IPv6 pair alone, with both
    // set through a resync (ExternalIps, ResyncBegin, every Add, ResyncEnd),
    // and with none (every datagram to an external address punted
    // unchanged: they stay own addresses).
    std::vector<const Bytes*> every = nat_all;
    every.insert(every.end(), r2r_all.begin(), r2r_all.end());
    every.insert(every.end(), all.begin(), all.end());
    auto with = [](unsigned nat_value, const std::vector<const Bytes*>& frames) {
        std::vector<Rx> rx;
        if (nat_value != 0) {
            rx.push_back({nullptr, {}, option_word(kOptNat, nat_value)});
        }
        for (const Bytes* f : frames) {
            rx.push_back({f});
        }
        return rx;
    };
    write("r2r-nat-mixed-burst32", input(31, 0, with(kNat4 | kNat6, every)));
    write("r2r-nat-mixed-burst32-hosts", input(31, kNhHosts, with(kNat4 | kNat6, every)));
    write("r2r-nat-mixed-burst32-v4-only", input(31, kNhHosts, with(kNat4, every)));
    write("r2r-nat-mixed-burst32-v6-only", input(31, kNhHosts, with(kNat6, every)));
    write("r2r-nat-mixed-burst32-resync", input(31, kNhHosts, with(kNat4 | kNat6 | kNatResync, every), 4, 1));
    write("r2r-nat-mixed-burst32-off", input(31, kNhHosts, with(0, every)));
    // What the second round could not send (no next hop; no headroom; a
    // tagged gateway at headroom 40): punted unchanged before the first.
    const std::vector<const Bytes*> nat_two_rounds = {
        nat_frame("r2r-nat-cd4-channel"), nat_frame("r2r-nat-cd4-channel-back"),
        nat_frame("r2r-nat-cd4-to-v6-channel"), nat_frame("r2r-nat-send6-channel"),
        nat_frame("r2r-nat-send4-to-v6-data"), nat_frame("r2r-nat-send4-self")};
    write("r2r-nat-no-gateway", input(31, kNhNoGw4 | kNhNoGw6, with(kNat4 | kNat6, nat_two_rounds)));
    write("r2r-nat-headroom0", input(31, kNhHosts | 1 << kHeadroomShift, with(kNat4 | kNat6, nat_two_rounds), 0));
    write("r2r-nat-headroom40-gateway-vlan",
          input(31, kNhGw4Vlan | kNhGw6Vlan | 5 << kHeadroomShift, with(kNat4 | kNat6, nat_two_rounds)));
    // The pairs changing between bursts of those six, as a control plane's
    // messages change them: both set (ExternalIps alone); a resync without
    // ExternalIps, which keeps them (one came since the last ResyncBegin);
    // a second, which clears them; the IPv4 pair through a resync
    // (ExternalIps first); a resync without ExternalIps in the middle of
    // that burst, which waits for its end and clears the pair; the IPv6
    // pair alone. So the bursts see both, both, none, IPv4, none, IPv6.
    {
        std::vector<Rx> seq;
        auto burst = [&](std::initializer_list<unsigned> opts_before, bool mid) {
            for (const unsigned o : opts_before) {
                seq.push_back({nullptr, {}, option_word(kOptNat, o)});
            }
            for (size_t k = 0; k < nat_two_rounds.size(); k++) {
                seq.push_back({nat_two_rounds[k]});
                if (mid && k == 2) {
                    seq.push_back({nullptr, {}, option_word(kOptNat, kNatResync)});
                }
            }
        };
        burst({kNat4 | kNat6}, false);
        burst({kNatResync}, false);
        burst({kNatResync}, false);
        burst({kNat4 | kNatResync}, true);
        burst({}, false);
        burst({kNat6}, false);
        write("r2r-nat-on-off-between-bursts", input(5, kNhHosts, seq));
    }
    // The express lane's rest (WorkerConfig::express_rest 3): a burst the
    // lane finishes less than half of (Send indications) rests it for three
    // bursts, whose ChannelData goes through the stages although the lane
    // would find it; the second round, whose peer packets on client7's slot
    // channel the lane finishes, tries the lane even then. With the pairs
    // and without.
    {
        std::vector<const Bytes*> rest;
        for (int b = 0; b < 5; b++) {
            for (int k = 0; k < 4; k++) {
                rest.push_back(b % 4 == 0 ? nat_frame(k % 2 == 0 ? "r2r-nat-send4-to-v6-data" : "r2r-nat-send6-channel")
                                          : k % 2 == 0 ? nat_frame("r2r-nat-cd4-channel") : frame("cd4-slot0"));
            }
        }
        std::vector<Rx> on = with(kNat4 | kNat6, rest), off = with(0, rest);
        on.insert(on.begin(), Rx{nullptr, {}, option_word(kOptRest, 3)});
        off.insert(off.begin(), Rx{nullptr, {}, option_word(kOptRest, 3)});
        write("r2r-nat-express-rest3", input(3, 0, on));
        write("r2r-nat-express-rest3-off", input(3, 0, off));
        // The lane's own case under rest: ChannelData both ways between
        // clients 1 and 7 through the NAT with ordinary ChannelData.
        std::vector<const Bytes*> both7;
        for (int i = 0; i < 16; i++) {
            both7.push_back(nat_frame("r2r-nat-cd4-channel"));
            both7.push_back(nat_frame("r2r-nat-cd4-channel-back"));
            both7.push_back(frame(i % 2 == 0 ? "cd4-slot0" : "peer4-channel"));
        }
        write("r2r-nat-channeldata-both-ways", input(31, 0, with(kNat4 | kNat6, both7)));
        std::vector<Rx> both7_rest = with(kNat4 | kNat6, both7);
        both7_rest.push_back({nullptr, {}, option_word(kOptRest, 7)});
        write("r2r-nat-channeldata-both-ways-rest7", input(7, kNhHosts, both7_rest));
    }
    // A datagram to an external address, chained: punted unchanged as any chain.
    write("r2r-nat-chain-cd4-channel",
          input(0, kNhHosts, std::vector<Rx>{nat_both, {nat_frame("r2r-nat-cd4-channel"), {30, 44}}}));
    return fuzzseeds::write_seeds(argc, argv, files);
}
