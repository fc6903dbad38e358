// A PacketIo that records instead of sending: the only fake in the
// control-plane unit tests (the protocol core under test is the real one).
#pragma once

#include <map>
#include <set>
#include <vector>

#include "core/packet_io.h"

namespace turn::cp::test {

struct SentToClient {
    FiveTuple to;
    std::vector<uint8_t> bytes;
};
struct SentToPeer {
    RelayId relay;
    Address peer;
    std::vector<uint8_t> bytes;
    bool dont_fragment = false;
};

class FakeIo final : public PacketIo {
public:
    void send_to_client(const FiveTuple& to, std::span<const uint8_t> data) override {
        client.push_back({to, {data.begin(), data.end()}});
    }
    void send_to_peer(RelayId relay, const Address& peer, std::span<const uint8_t> data,
                      bool dont_fragment = false) override {
        peer_sends.push_back({relay, peer, {data.begin(), data.end()}, dont_fragment});
    }
    OpenResult open_relay(const Address& addr, bool dont_fragment, RelayId& out) override {
        if (busy_ports.count(addr.port) != 0) {
            return OpenResult::kPortInUse;
        }
        out = next_id++;
        open[out] = addr;
        df[out] = dont_fragment;
        return OpenResult::kOk;
    }
    void close_relay(RelayId relay) override { open.erase(relay); }

    std::vector<SentToClient> client;
    std::vector<SentToPeer> peer_sends;
    std::map<RelayId, Address> open;
    std::map<RelayId, bool> df;
    std::set<uint16_t> busy_ports;
    RelayId next_id = 0;
};

}  // namespace turn::cp::test
