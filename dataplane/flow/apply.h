// Applies control-plane messages (src/ipc/protocol.h) to the flow tables.
// Runs on the main lcore, the tables' only writer. Keeps a shadow of what the
// control plane installed (per allocation: its permissions and channels), so
// that deletes and resyncs know which hash keys to remove.
//
// Resync (protocol.h): ResyncBegin sets the current generation; every Add
// stamps its entries with it; ResyncEnd removes whatever was not re-added
// since ResyncBegin, then applies again, in order, the resync's Adds a full
// table refused (and those for an allocation it refused): what the sweep
// removed may have held their room. Adds outside a resync carry the current
// generation too.
//
// Settings (the relay-wide TOS rule) apply at once wherever they come and
// are answered with themselves (through `reply`, like a CountersRequest):
// the control plane learns the dataplane applies them. It sends them before
// each ResyncBegin, and a ResyncBegin with none since the previous one (a
// control plane that predates them) resets the rule to "keep". ExternalIps
// (the NAT's addresses, FlowTables::nat) likewise: applied at once, answered
// with themselves when applied, and cleared by a ResyncBegin with none since
// the previous one (a control plane without external IPs). Nothing else is
// answered but a CountersRequest; an invalid message of any type only
// counts as malformed.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <unordered_map>
#include <vector>

#include "flow/tables.h"
#include "ipc/protocol.h"

namespace dp {

class Applier {
public:
    explicit Applier(FlowTables& t) : t_(t) {}

    struct Stats {
        uint64_t applied = 0;
        uint64_t malformed = 0;      // bad version/length/type
        uint64_t unknown_alloc = 0;  // Permission/Channel/Limit for an allocation we lack
        uint64_t table_full = 0;     // hash or pool full: the flow stays on the slow path
        uint64_t swept = 0;          // entries removed by ResyncEnd
        uint64_t finals_dropped = 0; // final counters of removed allocations lost to the kMaxFinals bound
        uint64_t resync_retried = 0; // adds a resync's full table refused, applied again after its sweep
    };
    // Final counters of removed allocations kept for the next report (a
    // control plane that never asks must not grow this without bound).
    static constexpr size_t kMaxFinals = 1u << 16;
    // Adds of a resync that a full table refused, kept to be applied again
    // once its sweep has removed what the new control plane did not re-add
    // (that may have held the room); beyond this many they stay refused.
    static constexpr size_t kMaxRetries = 1u << 16;

    // One received datagram. Returns false if it was not a valid message.
    // A CountersRequest is answered through `reply` (one datagram per call).
    bool apply(std::span<const uint8_t> datagram,
               const std::function<void(std::span<const uint8_t>)>& reply = {});

    // The relay-wide TOS rule (FlowTables::tos_rule), at once, in a resync
    // or not: workers use it from their next burst. ipc::decode() has
    // refused rules that would touch ECN or set a kept bit.
    void on(const turn::ipc::Settings& m);
    // Each family's NAT pair (FlowTables::set_nat), at once; false (and
    // counted as table_full) when NatIps is full, and then not echoed, and
    // that family has no current pair.
    bool on(const turn::ipc::ExternalIps& m);
    void on(const turn::ipc::ResyncBegin& m);
    void on(const turn::ipc::ResyncEnd& m);
    void on(const turn::ipc::AllocationAdd& m);
    void on(const turn::ipc::AllocationDel& m);
    void on(const turn::ipc::PermissionAdd& m);
    void on(const turn::ipc::PermissionDel& m);
    void on(const turn::ipc::ChannelAdd& m);
    void on(const turn::ipc::ChannelDel& m);
    void on(const turn::ipc::LimitSet& m);
    // Each worker's packet counters (WorkerCounters, from worker_counters
    // when set), each port's statistics (PortCounters, from port_counters
    // when set), the next-hop table's (NextHopCounters, from
    // nexthop_counters when set), then every worker's per-allocation
    // counters summed into CountersReport chunks.
    void report_counters(const std::function<void(std::span<const uint8_t>)>& send);
    // Fills one WorkerCounters (worker, count, values) per worker; set by the
    // process that owns the workers (main.cc).
    std::function<void(std::vector<turn::ipc::WorkerCounters>&)> worker_counters;
    // Fills one PortCounters per port it could read; set by the process that
    // owns the ports (main.cc). Called on the Applier's (main) lcore.
    std::function<void(std::vector<turn::ipc::PortCounters>&)> port_counters;
    // Fills the next-hop table's NextHopCounters, sent after the
    // PortCounters; set by the process that owns the table (main.cc).
    std::function<void(turn::ipc::NextHopCounters&)> nexthop_counters;

    const Stats& stats() const { return stats_; }
    size_t allocations() const { return allocs_.size(); }
    // The table index of every allocation it holds (tests: no entry may
    // name any other index, since indices are reused).
    std::vector<uint32_t> indices() const {
        std::vector<uint32_t> v;
        v.reserve(allocs_.size());
        for (const auto& [id, a] : allocs_) {
            v.push_back(a.idx);
        }
        return v;
    }
    uint64_t generation() const { return gen_; }

private:
    struct Perm {
        turn::ipc::WireAddress relayed;
        turn::ipc::WireAddress peer;
        uint64_t gen;
    };
    struct Chan {
        turn::ipc::WireAddress relayed;
        turn::ipc::WireAddress peer;
        uint64_t gen;
        int slot;  // Allocation::slots index, -1: kChannelIn + kChannelOut hash entries
    };
    struct Alloc {
        uint32_t idx;
        uint64_t gen;
        turn::ipc::AllocationAdd msg;
        std::map<std::array<uint8_t, 40>, Perm> perms;  // by (relayed, peer IP)
        std::map<uint16_t, Chan> chans;                  // by channel number
        uint32_t hashed = 0;                             // chans with slot -1
        bool described = false;                          // the Allocation line was filled in (install_alloc)
        // Counters of earlier installs of this id (the control plane removes
        // and re-adds an allocation whose client 5-tuple or families
        // changed): an id's counters only grow, whatever became of its index.
        turn::ipc::AllocationCounters base{};
    };

    Alloc* find(uint64_t id);
    void remove_alloc(Alloc& a);
    // Removes `a` and keeps its final counters for the next report;
    // `reusable`: an Add of the same id before then continues them (a Del
    // of this control plane's, not a sweep or a replaced install).
    void finish(uint64_t id, Alloc& a, bool reusable);
    turn::ipc::AllocationCounters sum_counters(uint64_t id, const Alloc& a) const;
    void remove_perm(const Alloc& a, const Perm& p);
    // retire_slot = false when the whole allocation goes (its index is
    // retired after the slot would be anyway).
    void remove_chan(Alloc& a, uint16_t channel, const Chan& c, bool retire_slot = true);
    bool install_alloc(Alloc& a);
    // Makes the client 5-tuple's key and the relayed address(es) name `a`
    // (install, and every refresh); false if a table refused one.
    bool publish_alloc(Alloc& a);
    // Allocation::byte_ticks for a limit of `bps`; a changed rate refills the
    // budget (Allocation::tat = 0).
    void set_limit(Allocation& r, uint64_t bps) const;
    // A refreshed hashed channel: its kChannelOut/kChannelIn entries made
    // this channel's again where another took them; false if a table refused.
    bool republish_chan(Alloc& a, uint16_t channel, const Chan& c);

    // Decodes a datagram of `type` and applies it (apply(), and the kept
    // Adds ResyncEnd applies again); false if it was not a valid message.
    bool dispatch(turn::ipc::MsgType type, std::span<const uint8_t> d,
                  const std::function<void(std::span<const uint8_t>)>& reply);
    // A ChannelValue for `peer` of allocation `alloc`, not yet published;
    // nullptr when the pool is empty.
    ChannelValue* new_value(const turn::ipc::WireAddress& peer, uint32_t alloc);

    FlowTables& t_;
    std::unordered_map<uint64_t, Alloc> allocs_;
    bool resyncing_ = false;                    // between ResyncBegin and its ResyncEnd
    bool settings_seen_ = false;                // a valid Settings since the last ResyncBegin
    bool external_seen_ = false;                // a valid ExternalIps since the last ResyncBegin
    std::vector<std::vector<uint8_t>> retry_;  // refused Adds of this resync, in order
    // Final counters of removed allocations until the next report, unless
    // an Add of the same id took them as its base (`taken`).
    struct Final {
        turn::ipc::AllocationCounters c;
        bool taken = false;
    };
    std::vector<Final> finals_;
    // Finals an Add of the same id may continue (finish(reusable), this
    // generation): the totals, and their finals_ index (SIZE_MAX: not kept
    // there, finals_ was full).
    struct Reusable {
        turn::ipc::AllocationCounters c;
        size_t at;
    };
    std::unordered_map<uint64_t, Reusable> reusable_;
    uint64_t gen_ = 0;
    uint64_t seq_ = 0;
    Stats stats_;
};

}  // namespace dp
