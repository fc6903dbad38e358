// The admin interface of a running turn-relay ([admin].socket; the client is
// tools/ctl's turn-ctl): a unix stream socket, created with mode 0600 so only
// its owner (root, or the service user) can use it. One request per
// connection: a JSON object on one line, answered with one JSON object on one
// line. Commands:
//   {"command":"status"}       process, loops, allocations, connections, draining
//   {"command":"allocations"}  every allocation of every loop (optional "user"):
//                              5-tuple, user, relayed addresses, age, expiry,
//                              permissions, channels, packets
//   {"command":"close","id":N} ends allocation N now (logged
//                              allocation_closed_by_operator)
//   {"command":"close","user":U} ends every allocation of user U now
//                              (a leaked credential: remove it, reload, close)
//   {"command":"drain"}        what SIGTERM does (optional "deadline_s")
//   {"command":"reload"}       what SIGHUP does, answered with what it applied
// Allocations belong to their loops' threads: a request is posted to every
// loop (EventLoop::post) and answered from what each loop hands back within
// a second. Errors are answered as {"ok":false,"error":"..."}; requests are
// bounded (64 KiB, 2 s to arrive) and handled one at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/shared.h"
#include "io/event_loop.h"

namespace turn::cp {

class AdminServer {
public:
    struct Hooks {
        std::function<nlohmann::json()> reload;              // runs SIGHUP's reload, returns its outcome
        std::function<void(std::optional<uint32_t>)> drain;  // starts SIGTERM's drain (deadline override)
    };

    AdminServer(Shared& shared, std::vector<EventLoop*> loops, Hooks hooks);
    ~AdminServer();
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    // Creates the socket at `path` (replacing a stale one; its directory is
    // made if missing) and starts answering; "" or why not.
    std::string start(const std::string& path);
    void stop();  // joins the thread and removes the socket

    // One request line to its answer (what the socket thread does with each).
    std::string handle(std::string_view line);

private:
    void run();
    nlohmann::json status();
    nlohmann::json allocations(const std::optional<std::string>& user);
    nlohmann::json close(uint64_t id);
    nlohmann::json close_user(const std::string& user);

    Shared& shared_;
    std::vector<EventLoop*> loops_;
    Hooks hooks_;
    int fd_ = -1;
    std::string path_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    uint64_t started_unix_s_ = 0;
};

}  // namespace turn::cp
