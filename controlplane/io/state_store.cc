#include "io/state_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/event_log.h"

namespace turn::cp {

namespace {

constexpr size_t kNonceSecretBytes = 32;

// The nonce secret at `path`: its bytes; nullopt with `error` empty when
// there is none yet, with `error` set when it cannot be read or is not one
// (StateStore::nonce_secret, StateStore::check).
std::optional<std::vector<uint8_t>> read_nonce_secret(const std::string& path, std::string& error) {
    auto d = read_file(path, 4096, error);
    if (d && d->size() != kNonceSecretBytes) {
        error = path + " holds " + std::to_string(d->size()) + " bytes, not " + std::to_string(kNonceSecretBytes) +
                " (fix: delete it; a new one is made)";
        return std::nullopt;
    }
    return d;
}
// A journal holds the ends of one save interval (at most 600 s); 64 MiB is
// 8M ids, far more than any loop ends in that time.
constexpr size_t kJournalMaxBytes = size_t{64} << 20;

// "loop-N.ended.SEQ" -> (N, SEQ).
std::optional<std::pair<unsigned, uint64_t>> parse_journal_name(std::string_view name) {
    constexpr std::string_view kPrefix = "loop-";
    constexpr std::string_view kMiddle = ".ended.";
    if (!name.starts_with(kPrefix)) {
        return std::nullopt;
    }
    name.remove_prefix(kPrefix.size());
    const size_t mid = name.find(kMiddle);
    if (mid == std::string_view::npos || mid == 0 || mid + kMiddle.size() == name.size()) {
        return std::nullopt;
    }
    unsigned loop = 0;
    uint64_t seq = 0;
    const char* loop_end = name.data() + mid;
    const char* seq_begin = loop_end + kMiddle.size();
    const char* end = name.data() + name.size();
    if (std::from_chars(name.data(), loop_end, loop).ptr != loop_end ||
        std::from_chars(seq_begin, end, seq).ptr != end || seq == 0) {
        return std::nullopt;
    }
    return std::pair{loop, seq};
}

// Writes all of `data` to `fd`, through short writes and EINTR; false with
// errno set (ENOSPC for a write that wrote nothing) when it cannot.
bool write_all(int fd, std::span<const uint8_t> data) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n == 0) {
                errno = ENOSPC;
            }
            return false;
        }
        data = data.subspan(static_cast<size_t>(n));
    }
    return true;
}

}  // namespace

StateStore::StateStore(std::string dir) : dir_(std::move(dir)) {}

StateStore::~StateStore() {
    stop();
    if (lock_fd_ >= 0) {
        ::close(lock_fd_);
    }
}

std::string StateStore::check(const std::string& dir) {
    std::error_code ec;
    std::filesystem::path p(dir);
    while (!p.empty() && !std::filesystem::exists(p, ec)) {
        p = p.parent_path();
    }
    if (p.empty()) {
        p = ".";
    }
    const bool exists = p.string() == dir;
    const std::string what = exists ? "\"" + dir + "\"" : "\"" + p.string() + "\" (where \"" + dir + "\" would be created)";
    if (!std::filesystem::is_directory(p, ec)) {
        return "[state].dir: " + what + " is not a directory (fix: choose a directory, or remove what is there)";
    }
    // Tried, not guessed from the mode bits (root, read-only mounts,
    // systemd's ProtectSystem=), and removed at once: a directory under the
    // ancestor the directory would be made in, or a file written in the
    // directory as prepare() writes its probe.
    const std::string probe = (p / (".check-config." + std::to_string(::getpid()))).string();
    const std::string fix = " (fix: choose a writable directory, or give the user turn-relay runs as write access)";
    if (!exists) {
        if (::mkdir(probe.c_str(), 0700) != 0) {
            return "[state].dir: " + what + " is not writable: " + std::strerror(errno) + fix;
        }
        ::rmdir(probe.c_str());
        return {};
    }
    std::string err;
    const uint8_t byte = 0;
    if (!write_file_atomically(probe, {&byte, 1}, err)) {
        return "[state].dir: " + what + " is not writable: " + err + fix;
    }
    ::unlink(probe.c_str());
    // What prepare() and nonce_secret() would read of an existing directory:
    // the lock file opened as prepare() opens it (not created, not locked),
    // and the nonce secret read and sized as nonce_secret() does.
    const std::string lock = dir + "/lock";
    if (const int fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC); fd >= 0) {
        ::close(fd);
    } else if (errno != ENOENT) {
        return "[state].dir: cannot open \"" + lock + "\": " + std::strerror(errno);
    }
    std::string key_err;
    if (!read_nonce_secret(dir + "/nonce.key", key_err) && !key_err.empty()) {
        return "[state].dir: " + key_err;
    }
    return {};
}

std::string StateStore::prepare() {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) {
        return "[state].dir: cannot create \"" + dir_ + "\": " + ec.message() +
               " (fix: choose a writable directory or create it)";
    }
    ::chmod(dir_.c_str(), 0700);
    const std::string probe = dir_ + "/.probe";
    std::string err;
    const uint8_t byte = 0;
    if (!write_file_atomically(probe, {&byte, 1}, err)) {
        return "[state].dir: \"" + dir_ + "\" is not writable: " + err;
    }
    ::unlink(probe.c_str());
    // One process per directory: each would overwrite the other's snapshots
    // and journals (and restore allocations the other still serves).
    const std::string lock = dir_ + "/lock";
    lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd_ < 0) {
        return "[state].dir: cannot open \"" + lock + "\": " + std::strerror(errno);
    }
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
        const int e = errno;
        char pid[32] = {};
        const ssize_t n = ::pread(lock_fd_, pid, sizeof pid - 1, 0);
        std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : std::string();
        holder.erase(std::remove_if(holder.begin(), holder.end(), [](char c) { return c < '0' || c > '9'; }),
                     holder.end());
        ::close(lock_fd_);
        lock_fd_ = -1;
        if (e == EWOULDBLOCK) {
            return "[state].dir: \"" + dir_ + "\" is in use by another turn-relay" +
                   (holder.empty() ? std::string() : " (PID " + holder + ")") +
                   " (fix: stop that one first, or give this one a [state].dir of its own)";
        }
        return "[state].dir: cannot lock \"" + lock + "\": " + std::strerror(e);
    }
    const std::string me = std::to_string(::getpid()) + "\n";
    if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) < 0) {
        log_event(LogLevel::kWarn, "state_lock_pid_unwritten", {{"path", lock}, {"error", std::strerror(errno)}});
    }
    return {};
}

std::string StateStore::loop_path(unsigned loop) const { return dir_ + "/loop-" + std::to_string(loop) + ".state"; }

std::optional<std::vector<uint8_t>> StateStore::nonce_secret(std::string& error) {
    const std::string path = dir_ + "/nonce.key";
    if (auto d = read_nonce_secret(path, error)) {
        return d;
    }
    if (!error.empty()) {
        return std::nullopt;
    }
    std::vector<uint8_t> secret(kNonceSecretBytes);
    if (RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1) {
        error = "no randomness for the nonce secret";
        return std::nullopt;
    }
    if (!write_file_atomically(path, secret, error)) {
        return std::nullopt;
    }
    return secret;
}

std::optional<LoopSnapshot> StateStore::load(unsigned loop, std::string& error) const {
    const std::string path = loop_path(loop);
    auto d = read_file(path, kSnapshotMaxBytes, error);
    if (!d) {
        return std::nullopt;
    }
    auto s = decode_snapshot(*d, error);
    if (!s) {
        error = path + ": " + error;
    }
    return s;
}

std::vector<unsigned> StateStore::extra_snapshots(unsigned loops) const {
    std::vector<unsigned> out;
    for (unsigned i = loops; i < loops + 1024; ++i) {
        if (::access(loop_path(i).c_str(), F_OK) == 0) {
            out.push_back(i);
        }
    }
    return out;
}

std::string StateStore::journal_path(unsigned loop, uint64_t seq) const {
    return dir_ + "/loop-" + std::to_string(loop) + ".ended." + std::to_string(seq);
}

std::vector<std::pair<unsigned, uint64_t>> StateStore::list_journals(std::string& error) const {
    std::vector<std::pair<unsigned, uint64_t>> out;
    std::error_code ec;
    std::filesystem::directory_iterator it(dir_, ec);
    for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        if (auto j = parse_journal_name(it->path().filename().string())) {
            out.push_back(*j);
        }
    }
    if (ec) {
        error = "cannot list " + dir_ + ": " + ec.message();
    }
    return out;
}

StateStore::Ended StateStore::ended_allocations(unsigned loops) {
    Ended out;
    std::string list_error;
    const auto journals = list_journals(list_error);
    if (!list_error.empty()) {
        out.errors.push_back(list_error);
    }
    uint64_t max_seq = 0;
    for (const auto& [loop, seq] : journals) {
        max_seq = std::max(max_seq, seq);
        const std::string path = journal_path(loop, seq);
        if (loop < loops) {
            old_journals_[loop].push_back(seq);
        } else {
            out.extra_journals.push_back(path);
        }
        std::string err;
        auto d = read_file(path, kJournalMaxBytes, err);
        if (!d) {
            out.errors.push_back(err.empty() ? "cannot read " + path : err);
            continue;
        }
        // 8-byte ids in the host's order; a crash may leave a torn last one.
        for (size_t off = 0; off + 8 <= d->size(); off += 8) {
            uint64_t id;
            std::memcpy(&id, d->data() + off, 8);
            out.ids.insert(id);
            out.max_id = std::max(out.max_id, id);
        }
    }
    out.next_seq = max_seq + 1;
    first_journal_ = out.next_seq;
    return out;
}

void StateStore::start(unsigned loops) {
    loops_ = loops;
    thread_ = std::thread([this] { run(); });
}

void StateStore::submit(unsigned loop, std::vector<SavedAllocation> changed, std::vector<uint64_t> removed,
                        bool replace_all, uint64_t journals_upto) {
    {
        std::lock_guard lock(mu_);
        pending_.push_back(Batch{loop, std::move(changed), std::move(removed), replace_all, journals_upto});
    }
    cv_.notify_one();
}

void StateStore::stop() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) {
        thread_.join();
    }
}

uint64_t StateStore::writes() const {
    std::lock_guard lock(mu_);
    return writes_;
}

uint64_t StateStore::write_errors() const {
    std::lock_guard lock(mu_);
    return write_errors_;
}

void StateStore::run() {
    std::unique_lock lock(mu_);
    for (;;) {
        cv_.wait(lock, [this] { return stop_ || !pending_.empty(); });
        if (pending_.empty()) {
            return;  // stop_ and nothing left to write
        }
        std::vector<Batch> batches;
        batches.swap(pending_);
        lock.unlock();
        std::map<unsigned, bool> touched;
        for (auto& b : batches) {
            auto& m = mirror_[b.loop];
            if (b.replace_all) {
                m.clear();
            }
            for (auto& a : b.changed) {
                const uint64_t id = a.id;
                m.insert_or_assign(id, std::move(a));
            }
            for (const uint64_t id : b.removed) {
                m.erase(id);
            }
            auto& covered = journal_covered_[b.loop];
            covered = std::max(covered, b.journals_upto);
            touched[b.loop] = true;
        }
        for (const auto& [loop, t] : touched) {
            (void)t;
            if (!write_loop(loop)) {
                continue;  // the journals stay until a snapshot without their allocations is written
            }
            // Written: the journals it covers are no longer needed. Every
            // save covers the previous process's (below first_journal_).
            const uint64_t covered = journal_covered_[loop];
            if (auto old = old_journals_.find(loop); old != old_journals_.end() && covered + 1 >= first_journal_) {
                for (const uint64_t seq : old->second) {
                    ::unlink(journal_path(loop, seq).c_str());
                }
                old_journals_.erase(old);
            }
            auto [low, fresh] = journal_low_.try_emplace(loop, first_journal_);
            for (; low->second <= covered; ++low->second) {
                ::unlink(journal_path(loop, low->second).c_str());  // ENOENT: a number skipped (EndJournal::append)
            }
        }
        lock.lock();
    }
}

bool StateStore::write_loop(unsigned loop) {
    const auto& m = mirror_[loop];
    std::vector<const SavedAllocation*> all;
    all.reserve(m.size());
    for (const auto& [id, a] : m) {
        (void)id;
        all.push_back(&a);
    }
    const auto saved = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::system_clock::now().time_since_epoch())
                                                 .count());
    std::string err;
    const bool ok = write_file_atomically(loop_path(loop), encode_snapshot(loop, loops_, saved, all), err);
    if (!ok) {
        log_event("state_save_failed", {{"error", err}});
    }
    std::lock_guard lock(mu_);
    (ok ? writes_ : write_errors_)++;
    return ok;
}

EndJournal::~EndJournal() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

void EndJournal::fail(const std::string& what) {
    // Once per file: after a failure the next file is tried at the next roll.
    log_event(LogLevel::kWarn, "state_journal_failed",
              {{"error", what + ": " + std::strerror(errno)},
               {"effect", "allocations ending now may come back after a crash"}});
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
    broken_ = true;
}

void EndJournal::append(std::span<const uint64_t> ids, uint64_t now_ms) {
    if (ids.empty() || broken_) {
        return;  // a file that failed takes nothing more (its ids would lose their 8-byte alignment)
    }
    if (fd_ < 0) {
        opened_ms_ = now_ms;
        bytes_ = 0;
        // A new name: a file there (from a process this one could not list)
        // may still be needed, so it is never truncated; the next number is tried.
        for (int tries = 0; fd_ < 0 && tries < 64; ++tries) {
            fd_ = ::open(store_.journal_path(loop_, seq_).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC,
                         0600);
            if (fd_ < 0 && errno == EEXIST) {
                ++seq_;
            } else if (fd_ < 0) {
                break;
            }
        }
        if (fd_ < 0) {
            fail("cannot create " + store_.journal_path(loop_, seq_));
            return;
        }
    }
    if (!write_all(fd_, std::span(reinterpret_cast<const uint8_t*>(ids.data()), ids.size_bytes()))) {
        fail("cannot write " + store_.journal_path(loop_, seq_));
        return;
    }
    bytes_ += ids.size_bytes();
}

uint64_t EndJournal::roll() {
    if (fd_ >= 0 || broken_) {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
        broken_ = false;
        closed_ = seq_++;
    }
    return closed_;
}

bool write_file_atomically(const std::string& path, std::span<const uint8_t> data, std::string& error) {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        error = "cannot create " + tmp + ": " + std::strerror(errno);
        return false;
    }
    if (!write_all(fd, data)) {
        error = "cannot write " + tmp + ": " + std::strerror(errno);
        ::close(fd);
        ::unlink(tmp.c_str());
        return false;
    }
    // fdatasync: a crash of the machine (not only of the process) must not
    // leave a renamed but empty file behind.
    if (::fdatasync(fd) != 0 || ::close(fd) != 0) {
        error = "cannot sync " + tmp + ": " + std::strerror(errno);
        ::unlink(tmp.c_str());
        return false;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        error = "cannot rename " + tmp + " to " + path + ": " + std::strerror(errno);
        ::unlink(tmp.c_str());
        return false;
    }
    return true;
}

}  // namespace turn::cp
