#include "io/admin_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>

#include "core/allocation.h"
#include "core/server.h"
#include "core/state_snapshot.h"

namespace turn::cp {

namespace {

constexpr size_t kMaxRequest = 64 * 1024;
constexpr int kRequestTimeoutMs = 2000;
constexpr auto kLoopWait = std::chrono::seconds(1);

uint64_t unix_s() { return static_cast<uint64_t>(::time(nullptr)); }

nlohmann::json error(const std::string& what) { return {{"ok", false}, {"error", what}}; }

// An allocation as a loop hands it to the admin thread: plain data, copied
// on the loop's thread (bounded: at most kListed permissions and channels
// each, with their counts), turned into JSON on the admin thread.
constexpr size_t kListed = 64;

struct AllocRow {
    uint64_t id = 0;
    unsigned loop = 0;
    FiveTuple ft;
    std::string user;
    std::vector<Address> relayed;
    std::vector<uint64_t> relayed_expires_unix_ms;  // each relayed address's own (dual allocations)
    bool tcp = false;
    uint64_t age_s = 0;
    uint64_t expires_unix_ms = 0;
    RelayUsage usage;
    size_t permission_count = 0;
    size_t channel_count = 0;
    std::vector<SavedPermission> permissions;
    std::vector<SavedChannel> channels;
};

// What every loop hands back for one request, and when all of them have.
template <typename T>
struct Gather {
    std::mutex m;
    std::condition_variable cv;
    size_t done = 0;
    std::vector<T> items;
};

// Runs `fn` on every loop and waits (a second at most) for their answers;
// false if some loop did not answer in time (stopping, or stuck).
template <typename T>
bool on_every_loop(const std::vector<EventLoop*>& loops, const std::function<void(Server&, unsigned, std::vector<T>&)>& fn,
                   std::vector<T>& items) {
    auto g = std::make_shared<Gather<T>>();
    for (EventLoop* l : loops) {
        const unsigned index = l->index();
        l->post([g, fn, index](Server& s) {
            std::vector<T> part;
            fn(s, index, part);
            std::lock_guard<std::mutex> lock(g->m);
            for (auto& x : part) {
                g->items.push_back(std::move(x));
            }
            g->done++;
            g->cv.notify_all();
        });
    }
    std::unique_lock<std::mutex> lock(g->m);
    const bool all = g->cv.wait_for(lock, kLoopWait, [&] { return g->done == loops.size(); });
    items = std::move(g->items);
    return all;
}

}  // namespace

AdminServer::AdminServer(Shared& shared, std::vector<EventLoop*> loops, Hooks hooks)
    : shared_(shared), loops_(std::move(loops)), hooks_(std::move(hooks)), started_unix_s_(unix_s()) {}

AdminServer::~AdminServer() { stop(); }

std::string AdminServer::start(const std::string& path) {
    sockaddr_un sa{};
    if (path.empty() || path.size() >= sizeof sa.sun_path) {
        return "[admin].socket: \"" + path + "\" must be a path of 1.." + std::to_string(sizeof sa.sun_path - 1) + " bytes";
    }
    if (const auto slash = path.rfind('/'); slash != std::string::npos && slash != 0) {
        const std::string dir = path.substr(0, slash);
        ::mkdir(dir.c_str(), 0755);  // e.g. /run/turnrelay; fine if it exists
        // Whoever may write the directory may replace the socket with one of
        // their own: it must be this user's (or root's), writable by no one else.
        struct stat ds{};
        if (::stat(dir.c_str(), &ds) != 0 || !S_ISDIR(ds.st_mode)) {
            return "[admin].socket: " + dir + " is not a directory";
        }
        if ((ds.st_uid != ::geteuid() && ds.st_uid != 0) || (ds.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
            return "[admin].socket: the directory " + dir +
                   " may be written by other users, who could put their own socket there; use a directory "
                   "owned by this user (or root) and not group- or world-writable, e.g. the service's "
                   "RuntimeDirectory";
        }
    }
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.data(), path.size());
    struct stat st{};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return "[admin].socket: " + path + " exists and is not a socket; remove it or choose another path";
        }
        // A socket something still answers on belongs to a running process
        // (another turn-relay?); one nobody answers on is a previous one's.
        const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const bool live = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
        if (probe >= 0) {
            ::close(probe);
        }
        if (live) {
            return "[admin].socket: another process answers on " + path +
                   " (a second turn-relay?); stop it or give this one another path";
        }
        ::unlink(path.c_str());
    }
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const mode_t old = ::umask(0177);  // created 0600: only its owner may drain or close allocations
    const bool bound = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    ::umask(old);
    if (!bound || ::listen(fd_, 16) != 0) {
        const std::string e = std::strerror(errno);
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
        return "[admin].socket: cannot listen on " + path + ": " + e;
    }
    path_ = path;
    thread_ = std::thread([this] { run(); });
    return {};
}

void AdminServer::stop() {
    stop_.store(true);
    if (thread_.joinable()) {
        thread_.join();
    }
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
        ::unlink(path_.c_str());
    }
}

void AdminServer::run() {
    while (!stop_.load()) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 200) <= 0) {
            continue;
        }
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            continue;
        }
        // The request: one line, bounded in size and time.
        std::string line;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kRequestTimeoutMs);
        char buf[4096];
        bool complete = false;
        while (!complete && line.size() < kMaxRequest) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd q{c, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&q, 1, static_cast<int>(left.count())) <= 0) {
                break;
            }
            const ssize_t n = ::recv(c, buf, sizeof buf, 0);
            if (n <= 0) {
                complete = n == 0 && !line.empty();  // EOF ends a request without a newline
                break;
            }
            line.append(buf, static_cast<size_t>(n));
            complete = line.find('\n') != std::string::npos;
        }
        const std::string answer =
            complete ? handle(line.substr(0, line.find('\n')))
                     : error(line.size() >= kMaxRequest ? "request longer than 64 KiB" : "no complete request within 2 s")
                               .dump();
        const std::string out = answer + "\n";
        size_t off = 0;
        while (off < out.size()) {
            const ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
            if (n <= 0) {
                break;
            }
            off += static_cast<size_t>(n);
        }
        ::close(c);
    }
}

std::string AdminServer::handle(std::string_view line) {
    const nlohmann::json req = nlohmann::json::parse(line, nullptr, false);
    if (req.is_discarded() || !req.is_object() || !req.contains("command") || !req["command"].is_string()) {
        return error("not a JSON object with a \"command\" string").dump();
    }
    const std::string cmd = req["command"];
    if (cmd == "status") {
        return status().dump();
    }
    if (cmd == "allocations") {
        std::optional<std::string> user;
        if (req.contains("user")) {
            if (!req["user"].is_string()) {
                return error("\"user\" must be a string").dump();
            }
            user = req["user"].get<std::string>();
        }
        return allocations(user).dump();
    }
    if (cmd == "close") {
        if (req.contains("user") && !req.contains("id")) {
            if (!req["user"].is_string() || req["user"].get<std::string>().empty()) {
                return error("\"user\" must be a user name").dump();
            }
            return close_user(req["user"].get<std::string>()).dump();
        }
        if (!req.contains("id") || !req["id"].is_number_unsigned() || req.contains("user")) {
            return error("\"close\" needs \"id\": an allocation id (see \"allocations\"), or \"user\": a user name").dump();
        }
        return close(req["id"].get<uint64_t>()).dump();
    }
    if (cmd == "drain") {
        std::optional<uint32_t> deadline;
        if (req.contains("deadline_s")) {
            if (!req["deadline_s"].is_number_unsigned() || req["deadline_s"].get<uint64_t>() > 86400) {
                return error("\"deadline_s\" must be 0..86400").dump();
            }
            deadline = req["deadline_s"].get<uint32_t>();
        }
        if (shared_.draining.load()) {
            return error("already draining").dump();  // (requests are handled one at a time)
        }
        hooks_.drain(deadline);
        return nlohmann::json{{"ok", true}, {"draining", true}, {"allocations", shared_.allocations.load()}}.dump();
    }
    if (cmd == "reload") {
        nlohmann::json r = hooks_.reload();
        return r.dump();
    }
    return error("unknown command \"" + cmd + "\"; one of status, allocations, close, drain, reload").dump();
}

nlohmann::json AdminServer::status() {
    const Config& c = shared_.config;
    auto addrs = [](const auto& v) {  // addresses or prefixes, as text
        nlohmann::json a = nlohmann::json::array();
        for (const auto& x : v) {
            a.push_back(x.to_string());
        }
        return a;
    };
    auto ips = [](const std::vector<Address>& v) {
        nlohmann::json a = nlohmann::json::array();
        for (const auto& x : v) {
            a.push_back(x.ip_string());
        }
        return a;
    };
    nlohmann::json busy = nlohmann::json::array();
    for (EventLoop* l : loops_) {
        busy.push_back(static_cast<double>(l->stats().busy_ppm.load()) / 1e6);
    }
    return {{"ok", true},
            {"pid", ::getpid()},
            {"uptime_s", unix_s() - started_unix_s_},
            {"realm", c.realm},
            {"listen", addrs(c.listen)},
            {"listen_tcp", addrs(c.listen_tcp)},
            {"listen_tls", addrs(c.listen_tls)},
            {"listen_dtls", addrs(c.listen_dtls)},
            {"relay_ips", ips(c.relay_ips)},
            {"proxy_protocol", addrs(c.tcp_proxy_protocol)},
            {"proxy_protocol_from", addrs(c.tcp_proxy_protocol_from)},
            {"external_ips", ips(c.external_ips)},
            {"loops", loops_.size()},
            {"loop_busy", busy},
            {"draining", shared_.draining.load()},
            {"allocations",
             {{"total", shared_.allocations.load()},
              {"ipv4", shared_.allocations_v4.load()},
              {"ipv6", shared_.allocations_v6.load()}}},
            {"connections", shared_.connections.load()},
            {"dtls_sessions", shared_.dtls_sessions.load()}};
}

nlohmann::json AdminServer::allocations(const std::optional<std::string>& user) {
    std::vector<AllocRow> rows;
    const bool complete = on_every_loop<AllocRow>(loops_, [user](Server& s, unsigned loop, std::vector<AllocRow>& out) {
        const uint64_t now_ms = s.now_ms();
        s.allocations().for_each([&](const Allocation& a) {
            if (user && a.username != *user) {
                return;
            }
            AllocRow r;
            r.id = a.id;
            r.loop = loop;
            r.ft = a.five_tuple;
            r.user = a.username;
            r.tcp = a.tcp;
            r.age_s = a.age_ms(now_ms) / 1000;
            r.usage = s.allocations().usage(a);
            r.permission_count = a.permissions.size();
            r.channel_count = a.channels.size();
            // Lifetimes as saved_view gives them (wall clock), the lists bounded.
            SavedAllocation v = s.allocations().saved_view(a);
            r.expires_unix_ms = v.expires_unix_ms;
            for (size_t i = 0; i < v.relayed.size(); ++i) {
                if (v.relayed[i].family != Family::kNone) {
                    r.relayed.push_back(v.relayed[i]);
                    r.relayed_expires_unix_ms.push_back(v.relayed_expires_unix_ms[i]);
                }
            }
            v.permissions.resize(std::min(v.permissions.size(), kListed));
            v.channels.resize(std::min(v.channels.size(), kListed));
            r.permissions = std::move(v.permissions);
            r.channels = std::move(v.channels);
            out.push_back(std::move(r));
        });
    }, rows);
    const uint64_t now_unix_ms = static_cast<uint64_t>(::time(nullptr)) * 1000;
    auto left_s = [now_unix_ms](uint64_t unix_ms) { return unix_ms > now_unix_ms ? (unix_ms - now_unix_ms) / 1000 : 0; };
    nlohmann::json items = nlohmann::json::array();
    for (const auto& r : rows) {
        nlohmann::json relayed = nlohmann::json::array();
        for (const auto& a : r.relayed) {
            relayed.push_back(a.to_string());
        }
        nlohmann::json relayed_left = nlohmann::json::array();
        for (const uint64_t t : r.relayed_expires_unix_ms) {
            relayed_left.push_back(left_s(t));
        }
        nlohmann::json perms = nlohmann::json::array();
        for (const auto& p : r.permissions) {
            perms.push_back({{"peer", p.peer.ip_string()}, {"expires_in_s", left_s(p.expires_unix_ms)}});
        }
        nlohmann::json chans = nlohmann::json::array();
        for (const auto& ch : r.channels) {
            chans.push_back({{"number", ch.number}, {"peer", ch.peer.to_string()}, {"expires_in_s", left_s(ch.expires_unix_ms)}});
        }
        items.push_back({{"id", r.id},
                         {"loop", r.loop},
                         {"transport", std::string(transport_name(r.ft.transport))},
                         {"client", r.ft.client.to_string()},
                         {"server", r.ft.server.to_string()},
                         {"user", r.user},
                         {"relayed", relayed},
                         {"tcp_allocation", r.tcp},
                         {"age_s", r.age_s},
                         {"expires_in_s", left_s(r.expires_unix_ms)},
                         // One per "relayed" entry, in its order: a dual
                         // allocation's addresses expire one by one.
                         {"relayed_expires_in_s", relayed_left},
                         // Both paths: the control plane's datagrams and the
                         // dataplane's fast path as of its last report.
                         {"packets_client_to_peer", r.usage.packets_to_peer},
                         {"packets_peer_to_client", r.usage.packets_to_client},
                         {"bytes_client_to_peer", r.usage.bytes_to_peer},
                         {"bytes_peer_to_client", r.usage.bytes_to_client},
                         {"permission_count", r.permission_count},
                         {"channel_count", r.channel_count},
                         {"permissions", perms},  // the first 64
                         {"channels", chans}});
    }
    return {{"ok", true}, {"complete", complete}, {"allocations", items}};
}

nlohmann::json AdminServer::close(uint64_t id) {
    std::vector<std::string> clients;
    const bool complete = on_every_loop<std::string>(loops_, [id](Server& s, unsigned, std::vector<std::string>& out) {
        if (Allocation* a = s.allocations().find_by_id(id)) {
            out.push_back(a->five_tuple.client.to_string());
            s.allocations().remove(*a, AllocationManager::EndReason::kOperator);
        }
    }, clients);
    if (clients.empty()) {
        return error(complete ? "no allocation " + std::to_string(id) : "no loop that answered has allocation " + std::to_string(id));
    }
    return {{"ok", true}, {"closed", id}, {"client", clients[0]}};
}

nlohmann::json AdminServer::close_user(const std::string& user) {
    std::vector<uint64_t> ids;
    const bool complete = on_every_loop<uint64_t>(loops_, [user](Server& s, unsigned, std::vector<uint64_t>& out) {
        std::vector<uint64_t> mine;
        s.allocations().for_each([&](const Allocation& a) {
            if (a.username == user) {
                mine.push_back(a.id);
            }
        });
        for (const uint64_t id : mine) {  // removed after the walk, which must not see its map change
            if (Allocation* a = s.allocations().find_by_id(id)) {
                s.allocations().remove(*a, AllocationManager::EndReason::kOperator);
                out.push_back(id);
            }
        }
    }, ids);
    std::sort(ids.begin(), ids.end());
    return {{"ok", true}, {"complete", complete}, {"user", user}, {"closed", ids}};
}

}  // namespace turn::cp
