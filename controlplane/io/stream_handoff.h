// TCP/TLS client connections moving from one event loop to another.
//
// Every loop accepts TURN-over-TCP/TLS clients (SO_REUSEPORT spreads the
// connections over the loops, as it spreads UDP 5-tuples), and a client
// connection is served whole by the loop that accepted it. The one exception
// is an RFC 6062 data connection: its ConnectionBind names a peer connection
// (CONNECTION-ID) that belongs to the loop holding the TCP allocation, and
// the CONNECTION-ID says which loop that is (Server::new_connection_id). The
// loop that framed the ConnectionBind hands the whole connection over: the
// socket, its TLS session, the request (handled again, from the start, by the
// owner), the bytes read after it and the output not written yet. Each loop
// has an inbox here, woken through an eventfd in the loop's epoll set.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/address.h"

namespace turn::cp {

struct StreamHandoff {
    int fd = -1;
    SSL* ssl = nullptr;            // TLS connections: the session, in whatever state it is
    bool handshake_done = true;
    FiveTuple ft;
    bool proxied = false;          // ft is a PROXY header's (StreamIo::Conn::proxied)
    std::vector<uint8_t> message;  // the ConnectionBind request
    std::vector<uint8_t> after;    // bytes read after it
    std::vector<uint8_t> out;      // output queued and not written yet
};

class StreamHandoffs {
public:
    // One inbox per loop; `error` set (and loops() == 0) if an eventfd
    // cannot be made.
    StreamHandoffs(unsigned loops, std::string& error);
    ~StreamHandoffs();  // closes the connections nobody adopted (the loops stopped first)
    StreamHandoffs(const StreamHandoffs&) = delete;
    StreamHandoffs& operator=(const StreamHandoffs&) = delete;

    unsigned loops() const { return static_cast<unsigned>(inboxes_.size()); }
    // The eventfd that becomes readable when `loop` has connections to adopt.
    int event_fd(unsigned loop) const { return inboxes_[loop]->efd; }
    void push(unsigned loop, StreamHandoff h);
    // Everything waiting for `loop` (and the eventfd read to zero).
    std::vector<StreamHandoff> take(unsigned loop);

private:
    struct Inbox {
        std::mutex m;
        std::vector<StreamHandoff> q;
        int efd = -1;
    };
    std::vector<std::unique_ptr<Inbox>> inboxes_;
};

}  // namespace turn::cp
