#include "core/nat_behavior.h"

namespace turn::cp {

namespace {

// The family's primary UDP listener and alternate IP (config validation
// guarantees exactly one concrete listener for a family with an alternate).
struct Quad {
    Address primary;
    Address alt_ip;
    uint16_t alt_port = 0;
};

std::optional<Quad> quad(const Config& c, Family f) {
    if (c.alternate_port == 0) {
        return std::nullopt;
    }
    for (const auto& a : c.alternate_ips) {
        if (a.family != f) {
            continue;
        }
        for (const auto& l : c.listen) {
            if (l.family == f && !l.is_unspecified()) {
                return Quad{l, a, c.alternate_port};
            }
        }
    }
    return std::nullopt;
}

}  // namespace

std::optional<Address> nat_changed_address(const Config& c, const Address& received_on, bool change_ip,
                                           bool change_port) {
    const auto q = quad(c, received_on.family);
    if (!q) {
        return std::nullopt;
    }
    const Address ip = received_on.with_port(0);
    const Address primary_ip = q->primary.with_port(0);
    const Address alt_ip = q->alt_ip.with_port(0);
    const bool on_primary_ip = ip == primary_ip;
    const bool on_primary_port = received_on.port == q->primary.port;
    if ((!on_primary_ip && !(ip == alt_ip)) || (!on_primary_port && received_on.port != q->alt_port)) {
        return std::nullopt;
    }
    const Address out_ip = (on_primary_ip != change_ip) ? primary_ip : alt_ip;
    const uint16_t out_port = (on_primary_port != change_port) ? q->primary.port : q->alt_port;
    return out_ip.with_port(out_port);
}

bool nat_discovery_enabled(const Config& c, const Address& received_on) {
    return nat_changed_address(c, received_on, false, false).has_value();
}

std::vector<Address> nat_extra_listeners(const Config& c) {
    std::vector<Address> out;
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
        if (const auto q = quad(c, f)) {
            out.push_back(q->primary.with_port(q->alt_port));
            out.push_back(q->alt_ip.with_port(q->primary.port));
            out.push_back(q->alt_ip.with_port(q->alt_port));
        }
    }
    return out;
}

}  // namespace turn::cp
