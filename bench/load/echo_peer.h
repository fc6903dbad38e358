// The harness's own UDP peers: each socket echoes every datagram back to its
// source, which is a relayed address of the TURN server under test. To keep
// the tool from ever sending elsewhere, a datagram is echoed only if its
// source IP is one the server reported in XOR-RELAYED-ADDRESS (allow_ip());
// anything else is counted and dropped.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/address.h"

namespace turn::load {

class EchoPeers {
public:
    ~EchoPeers();
    // Binds `sockets` UDP sockets on ip:0. False with `err` on failure.
    // With a non-empty `netns` (a name under /var/run/netns, as `ip netns`
    // makes them, or a path to a namespace file such as /proc/PID/ns/net) the
    // sockets are created by a short-lived thread that has first joined that
    // network namespace: a socket stays in the namespace it was created in, so
    // the echo peers live on another (emulated) host than the client sockets.
    // tos != 0: the IPv4 TOS / IPv6 Traffic Class of every echo.
    bool open(const Address& ip, size_t sockets, std::string& err, const std::string& netns = "", int tos = 0);
    size_t size() const { return socks_.size(); }
    int fd(size_t i) const { return socks_[i].fd; }
    const Address& address(size_t i) const { return socks_[i].addr; }

    // Adds a source IP that may be echoed to (relayed addresses' IPs).
    // Call before start() or while running (copy-on-write under a mutex).
    void allow_ip(const Address& ip);

    // One thread per socket group; threads stop at stop() or at deadline_ns.
    void start(size_t threads, uint64_t deadline_ns);
    void stop();

    uint64_t echoed() const { return echoed_.load(std::memory_order_relaxed); }
    uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

private:
    struct Sock {
        int fd = -1;
        Address addr;
    };
    bool open_here(const Address& ip, size_t sockets, std::string& err, int tos);
    void run(size_t first, size_t step, uint64_t deadline_ns);
    bool allowed(const Address& src);

    std::vector<Sock> socks_;
    std::vector<std::thread> threads_;
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> echoed_{0};
    std::atomic<uint64_t> refused_{0};
    std::mutex allow_mu_;
    std::vector<Address> allow_;                  // IPs, port 0
    std::atomic<uint64_t> allow_gen_{0};
};

}  // namespace turn::load
