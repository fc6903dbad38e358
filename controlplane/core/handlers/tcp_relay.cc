// RFC 6062 TCP allocations: Connect, ConnectionBind, ConnectionAttempt.
//
// A TCP allocation (Allocate with REQUESTED-TRANSPORT TCP over a TCP or TLS
// control connection, handlers/allocate.cc) has a listening TCP socket at its
// relayed address. Each peer connection, made by Connect (section 5.2) or
// accepted from a peer with a permission (section 5.3, announced with a
// ConnectionAttempt indication), gets a CONNECTION-ID; the client opens a new
// connection to the server and sends ConnectionBind with that id (section
// 5.4), after whose success response the I/O layer pipes the two connections'
// bytes to each other. A peer connection not bound within 30 seconds is
// closed. The connections themselves live in the I/O layer
// (io/stream_io.cc); this file keeps only what the protocol needs.
#include "core/server.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstring>

#include "stun/attributes.h"

namespace turn::cp {

namespace {
constexpr uint64_t kBindTimeoutMs = 30'000;  // RFC 6062 sections 5.2 and 5.3
}

// Random, and id % loops_ == loop_: a ConnectionBind that reaches another
// loop (each loop accepts TCP/TLS clients) knows where to send its connection.
// Random: a client that could predict the next id could bind another
// client's peer connection before it (one username shared by many clients is
// common). So not from next_txid(), whose xorshift state every Data and
// ConnectionAttempt indication shows, but from RAND_bytes; from next_txid()
// only with Config::seed (tests and fuzzing, reproducibly).
uint32_t Server::new_connection_id() {
    for (;;) {
        uint32_t r = 0;
        if (shared_.config.seed != 0 || RAND_bytes(reinterpret_cast<unsigned char*>(&r), sizeof r) != 1) {
            const auto t = next_txid();
            std::memcpy(&r, t.data(), sizeof r);
        }
        const uint64_t v = uint64_t{r} / loops_ * loops_ + loop_;
        const auto id = static_cast<uint32_t>(v);
        if (v <= UINT32_MAX && id != 0 && tcp_peers_.count(id) == 0) {
            return id;
        }
    }
}

// A peer connection not bound by ConnectionBind within 30 s is closed.
void Server::arm_bind_timeout(uint32_t conn_id) {
    wheel_.schedule(clock_.now_ms() + kBindTimeoutMs, [this, conn_id] {
        auto t = tcp_peers_.find(conn_id);
        if (t != tcp_peers_.end() && !t->second.bound) {
            tcp_peers_.erase(t);
            io_.tcp_close_peer(conn_id);
        }
    });
}

void Server::answer_connect(const TcpPeer& p, uint32_t conn_id, uint16_t code) {
    using namespace stun;
    MessageBuilder b(scratch_, make_type(Method::kConnect, code == 200 ? Class::kSuccess : Class::kError), p.txid);
    if (code == 200) {
        b.add_u32(attr::kConnectionId, conn_id);
    } else {
        b.add_error_code(code);
    }
    seal(b, p.auth ? &*p.auth : nullptr, p.fingerprint);
    stats_.request(static_cast<uint16_t>(Method::kConnect), code);
    if (b.ok()) {
        io_.send_to_client(p.ft, b.bytes());
    }
}

void Server::handle_connect(const Request& r, Allocation& a) {
    using namespace stun;
    if (!a.tcp) {
        reply_error(r, err::kBadRequest);  // section 5.2: Connect belongs to TCP allocations
        return;
    }
    const RawAttribute* pa = r.msg.find(attr::kXorPeerAddress);
    Address peer;
    if (pa == nullptr || decode_xor_address(r.msg.value(*pa), r.msg.transaction_id(), peer) != AttrError::kOk ||
        peer.port == 0) {
        reply_error(r, err::kBadRequest);
        return;
    }
    peer = peer.normalised();
    const RelayEndpoint* relay = a.relay(peer.family);
    if (relay == nullptr) {
        reply_error(r, err::kPeerAddressFamilyMismatch);
        return;
    }
    if (!peer_permitted(r, peer, true)) {
        return;
    }
    uint32_t mine = 0;
    for (const auto& [id, p] : tcp_peers_) {
        if (p.alloc_id == a.id && p.peer == peer) {
            reply_error(r, err::kConnectionAlreadyExists);  // section 5.2: one connection per peer address
            return;
        }
        mine += p.alloc_id == a.id ? 1 : 0;
    }
    // One allocation may not take every peer connection of the process
    // ([tcp].max_connections, shared): RFC 6062 sets no limit, this one is ours.
    // Nor may the process's peer connections ([tcp].max_connections) be
    // more than that: at either limit the answer is 508, not the 447 of a
    // peer that does not answer (StreamIo::tcp_connect checks again).
    if (mine >= shared_.config.max_tcp_peer_connections ||
        shared_.peer_connections.load(std::memory_order_relaxed) >= static_cast<int64_t>(shared_.config.tcp_max_connections)) {
        reply_error(r, err::kInsufficientCapacity);
        return;
    }
    if (a.permissions.count(Allocation::permission_key(peer)) == 0 &&
        a.permissions.size() + 1 > shared_.config.max_permissions) {
        reply_error(r, err::kInsufficientCapacity);
        return;
    }
    // The peer may answer on this connection only with a permission, which
    // Connect installs (or refreshes) as CreatePermission would.
    allocations_.add_permission(a, peer);
    const uint32_t id = new_connection_id();
    TcpPeer p;
    p.alloc_id = a.id;
    p.peer = peer;
    p.connecting = true;
    p.ft = r.ft;
    std::copy(r.msg.transaction_id().begin(), r.msg.transaction_id().end(), p.txid.begin());
    p.auth = *r.auth;
    p.fingerprint = r.fingerprint;
    tcp_peers_[id] = std::move(p);
    if (!io_.tcp_connect(relay->id, shared_.config.to_internal(peer), id)) {
        answer_connect(tcp_peers_[id], id, err::kConnectionTimeoutOrFailure);
        tcp_peers_.erase(id);
    }
    // Otherwise answered by on_tcp_peer_connected.
}

void Server::on_tcp_peer_connected(uint32_t conn_id, bool ok) {
    auto it = tcp_peers_.find(conn_id);
    if (it == tcp_peers_.end() || !it->second.connecting) {
        return;
    }
    TcpPeer& p = it->second;
    p.connecting = false;
    if (!ok || allocations_.find_by_id(p.alloc_id) == nullptr) {
        answer_connect(p, conn_id, stun::err::kConnectionTimeoutOrFailure);
        tcp_peers_.erase(it);
        if (ok) {
            io_.tcp_close_peer(conn_id);
        }
        return;
    }
    answer_connect(p, conn_id, 200);
    p.auth.reset();  // the key is not kept for the connection's lifetime
    arm_bind_timeout(conn_id);
}

bool Server::on_tcp_peer_accepted(RelayId relay, const Address& peer_in, uint32_t& conn_id) {
    Family f = Family::kNone;
    Allocation* a = allocations_.find_by_relay(relay, f);
    if (a == nullptr || !a->tcp) {
        return false;
    }
    const Address peer = shared_.config.to_external(peer_in.normalised());
    if (!a->permitted(peer, clock_.now_ms())) {
        stats_.drop(Drop::kNoPermission);  // section 5.3: no permission, no connection
        return false;
    }
    const auto mine = std::count_if(tcp_peers_.begin(), tcp_peers_.end(),
                                    [&](const auto& e) { return e.second.alloc_id == a->id; });
    if (static_cast<uint64_t>(mine) >= shared_.config.max_tcp_peer_connections) {
        stats_.drop(Drop::kTcpPeerLimit);  // as for Connect (handle_connect): the connection is closed
        return false;
    }
    conn_id = new_connection_id();
    TcpPeer p;
    p.alloc_id = a->id;
    p.peer = peer;
    p.ft = a->five_tuple;
    tcp_peers_[conn_id] = std::move(p);
    using namespace stun;
    const auto txid = next_txid();
    MessageBuilder b(scratch_, Method::kConnectionAttempt, Class::kIndication, txid);
    b.add_xor_address(attr::kXorPeerAddress, peer);
    b.add_u32(attr::kConnectionId, conn_id);
    if (b.ok()) {
        io_.send_to_client(a->five_tuple, b.bytes());
    }
    arm_bind_timeout(conn_id);
    return true;
}

void Server::on_tcp_peer_closed(uint32_t conn_id) {
    auto it = tcp_peers_.find(conn_id);
    if (it == tcp_peers_.end()) {
        return;
    }
    if (it->second.connecting) {
        answer_connect(it->second, conn_id, stun::err::kConnectionTimeoutOrFailure);
    }
    tcp_peers_.erase(it);
}

void Server::on_tcp_relayed(uint32_t conn_id, Direction d, size_t bytes) {
    auto it = tcp_peers_.find(conn_id);
    if (it == tcp_peers_.end()) {
        return;
    }
    if (Allocation* a = allocations_.find_by_id(it->second.alloc_id)) {
        (d == Direction::kClientToPeer ? a->relayed.bytes_to_peer : a->relayed.bytes_to_client) += bytes;
        a->bandwidth.consume(bytes, clock_.now_ms());
    }
}

uint64_t Server::tcp_budget(uint32_t conn_id) {
    auto it = tcp_peers_.find(conn_id);
    if (it == tcp_peers_.end()) {
        return UINT64_MAX;
    }
    Allocation* a = allocations_.find_by_id(it->second.alloc_id);
    return a == nullptr ? UINT64_MAX : a->bandwidth.available(clock_.now_ms());
}

void Server::handle_connection_bind(const Request& r) {
    using namespace stun;
    // Section 5.4: on a fresh TCP/TLS connection that holds no allocation.
    if (r.ft.transport == Transport::kUdp || r.ft.transport == Transport::kDtls || allocations_.find(r.ft) != nullptr) {
        reply_error(r, err::kBadRequest);
        return;
    }
    const RawAttribute* ca = r.msg.find(attr::kConnectionId);
    uint32_t id = 0;
    if (ca == nullptr || decode_u32(r.msg.value(*ca), id) != AttrError::kOk) {
        reply_error(r, err::kBadRequest);
        return;
    }
    // Another loop's peer connection: this connection goes there, whose
    // server answers the request (nothing is answered or counted here).
    if (id % loops_ != loop_ && io_.tcp_handoff(r.ft, id % loops_, r.msg.bytes())) {
        return;
    }
    auto it = tcp_peers_.find(id);
    if (it == tcp_peers_.end() || it->second.bound || it->second.connecting) {
        reply_error(r, err::kBadRequest);  // unknown, already bound, or not connected yet
        return;
    }
    const Allocation* a = allocations_.find_by_id(it->second.alloc_id);
    if (a == nullptr) {
        reply_error(r, err::kBadRequest);
        return;
    }
    if (a->username != r.auth->username) {
        stats_.auth_failure(AuthFailure::kWrongCredentials);
        reply_error(r, err::kWrongCredentials);
        return;
    }
    MessageBuilder b = begin(r, Class::kSuccess);
    finish(r, b, 200);
    it->second.bound = true;
    if (!io_.tcp_bind_data(r.ft, id)) {
        tcp_peers_.erase(it);
        io_.tcp_close_peer(id);
    }
}

}  // namespace turn::cp
