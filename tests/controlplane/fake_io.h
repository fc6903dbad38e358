// A PacketIo that records instead of sending: the only fake in the
// control-plane unit tests (the protocol core under test is the real one).
#pragma once

#include <functional>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "core/packet_io.h"

namespace turn::cp::test {

struct SentToClient {
    FiveTuple to;
    std::vector<uint8_t> bytes;
    uint8_t tos = 0;
    uint8_t ttl = 0;  // 0: the socket's default
};
struct SentToPeer {
    RelayId relay;
    Address peer;
    std::vector<uint8_t> bytes;
    bool dont_fragment = false;
    uint8_t tos = 0;
    uint8_t ttl = 0;
};

class FakeIo final : public PacketIo {
public:
    void send_to_client(const FiveTuple& to, std::span<const uint8_t> data, IpMarks marks = {}) override {
        client.push_back({to, {data.begin(), data.end()}, marks.tos, marks.ttl});
    }
    void send_to_peer(RelayId relay, const Address& peer, std::span<const uint8_t> data, bool dont_fragment = false,
                      IpMarks marks = {}) override {
        peer_sends.push_back({relay, peer, {data.begin(), data.end()}, dont_fragment, marks.tos, marks.ttl});
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
    void close_relay(RelayId relay) override {
        open.erase(relay);
        if (on_close_relay) {
            on_close_relay(relay);
        }
    }
    // RFC 6062: records what the core asks of the stream layer.
    OpenResult open_tcp_relay(const Address& addr, RelayId& out) override {
        out = (1u << 30) + next_id++;
        open[out] = addr;
        return OpenResult::kOk;
    }
    void close_tcp_relay(RelayId relay) override { open.erase(relay); }
    bool tcp_connect(RelayId, const Address& peer, uint32_t conn_id) override {
        connects.emplace_back(peer, conn_id);
        return true;
    }
    bool tcp_bind_data(const FiveTuple& c, uint32_t conn_id) override {
        binds.emplace_back(c, conn_id);
        return true;
    }
    bool tcp_handoff(const FiveTuple& c, unsigned loop, std::span<const uint8_t> message) override {
        handoffs.push_back({c, loop, {message.begin(), message.end()}});
        return true;
    }
    // RFC 8016: client paths the core opened and has not closed.
    RelayId open_client_path(const FiveTuple& ft) override {
        paths[next_path] = ft;
        return next_path++;
    }
    void close_client_path(RelayId path) override { paths.erase(path); }
    struct Handoff {
        FiveTuple client;
        unsigned loop;
        std::vector<uint8_t> message;
    };

    // What the real I/O may do inside close_relay: SocketIo flushes queued
    // output there, and a stream whose write fails reports its end at once.
    std::function<void(RelayId)> on_close_relay;

    std::vector<SentToClient> client;
    std::vector<SentToPeer> peer_sends;
    std::map<RelayId, Address> open;
    std::map<RelayId, bool> df;
    std::set<uint16_t> busy_ports;
    std::vector<std::pair<Address, uint32_t>> connects;
    std::vector<std::pair<FiveTuple, uint32_t>> binds;
    std::vector<Handoff> handoffs;
    std::map<RelayId, FiveTuple> paths;
    RelayId next_id = 0;
    RelayId next_path = 0;
};

}  // namespace turn::cp::test
