// turn-natcheck: how the NAT in front of this host maps and filters UDP,
// found with a STUN server that supports RFC 5780 (turn-relay with
// [server].alternate_ips / alternate_port, or any other) by the tests of RFC
// 5780 sections 4.3 and 4.4 (tools/README.md). Exit 0 when both behaviours
// were determined, 1 when the server cannot tell (no RFC 5780, no answer),
// 2 on a usage error.
//
//   turn-natcheck [--local IP[:PORT]] [--timeout-ms T] [--json] HOST[:PORT]
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "net/address.h"
#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/message.h"

using namespace turn;

namespace {

using Clock = std::chrono::steady_clock;

struct BindingResult {
    Address mapped;                 // XOR-MAPPED-ADDRESS
    std::optional<Address> other;   // OTHER-ADDRESS
    std::optional<Address> origin;  // RESPONSE-ORIGIN
    Address from;                   // where the answer came from
    uint16_t error = 0;             // an error answer's code (420: no RFC 5780 here)
};

class UdpClient {
public:
    explicit UdpClient(const Address& local) {
        fd_ = ::socket(local.is_v6() ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_storage ss{};
        const size_t len = local.to_sockaddr(&ss);
        ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) == 0;
        socklen_t l = sizeof ss;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &l);
        local_ = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss)).value_or(Address{});
    }
    ~UdpClient() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    bool ok() const { return ok_; }
    const Address& local() const { return local_; }

    // A Binding to `to` (CHANGE-REQUEST when asked), retransmitted at 250,
    // 500, 1000 ms ... until timeout_ms: the answer, or nothing.
    std::optional<BindingResult> binding(const Address& to, bool change_ip, bool change_port, int timeout_ms) {
        static std::mt19937_64 rng{std::random_device{}()};
        std::array<uint8_t, stun::kTxIdSize> txid{};
        for (auto& b : txid) {
            b = static_cast<uint8_t>(rng());
        }
        std::array<uint8_t, 128> req{};
        stun::MessageBuilder b(req, stun::Method::kBinding, stun::Class::kRequest, txid);
        if (change_ip || change_port) {
            b.add_change_request(change_ip, change_port);
        }
        b.add_fingerprint();
        sockaddr_storage ss{};
        const size_t sl = to.to_sockaddr(&ss);
        const auto t0 = Clock::now();
        int rto = 250;
        auto next_send = t0;
        for (;;) {
            const auto now = Clock::now();
            const int elapsed = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(now - t0).count());
            if (elapsed >= timeout_ms) {
                return std::nullopt;
            }
            if (now >= next_send) {
                ::sendto(fd_, req.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(sl));
                next_send = now + std::chrono::milliseconds(rto);
                rto *= 2;
            }
            const int wait = static_cast<int>(
                std::chrono::duration_cast<std::chrono::milliseconds>(next_send - Clock::now()).count());
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, std::max(1, std::min(wait, timeout_ms - elapsed))) != 1) {
                continue;
            }
            std::array<uint8_t, 2048> buf{};
            sockaddr_storage from{};
            socklen_t fl = sizeof from;
            const ssize_t n = ::recvfrom(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
            if (n <= 0) {
                continue;
            }
            stun::MessageView v;
            if (stun::parse(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)), v) != stun::ParseError::kOk ||
                !std::equal(txid.begin(), txid.end(), v.transaction_id().begin())) {
                continue;  // not ours (a late answer to an earlier test)
            }
            BindingResult r;
            r.from = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&from)).value_or(Address{});
            if (v.cls() != stun::Class::kSuccess) {
                stun::ErrorCodeValue e;
                const auto* ec = v.find(stun::attr::kErrorCode);
                r.error = ec != nullptr && stun::decode_error_code(v.value(*ec), e) == stun::AttrError::kOk ? e.code : 500;
                return r;
            }
            const auto* m = v.find(stun::attr::kXorMappedAddress);
            if (m == nullptr || stun::decode_xor_address(v.value(*m), v.transaction_id(), r.mapped) != stun::AttrError::kOk) {
                continue;
            }
            for (auto [type, out] : {std::pair{stun::attr::kOtherAddress, &r.other},
                                     std::pair{stun::attr::kResponseOrigin, &r.origin}}) {
                Address a;
                if (const auto* at = v.find(type);
                    at != nullptr && stun::decode_address(v.value(*at), a) == stun::AttrError::kOk) {
                    *out = a;
                }
            }
            return r;
        }
    }

private:
    int fd_ = -1;
    bool ok_ = false;
    Address local_;
};

std::optional<Address> resolve(const std::string& s, std::string& err) {
    if (auto a = Address::parse(s)) {
        return a->port == 0 ? a->with_port(3478) : *a;
    }
    err = "\"" + s + "\" is not IP, IP:PORT or [IPv6]:PORT";
    return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"turn-natcheck: NAT mapping and filtering behaviour (RFC 5780) against a STUN/TURN server"};
    app.set_version_flag("--version", "turn-natcheck " TURN_RELAY_VERSION);
    std::string server;
    std::string local;
    int timeout_ms = 1500;
    bool json = false;
    app.add_option("server", server, "STUN server IP[:PORT] with RFC 5780 (port 3478 by default)")->required();
    app.add_option("--local", local, "local IP[:PORT] to test from (default: any)");
    app.add_option("--timeout-ms", timeout_ms, "how long each test waits for an answer")->check(CLI::Range(50, 60000));
    app.add_flag("--json", json, "one JSON object on stdout");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }
    std::string err;
    const auto srv = resolve(server, err);
    if (!srv) {
        std::fprintf(stderr, "turn-natcheck: %s\n", err.c_str());
        return 2;
    }
    Address bind_to = srv->is_v6() ? *Address::parse("::") : *Address::parse("0.0.0.0");
    if (!local.empty()) {
        auto l = Address::parse(local);
        if (!l || l->family != srv->family) {
            std::fprintf(stderr, "turn-natcheck: --local \"%s\" is not an IP[:PORT] of the server's family\n", local.c_str());
            return 2;
        }
        bind_to = *l;
    }

    nlohmann::json out;
    auto say = [&](const std::string& s) {
        if (!json) {
            std::printf("%s\n", s.c_str());
            std::fflush(stdout);
        }
    };
    auto finish = [&](int rc, const std::string& why) {
        out["ok"] = rc == 0;
        if (!why.empty()) {
            out["error"] = why;
            say("FAILED: " + why);
        }
        if (json) {
            std::cout << out.dump() << std::endl;
        }
        return rc;
    };

    UdpClient c(bind_to);
    if (!c.ok()) {
        return finish(2, "cannot bind " + bind_to.to_string());
    }
    out["server"] = srv->to_string();

    // Mapping behaviour (RFC 5780 section 4.3).
    const auto t1 = c.binding(*srv, false, false, timeout_ms);
    if (!t1) {
        return finish(1, "no answer from " + srv->to_string());
    }
    if (t1->error != 0) {
        return finish(1, "the server answered a plain Binding with " + std::to_string(t1->error));
    }
    out["mapped"] = t1->mapped.to_string();
    say("test I    " + srv->to_string() + " -> mapped " + t1->mapped.to_string());
    if (!t1->other) {
        return finish(1, "the server sent no OTHER-ADDRESS: it does not support RFC 5780 (for turn-relay: set "
                         "[server].alternate_ips and alternate_port)");
    }
    const Address other = *t1->other;
    out["other_address"] = other.to_string();
    // Our own socket's address as the server would see it without a NAT:
    // with a wildcard bind, the local IP is the one the kernel chose, which
    // a connected probe reveals.
    Address local_seen = c.local();
    if (local_seen.is_unspecified()) {
        const int fd = ::socket(srv->is_v6() ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_storage ss{};
        const size_t sl = srv->to_sockaddr(&ss);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(sl)) == 0) {
            socklen_t l = sizeof ss;
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &l);
            if (auto a = Address::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss))) {
                local_seen = a->with_port(c.local().port);
            }
        }
        ::close(fd);
    }
    const bool nat = !(t1->mapped == local_seen);
    out["nat"] = nat;
    say(std::string("nat       ") + (nat ? "yes: local " : "no: the mapped address is the local one, ") +
        local_seen.to_string());

    std::string mapping;
    const Address alt_ip_primary_port = other.with_port(srv->port);
    const auto t2 = c.binding(alt_ip_primary_port, false, false, timeout_ms);
    if (!t2 || t2->error != 0) {
        return finish(1, "no answer from the alternate address " + alt_ip_primary_port.to_string());
    }
    say("test II   " + alt_ip_primary_port.to_string() + " -> mapped " + t2->mapped.to_string());
    if (t2->mapped == t1->mapped) {
        mapping = "endpoint-independent";
    } else {
        const auto t3 = c.binding(other, false, false, timeout_ms);
        if (!t3 || t3->error != 0) {
            return finish(1, "no answer from the other address " + other.to_string());
        }
        say("test III  " + other.to_string() + " -> mapped " + t3->mapped.to_string());
        mapping = t3->mapped == t2->mapped ? "address-dependent" : "address-and-port-dependent";
    }
    out["mapping"] = mapping;
    say("mapping   " + mapping);

    // Filtering behaviour (RFC 5780 section 4.4), from a fresh socket that has
    // talked to the primary address only: the mapping tests above opened the
    // NAT towards the alternate addresses, which would pass any filter.
    UdpClient f(bind_to.with_port(0));
    if (!f.ok() || !f.binding(*srv, false, false, timeout_ms)) {
        return finish(1, "no answer from " + srv->to_string() + " to the filtering tests' socket");
    }
    std::string filtering;
    const auto f2 = f.binding(*srv, true, true, timeout_ms);
    if (f2 && f2->error != 0) {
        return finish(1, "the server refused CHANGE-REQUEST (" + std::to_string(f2->error) + ")");
    }
    // The answer must come from the changed address, or the server ignored
    // the request and the result would be meaningless.
    if (f2 && !(f2->from == other)) {
        return finish(1, "the server answered CHANGE-REQUEST (IP and port) from " + f2->from.to_string() +
                             ", not from its OTHER-ADDRESS " + other.to_string());
    }
    say(std::string("filter II  change IP and port: ") + (f2 ? "answered from " + f2->from.to_string() : "no answer"));
    if (f2) {
        filtering = "endpoint-independent";
    } else {
        const auto f3 = f.binding(*srv, false, true, timeout_ms);
        if (f3 && !(f3->from == srv->with_port(other.port))) {
            return finish(1, "the server answered CHANGE-REQUEST (port) from " + f3->from.to_string() + ", not from " +
                                 srv->with_port(other.port).to_string());
        }
        say(std::string("filter III change port: ") + (f3 ? "answered from " + f3->from.to_string() : "no answer"));
        filtering = f3 ? "address-dependent" : "address-and-port-dependent";
    }
    out["filtering"] = filtering;
    say("filtering " + filtering);
    return finish(0, "");
}
