// The harness's own TCP peers for RFC 6062 TCP allocations (--mode tcp-relay):
// listening sockets that accept the connections the TURN server makes from a
// relayed address (Connect, RFC 6062 section 5.2) and echo every byte back on
// the same connection. As with the UDP peers (echo_peer.h), a connection is
// served only if its source IP is one the server reported in
// XOR-RELAYED-ADDRESS (allow_ip()); others are closed at once and counted.
//
// Each thread owns a share of the listeners and every connection it accepts
// on them (one epoll set per thread). Echoing keeps TCP's back-pressure: what
// the connection back does not take waits in a bounded buffer, and the
// connection is not read again until that is sent, so a slow reader slows its
// writer instead of growing memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/address.h"

namespace turn::load {

class TcpEchoPeers {
public:
    ~TcpEchoPeers();
    // Listens on `listeners` TCP sockets on ip:0. False with `err` on failure.
    bool open(const Address& ip, size_t listeners, std::string& err);
    size_t size() const { return listeners_.size(); }
    const Address& address(size_t i) const { return listeners_[i].addr; }

    // Adds a source IP whose connections are served (relayed addresses'
    // IPs). Must be called before the server connects (before Connect).
    void allow_ip(const Address& ip);

    // Threads stop at stop() or at deadline_ns; stop() closes every accepted connection.
    void start(size_t threads, uint64_t deadline_ns);
    void stop();

    uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
    uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
    uint64_t echoed_bytes() const { return echoed_bytes_.load(std::memory_order_relaxed); }

private:
    struct Listener {
        int fd = -1;
        Address addr;
    };
    void run(size_t first, size_t step, uint64_t deadline_ns);
    bool allowed(const Address& src);

    std::vector<Listener> listeners_;
    std::vector<std::thread> threads_;
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> accepted_{0};
    std::atomic<uint64_t> refused_{0};
    std::atomic<uint64_t> echoed_bytes_{0};
    std::mutex allow_mu_;
    std::vector<Address> allow_;  // IPs, port 0
};

}  // namespace turn::load
