// The control plane's install messages (src/ipc/protocol.h) built from
// addresses, for the programs that play the control plane against the flow
// tables: the golden tests, the worker fuzz target and the dataplane bench.
#pragma once

#include <cstdint>

#include "ipc/protocol.h"
#include "net/address.h"

namespace dptest {

// An allocation on `listen`; relayed_v4 / relayed_v6 may be null (absent).
inline turn::ipc::AllocationAdd allocation_add(uint64_t id, const turn::Address& client, const turn::Address& listen,
                                               const turn::Address* relayed_v4, const turn::Address* relayed_v6,
                                               uint64_t bandwidth_bps = 0) {
    turn::ipc::AllocationAdd a{};
    a.alloc_id = id;
    a.client = turn::ipc::WireAddress::from(client);
    a.listen = turn::ipc::WireAddress::from(listen);
    if (relayed_v4 != nullptr) {
        a.relayed_v4 = turn::ipc::WireAddress::from(*relayed_v4);
    }
    if (relayed_v6 != nullptr) {
        a.relayed_v6 = turn::ipc::WireAddress::from(*relayed_v6);
    }
    a.bandwidth_bps = bandwidth_bps;
    return a;
}

inline turn::ipc::PermissionAdd permission_add(uint64_t id, const turn::Address& relayed, const turn::Address& peer) {
    turn::ipc::PermissionAdd p{};
    p.alloc_id = id;
    p.relayed = turn::ipc::WireAddress::from(relayed);
    p.peer = turn::ipc::WireAddress::from(peer);
    return p;
}

inline turn::ipc::ChannelAdd channel_add(uint64_t id, const turn::Address& relayed, const turn::Address& peer,
                                         uint16_t channel) {
    turn::ipc::ChannelAdd c{};
    c.alloc_id = id;
    c.relayed = turn::ipc::WireAddress::from(relayed);
    c.peer = turn::ipc::WireAddress::from(peer);
    c.channel = channel;
    return c;
}

}  // namespace dptest
